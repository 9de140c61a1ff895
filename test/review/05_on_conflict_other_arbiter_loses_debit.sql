-- version 0.3.0
-- ON CONFLICT DO NOTHING on a DBA's unique index (not the idempotency key):
-- the trigger debits the row, the executor skips it, and (no later trigger,
-- so no read-back) the account is debited anyway.  In 0.2.0 the orphan
-- debit row at least stayed in the ledger (verify: "names batch N that does
-- not exist"); in 0.3.0 the entry is lost with the batch row: balance 85,
-- ledger sum 95.  Correct: balance 95 (or an error), verify() empty.
\set VERBOSITY terse
SELECT credits.open_account(1, 100) IS NOT NULL;
ALTER TABLE credits.send_batches ADD COLUMN ext_ref text;
CREATE UNIQUE INDEX dba_ext_ref ON credits.send_batches (account_id, ext_ref);
INSERT INTO credits.send_batches (account_id, messages, ext_ref) VALUES (1, 5, 'a');
INSERT INTO credits.send_batches (account_id, messages, ext_ref) VALUES (1, 5, 'a')
	ON CONFLICT (account_id, ext_ref) DO NOTHING;
INSERT INTO credits.send_batches (account_id, messages, ext_ref) VALUES (1, 5, 'a') ON CONFLICT DO NOTHING;
SELECT balance FROM credits.accounts;
SELECT * FROM credits.verify();

--
-- verify: empty on a healthy database, and it does see damage
--
\set SHOW_CONTEXT never
SELECT * FROM credits.verify();

-- Damage done behind the extension's back (a superuser with the triggers
-- off, as a bad restore or a manual fix might) is reported, account by account.
SELECT balance FROM credits.open_account(700, 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (700, 10);
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE credits.accounts SET balance = balance + 5 WHERE account_id = 700;
-- (a batch whose debit entry takes nothing, then a grant row that breaks the running sum)
INSERT INTO credits.send_batches (account_id, messages, cost, status,
								  entry_id, entry_delta, entry_balance_after)
	VALUES (700, 3, 3, 'ready', nextval('credits.ledger_entry_id_seq'), 0, 90);
INSERT INTO credits.ledger_entries (account_id, delta, balance_after, kind) VALUES (700, 1, 1, 'grant');
UPDATE credits.accounts SET in_flight = 7 WHERE account_id = 700;
-- (ids depend on the suites before this one, so they are masked)
SELECT account_id, regexp_replace(problem, '(batch|entry) \d+', '\1 #') AS problem
  FROM credits.verify();
ROLLBACK;
SELECT * FROM credits.verify();

--
-- batch_guard: what was debited cannot change, for every role (this suite
-- runs as a superuser, the strongest case)
--
\set SHOW_CONTEXT never
SELECT balance FROM credits.open_account(500, 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (500, 10);
SELECT batch_id AS b500 FROM credits.send_batches WHERE account_id = 500 \gset
SELECT * FROM regress_totals(500);

UPDATE credits.send_batches SET messages = 1 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET cost = 0 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET account_id = 42 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET channel = 'sms' WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET idempotency_key = 'late' WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
-- statuses change only through the extension's functions
UPDATE credits.send_batches SET status = 'failed' WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET recharge_id = 1 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
DELETE FROM credits.send_batches WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
TRUNCATE credits.send_batches;
\echo :LAST_ERROR_SQLSTATE
-- an UPDATE that changes nothing is harmless and allowed
UPDATE credits.send_batches SET status = status WHERE batch_id = :b500;
SELECT messages, cost, status FROM credits.send_batches WHERE batch_id = :b500;

-- The ledger is append-only.
UPDATE credits.ledger SET delta = 0 WHERE account_id = 500;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM credits.ledger WHERE account_id = 500;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE credits.ledger;
\echo :LAST_ERROR_SQLSTATE
-- and so is the table of its entries other than the batches'
UPDATE credits.ledger_entries SET delta = 0 WHERE account_id = 500;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM credits.ledger_entries WHERE account_id = 500;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE credits.ledger_entries;
\echo :LAST_ERROR_SQLSTATE
-- a batch's own debit entry cannot change either
UPDATE credits.send_batches SET entry_delta = 0 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET entry_balance_after = entry_balance_after + 1 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET entry_id = entry_id + 1000000 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET entry_grant_id = NULL WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET entry_recharge_id = 1 WHERE batch_id = :b500;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(500);

-- The triggers refuse to run anywhere else.
CREATE TABLE regress_other (x int);
CREATE TRIGGER t AFTER INSERT ON regress_other FOR EACH ROW EXECUTE FUNCTION credits.debit_batch();
INSERT INTO regress_other VALUES (1);
\echo :LAST_ERROR_SQLSTATE
DROP TABLE regress_other;
SELECT credits.debit_batch();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM credits.verify();

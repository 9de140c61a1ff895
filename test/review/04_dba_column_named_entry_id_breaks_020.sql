-- version 0.2.0
-- The 0.3.0 library must keep serving 0.2.0 databases.  The trigger decides
-- "0.3.0 layout" by the presence of a column named entry_id in send_batches
-- (LookUpColumns), not by the schema (CreditsEntriesInBatches): a DBA's own
-- column of that name makes every insert fail.  Correct: INSERT 0 1.
\set VERBOSITY terse
SELECT credits.open_account(1, 100) IS NOT NULL;
ALTER TABLE credits.send_batches ADD COLUMN entry_id bigint;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5);

-- version 0.2.0
-- A DBA's AFTER INSERT trigger and CHECK constraint on credits.ledger (0.2.0
-- honours both for every debit: table_changes suite) silently stop applying
-- to batch debits after the update: they move to ledger_entries, and a
-- batch's debit entry is now written into send_batches.  Correct: the update
-- refuses (MC029, as for views) or warns; or the debits still go through them.
\set VERBOSITY terse
SELECT credits.open_account(1, 100) IS NOT NULL;
CREATE TABLE review_audit (entry_id bigint, kind text, delta bigint);
CREATE FUNCTION review_audit_ledger() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO review_audit VALUES (NEW.entry_id, NEW.kind, NEW.delta); RETURN NEW; END $$;
CREATE TRIGGER dba_audit AFTER INSERT ON credits.ledger FOR EACH ROW EXECUTE FUNCTION review_audit_ledger();
ALTER TABLE credits.ledger ADD CONSTRAINT dba_small_debits CHECK (delta > -50);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 60);   -- refused by the DBA's CHECK
ALTER EXTENSION credits UPDATE;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 6);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 60);   -- accepted now
SELECT 'audit (expected: every debit)' AS t, * FROM review_audit ORDER BY 2;
SELECT 'ledger' AS t, entry_id, kind, delta FROM credits.ledger ORDER BY 2;

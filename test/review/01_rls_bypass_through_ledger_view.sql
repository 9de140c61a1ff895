-- version 0.2.0
-- A DBA's row-level security on credits.ledger (tenant isolation) stops
-- applying after ALTER EXTENSION UPDATE: the policies move to ledger_entries,
-- the SELECT grant is copied to the view, and the view (owned by the
-- extension owner, a superuser, not security_invoker) reads both tables
-- bypassing RLS.  Correct: tenant1 sees account 1 only, before and after
-- (or the update refuses with MC029 while policies exist on the ledger).
\set VERBOSITY terse
DROP ROLE IF EXISTS review_tenant1;
CREATE ROLE review_tenant1;
SELECT credits.open_account(1, 100) IS NOT NULL, credits.open_account(2, 100) IS NOT NULL;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5), (2, 7);
GRANT USAGE ON SCHEMA credits TO review_tenant1;
GRANT SELECT ON credits.ledger, credits.send_batches TO review_tenant1;
ALTER TABLE credits.ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.send_batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON credits.ledger FOR SELECT TO review_tenant1 USING (account_id = 1);
CREATE POLICY own ON credits.send_batches FOR SELECT TO review_tenant1 USING (account_id = 1);
SET ROLE review_tenant1;
SELECT 'before' AS t, account_id, delta, kind FROM credits.ledger ORDER BY entry_id;
RESET ROLE;
ALTER EXTENSION credits UPDATE;
SET ROLE review_tenant1;
SELECT 'after (expected: account 1 only)' AS t, account_id, delta, kind FROM credits.ledger ORDER BY entry_id;
RESET ROLE;
REVOKE ALL ON SCHEMA credits FROM review_tenant1;
REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM review_tenant1;
DROP POLICY own ON credits.ledger_entries; DROP POLICY own ON credits.send_batches;
DROP ROLE review_tenant1;

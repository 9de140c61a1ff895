-- version 0.2.0
-- GRANT SELECT ON credits.ledger TO PUBLIC is copied to the view by the
-- update's DO block and then removed by the REVOKE ALL ... FROM PUBLIC
-- that follows it.  Correct: the view keeps "=r" in its ACL.
\set VERBOSITY terse
GRANT USAGE ON SCHEMA credits TO PUBLIC;  -- (revoked again at the end)
GRANT SELECT ON credits.ledger TO PUBLIC;
SELECT 'before' AS t, relacl FROM pg_class WHERE oid = 'credits.ledger'::regclass;
ALTER EXTENSION credits UPDATE;
SELECT 'after (expected: =r/... present)' AS t, relacl FROM pg_class WHERE oid = 'credits.ledger'::regclass;
REVOKE USAGE ON SCHEMA credits FROM PUBLIC;

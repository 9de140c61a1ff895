--
-- direct_writes_ddl: DDL that the direct statement-end write (row_write.c)
-- must follow as the SQL path does.
--  1. A CHECK constraint calling a SQL function: after CREATE OR REPLACE
--     FUNCTION the new body holds (the planned CHECK tree, cached per
--     backend, held the old body inlined).
--  2. A written column whose type a DBA changed: the value is converted as
--     SQL converts it, not stored as a bigint Datum (which crashed the
--     server for numeric).
--  3. A domain on a written column: its CHECK holds.
--  4. A CHECK reading tableoid sees the table's (it saw 0 for the first
--     row of a writer).
--  5. grants_pkey renamed: a debit must not go on as if the schema were
--     0.1 (no grant drawn, verify() broken); it is refused.
--  6. ledger_pkey renamed: debits go on (the ledger is written, never read
--     by that index), directly and through SQL.
-- Each change is rolled back; accounts 9101-9104.
--
-- From 0.3.0 a batch's first debit entry is its send_batches row's, and
-- the statement-end write puts into credits.ledger_entries only a batch's
-- further debit rows (drawn from a second grant) and expire rows.  So each
-- account below also holds a promo of 1 credit (priority 10, drawn before
-- the free credits), and each debit that must reach ledger_entries costs
-- one credit more than it did: the promo's 1 is the batch's entry, the
-- rest a row of ledger_entries.  The checks show that row.
--
-- Cases 2 and 3 retyped credits.ledger_entries.balance_after.  Every column
-- the statement-end write sets (ledger_entries' columns; accounts.balance
-- and in_flight; grants.remaining and closed_at) is now read by a view of
-- the extension (credits.ledger, account_overview, balance_by_grant), and
-- PostgreSQL refuses to retype a column a view uses: that is asserted.  A
-- DBA who wants the retype must take the view out of the way first; so do
-- cases 2 and 3, in their transaction (rolled back), with credits.ledger
-- dropped from the extension and then dropped, to keep row_write.c's
-- conversion covered.
--
\set SHOW_CONTEXT never
\set VERBOSITY terse
SELECT count(*) >= 0 AS opened FROM (
	SELECT credits.open_account(9100 + g, CASE g WHEN 3 THEN 987659 ELSE 1000 END),
		   credits.grant_credits(9100 + g, 1, priority => 10)
	  FROM generate_series(1, 4) g) o;
-- An account's debit entries: where each is stored, its delta, its
-- balance_after, and whether it drew from a promo (priority 10).
CREATE FUNCTION regress_dwd_debits(acct bigint)
RETURNS TABLE (stored_in text, delta bigint, balance_after bigint, from_promo boolean)
LANGUAGE sql AS $$
	SELECT CASE WHEN EXISTS (SELECT FROM credits.send_batches b WHERE b.entry_id = l.entry_id)
				THEN 'send_batches' ELSE 'ledger_entries' END,
		   l.delta, l.balance_after, g.priority = 10
	  FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	 WHERE l.account_id = acct AND l.kind = 'debit' ORDER BY l.entry_id
$$;

-- 1.
CREATE FUNCTION regress_dwd_small(d bigint) RETURNS boolean LANGUAGE sql IMMUTABLE
	AS $$ SELECT d > -1000 $$;
BEGIN;
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_dwd_small CHECK (regress_dwd_small(delta)) NOT VALID;
-- the promo's 1, then 1 in ledger_entries: allowed by the old body
INSERT INTO credits.send_batches (account_id, messages) VALUES (9101, 2);
SELECT * FROM regress_dwd_debits(9101);
-- a new promo of 1 for the next debits
SELECT credits.grant_credits(9101, 1, priority => 10) IS NOT NULL AS granted;
CREATE OR REPLACE FUNCTION regress_dwd_small(d bigint) RETURNS boolean LANGUAGE sql IMMUTABLE
	AS $$ SELECT d > -1 $$;
SAVEPOINT s;
-- refused, as through SQL:
INSERT INTO credits.send_batches (account_id, messages) VALUES (9101, 2);
ROLLBACK TO s;
SET LOCAL credits.direct_writes = off;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9101, 2);
ROLLBACK;
DROP FUNCTION regress_dwd_small(bigint);

-- 2.  Refused while a view reads the column: on ledger_entries, and on the
-- columns of accounts and grants the statement-end write sets.
BEGIN;
ALTER TABLE credits.ledger_entries ALTER COLUMN balance_after TYPE numeric;
ROLLBACK;
BEGIN;
ALTER TABLE credits.accounts ALTER COLUMN balance TYPE numeric;
ROLLBACK;
BEGIN;
ALTER TABLE credits.grants ALTER COLUMN remaining TYPE numeric;
ROLLBACK;
-- With credits.ledger out of the way: the promo's 1, then 2 in
-- ledger_entries, its balance_after a numeric.
BEGIN;
ALTER EXTENSION credits DROP VIEW credits.ledger;
DROP VIEW credits.ledger;
ALTER TABLE credits.ledger_entries ALTER COLUMN balance_after TYPE numeric;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9102, 3);
SELECT kind, delta, balance_after, pg_typeof(balance_after) AS type
  FROM credits.ledger_entries WHERE account_id = 9102 ORDER BY entry_id;
SELECT entry_delta, entry_balance_after FROM credits.send_batches WHERE account_id = 9102;
ROLLBACK;

-- 3.  The same for a domain (balance_after 987654 is refused): account
-- 9103 holds 987660, the promo's 1 is the batch's entry (987659), the 5
-- of the row in ledger_entries reach 987654.
CREATE DOMAIN regress_dwd_floor AS bigint CHECK (VALUE <> 987654);
BEGIN;
ALTER TABLE credits.ledger_entries ALTER COLUMN balance_after TYPE regress_dwd_floor;
ROLLBACK;
BEGIN;
ALTER EXTENSION credits DROP VIEW credits.ledger;
DROP VIEW credits.ledger;
ALTER TABLE credits.ledger_entries ALTER COLUMN balance_after TYPE regress_dwd_floor;
SAVEPOINT s;
-- refused (balance_after 987654), as through SQL:
INSERT INTO credits.send_batches (account_id, messages) VALUES (9103, 6);
ROLLBACK TO s;
SET LOCAL credits.direct_writes = off;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9103, 6);
ROLLBACK TO s;
-- 987653 is not refused (direct_writes is on again: the SET LOCAL was
-- rolled back with the savepoint):
SHOW credits.direct_writes;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9103, 7);
SELECT kind, delta, balance_after FROM credits.ledger_entries WHERE account_id = 9103 ORDER BY entry_id;
ROLLBACK;
DROP DOMAIN regress_dwd_floor;
SELECT pg_typeof(balance_after) AS type FROM credits.ledger LIMIT 1;

-- 4.  Two rows, the first drawn from the promo and g1: the first row
-- this writer writes to ledger_entries.
BEGIN;
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_dwd_tableoid
	CHECK (tableoid = 'credits.ledger_entries'::regclass) NOT VALID;
ALTER TABLE credits.grants ADD CONSTRAINT regress_dwd_tableoid
	CHECK (tableoid = 'credits.grants'::regclass) NOT VALID;
ALTER TABLE credits.accounts ADD CONSTRAINT regress_dwd_tableoid
	CHECK (tableoid = 'credits.accounts'::regclass) NOT VALID;
ALTER TABLE credits.send_batches ADD CONSTRAINT regress_dwd_tableoid
	CHECK (tableoid = 'credits.send_batches'::regclass) NOT VALID;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 2), (9104, 1);
SELECT * FROM regress_dwd_debits(9104);
ROLLBACK;

-- 5.
BEGIN;
ALTER INDEX credits.grants_pkey RENAME TO regress_dwd_grants_pk;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 3);
SELECT kind, delta, grant_id IS NOT NULL AS drawn_from_a_grant
  FROM credits.ledger WHERE account_id = 9104 ORDER BY entry_id;
SELECT * FROM credits.verify() WHERE account_id = 9104;
ROLLBACK;

-- 6.  Directly: the promo's 1, then 1 in ledger_entries; through SQL,
-- after a new promo of 1, the same.
BEGIN;
ALTER INDEX credits.ledger_pkey RENAME TO regress_dwd_ledger_pk;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 2);
SELECT credits.grant_credits(9104, 1, priority => 10) IS NOT NULL AS granted;
SET LOCAL credits.direct_writes = off;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 2);
SELECT kind, delta, balance_after FROM credits.ledger WHERE account_id = 9104 ORDER BY entry_id;
SELECT * FROM regress_dwd_debits(9104);
ROLLBACK;

DROP FUNCTION regress_dwd_debits(bigint);
SELECT * FROM credits.verify();

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
\set SHOW_CONTEXT never
\set VERBOSITY terse
SELECT count(*) >= 0 AS opened FROM (
	SELECT credits.open_account(9100 + g, CASE g WHEN 3 THEN 987659 ELSE 1000 END)
	  FROM generate_series(1, 4) g) o;

-- 1.
CREATE FUNCTION regress_dwd_small(d bigint) RETURNS boolean LANGUAGE sql IMMUTABLE
	AS $$ SELECT d > -1000 $$;
BEGIN;
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_dwd_small CHECK (regress_dwd_small(delta)) NOT VALID;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9101, 1);
CREATE OR REPLACE FUNCTION regress_dwd_small(d bigint) RETURNS boolean LANGUAGE sql IMMUTABLE
	AS $$ SELECT d > -1 $$;
SAVEPOINT s;
-- refused, as through SQL:
INSERT INTO credits.send_batches (account_id, messages) VALUES (9101, 1);
ROLLBACK TO s;
SET LOCAL credits.direct_writes = off;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9101, 1);
ROLLBACK;
DROP FUNCTION regress_dwd_small(bigint);

-- 2.
BEGIN;
ALTER TABLE credits.ledger_entries ALTER COLUMN balance_after TYPE numeric;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9102, 3);
SELECT delta, balance_after FROM credits.ledger WHERE account_id = 9102 ORDER BY entry_id;
ROLLBACK;

-- 3.
CREATE DOMAIN regress_dwd_floor AS bigint CHECK (VALUE <> 987654);
BEGIN;
ALTER TABLE credits.ledger_entries ALTER COLUMN balance_after TYPE regress_dwd_floor;
SAVEPOINT s;
-- refused (balance_after 987654), as through SQL:
INSERT INTO credits.send_batches (account_id, messages) VALUES (9103, 5);
ROLLBACK TO s;
SET LOCAL credits.direct_writes = off;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9103, 5);
ROLLBACK;
DROP DOMAIN regress_dwd_floor;

-- 4.
BEGIN;
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_dwd_tableoid
	CHECK (tableoid = 'credits.ledger_entries'::regclass) NOT VALID;
ALTER TABLE credits.grants ADD CONSTRAINT regress_dwd_tableoid
	CHECK (tableoid = 'credits.grants'::regclass) NOT VALID;
ALTER TABLE credits.accounts ADD CONSTRAINT regress_dwd_tableoid
	CHECK (tableoid = 'credits.accounts'::regclass) NOT VALID;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 1), (9104, 1);
ROLLBACK;

-- 5.
BEGIN;
ALTER INDEX credits.grants_pkey RENAME TO regress_dwd_grants_pk;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 3);
SELECT kind, delta, grant_id IS NOT NULL AS drawn_from_a_grant
  FROM credits.ledger WHERE account_id = 9104 ORDER BY entry_id;
SELECT * FROM credits.verify() WHERE account_id = 9104;
ROLLBACK;

-- 6.
BEGIN;
ALTER INDEX credits.ledger_pkey RENAME TO regress_dwd_ledger_pk;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 2);
SET LOCAL credits.direct_writes = off;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9104, 2);
SELECT kind, delta, balance_after FROM credits.ledger WHERE account_id = 9104 ORDER BY entry_id;
ROLLBACK;

SELECT * FROM credits.verify();

-- bench/schema.sql: the side-by-side cases of bench/run, each on its own
-- tables so they never interfere.  Run after CREATE EXTENSION credits.
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;

-- limit: a bare INSERT into a table shaped like credits.send_batches.
CREATE TABLE bench.bare_batches (LIKE credits.send_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench.bare_batches ALTER COLUMN batch_id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE bench.bare_batches ALTER COLUMN cost DROP NOT NULL, ALTER COLUMN status DROP NOT NULL;

-- hand-written SQL: the three writes done by the client in one statement.
CREATE TABLE bench.hand_accounts (account_id bigint PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE bench.hand_batches (LIKE bench.bare_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench.hand_batches ALTER COLUMN batch_id ADD GENERATED ALWAYS AS IDENTITY;
CREATE TABLE bench.hand_ledger (LIKE credits.ledger INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench.hand_ledger ALTER COLUMN entry_id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE bench.hand_ledger ADD PRIMARY KEY (entry_id);
CREATE INDEX ON bench.hand_ledger (account_id, entry_id);

\i plpgsql_reference.sql

CREATE FUNCTION bench.setup_accounts(n integer, initial bigint, auto boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO bench.hand_accounts SELECT g, initial FROM generate_series(1, n) g;
	INSERT INTO bench.pl_accounts SELECT g, initial, 0 FROM generate_series(1, n) g;
	INSERT INTO bench.pl_policies SELECT g, true, 0, 1000000000 FROM generate_series(1, n) g WHERE auto;
	PERFORM credits.open_account(g, initial) FROM generate_series(1, n) g;
	PERFORM credits.enable_auto_recharge(g, 0, 1000000000) FROM generate_series(1, n) g WHERE auto;
END
$$;

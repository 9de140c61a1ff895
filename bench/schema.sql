-- bench/schema.sql: the side-by-side cases of bench/run, each on its own
-- tables so they never interfere.  Run after CREATE EXTENSION credits.
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;

-- limit: a bare INSERT into a table shaped like credits.send_batches.
CREATE TABLE bench.bare_batches (LIKE credits.send_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench.bare_batches ALTER COLUMN batch_id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE bench.bare_batches ALTER COLUMN cost DROP NOT NULL, ALTER COLUMN status DROP NOT NULL;
-- (0.3.0: the batch's debit entry, set by the extension, null here)
DO $$
BEGIN
	IF to_regclass('credits.ledger_entries') IS NOT NULL THEN
		ALTER TABLE bench.bare_batches ALTER COLUMN entry_id DROP NOT NULL,
			ALTER COLUMN entry_delta DROP NOT NULL, ALTER COLUMN entry_balance_after DROP NOT NULL;
	END IF;
END
$$;
-- The ledger's table: credits.ledger until 0.2.0, credits.ledger_entries
-- behind the credits.ledger view from 0.3.0.
SELECT coalesce(to_regclass('credits.ledger_entries'), 'credits.ledger'::regclass) AS ledger_table \gset

-- hand-written SQL: the three writes done by the client in one statement.
CREATE TABLE bench.hand_accounts (account_id bigint PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE bench.hand_batches (LIKE bench.bare_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench.hand_batches ALTER COLUMN batch_id ADD GENERATED ALWAYS AS IDENTITY;
CREATE TABLE bench.hand_ledger (LIKE :ledger_table INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench.hand_ledger ALTER COLUMN entry_id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE bench.hand_ledger ADD PRIMARY KEY (entry_id);
CREATE INDEX ON bench.hand_ledger (account_id, entry_id);

\i plpgsql_reference.sql

-- setup_accounts(n, initial, auto): accounts 1..n in every case.
-- credits at 0.2.0 has grants in use: each account gets a plan grant (spent
-- first, priority 10) and a purchase grant, each of `initial` credits, so a
-- debit draws from the plan grant.  With initial 0 (auto-recharge shortfalls)
-- an account starts with nothing and no grant: every debit owes.
-- credits at 0.1.0 (the 0.1.0 database of bench/profile) has no grants: a balance.
CREATE FUNCTION bench.setup_accounts(n integer, initial bigint, auto boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO bench.hand_accounts SELECT g, initial FROM generate_series(1, n) g;
	INSERT INTO bench.pl_accounts SELECT g, initial, 0 FROM generate_series(1, n) g;
	INSERT INTO bench.pl_policies SELECT g, true, 0, 1000000000 FROM generate_series(1, n) g WHERE auto;
	IF (SELECT extversion FROM pg_extension WHERE extname = 'credits') = '0.1.0' THEN
		PERFORM credits.open_account(g, initial) FROM generate_series(1, n) g;
	ELSE
		PERFORM credits.open_account(g, 0) FROM generate_series(1, n) g;
		IF initial > 0 THEN
			PERFORM credits.set_plan(g, initial) FROM generate_series(1, n) g;
			PERFORM credits.add_credits(g, initial) FROM generate_series(1, n) g;
		END IF;
	END IF;
	PERFORM credits.enable_auto_recharge(g, 0, 1000000000) FROM generate_series(1, n) g WHERE auto;
END
$$;

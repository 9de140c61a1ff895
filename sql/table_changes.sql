--
-- table_changes: what a debit's statement-end writes (the account row, the
-- grants' remaining and closed_at, the debit and expire ledger rows) look
-- like to a DBA who has changed the extension's tables, so that a rewrite
-- of those writes keeps them:
--   - triggers added to credits.ledger_entries (AFTER ROW, AFTER STATEMENT with a
--     transition table, BEFORE ROW, deferred constraint trigger),
--     credits.accounts and credits.grants (AFTER UPDATE ROW, UPDATE OF,
--     BEFORE UPDATE ROW) fire, see the rows as stored, and run as the
--     tables' owner;
--   - columns added with defaults (a sequence, a volatile expression) and
--     generated columns get their values on debit rows, are recomputed or
--     left alone by the debit's updates, and indexes on them are kept;
--   - CHECK constraints, a unique index and a foreign key a DBA added are
--     enforced, and a statement they refuse writes nothing; so does a
--     BEFORE trigger that skips a write;
--   - with the changes removed again, debits work as before;
--   - ledger rows carry created_at = now() of the transaction, entry_ids in
--     insertion order and a running balance_after; a grant drawn to 0 (or
--     lapsed) is closed at now(); REPEATABLE READ debits the same.
-- Each for a single-row INSERT, a multi-row INSERT ... SELECT and COPY.
--
-- The extension's tables belong to the extension, but a superuser (as
-- pg_regress connects) may still add triggers, columns and constraints to
-- them, as a DBA does.  Ids depend on the suites before this one, so batches
-- and grants are named b1, b2, ... and g1, g2, ... within their account, and
-- entry_ids are only compared with each other.  The suite needs nothing
-- from the suites before it (amcheck, from contrib, checks the indexes).
--
\set SHOW_CONTEXT never
-- verify() runs after every section: JIT-compiling it costs seconds a call.
SET jit = off;

-- The label of a grant or a batch within its account, in id order.
CREATE FUNCTION regress_tc_g(gid bigint) RETURNS text LANGUAGE sql STRICT AS $$
	SELECT 'g' || count(*) FROM credits.grants g
	 WHERE g.account_id = (SELECT account_id FROM credits.grants WHERE grant_id = gid)
	   AND g.grant_id <= gid
$$;
CREATE FUNCTION regress_tc_b(bid bigint) RETURNS text LANGUAGE sql STRICT AS $$
	SELECT 'b' || count(*) FROM credits.send_batches b
	 WHERE b.account_id = (SELECT account_id FROM credits.send_batches WHERE batch_id = bid)
	   AND b.batch_id <= bid
$$;
-- An account's ledger in entry_id order, and whether each balance_after
-- continues the running sum of the account's deltas.
CREATE FUNCTION regress_tc_ledger(acct bigint)
RETURNS TABLE (kind text, delta bigint, balance_after bigint, g text, b text,
			   has_recharge boolean, running_sum boolean)
LANGUAGE sql AS $$
	SELECT kind, delta, balance_after, regress_tc_g(grant_id), regress_tc_b(batch_id),
		   recharge_id IS NOT NULL,
		   balance_after = sum(delta) OVER (ORDER BY entry_id)
	  FROM credits.ledger WHERE account_id = acct ORDER BY entry_id
$$;
-- An account's grants in id order.
CREATE FUNCTION regress_tc_grants(acct bigint)
RETURNS TABLE (g text, source text, priority integer, remaining bigint, closed boolean)
LANGUAGE sql AS $$
	SELECT regress_tc_g(grant_id), source, priority, remaining, closed_at IS NOT NULL
	  FROM credits.grants WHERE account_id = acct ORDER BY grant_id
$$;
-- An account's totals in one row, to show that a refused statement wrote
-- nothing.
CREATE FUNCTION regress_tc_totals(acct bigint)
RETURNS TABLE (balance bigint, in_flight bigint, remaining numeric, open_grants bigint,
			   ledger_rows bigint, batches bigint, recharges bigint)
LANGUAGE sql AS $$
	SELECT (SELECT balance FROM credits.accounts WHERE account_id = acct),
		   (SELECT in_flight FROM credits.accounts WHERE account_id = acct),
		   (SELECT coalesce(sum(remaining), 0) FROM credits.grants WHERE account_id = acct),
		   (SELECT count(*) FROM credits.grants WHERE account_id = acct AND closed_at IS NULL),
		   (SELECT count(*) FROM credits.ledger WHERE account_id = acct),
		   (SELECT count(*) FROM credits.send_batches WHERE account_id = acct),
		   (SELECT count(*) FROM credits.recharges WHERE account_id = acct)
$$;

--
-- The DBA's audit: an AFTER INSERT ROW trigger on credits.ledger_entries copying
-- NEW (and whether it runs as the tables' owner); an AFTER INSERT
-- STATEMENT trigger on credits.ledger_entries with a transition table; AFTER
-- UPDATE ROW triggers on credits.accounts and credits.grants recording OLD
-- and NEW balance / remaining and closed_at (the one on grants is an
-- UPDATE OF remaining trigger: it fires when an UPDATE sets remaining, so
-- a debit's update must count as one that does).  They name their tables
-- with the schema: the extension's functions, which write the same
-- tables, run with search_path = pg_catalog, pg_temp.
--
CREATE TABLE regress_tc_ledger_audit (
	n bigserial, entry_id bigint, account_id bigint, delta bigint, balance_after bigint,
	kind text, batch_id bigint, grant_id bigint, recharge_id bigint, note text,
	created_at timestamptz, created_now boolean, as_owner boolean);
CREATE TABLE regress_tc_statement_audit (n bigserial, tbl text, rows bigint, delta numeric);
CREATE TABLE regress_tc_update_audit (
	n bigserial, tbl text, account_id bigint, id bigint, old_value bigint, new_value bigint,
	old_closed boolean, new_closed boolean, closed_now boolean);
CREATE FUNCTION regress_tc_audit_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.regress_tc_ledger_audit (entry_id, account_id, delta, balance_after, kind,
										 batch_id, grant_id, recharge_id, note, created_at, created_now,
										 as_owner)
	VALUES (NEW.entry_id, NEW.account_id, NEW.delta, NEW.balance_after, NEW.kind,
			NEW.batch_id, NEW.grant_id, NEW.recharge_id, NEW.note, NEW.created_at,
			NEW.created_at = now(),
			current_user = (SELECT tableowner FROM pg_tables
							 WHERE schemaname = 'credits' AND tablename = TG_TABLE_NAME));
	RETURN NULL;
END
$$;
CREATE FUNCTION regress_tc_audit_ledger_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.regress_tc_statement_audit (tbl, rows, delta)
	SELECT TG_TABLE_NAME, count(*), sum(delta) FROM new_rows;
	RETURN NULL;
END
$$;
CREATE FUNCTION regress_tc_audit_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_TABLE_NAME = 'accounts' THEN
		INSERT INTO public.regress_tc_update_audit (tbl, account_id, id, old_value, new_value)
		VALUES (TG_TABLE_NAME, NEW.account_id, NEW.account_id, OLD.balance, NEW.balance);
	ELSE
		INSERT INTO public.regress_tc_update_audit (tbl, account_id, id, old_value, new_value,
											 old_closed, new_closed, closed_now)
		VALUES (TG_TABLE_NAME, NEW.account_id, NEW.grant_id, OLD.remaining, NEW.remaining,
				OLD.closed_at IS NOT NULL, NEW.closed_at IS NOT NULL, NEW.closed_at = now());
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER regress_tc_audit AFTER INSERT ON credits.ledger_entries
	FOR EACH ROW EXECUTE FUNCTION regress_tc_audit_ledger();
CREATE TRIGGER regress_tc_audit_statement AFTER INSERT ON credits.ledger_entries
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION regress_tc_audit_ledger_statement();
CREATE TRIGGER regress_tc_audit AFTER UPDATE ON credits.accounts
	FOR EACH ROW EXECUTE FUNCTION regress_tc_audit_update();
CREATE TRIGGER regress_tc_audit AFTER UPDATE OF remaining ON credits.grants
	FOR EACH ROW EXECUTE FUNCTION regress_tc_audit_update();
-- What the ledger trigger saw, in the order it fired: each row as the
-- ledger stores it (same_as_stored compares every column it copied),
-- entry_ids rising in firing order (in_order; NULL for the first), created
-- at now() of the inserting transaction, the trigger run as the tables'
-- owner.  Grants are closed at now() of that transaction (closed_now).
CREATE FUNCTION regress_tc_ledger_seen()
RETURNS TABLE (account_id bigint, kind text, delta bigint, balance_after bigint, g text, b text,
			   has_recharge boolean, created_now boolean, as_owner boolean, in_order boolean,
			   same_as_stored boolean)
LANGUAGE sql AS $$
	SELECT a.account_id, a.kind, a.delta, a.balance_after, regress_tc_g(a.grant_id),
		   regress_tc_b(a.batch_id), a.recharge_id IS NOT NULL, a.created_now, a.as_owner,
		   a.entry_id > lag(a.entry_id) OVER (ORDER BY a.n),
		   (l.account_id, l.delta, l.balance_after, l.kind, l.batch_id, l.grant_id, l.recharge_id,
			l.note, l.created_at)
		   IS NOT DISTINCT FROM
		   (a.account_id, a.delta, a.balance_after, a.kind, a.batch_id, a.grant_id, a.recharge_id,
			a.note, a.created_at)
	  FROM regress_tc_ledger_audit a LEFT JOIN credits.ledger l USING (entry_id)
	 ORDER BY a.n
$$;
-- What the update triggers saw, by account and row (the order accounts and
-- grants are written in is not part of the contract).
CREATE FUNCTION regress_tc_updates_seen()
RETURNS TABLE (tbl text, account_id bigint, row_name text, old_value bigint, new_value bigint,
			   old_closed boolean, new_closed boolean, closed_now boolean)
LANGUAGE sql AS $$
	SELECT tbl, account_id,
		   CASE tbl WHEN 'grants' THEN regress_tc_g(id) ELSE 'account' END,
		   old_value, new_value, old_closed, new_closed, closed_now
	  FROM regress_tc_update_audit ORDER BY tbl, account_id, id, n
$$;
CREATE PROCEDURE regress_tc_clear() LANGUAGE sql AS $$
	TRUNCATE regress_tc_ledger_audit, regress_tc_statement_audit, regress_tc_update_audit
$$;

-- Account 5001 holds 1,000 free credits (g1, priority 20) and a promo of
-- 100 spent first (g2, priority 10); 5002 500 free credits (g1) and a promo
-- of 50 (g2, priority 10) and, later, a promo of 20 that lapses in an hour
-- (g3, priority 5); 5003 20 free credits and auto-recharge.
SELECT balance FROM credits.open_account(5001, 1000);
SELECT credits.grant_credits(5001, 100, priority => 10) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5002, 500);
SELECT credits.grant_credits(5002, 50, priority => 10) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5003, 20);
SELECT enabled FROM credits.enable_auto_recharge(5003, min_balance => 0, max_credits => 1000);
CALL regress_tc_clear();

-- A single-row INSERT drawn from one grant: one debit row, one statement,
-- the account row and the grant row updated once each.
INSERT INTO credits.send_batches (account_id, messages) VALUES (5001, 30) RETURNING cost, status;
SELECT * FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen();
CALL regress_tc_clear();

-- A single-row INSERT drawn from two grants: g2's last 70 (it is closed, at
-- now()), then 30 of g1; two debit rows, in that order.
INSERT INTO credits.send_batches (account_id, messages) VALUES (5001, 100) RETURNING cost, status;
SELECT * FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen();
CALL regress_tc_clear();

-- A multi-row INSERT ... SELECT over three accounts, in row order: 5002's
-- promo (g2) is spent and closed by its second row, which goes on into g1;
-- 5003's batch spends its 20 and owes 30 (a debit row without a grant,
-- naming the recharge it opened).  Every row fires the row trigger, in
-- insertion order; one statement; each account and grant updated once,
-- from its value before the statement to its value after it.
INSERT INTO credits.send_batches (account_id, messages)
SELECT a, m FROM (VALUES (1, 5002, 20), (2, 5001, 10), (3, 5002, 40), (4, 5003, 50),
						 (5, 5002, 5), (6, 5001, 1)) v(o, a, m)
 ORDER BY o;
SELECT * FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen();
SELECT account_id, regress_tc_b(batch_id) AS b, cost, status, owed
  FROM credits.send_batches WHERE account_id = 5003 ORDER BY batch_id;
CALL regress_tc_clear();

-- COPY, with a grant of 5002 that lapsed before it (the extension's clock
-- moved on two hours): the expire row of g3 comes first, then the debits.
SELECT credits.grant_credits(5002, 20, expires_at => clock_timestamp() + interval '1 hour',
							 priority => 5) IS NOT NULL AS granted;
CALL regress_tc_clear();
SET credits.clock_offset = '2h';
COPY credits.send_batches (account_id, messages) FROM stdin;
5002	3
5001	4
5002	2
\.
RESET credits.clock_offset;
SELECT * FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen();
CALL regress_tc_clear();

-- A batch that is not debited (its idempotency key is already stored, ON
-- CONFLICT DO NOTHING) writes no ledger row and fires no trigger.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (5001, 2, 'tc-1');
CALL regress_tc_clear();
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (5001, 2, 'tc-1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT (SELECT count(*) FROM regress_tc_ledger_audit) AS ledger_rows_seen,
	   (SELECT count(*) FROM regress_tc_statement_audit) AS statements_seen,
	   (SELECT count(*) FROM regress_tc_update_audit) AS updates_seen;

-- The DBA's triggers run as the tables' owner, whoever inserts the batch:
-- the application's role has no right on the audit tables.
CREATE ROLE regress_tc_app;
GRANT USAGE ON SCHEMA credits TO regress_tc_app;
GRANT INSERT (account_id, messages, channel, idempotency_key) ON credits.send_batches TO regress_tc_app;
SET ROLE regress_tc_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (5001, 3);
INSERT INTO credits.send_batches (account_id, messages) SELECT 5001, g FROM generate_series(1, 2) g;
RESET ROLE;
SELECT * FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen();
CALL regress_tc_clear();
SELECT * FROM regress_tc_ledger(5001);
SELECT * FROM regress_tc_ledger(5002);
SELECT * FROM regress_tc_grants(5002);
SELECT * FROM credits.verify();

--
-- Columns a DBA added: on credits.ledger_entries, one with a sequence default, one
-- with a volatile default, one with a constant default, a generated
-- column, and one a BEFORE INSERT ROW trigger fills in; on credits.grants
-- and credits.accounts, a column with a default (set to something else
-- for these accounts), a generated column over the columns a debit
-- writes, and on accounts a column a BEFORE UPDATE ROW trigger stamps.
-- Debit rows get every default; the debit's updates recompute the
-- generated columns, fire the BEFORE UPDATE trigger, and leave the other
-- added columns as they were.  Indexes the DBA made on those columns are
-- kept up to date (amcheck: every row is in every index of the three
-- tables).  (The audit triggers above stay.)
--
CREATE EXTENSION amcheck;
-- Each btree index of the ledger, grants and accounts, checked: it is
-- well formed and has an entry for every row of its table.
CREATE FUNCTION regress_tc_check_indexes()
RETURNS TABLE (tbl name, index_name name)
LANGUAGE sql AS $$
	SELECT t.relname, c.relname
	  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
	 CROSS JOIN LATERAL bt_index_check(i.indexrelid, true)
	 WHERE i.indrelid IN ('credits.ledger_entries'::regclass, 'credits.grants'::regclass,
						  'credits.accounts'::regclass)
	 ORDER BY 1, 2
$$;
CREATE SEQUENCE regress_tc_seq;
ALTER TABLE credits.ledger_entries
	ADD COLUMN regress_seq bigint DEFAULT nextval('regress_tc_seq'),
	ADD COLUMN regress_stamped boolean DEFAULT (clock_timestamp() IS NOT NULL),
	ADD COLUMN regress_origin text DEFAULT 'credits',
	ADD COLUMN regress_size bigint GENERATED ALWAYS AS (abs(delta)) STORED,
	ADD COLUMN regress_filled text;
ALTER TABLE credits.grants
	ADD COLUMN regress_tag text DEFAULT 'dba',
	ADD COLUMN regress_used bigint GENERATED ALWAYS AS (credits - remaining) STORED;
ALTER TABLE credits.accounts
	ADD COLUMN regress_tier text DEFAULT 'basic',
	ADD COLUMN regress_total bigint GENERATED ALWAYS AS (balance + in_flight) STORED,
	ADD COLUMN regress_touched_at timestamptz;
CREATE FUNCTION regress_tc_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.regress_filled := 'filled for ' || NEW.kind;
	RETURN NEW;
END
$$;
CREATE FUNCTION regress_tc_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.regress_touched_at := now();
	RETURN NEW;
END
$$;
CREATE TRIGGER regress_tc_fill BEFORE INSERT ON credits.ledger_entries
	FOR EACH ROW EXECUTE FUNCTION regress_tc_fill();
CREATE TRIGGER regress_tc_touch BEFORE UPDATE ON credits.accounts
	FOR EACH ROW EXECUTE FUNCTION regress_tc_touch();
CREATE INDEX regress_tc_ledger_seq ON credits.ledger_entries (regress_seq);
CREATE INDEX regress_tc_grants_used ON credits.grants (account_id, regress_used);
CREATE INDEX regress_tc_accounts_total ON credits.accounts (regress_total);
-- Account 5004: 1,000 free credits (g1) and a promo of 100 (g2, priority 10).
SELECT balance FROM credits.open_account(5004, 1000);
SELECT credits.grant_credits(5004, 100, priority => 10) IS NOT NULL AS granted;
UPDATE credits.grants SET regress_tag = 'kept' WHERE account_id = 5004;
UPDATE credits.accounts SET regress_tier = 'gold' WHERE account_id IN (5001, 5004);
SELECT last_value AS seq_before FROM regress_tc_seq \gset
SELECT balance, regress_tier, regress_total FROM credits.accounts WHERE account_id = 5004;
CALL regress_tc_clear();
BEGIN;
-- single row, from one grant
INSERT INTO credits.send_batches (account_id, messages) VALUES (5004, 60);
-- multi-row INSERT ... SELECT over two accounts, emptying g2 of 5004
INSERT INTO credits.send_batches (account_id, messages)
SELECT a, m FROM (VALUES (1, 5004, 30), (2, 5001, 5), (3, 5004, 25)) v(o, a, m) ORDER BY o;
COPY credits.send_batches (account_id, messages) FROM stdin;
5004	7
5001	1
\.
-- Every debit row of this transaction: the sequence's values, in
-- insertion order, each above its value before; the other defaults; the
-- generated column; the BEFORE trigger's column.
SELECT account_id, kind, delta, regress_tc_b(batch_id) AS b,
	   regress_seq > :seq_before AS seq_new,
	   regress_seq > lag(regress_seq) OVER (ORDER BY entry_id) AS seq_in_order,
	   regress_stamped, regress_origin, regress_size, regress_filled, note IS NULL AS no_note
  FROM credits.ledger WHERE account_id IN (5001, 5004) AND created_at = now()
 ORDER BY entry_id;
SELECT regress_tc_g(grant_id) AS g, remaining, regress_used, regress_tag, closed_at = now() AS closed_now
  FROM credits.grants WHERE account_id = 5004 ORDER BY grant_id;
SELECT account_id, balance, regress_total, regress_tier, regress_touched_at = now() AS touched_now
  FROM credits.accounts WHERE account_id IN (5001, 5004) ORDER BY account_id;
COMMIT;
-- The audit triggers saw the rows as stored: with the columns added, too.
SELECT count(*) AS rows_seen, bool_and(same_as_stored) AS same_as_stored,
	   bool_and(in_order) AS in_order, bool_and(as_owner) AS as_owner
  FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen() WHERE account_id = 5004;
CALL regress_tc_clear();
SELECT * FROM regress_tc_ledger(5004);
SELECT * FROM regress_tc_check_indexes();
SELECT * FROM credits.verify();

--
-- CHECK constraints a DBA added are enforced on the debit's writes: the
-- INSERT fails with 23514 and nothing is written (balance, grants, ledger,
-- batches, recharges, and the audit tables the DBA's triggers write, all
-- as before).  On credits.ledger_entries, no debit row of 1,000 credits or more
-- (NOT VALID: the suites before this one are not checked); on
-- credits.grants, a reserve of 100 credits in every grant of account 5007;
-- on credits.accounts, a floor of 50 under account 5008's balance.  The
-- same for a unique index a DBA added (23505) and a foreign key (23503).
--
SELECT balance FROM credits.open_account(5005, 1000);
SELECT credits.grant_credits(5005, 100, priority => 10) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5006, 5000);
SELECT balance FROM credits.open_account(5007, 1000);
SELECT credits.grant_credits(5007, 200, priority => 10) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5008, 1000);
CALL regress_tc_clear();
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_tc_small_debits CHECK (delta > -1000) NOT VALID;
ALTER TABLE credits.grants ADD CONSTRAINT regress_tc_reserve
	CHECK (account_id <> 5007 OR remaining >= 100);
ALTER TABLE credits.accounts ADD CONSTRAINT regress_tc_floor
	CHECK (account_id <> 5008 OR balance >= 50);
\set VERBOSITY terse
SELECT * FROM regress_tc_totals(5006);
-- the ledger's CHECK: single row (one debit row of 1,000)
INSERT INTO credits.send_batches (account_id, messages) VALUES (5006, 1000);
\echo :LAST_ERROR_SQLSTATE
-- multi-row: the second row fails
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5006, m FROM (VALUES (1, 10), (2, 2000), (3, 10)) v(o, m) ORDER BY o;
\echo :LAST_ERROR_SQLSTATE
-- COPY
COPY credits.send_batches (account_id, messages) FROM stdin;
5006	1
5006	1500
\.
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_tc_totals(5006);
SELECT * FROM regress_tc_totals(5007);
-- the grants' CHECK: single row, 150 of g2's 200
INSERT INTO credits.send_batches (account_id, messages) VALUES (5007, 150);
\echo :LAST_ERROR_SQLSTATE
-- multi-row: 50 and 60 of g2 (its 90 left are written once, at the end)
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5007, m FROM (VALUES (1, 50), (2, 60)) v(o, m) ORDER BY o;
\echo :LAST_ERROR_SQLSTATE
-- COPY
COPY credits.send_batches (account_id, messages) FROM stdin;
5007	1
5007	120
\.
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_tc_totals(5007);
SELECT * FROM regress_tc_totals(5008);
-- the accounts' CHECK: single row, down to 40
INSERT INTO credits.send_batches (account_id, messages) VALUES (5008, 960);
\echo :LAST_ERROR_SQLSTATE
-- multi-row, down to 40 at the end
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5008, m FROM (VALUES (1, 500), (2, 460)) v(o, m) ORDER BY o;
\echo :LAST_ERROR_SQLSTATE
-- COPY
COPY credits.send_batches (account_id, messages) FROM stdin;
5008	900
5008	60
\.
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_tc_totals(5008);
-- A unique index from the days of one debit row per batch (0.1), here
-- for account 5005 only (other batches have been drawn from two grants):
-- a batch drawn from two grants breaks it.  Account 5005 has 1,000 free
-- credits (g1) and a promo of 100 (g2, priority 10).
CREATE UNIQUE INDEX regress_tc_one_debit_per_batch ON credits.ledger_entries (batch_id)
	WHERE kind = 'debit' AND account_id = 5005;
SELECT * FROM regress_tc_totals(5005);
INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 150);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5005, m FROM (VALUES (1, 10), (2, 200)) v(o, m) ORDER BY o;
\echo :LAST_ERROR_SQLSTATE
COPY credits.send_batches (account_id, messages) FROM stdin;
5005	1
5005	150
\.
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_tc_totals(5005);
-- A foreign key from the ledger's kind to a DBA's table of kinds that
-- lacks 'debit'.
CREATE TABLE regress_tc_kinds (kind text PRIMARY KEY);
INSERT INTO regress_tc_kinds VALUES ('open'), ('grant'), ('expire');
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_tc_known_kind
	FOREIGN KEY (kind) REFERENCES regress_tc_kinds NOT VALID;
INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 10);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5005, m FROM (VALUES (1, 10), (2, 20)) v(o, m) ORDER BY o;
\echo :LAST_ERROR_SQLSTATE
COPY credits.send_batches (account_id, messages) FROM stdin;
5005	1
\.
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_tc_totals(5005);
\set VERBOSITY default
INSERT INTO regress_tc_kinds VALUES ('debit');
-- A DBA's BEFORE ROW trigger that skips the write (returns NULL) of a
-- ledger row, a grant's update or an account's update makes the debit
-- fail with MC028, and nothing is written.  regress_tc_try() runs a
-- statement, undoes it, and says whether it went through or was refused
-- (with the SQLSTATE).  Without those triggers, both statements go through.
CREATE FUNCTION regress_tc_try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RAISE SQLSTATE 'RTC01';
EXCEPTION
	WHEN SQLSTATE 'RTC01' THEN
		RETURN 'goes through';
	WHEN OTHERS THEN
		RETURN 'refused: ' || SQLSTATE;
END
$$;
CREATE FUNCTION regress_tc_skip() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RETURN CASE WHEN NEW.account_id = 5005 THEN NULL ELSE NEW END;
END
$$;
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 10)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, g FROM generate_series(1, 3) g$$) AS multi;
CREATE TRIGGER regress_tc_skip BEFORE INSERT ON credits.ledger_entries
	FOR EACH ROW EXECUTE FUNCTION regress_tc_skip();
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 10)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, g FROM generate_series(1, 3) g$$) AS multi;
DROP TRIGGER regress_tc_skip ON credits.ledger_entries;
CREATE TRIGGER regress_tc_skip BEFORE UPDATE ON credits.grants
	FOR EACH ROW EXECUTE FUNCTION regress_tc_skip();
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 10)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, g FROM generate_series(1, 3) g$$) AS multi;
DROP TRIGGER regress_tc_skip ON credits.grants;
CREATE TRIGGER regress_tc_skip BEFORE UPDATE ON credits.accounts
	FOR EACH ROW EXECUTE FUNCTION regress_tc_skip();
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 10)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, g FROM generate_series(1, 3) g$$) AS multi;
DROP TRIGGER regress_tc_skip ON credits.accounts;
SELECT * FROM regress_tc_totals(5005);
SELECT (SELECT count(*) FROM regress_tc_ledger_audit) AS ledger_rows_seen,
	   (SELECT count(*) FROM regress_tc_statement_audit) AS statements_seen,
	   (SELECT count(*) FROM regress_tc_update_audit) AS updates_seen;
-- Within the constraints, the same accounts are debited.
INSERT INTO credits.send_batches (account_id, messages)
VALUES (5005, 10), (5006, 99), (5007, 100), (5008, 950);
SELECT account_id, kind, delta, balance_after, g, b FROM regress_tc_ledger_seen();
CALL regress_tc_clear();
SELECT * FROM credits.verify();

--
-- The changes removed again (triggers, columns, constraints dropped; the
-- dropped columns stay in the tables as dropped attributes): debits work
-- as before, and debits the constraints refused go through; no audit row
-- is written any more.
--
DROP TRIGGER regress_tc_audit ON credits.ledger_entries;
DROP TRIGGER regress_tc_audit_statement ON credits.ledger_entries;
DROP TRIGGER regress_tc_fill ON credits.ledger_entries;
DROP TRIGGER regress_tc_audit ON credits.accounts;
DROP TRIGGER regress_tc_touch ON credits.accounts;
DROP TRIGGER regress_tc_audit ON credits.grants;
DROP INDEX credits.regress_tc_one_debit_per_batch;
ALTER TABLE credits.ledger_entries
	DROP CONSTRAINT regress_tc_small_debits, DROP CONSTRAINT regress_tc_known_kind,
	DROP COLUMN regress_seq, DROP COLUMN regress_stamped, DROP COLUMN regress_origin,
	DROP COLUMN regress_size, DROP COLUMN regress_filled;
ALTER TABLE credits.grants
	DROP CONSTRAINT regress_tc_reserve, DROP COLUMN regress_tag, DROP COLUMN regress_used;
ALTER TABLE credits.accounts
	DROP CONSTRAINT regress_tc_floor,
	DROP COLUMN regress_tier, DROP COLUMN regress_total, DROP COLUMN regress_touched_at;
DROP TABLE regress_tc_kinds;
INSERT INTO credits.send_batches (account_id, messages) VALUES (5006, 1000);
INSERT INTO credits.send_batches (account_id, messages)
SELECT a, m FROM (VALUES (1, 5007, 50), (2, 5006, 2000), (3, 5007, 60), (4, 5008, 10),
						 (5, 5005, 150)) v(o, a, m)
 ORDER BY o;
COPY credits.send_batches (account_id, messages) FROM stdin;
5008	20
5006	1000
5007	1
5005	1
\.
SELECT * FROM regress_tc_ledger(5005);
SELECT * FROM regress_tc_ledger(5006);
SELECT * FROM regress_tc_ledger(5007);
SELECT * FROM regress_tc_ledger(5008);
SELECT * FROM regress_tc_grants(5007);
SELECT (SELECT count(*) FROM regress_tc_ledger_audit) AS ledger_rows_seen,
	   (SELECT count(*) FROM regress_tc_statement_audit) AS statements_seen,
	   (SELECT count(*) FROM regress_tc_update_audit) AS updates_seen;
SELECT * FROM credits.verify();

--
-- Times and order.  In one transaction, a while after it began: a
-- single-row INSERT that first lapses a grant (the extension's clock moved
-- on two hours), a multi-row INSERT ... SELECT that draws a grant to
-- exactly 0, and a COPY.  Every row's created_at is now(), the start of the
-- transaction (not of its statement); entry_ids rise in the order the rows
-- were inserted (batch by batch, grant by grant as drawn); balance_after
-- continues the running sum; the lapsed and the emptied grant are closed
-- at now().  A deferred constraint trigger on the ledger fires at commit,
-- once per row.
--
-- Account 5009 (and its twin 5010, debited the same way under REPEATABLE
-- READ below): 500 free credits (g1), a promo of 100 (g2, priority 10) and
-- a promo of 40 lapsing in an hour (g3, priority 5).
SELECT balance FROM credits.open_account(5009, 500);
SELECT credits.grant_credits(5009, 100, priority => 10) IS NOT NULL AS granted;
SELECT credits.grant_credits(5009, 40, expires_at => clock_timestamp() + interval '1 hour',
							 priority => 5) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5010, 500);
SELECT credits.grant_credits(5010, 100, priority => 10) IS NOT NULL AS granted;
SELECT credits.grant_credits(5010, 40, expires_at => clock_timestamp() + interval '1 hour',
							 priority => 5) IS NOT NULL AS granted;
CREATE TABLE regress_tc_deferred_seen (entry_id bigint);
CREATE FUNCTION regress_tc_deferred() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.regress_tc_deferred_seen VALUES (NEW.entry_id);
	RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER regress_tc_deferred AFTER INSERT ON credits.ledger_entries
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION regress_tc_deferred();
BEGIN;
SELECT pg_sleep(0.1);
SET LOCAL credits.clock_offset = '2h';
INSERT INTO credits.send_batches (account_id, messages) VALUES (5009, 60);
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5009, m FROM (VALUES (1, 10), (2, 30), (3, 5)) v(o, m) ORDER BY o;
COPY credits.send_batches (account_id, messages) FROM stdin;
5009	7
5009	1
\.
SELECT kind, delta, balance_after, regress_tc_g(grant_id) AS g, regress_tc_b(batch_id) AS b,
	   created_at = now() AS created_now, created_at < statement_timestamp() AS before_statement,
	   running_sum
  FROM (SELECT *, balance_after = sum(delta) OVER (ORDER BY entry_id) AS running_sum
		  FROM credits.ledger WHERE account_id = 5009) l
 WHERE kind IN ('debit', 'expire')
 ORDER BY entry_id;
-- The batches in batch_id order are the ledger's batches in entry_id order.
SELECT bool_and(l.batch_rank = b.batch_rank) AS same_order
  FROM (SELECT batch_id, dense_rank() OVER (ORDER BY min(entry_id)) AS batch_rank
		  FROM credits.ledger WHERE account_id = 5009 AND kind = 'debit' GROUP BY batch_id) l
  JOIN (SELECT batch_id, rank() OVER (ORDER BY batch_id) AS batch_rank
		  FROM credits.send_batches WHERE account_id = 5009) b USING (batch_id);
SELECT regress_tc_g(grant_id) AS g, remaining, closed_at IS NOT NULL AS closed,
	   closed_at = now() AS closed_now
  FROM credits.grants WHERE account_id = 5009 ORDER BY grant_id;
SELECT count(*) AS deferred_seen_before_commit FROM regress_tc_deferred_seen;
COMMIT;
SELECT count(*) AS deferred_seen, count(*) = count(DISTINCT entry_id) AS once_each,
	   count(*) = (SELECT count(*) FROM credits.ledger WHERE account_id = 5009 AND kind IN ('debit', 'expire'))
	   AS every_row
  FROM regress_tc_deferred_seen;
DROP TRIGGER regress_tc_deferred ON credits.ledger_entries;

-- REPEATABLE READ (its snapshot taken before the debits) debits account
-- 5010 exactly as 5009 was debited: the same batches, ledger rows and
-- grants; and the transaction reads its own writes.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT balance FROM credits.accounts WHERE account_id = 5010;
SET LOCAL credits.clock_offset = '2h';
INSERT INTO credits.send_batches (account_id, messages) VALUES (5010, 60);
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5010, m FROM (VALUES (1, 10), (2, 30), (3, 5)) v(o, m) ORDER BY o;
COPY credits.send_batches (account_id, messages) FROM stdin;
5010	7
5010	1
\.
SELECT balance FROM credits.accounts WHERE account_id = 5010;
SELECT count(*) AS rows, bool_and(created_at = now()) AS created_now
  FROM credits.ledger WHERE account_id = 5010 AND kind IN ('debit', 'expire');
SELECT regress_tc_g(grant_id) AS g, remaining, closed_at = now() AS closed_now
  FROM credits.grants WHERE account_id = 5010 ORDER BY grant_id;
COMMIT;
SELECT count(*) AS ledger_rows,
	   count(*) FILTER (WHERE r IS DISTINCT FROM c) AS differ
  FROM (SELECT row_number() OVER () AS k, x AS r FROM regress_tc_ledger(5010) x) rr
  FULL JOIN (SELECT row_number() OVER () AS k, x AS c FROM regress_tc_ledger(5009) x) cc USING (k);
SELECT count(*) AS grants, count(*) FILTER (WHERE r IS DISTINCT FROM c) AS differ
  FROM (SELECT row_number() OVER () AS k, x AS r FROM regress_tc_grants(5010) x) rr
  FULL JOIN (SELECT row_number() OVER () AS k, x AS c FROM regress_tc_grants(5009) x) cc USING (k);
SELECT a.balance = b.balance AS same_balance
  FROM credits.accounts a, credits.accounts b WHERE a.account_id = 5009 AND b.account_id = 5010;
SELECT * FROM regress_tc_ledger(5010);

-- Every index of the three tables still has every row.
SELECT * FROM regress_tc_check_indexes();

-- Clean up what this suite made outside the extension.
REVOKE ALL ON credits.send_batches FROM regress_tc_app;
REVOKE ALL ON SCHEMA credits FROM regress_tc_app;
DROP ROLE regress_tc_app;
DROP TABLE regress_tc_deferred_seen, regress_tc_ledger_audit, regress_tc_statement_audit,
		   regress_tc_update_audit;
DROP SEQUENCE regress_tc_seq;
DROP PROCEDURE regress_tc_clear();
DROP FUNCTION regress_tc_check_indexes();
DROP EXTENSION amcheck;
DROP FUNCTION regress_tc_try(text), regress_tc_skip();
DROP FUNCTION regress_tc_deferred(), regress_tc_audit_ledger(), regress_tc_audit_ledger_statement(),
			  regress_tc_audit_update(), regress_tc_fill(), regress_tc_touch(),
			  regress_tc_ledger_seen(), regress_tc_updates_seen();
SELECT * FROM credits.verify();

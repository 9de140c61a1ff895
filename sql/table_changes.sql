--
-- table_changes: what a debit's writes (the batch row's debit entry, and
-- at statement end the account row, the grants' remaining and closed_at,
-- the further debit and the expire rows of credits.ledger_entries) look
-- like to a DBA who has changed the extension's tables, so that a rewrite
-- of those writes keeps them.
--
-- From 0.3.0 a batch's (first) debit entry is not a row of a ledger table:
-- its send_batches row carries it (entry_id, entry_delta,
-- entry_balance_after, entry_grant_id, entry_recharge_id), and
-- credits.ledger is a view over send_batches and credits.ledger_entries.
-- credits.ledger_entries is written only for a batch drawn from several
-- grants (its further debit rows), for what a batch owes beyond its grants,
-- and for grants that lapse inside a debit (expire rows), so the workload
-- below is made of such debits: every section writes ledger_entries rows
-- (and says how many), and its triggers, columns and constraints are on
-- both tables.
--   - triggers added to credits.ledger_entries and credits.send_batches
--     (AFTER ROW, AFTER STATEMENT with a transition table, BEFORE ROW,
--     deferred constraint trigger), credits.accounts and credits.grants
--     (AFTER UPDATE ROW, UPDATE OF, BEFORE UPDATE ROW) fire, see the rows
--     as stored (a batch's entry columns as credits.ledger then shows
--     them), and the ones on the extension's writes run as the tables'
--     owner (a trigger on send_batches runs as whoever inserts the batch,
--     as for any INSERT);
--   - columns added with defaults (a sequence, a volatile expression) and
--     generated columns get their values on debit rows (on send_batches, a
--     generated column over the batch's entry), are recomputed or left
--     alone by the debit's updates, and indexes on them are kept;
--   - CHECK constraints (on ledger_entries and on the batch's entry), a
--     unique index and a foreign key a DBA added are enforced, and a
--     statement they refuse writes nothing; so does a BEFORE trigger that
--     skips a write (a ledger row, a grant's or an account's update, or the
--     batch row after it was debited);
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
-- entry_ids are only compared with each other.  Grants with a lower
-- priority are drawn first.  The suite needs nothing
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
-- The DBA's audit: AFTER INSERT ROW triggers on credits.ledger_entries and
-- on credits.send_batches copying NEW, the latter the batch's debit entry
-- (and which role they run as); AFTER INSERT STATEMENT triggers on both
-- with a transition table; AFTER UPDATE ROW triggers on credits.accounts
-- and credits.grants recording OLD and NEW balance / remaining and
-- closed_at (the one on grants is an UPDATE OF remaining trigger: it fires
-- when an UPDATE sets remaining, so a debit's update must count as one
-- that does).  They name their tables with the schema: the extension's
-- functions, which write the same tables, run with search_path =
-- pg_catalog, pg_temp.
--
CREATE TABLE regress_tc_ledger_audit (
	n bigserial, tbl text, entry_id bigint, account_id bigint, delta bigint, balance_after bigint,
	kind text, batch_id bigint, grant_id bigint, recharge_id bigint, note text,
	created_at timestamptz, created_now boolean, run_as text);
CREATE TABLE regress_tc_statement_audit (n bigserial, tbl text, rows bigint, delta numeric);
CREATE TABLE regress_tc_update_audit (
	n bigserial, tbl text, account_id bigint, id bigint, old_value bigint, new_value bigint,
	old_closed boolean, new_closed boolean, closed_now boolean);
-- run_as: 'owner' when the trigger runs as the table's owner, else the role.
CREATE FUNCTION regress_tc_audit_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	run_as text := CASE WHEN current_user = (SELECT tableowner FROM pg_tables
											  WHERE schemaname = 'credits' AND tablename = TG_TABLE_NAME)
						THEN 'owner' ELSE current_user::text END;
BEGIN
	IF TG_TABLE_NAME = 'send_batches' THEN
		INSERT INTO public.regress_tc_ledger_audit (tbl, entry_id, account_id, delta, balance_after,
											 kind, batch_id, grant_id, recharge_id, note, created_at,
											 created_now, run_as)
		VALUES (TG_TABLE_NAME, NEW.entry_id, NEW.account_id, NEW.entry_delta, NEW.entry_balance_after,
				'debit', NEW.batch_id, NEW.entry_grant_id, NEW.entry_recharge_id, NULL, NEW.created_at,
				NEW.created_at = now(), run_as);
	ELSE
		INSERT INTO public.regress_tc_ledger_audit (tbl, entry_id, account_id, delta, balance_after,
											 kind, batch_id, grant_id, recharge_id, note, created_at,
											 created_now, run_as)
		VALUES (TG_TABLE_NAME, NEW.entry_id, NEW.account_id, NEW.delta, NEW.balance_after, NEW.kind,
				NEW.batch_id, NEW.grant_id, NEW.recharge_id, NEW.note, NEW.created_at,
				NEW.created_at = now(), run_as);
	END IF;
	RETURN NULL;
END
$$;
CREATE FUNCTION regress_tc_audit_ledger_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_TABLE_NAME = 'send_batches' THEN
		INSERT INTO public.regress_tc_statement_audit (tbl, rows, delta)
		SELECT TG_TABLE_NAME, count(*), sum(entry_delta) FROM new_rows;
	ELSE
		INSERT INTO public.regress_tc_statement_audit (tbl, rows, delta)
		SELECT TG_TABLE_NAME, count(*), sum(delta) FROM new_rows;
	END IF;
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
CREATE TRIGGER regress_tc_audit AFTER INSERT ON credits.send_batches
	FOR EACH ROW EXECUTE FUNCTION regress_tc_audit_ledger();
CREATE TRIGGER regress_tc_audit_statement AFTER INSERT ON credits.send_batches
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION regress_tc_audit_ledger_statement();
CREATE TRIGGER regress_tc_audit AFTER UPDATE ON credits.accounts
	FOR EACH ROW EXECUTE FUNCTION regress_tc_audit_update();
CREATE TRIGGER regress_tc_audit AFTER UPDATE OF remaining ON credits.grants
	FOR EACH ROW EXECUTE FUNCTION regress_tc_audit_update();
-- What the ledger triggers saw, in the order they fired (tbl: the table;
-- "batches" for a batch's entry, seen by the trigger on send_batches,
-- "entries" for a row of ledger_entries): each entry as credits.ledger
-- shows it after the statement (same_as_stored compares every column it
-- copied), entry_ids rising in each table's firing order (in_order; NULL
-- for a table's first), created at now() of the inserting transaction, the
-- role the trigger ran as.  Grants are closed at now() of that transaction
-- (closed_now).  Within a statement the batches' row triggers fire first,
-- then the statement's end writes ledger_entries: the ledger's entry_id
-- order interleaves the two.
CREATE FUNCTION regress_tc_ledger_seen()
RETURNS TABLE (tbl text, account_id bigint, kind text, delta bigint, balance_after bigint, g text,
			   b text, has_recharge boolean, created_now boolean, run_as text, in_order boolean,
			   same_as_stored boolean)
LANGUAGE sql AS $$
	SELECT CASE a.tbl WHEN 'send_batches' THEN 'batches' ELSE 'entries' END,
		   a.account_id, a.kind, a.delta, a.balance_after, regress_tc_g(a.grant_id),
		   regress_tc_b(a.batch_id), a.recharge_id IS NOT NULL, a.created_now, a.run_as,
		   a.entry_id > lag(a.entry_id) OVER (PARTITION BY a.tbl ORDER BY a.n),
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

-- A single-row INSERT drawn from one grant: its debit entry is the batch
-- row's, seen by the triggers on send_batches (one row, one statement);
-- nothing is written to ledger_entries, whose triggers do not fire; the
-- account row and the grant row updated once each.
INSERT INTO credits.send_batches (account_id, messages) VALUES (5001, 30) RETURNING cost, status;
SELECT * FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen();
CALL regress_tc_clear();

-- A single-row INSERT drawn from two grants: g2's last 70 (it is closed, at
-- now()), then 30 of g1; two debit rows, in that order: the first the
-- batch's, the second a row of ledger_entries.
INSERT INTO credits.send_batches (account_id, messages) VALUES (5001, 100) RETURNING cost, status;
SELECT * FROM regress_tc_ledger_seen();
SELECT tbl, rows, delta FROM regress_tc_statement_audit ORDER BY n;
SELECT * FROM regress_tc_updates_seen();
CALL regress_tc_clear();

-- A multi-row INSERT ... SELECT over three accounts, in row order: 5002's
-- promo (g2) is spent and closed by its second row, which goes on into g1;
-- 5003's batch spends its 20 and owes 30 (a debit row without a grant,
-- naming the recharge it opened, in ledger_entries).  Every row fires the
-- row triggers, in insertion order; one statement on each table; each
-- account and grant updated once, from its value before the statement to
-- its value after it.
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
-- moved on two hours): the expire row of g3 (in ledger_entries) comes
-- first in entry_id order, then the debits (the batches').
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
-- CONFLICT DO NOTHING) writes no ledger row and fires no row trigger (the
-- statement trigger on send_batches fires, with no row, as for any
-- INSERT).  (5001 gets a promo of 2, g3, for the next check.)
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (5001, 2, 'tc-1');
SELECT credits.grant_credits(5001, 2, priority => 10) IS NOT NULL AS granted;
CALL regress_tc_clear();
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (5001, 2, 'tc-1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT (SELECT count(*) FROM regress_tc_ledger_audit) AS ledger_rows_seen,
	   (SELECT string_agg(tbl || ': ' || rows || ' rows', ', ' ORDER BY n)
		  FROM regress_tc_statement_audit) AS statements_seen,
	   (SELECT count(*) FROM regress_tc_update_audit) AS updates_seen;
CALL regress_tc_clear();

-- The DBA's triggers on the extension's writes run as the tables' owner,
-- whoever inserts the batch: the first batch draws g3's 2 and 1 of g1,
-- written to ledger_entries by the extension.  The triggers on
-- send_batches run as the application's role, which inserts the row (as
-- for any INSERT): it may write the audit tables, nothing else.
CREATE ROLE regress_tc_app;
GRANT USAGE ON SCHEMA credits TO regress_tc_app;
GRANT INSERT (account_id, messages, channel, idempotency_key) ON credits.send_batches TO regress_tc_app;
GRANT INSERT ON regress_tc_ledger_audit, regress_tc_statement_audit TO regress_tc_app;
GRANT USAGE ON SEQUENCE regress_tc_ledger_audit_n_seq, regress_tc_statement_audit_n_seq TO regress_tc_app;
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
SELECT * FROM regress_tc_grants(5001);
SELECT * FROM regress_tc_grants(5002);
SELECT * FROM credits.verify();

--
-- Columns a DBA added: on credits.ledger_entries, one with a sequence
-- default, one with a volatile default, one with a constant default, a
-- generated column, and one a BEFORE INSERT ROW trigger fills in; on
-- credits.send_batches, a generated column over the batch's entry and one
-- a BEFORE INSERT ROW trigger (firing after the extension's, in name order)
-- fills in from the entry; on credits.grants and credits.accounts, a
-- column with a default (set to something else for these accounts), a
-- generated column over the columns a debit writes, and on accounts a
-- column a BEFORE UPDATE ROW trigger stamps.  Debit rows get every
-- default; the debit's updates recompute the generated columns, fire the
-- BEFORE UPDATE trigger, and leave the other added columns as they were.
-- Indexes the DBA made on those columns are kept up to date (amcheck:
-- every row is in every index of the four tables).  (The audit triggers
-- above stay.)
--
CREATE EXTENSION amcheck;
-- Each btree index of the ledger's table, the batches, grants and
-- accounts, checked: it is well formed and has an entry for every row of
-- its table.
CREATE FUNCTION regress_tc_check_indexes()
RETURNS TABLE (tbl name, index_name name)
LANGUAGE sql AS $$
	SELECT t.relname, c.relname
	  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
	 CROSS JOIN LATERAL bt_index_check(i.indexrelid, true)
	 WHERE i.indrelid IN ('credits.ledger_entries'::regclass, 'credits.send_batches'::regclass,
						  'credits.grants'::regclass, 'credits.accounts'::regclass)
	 ORDER BY 1, 2
$$;
CREATE SEQUENCE regress_tc_seq;
ALTER TABLE credits.ledger_entries
	ADD COLUMN regress_seq bigint DEFAULT nextval('regress_tc_seq'),
	ADD COLUMN regress_stamped boolean DEFAULT (clock_timestamp() IS NOT NULL),
	ADD COLUMN regress_origin text DEFAULT 'credits',
	ADD COLUMN regress_size bigint GENERATED ALWAYS AS (abs(delta)) STORED,
	ADD COLUMN regress_filled text;
ALTER TABLE credits.send_batches
	ADD COLUMN regress_size bigint GENERATED ALWAYS AS (abs(entry_delta)) STORED,
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
	IF TG_TABLE_NAME = 'send_batches' THEN
		NEW.regress_filled := 'filled for entry ' || NEW.entry_delta || ' of ' || NEW.cost;
	ELSE
		NEW.regress_filled := 'filled for ' || NEW.kind;
	END IF;
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
CREATE TRIGGER regress_tc_fill BEFORE INSERT ON credits.send_batches
	FOR EACH ROW EXECUTE FUNCTION regress_tc_fill();
CREATE TRIGGER regress_tc_touch BEFORE UPDATE ON credits.accounts
	FOR EACH ROW EXECUTE FUNCTION regress_tc_touch();
CREATE INDEX regress_tc_ledger_seq ON credits.ledger_entries (regress_seq);
CREATE INDEX regress_tc_batches_size ON credits.send_batches (account_id, regress_size);
CREATE INDEX regress_tc_grants_used ON credits.grants (account_id, regress_used);
CREATE INDEX regress_tc_accounts_total ON credits.accounts (regress_total);
-- Account 5004: 1,000 free credits (g1), a promo of 40 (g2, priority 10)
-- and one of 40 (g3, priority 5); 5001 a promo of 6 (g4, priority 10).
SELECT balance FROM credits.open_account(5004, 1000);
SELECT credits.grant_credits(5004, 40, priority => 10) IS NOT NULL AS granted;
SELECT credits.grant_credits(5004, 40, priority => 5) IS NOT NULL AS granted;
SELECT credits.grant_credits(5001, 6, priority => 10) IS NOT NULL AS granted;
UPDATE credits.grants SET regress_tag = 'kept' WHERE account_id = 5004;
UPDATE credits.accounts SET regress_tier = 'gold' WHERE account_id IN (5001, 5004);
SELECT last_value AS seq_before FROM regress_tc_seq \gset
SELECT balance, regress_tier, regress_total FROM credits.accounts WHERE account_id = 5004;
CALL regress_tc_clear();
BEGIN;
-- single row, from two grants: g3's 40 (the batch's entry), 10 of g2 (a
-- row of ledger_entries)
INSERT INTO credits.send_batches (account_id, messages) VALUES (5004, 50);
-- multi-row INSERT ... SELECT over two accounts, emptying g2 of 5004 in
-- its first row (30 of g2, 5 of g1)
INSERT INTO credits.send_batches (account_id, messages)
SELECT a, m FROM (VALUES (1, 5004, 35), (2, 5001, 5), (3, 5004, 25)) v(o, a, m) ORDER BY o;
-- COPY, emptying 5001's g4 in its second row (1 of g4, 2 of g1)
COPY credits.send_batches (account_id, messages) FROM stdin;
5004	7
5001	3
\.
-- Every row of ledger_entries this transaction wrote: the sequence's
-- values, in insertion order, each above its value before; the other
-- defaults; the generated column; the BEFORE trigger's column.
SELECT account_id, kind, delta, regress_tc_g(grant_id) AS g, regress_tc_b(batch_id) AS b,
	   regress_seq > :seq_before AS seq_new,
	   regress_seq > lag(regress_seq) OVER (ORDER BY entry_id) AS seq_in_order,
	   regress_stamped, regress_origin, regress_size, regress_filled, note IS NULL AS no_note
  FROM credits.ledger_entries WHERE account_id IN (5001, 5004) AND created_at = now()
 ORDER BY entry_id;
-- Every batch of this transaction: the generated column and the BEFORE
-- trigger's column from the batch's entry as stored.
SELECT account_id, regress_tc_b(batch_id) AS b, cost, entry_delta, regress_tc_g(entry_grant_id) AS g,
	   regress_size, regress_size = abs(entry_delta) AS size_of_entry, regress_filled
  FROM credits.send_batches WHERE account_id IN (5001, 5004) AND created_at = now()
 ORDER BY batch_id;
SELECT regress_tc_g(grant_id) AS g, remaining, regress_used, regress_tag, closed_at = now() AS closed_now
  FROM credits.grants WHERE account_id = 5004 ORDER BY grant_id;
SELECT account_id, balance, regress_total, regress_tier, regress_touched_at = now() AS touched_now
  FROM credits.accounts WHERE account_id IN (5001, 5004) ORDER BY account_id;
COMMIT;
-- The audit triggers saw the rows as stored: with the columns added, too.
SELECT tbl, count(*) AS rows_seen, bool_and(same_as_stored) AS same_as_stored,
	   bool_and(in_order) AS in_order, string_agg(DISTINCT run_as, ',') AS run_as
  FROM regress_tc_ledger_seen() GROUP BY tbl ORDER BY tbl;
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
-- as before).  No debit entry of 1,000 credits or more: on
-- credits.ledger_entries (checked at statement end: account 5006 has 5,000
-- free credits, g1, and a promo of 100, g2, priority 10, drawn first, so
-- that its large debits are drawn from two grants and the second row is in
-- ledger_entries) and on the batch's entry in credits.send_batches
-- (checked as the batch row is stored: account 5011, 5,000 free credits).
-- (NOT VALID: the suites before this one are not checked.)  On
-- credits.grants, a reserve of 100 credits in every grant of account 5007;
-- on credits.accounts, a floor of 50 under account 5008's balance.  The
-- same for a unique index a DBA added (23505) and a foreign key (23503).
--
SELECT balance FROM credits.open_account(5005, 1000);
SELECT credits.grant_credits(5005, 100, priority => 10) IS NOT NULL AS granted;
SELECT credits.grant_credits(5005, 50, priority => 5) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5006, 5000);
SELECT credits.grant_credits(5006, 100, priority => 10) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5007, 1000);
SELECT credits.grant_credits(5007, 200, priority => 10) IS NOT NULL AS granted;
SELECT balance FROM credits.open_account(5008, 1000);
SELECT balance FROM credits.open_account(5011, 5000);
CALL regress_tc_clear();
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_tc_small_debits CHECK (delta > -1000) NOT VALID;
ALTER TABLE credits.send_batches ADD CONSTRAINT regress_tc_small_debits
	CHECK (entry_delta > -1000) NOT VALID;
ALTER TABLE credits.grants ADD CONSTRAINT regress_tc_reserve
	CHECK (account_id <> 5007 OR remaining >= 100);
ALTER TABLE credits.accounts ADD CONSTRAINT regress_tc_floor
	CHECK (account_id <> 5008 OR balance >= 50);
\set VERBOSITY terse
SELECT * FROM regress_tc_totals(5006);
-- the ledger_entries CHECK: single row (g2's 100, then 1,000 of g1)
INSERT INTO credits.send_batches (account_id, messages) VALUES (5006, 1100);
\echo :LAST_ERROR_SQLSTATE
-- multi-row: the second row (g2's last 90, then 1,910 of g1) fails
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
SELECT * FROM regress_tc_totals(5011);
-- the send_batches CHECK on the batch's entry: single row (one entry of
-- 1,000)
INSERT INTO credits.send_batches (account_id, messages) VALUES (5011, 1000);
\echo :LAST_ERROR_SQLSTATE
-- multi-row: the second row fails
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5011, m FROM (VALUES (1, 10), (2, 2000), (3, 10)) v(o, m) ORDER BY o;
\echo :LAST_ERROR_SQLSTATE
-- COPY
COPY credits.send_batches (account_id, messages) FROM stdin;
5011	1
5011	1500
\.
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_tc_totals(5011);
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
-- A unique index a DBA made when a batch had at most one further debit
-- row (drawn from at most two grants), here for account 5005 only: a
-- batch drawn from three grants breaks it.  Account 5005 has 1,000 free
-- credits (g1), a promo of 100 (g2, priority 10) and one of 50 (g3,
-- priority 5).
CREATE UNIQUE INDEX regress_tc_one_debit_per_batch ON credits.ledger_entries (batch_id)
	WHERE kind = 'debit' AND account_id = 5005;
SELECT * FROM regress_tc_totals(5005);
-- g3's 50, g2's 100, 50 of g1
INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 200);
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
-- A foreign key from the ledger_entries' kind to a DBA's table of kinds
-- that lacks 'debit': a batch drawn from two grants (g3, then g2) is
-- refused.
CREATE TABLE regress_tc_kinds (kind text PRIMARY KEY);
INSERT INTO regress_tc_kinds VALUES ('open'), ('grant'), ('expire');
ALTER TABLE credits.ledger_entries ADD CONSTRAINT regress_tc_known_kind
	FOREIGN KEY (kind) REFERENCES regress_tc_kinds NOT VALID;
INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 60);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5005, m FROM (VALUES (1, 10), (2, 50)) v(o, m) ORDER BY o;
\echo :LAST_ERROR_SQLSTATE
COPY credits.send_batches (account_id, messages) FROM stdin;
5005	51
\.
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_tc_totals(5005);
\set VERBOSITY default
INSERT INTO regress_tc_kinds VALUES ('debit');
-- A DBA's BEFORE ROW trigger that skips the write (returns NULL) of a
-- ledger_entries row, a grant's update or an account's update makes the
-- debit fail with MC028, and nothing is written; one on send_batches that
-- fires after the extension's debit trigger (triggers fire in name order)
-- and skips the batch row, which carries its debit entry, makes it fail
-- too (MC022: debited but not stored).  regress_tc_try() runs a statement, undoes it, and says whether it
-- went through or was refused (with the SQLSTATE).  Without those
-- triggers, both statements go through; each writes a row of
-- ledger_entries (single: g3's 50, then 10 of g2; multi: 30 of g3, then
-- 20 of g3 and 10 of g2, then 30 of g2), and says how many.
CREATE FUNCTION regress_tc_try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	entries bigint;
BEGIN
	EXECUTE statement;
	SELECT count(*) INTO entries FROM credits.ledger_entries
	 WHERE account_id = 5005 AND kind = 'debit' AND created_at = now();
	RAISE SQLSTATE 'RTC01' USING MESSAGE = entries;
EXCEPTION
	WHEN SQLSTATE 'RTC01' THEN
		GET STACKED DIAGNOSTICS statement = MESSAGE_TEXT;
		RETURN 'goes through, ' || statement || ' in ledger_entries';
	WHEN OTHERS THEN
		RETURN 'refused: ' || SQLSTATE;
END
$$;
CREATE FUNCTION regress_tc_skip() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RETURN CASE WHEN NEW.account_id = 5005 THEN NULL ELSE NEW END;
END
$$;
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 60)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, 30 FROM generate_series(1, 3) g$$) AS multi;
CREATE TRIGGER regress_tc_skip BEFORE INSERT ON credits.ledger_entries
	FOR EACH ROW EXECUTE FUNCTION regress_tc_skip();
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 60)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, 30 FROM generate_series(1, 3) g$$) AS multi;
DROP TRIGGER regress_tc_skip ON credits.ledger_entries;
CREATE TRIGGER regress_tc_skip BEFORE UPDATE ON credits.grants
	FOR EACH ROW EXECUTE FUNCTION regress_tc_skip();
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 60)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, 30 FROM generate_series(1, 3) g$$) AS multi;
DROP TRIGGER regress_tc_skip ON credits.grants;
CREATE TRIGGER regress_tc_skip BEFORE UPDATE ON credits.accounts
	FOR EACH ROW EXECUTE FUNCTION regress_tc_skip();
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 60)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, 30 FROM generate_series(1, 3) g$$) AS multi;
DROP TRIGGER regress_tc_skip ON credits.accounts;
CREATE TRIGGER regress_tc_skip BEFORE INSERT ON credits.send_batches
	FOR EACH ROW EXECUTE FUNCTION regress_tc_skip();
SELECT regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages) VALUES (5005, 60)$$) AS single,
	   regress_tc_try($$INSERT INTO credits.send_batches (account_id, messages)
						SELECT 5005, 30 FROM generate_series(1, 3) g$$) AS multi;
DROP TRIGGER regress_tc_skip ON credits.send_batches;
SELECT * FROM regress_tc_totals(5005);
SELECT (SELECT count(*) FROM regress_tc_ledger_audit) AS ledger_rows_seen,
	   (SELECT count(*) FROM regress_tc_statement_audit) AS statements_seen,
	   (SELECT count(*) FROM regress_tc_update_audit) AS updates_seen;
-- Within the constraints, the same accounts are debited (5006: g2's 100,
-- then 899 of g1, in ledger_entries).
INSERT INTO credits.send_batches (account_id, messages)
VALUES (5005, 10), (5006, 999), (5007, 100), (5008, 950), (5011, 999);
SELECT tbl, account_id, kind, delta, balance_after, g, b, same_as_stored FROM regress_tc_ledger_seen();
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
DROP TRIGGER regress_tc_audit ON credits.send_batches;
DROP TRIGGER regress_tc_audit_statement ON credits.send_batches;
DROP TRIGGER regress_tc_fill ON credits.send_batches;
DROP TRIGGER regress_tc_audit ON credits.accounts;
DROP TRIGGER regress_tc_touch ON credits.accounts;
DROP TRIGGER regress_tc_audit ON credits.grants;
DROP INDEX credits.regress_tc_one_debit_per_batch;
ALTER TABLE credits.ledger_entries
	DROP CONSTRAINT regress_tc_small_debits, DROP CONSTRAINT regress_tc_known_kind,
	DROP COLUMN regress_seq, DROP COLUMN regress_stamped, DROP COLUMN regress_origin,
	DROP COLUMN regress_size, DROP COLUMN regress_filled;
ALTER TABLE credits.send_batches
	DROP CONSTRAINT regress_tc_small_debits, DROP COLUMN regress_size, DROP COLUMN regress_filled;
ALTER TABLE credits.grants
	DROP CONSTRAINT regress_tc_reserve, DROP COLUMN regress_tag, DROP COLUMN regress_used;
ALTER TABLE credits.accounts
	DROP CONSTRAINT regress_tc_floor,
	DROP COLUMN regress_tier, DROP COLUMN regress_total, DROP COLUMN regress_touched_at;
DROP TABLE regress_tc_kinds;
-- 5006: a promo of 10 (g3), drawn first, so that its first batch has a row
-- of 1,090 in ledger_entries.
SELECT credits.grant_credits(5006, 10, priority => 10) IS NOT NULL AS granted;
INSERT INTO credits.send_batches (account_id, messages) VALUES (5006, 1100);
INSERT INTO credits.send_batches (account_id, messages)
SELECT a, m FROM (VALUES (1, 5007, 50), (2, 5006, 2000), (3, 5007, 60), (4, 5008, 10),
						 (5, 5005, 200), (6, 5011, 1000)) v(o, a, m)
 ORDER BY o;
COPY credits.send_batches (account_id, messages) FROM stdin;
5008	20
5006	900
5007	1
5005	1
5011	1500
\.
SELECT * FROM regress_tc_ledger(5005);
SELECT * FROM regress_tc_ledger(5006);
SELECT * FROM regress_tc_ledger(5007);
SELECT * FROM regress_tc_ledger(5008);
SELECT * FROM regress_tc_ledger(5011);
SELECT * FROM regress_tc_grants(5005);
SELECT * FROM regress_tc_grants(5007);
SELECT (SELECT count(*) FROM regress_tc_ledger_audit) AS ledger_rows_seen,
	   (SELECT count(*) FROM regress_tc_statement_audit) AS statements_seen,
	   (SELECT count(*) FROM regress_tc_update_audit) AS updates_seen;
SELECT * FROM credits.verify();

--
-- Times and order.  In one transaction, a while after it began: a
-- single-row INSERT that first lapses a grant (the extension's clock moved
-- on two hours; the expire row is in ledger_entries), a multi-row INSERT
-- ... SELECT that draws a grant to exactly 0 in a row drawn from two
-- grants (its second debit row in ledger_entries), and a COPY.  Every
-- row's created_at is now(), the start of the transaction (not of its
-- statement); entry_ids rise in the order the rows were inserted (batch by
-- batch, grant by grant as drawn); balance_after continues the running
-- sum; the lapsed and the emptied grant are closed at now().  Deferred
-- constraint triggers on ledger_entries and on send_batches fire at
-- commit, once per row of each.
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
CREATE TABLE regress_tc_deferred_seen (tbl text, entry_id bigint);
CREATE FUNCTION regress_tc_deferred() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.regress_tc_deferred_seen VALUES (TG_TABLE_NAME, NEW.entry_id);
	RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER regress_tc_deferred AFTER INSERT ON credits.ledger_entries
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION regress_tc_deferred();
CREATE CONSTRAINT TRIGGER regress_tc_deferred AFTER INSERT ON credits.send_batches
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION regress_tc_deferred();
BEGIN;
SELECT pg_sleep(0.1);
SET LOCAL credits.clock_offset = '2h';
INSERT INTO credits.send_batches (account_id, messages) VALUES (5009, 60);
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5009, m FROM (VALUES (1, 10), (2, 35), (3, 5)) v(o, m) ORDER BY o;
COPY credits.send_batches (account_id, messages) FROM stdin;
5009	7
5009	1
\.
SELECT kind, delta, balance_after, regress_tc_g(grant_id) AS g, regress_tc_b(batch_id) AS b,
	   EXISTS (SELECT FROM credits.ledger_entries e WHERE e.entry_id = l.entry_id) AS in_entries,
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
SELECT tbl, count(*) AS deferred_seen, count(*) = count(DISTINCT entry_id) AS once_each
  FROM regress_tc_deferred_seen GROUP BY tbl ORDER BY tbl;
SELECT count(*) AS deferred_seen,
	   count(*) = (SELECT count(*) FROM credits.ledger WHERE account_id = 5009 AND kind IN ('debit', 'expire'))
	   AS every_row,
	   count(*) = count(l.entry_id) AS each_an_entry
  FROM regress_tc_deferred_seen d
  LEFT JOIN credits.ledger l ON l.entry_id = d.entry_id AND l.account_id = 5009
							AND l.kind IN ('debit', 'expire');
DROP TRIGGER regress_tc_deferred ON credits.ledger_entries;
DROP TRIGGER regress_tc_deferred ON credits.send_batches;

-- REPEATABLE READ (its snapshot taken before the debits) debits account
-- 5010 exactly as 5009 was debited: the same batches, ledger rows and
-- grants; and the transaction reads its own writes.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT balance FROM credits.accounts WHERE account_id = 5010;
SET LOCAL credits.clock_offset = '2h';
INSERT INTO credits.send_batches (account_id, messages) VALUES (5010, 60);
INSERT INTO credits.send_batches (account_id, messages)
SELECT 5010, m FROM (VALUES (1, 10), (2, 35), (3, 5)) v(o, m) ORDER BY o;
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
SELECT account_id, count(*) AS in_entries FROM credits.ledger_entries
 WHERE account_id IN (5009, 5010) AND kind IN ('debit', 'expire')
 GROUP BY account_id ORDER BY account_id;

-- Every index of the four tables still has every row.
SELECT * FROM regress_tc_check_indexes();

-- Clean up what this suite made outside the extension.
REVOKE ALL ON credits.send_batches FROM regress_tc_app;
REVOKE ALL ON regress_tc_ledger_audit, regress_tc_statement_audit FROM regress_tc_app;
REVOKE ALL ON SEQUENCE regress_tc_ledger_audit_n_seq, regress_tc_statement_audit_n_seq FROM regress_tc_app;
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

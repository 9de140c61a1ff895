--
-- hardening: policy validation, security_barrier report views, triggers
-- that change a batch after its debit (MC022), verify()'s account check,
-- in_flight overflow, and restored rows (0.1.1)
--
\set SHOW_CONTEXT never
-- Ids in the messages below do not depend on the suites before this one.
SELECT setval('credits.send_batches_batch_id_seq', 1200000, false) AS first_batch_id,
	   setval('credits.recharges_recharge_id_seq', 1200000, false) AS first_recharge_id;
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(1000);

--
-- enable_auto_recharge refuses min_balance > max_credits (MC013).
--
SELECT balance FROM credits.open_account(1200, 100);
SELECT credits.enable_auto_recharge(1200, 101, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM credits.auto_recharge WHERE account_id = 1200;
-- equal is fine
SELECT enabled, min_balance, max_credits FROM credits.enable_auto_recharge(1200, 100, 100);
SELECT updated_at AS p1200 FROM credits.auto_recharge WHERE account_id = 1200 \gset
SELECT credits.enable_auto_recharge(1200, 500, 100, target_balance => 600);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.enable_auto_recharge(1200, 9223372036854775807, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT enabled, min_balance, max_credits, target_balance, updated_at = :'p1200' AS untouched
  FROM credits.auto_recharge WHERE account_id = 1200;
-- also when it is off: it stays off
SELECT enabled FROM credits.disable_auto_recharge(1200);
SELECT credits.enable_auto_recharge(1200, 200, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT enabled, min_balance, max_credits, disabled_reason FROM credits.auto_recharge WHERE account_id = 1200;
SELECT * FROM regress_totals(1200);

--
-- The report views are security_barrier: a reporting role's leaky function
-- in a WHERE clause sees only the rows the view shows.
--
SELECT c.relname, c.reloptions FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'v' ORDER BY 1;
-- Account 1201 sends a batch of 7777 messages that opens no recharge: it is
-- in send_batches, never in recharge_history; then one of 2222 that opens a
-- (threshold) recharge, so recharge_history shows it.  The leaky function
-- reports what it sees of these two sizes.
SELECT balance FROM credits.open_account(1201, 10000);
SELECT enabled FROM credits.enable_auto_recharge(1201, 1000, 5000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1201, 7777), (1201, 2222);
SELECT messages, status, recharge_id IS NOT NULL AS has_recharge
  FROM credits.send_batches WHERE account_id = 1201 ORDER BY batch_id;
SELECT r.credits, b.messages FROM credits.recharges r JOIN credits.send_batches b USING (batch_id)
 WHERE r.account_id = 1201;
CREATE ROLE regress_report;
CREATE SCHEMA regress_leaky AUTHORIZATION regress_report;
GRANT USAGE ON SCHEMA credits TO regress_report;
GRANT SELECT ON credits.recharge_history, credits.account_overview TO regress_report;
SET ROLE regress_report;
CREATE FUNCTION regress_leaky.peek(integer) RETURNS boolean
	LANGUAGE plpgsql STRICT COST 0.0000001 AS
$$ BEGIN
	IF $1 IN (2222, 7777) THEN RAISE NOTICE 'peek saw messages = %', $1; END IF;
	RETURN true;
END $$;
CREATE FUNCTION regress_leaky.peek8(bigint) RETURNS boolean
	LANGUAGE plpgsql STRICT COST 0.0000001 AS
$$ BEGIN RAISE NOTICE 'peek saw account %', $1; RETURN true; END $$;
-- The role cannot read the tables themselves.
SELECT count(*) FROM credits.send_batches;
\echo :LAST_ERROR_SQLSTATE
-- A plan that would scan every batch if the function were pushed down
-- into the view: it sees the one batch the view shows, not the 7777.
SET enable_nestloop = off;
SET enable_mergejoin = off;
SELECT batch_messages, credits FROM credits.recharge_history
 WHERE account_id = 1201 AND regress_leaky.peek(batch_messages);
SELECT account_id, balance FROM credits.account_overview
 WHERE account_id = 1201 AND regress_leaky.peek8(account_id);
RESET enable_nestloop;
RESET enable_mergejoin;
RESET ROLE;
-- The same query against the view with security_barrier off does leak the
-- 7777 (this is what the option prevents): no row is shown, but the
-- function saw it.
BEGIN;
ALTER VIEW credits.recharge_history SET (security_barrier = false);
SET LOCAL ROLE regress_report;
SET LOCAL enable_nestloop = off;
SET LOCAL enable_mergejoin = off;
SELECT count(*) AS rows_shown FROM credits.recharge_history
 WHERE account_id = 1201 AND regress_leaky.peek(batch_messages) AND batch_messages = 7777;
ROLLBACK;
SELECT reloptions FROM pg_class WHERE oid = 'credits.recharge_history'::regclass;
DROP SCHEMA regress_leaky CASCADE;
DROP OWNED BY regress_report;
DROP ROLE regress_report;

--
-- MC022: a user BEFORE ROW trigger that fires after credits_debit (its name
-- sorts later) may not change what was debited, nor drop the row.
--
SELECT balance FROM credits.open_account(1202, 10);
SELECT balance FROM credits.open_account(1203, 1000);
SELECT enabled FROM credits.enable_auto_recharge(1202, 0, 1000);
INSERT INTO credits.prices VALUES ('regress_sms', 3);
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1202, 1, 'first');
CREATE FUNCTION regress_tamper() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.messages <> 42 THEN
		RETURN NEW;			-- only batches of 42 messages are tampered with
	END IF;
	CASE current_setting('regress.tamper')
		WHEN 'account_id' THEN NEW.account_id := 1203;
		WHEN 'messages' THEN NEW.messages := 1;
		WHEN 'channel' THEN NEW.channel := 'regress_sms';
		WHEN 'cost' THEN NEW.cost := 0;
		WHEN 'status' THEN NEW.status := 'ready';
		WHEN 'recharge_id' THEN NEW.recharge_id := NULL;
		WHEN 'idempotency_key' THEN NEW.idempotency_key := NEW.idempotency_key || '-changed';
		WHEN 'duplicate_key' THEN NEW.idempotency_key := 'first';
		WHEN 'duplicate_to_account' THEN NEW.account_id := 1203;
		WHEN 'batch_id' THEN NEW.batch_id := NEW.batch_id + 1000000;
		WHEN 'null' THEN RETURN NULL;
		WHEN 'created_at' THEN NEW.created_at := '2026-01-01 00:00:00+00';
		ELSE NULL;
	END CASE;
	RETURN NEW;
END
$$;
CREATE TRIGGER z_tamper BEFORE INSERT ON credits.send_batches
	FOR EACH ROW EXECUTE FUNCTION regress_tamper();
SELECT tgname FROM pg_trigger
 WHERE tgrelid = 'credits.send_batches'::regclass AND NOT tgisinternal ORDER BY tgname;
SELECT * FROM regress_totals(1202);
SELECT * FROM regress_totals(1203);
SELECT count(*) AS all_batches FROM credits.send_batches \gset
SELECT count(*) AS all_ledger FROM credits.ledger \gset

-- Each change is refused with MC022, the whole statement with it.
SET regress.tamper = 'account_id';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'messages';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'channel';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'null';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'cost';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
-- Account 1202 has 9 credits: a batch of 42 awaits a recharge, so there is a
-- status and a recharge_id to change.
SET regress.tamper = 'status';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'recharge_id';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'batch_id';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42);
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'idempotency_key';
\set VERBOSITY sqlstate
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1202, 42, 'second');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- The trigger makes the row a duplicate that ON CONFLICT then skips: it was
-- debited, so that is refused too.
SET regress.tamper = 'duplicate_key';
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1202, 42, 'second')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
\echo :LAST_ERROR_SQLSTATE
-- The other way round: a row that duplicates a stored key is not debited
-- (ON CONFLICT skips it, or a plain INSERT fails); a later trigger that
-- then makes it a new row (another key, another account) would store it
-- undebited.  Refused too.
\set VERBOSITY sqlstate
SET regress.tamper = 'idempotency_key';
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1202, 42, 'first');
\echo :LAST_ERROR_SQLSTATE
SET regress.tamper = 'duplicate_to_account';
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1202, 42, 'first')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- One tampered row among good ones: the statement is refused as a whole.
SET regress.tamper = 'messages';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 5), (1203, 6), (1202, 42), (1203, 7);
\echo :LAST_ERROR_SQLSTATE
COPY credits.send_batches (account_id, messages) FROM stdin;
1202	5
1202	42
\.
\echo :LAST_ERROR_SQLSTATE
-- Nothing was written.
SELECT * FROM regress_totals(1202);
SELECT * FROM regress_totals(1203);
SELECT count(*) = :all_batches AS same_batches FROM credits.send_batches;
SELECT count(*) = :all_ledger AS same_ledger FROM credits.ledger;
SELECT count(*) AS pending FROM credits.recharges WHERE account_id = 1202 AND status = 'pending';

-- A later trigger that changes nothing debited is allowed.
SET regress.tamper = 'created_at';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1202, 42), (1203, 42)
RETURNING account_id, messages, cost, status, created_at;
SET regress.tamper = 'none';
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1202, 42, 'regress_sms')
RETURNING account_id, messages, cost, status;
SELECT * FROM regress_totals(1202);
SELECT * FROM regress_totals(1203);
RESET regress.tamper;
DROP TRIGGER z_tamper ON credits.send_batches;
DROP FUNCTION regress_tamper();

--
-- verify() checks that a debit is on its batch's account.  The damage is
-- done behind the extension's back (replica mode) and rolled back.
--
SELECT balance FROM credits.open_account(1210, 100);
SELECT balance FROM credits.open_account(1211, 100);
SELECT * FROM credits.verify();
BEGIN;
SET LOCAL session_replication_role = replica;
-- (a batch's own entry names its account; a second debit row, as a debit
-- from two grants writes, could name another)
INSERT INTO credits.send_batches (account_id, messages, cost, status,
								  entry_id, entry_delta, entry_balance_after)
	VALUES (1210, 10, 10, 'ready', nextval('credits.ledger_entry_id_seq'), 0, 100);
INSERT INTO credits.ledger_entries (account_id, delta, balance_after, kind, batch_id)
	SELECT 1211, -10, 90, 'debit', max(batch_id) FROM credits.send_batches WHERE account_id = 1210;
UPDATE credits.accounts SET balance = 90 WHERE account_id = 1211;
-- balances and running sums agree; only the account of the debit is wrong
SELECT account_id, regexp_replace(problem, '(batch|entry) \d+', '\1 #', 'g') AS problem
  FROM credits.verify();
ROLLBACK;
SELECT * FROM credits.verify();

--
-- in_flight overflow: the next recharge that would take in_flight past a
-- bigint is refused with MC012, not by the CHECK constraint or an overflow.
--
INSERT INTO credits.prices VALUES ('regress_huge', 2147483647);
SELECT balance FROM credits.open_account(1220, 0);
SELECT enabled, min_balance, max_credits
  FROM credits.enable_auto_recharge(1220, 9000000000000000000, 9223372036854775807);
-- 1 credit: need 9e18 + 1, one recharge of that, claimed.
INSERT INTO credits.send_batches (account_id, messages) VALUES (1220, 1) RETURNING cost, status;
SELECT credits FROM credits.claim_recharges(1000) WHERE account_id = 1220;
-- 100,000,000 x 2147483647: a second recharge; in_flight just below 2^63.
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1220, 100000000, 'regress_huge')
RETURNING cost, status;
SELECT balance, in_flight, 9223372036854775807 - in_flight AS room FROM credits.accounts WHERE account_id = 1220;
SELECT * FROM regress_totals(1220);
-- 10,000,000 more: the recharge would take in_flight past 2^63 - 1.
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1220, 10000000, 'regress_huge');
\echo :LAST_ERROR_SQLSTATE
-- and so when the pending recharge was claimed (a new one would be opened)
SELECT credits FROM credits.claim_recharges(1000) WHERE account_id = 1220;
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1220, 10000000, 'regress_huge');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(1220);
-- Settle them so the account stays sound (and the recharges do not linger).
SELECT (credits.complete_recharge(r.recharge_id, 'ref-1220-' || r.recharge_id)).status
  FROM credits.recharges r WHERE r.account_id = 1220 ORDER BY r.recharge_id;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 1220;

--
-- A row with cost and status set, inserted by a superuser, is a restored row:
-- stored as is, not debited.  An application role gets MC007.
--
SELECT balance FROM credits.open_account(1230, 100);
SELECT * FROM regress_totals(1230);
BEGIN;
INSERT INTO credits.send_batches (account_id, messages, cost, status,
								  entry_id, entry_delta, entry_balance_after, entry_grant_id)
VALUES (1230, 10, 10, 'ready', 1230001, -10, 90, 77)
RETURNING account_id, messages, cost, status, recharge_id, entry_id, entry_delta,
		  entry_balance_after, entry_grant_id;
INSERT INTO credits.send_batches (account_id, messages, channel, cost, status, recharge_id,
								  entry_id, entry_delta, entry_balance_after, entry_recharge_id)
VALUES (1230, 3, 'regress_sms', 9, 'failed', 12345, 1230002, -9, 81, 12345)
RETURNING account_id, messages, cost, status, recharge_id, entry_id, entry_delta,
		  entry_balance_after, entry_recharge_id;
-- stored as given, no debit: the balance is untouched, and the ledger has
-- the two restored entries (a dump restores the rest of the ledger beside them)
SELECT * FROM regress_totals(1230);
SELECT entry_id, delta, balance_after, kind, grant_id, recharge_id
  FROM credits.ledger WHERE account_id = 1230 AND batch_id IS NOT NULL ORDER BY entry_id;
ROLLBACK;
-- a restored row without a debit entry is a batch debited before 0.3.0
-- (its debit rows are restored into ledger_entries beside it): stored as
-- is too; alone, verify() says what it lacks
BEGIN;
INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1230, 10, 10, 'ready')
RETURNING cost, status, entry_id, entry_delta, entry_balance_after, entry_grant_id, entry_recharge_id;
SELECT * FROM regress_totals(1230);
SELECT regexp_replace(problem, 'batch \d+', 'batch #') AS problem FROM credits.verify() WHERE account_id = 1230;
ROLLBACK;
-- A dump taken before 0.3.0 restores the ledger into credits.ledger, a view
-- now: a role that may restore gets each row stored in ledger_entries as it
-- was (INSERT and COPY); inside a SECURITY DEFINER function it is a write
-- like any other, refused (MC009).
BEGIN;
INSERT INTO credits.ledger (entry_id, account_id, delta, balance_after, kind, note, created_at)
VALUES (1230100, 1230, 0, 100, 'grant', 'restored', '2026-01-01 00:00:00+00');
COPY credits.ledger (entry_id, account_id, delta, balance_after, kind, batch_id, recharge_id, note, created_at, grant_id) FROM stdin;
1230101	1230	0	100	grant	\N	\N	copied	2026-01-02 00:00:00+00	\N
\.
-- also with session_replication_role = replica (a parallel restore): the
-- trigger fires always, or COPY would report rows it never stored
SET LOCAL session_replication_role = replica;
COPY credits.ledger (entry_id, account_id, delta, balance_after, kind, note, created_at) FROM stdin;
1230102	1230	0	100	grant	replica	2026-01-03 00:00:00+00
\.
RESET session_replication_role;
SELECT entry_id, account_id, delta, balance_after, kind, note, created_at AT TIME ZONE 'UTC' AS created_utc
  FROM credits.ledger_entries WHERE entry_id IN (1230100, 1230101, 1230102) ORDER BY entry_id;
CREATE FUNCTION regress_forge_entry() RETURNS void SECURITY DEFINER LANGUAGE sql
	AS $$ INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (1230, 5, 105, 'grant') $$;
SAVEPOINT s;
SELECT regress_forge_entry();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT count(*) AS forged FROM credits.ledger WHERE account_id = 1230 AND delta = 5;
ROLLBACK;
-- cost alone (or status alone) is not a restored row
INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (1230, 10, 10);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages, status) VALUES (1230, 10, 'ready');
\echo :LAST_ERROR_SQLSTATE
CREATE ROLE regress_app2;
GRANT USAGE ON SCHEMA credits TO regress_app2;
GRANT SELECT, INSERT ON credits.send_batches TO regress_app2;
SET ROLE regress_app2;
INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1230, 10, 10, 'ready');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1230, 10, 0, 'ready');
\echo :LAST_ERROR_SQLSTATE
-- the role's ordinary batch is debited as usual
INSERT INTO credits.send_batches (account_id, messages) VALUES (1230, 10) RETURNING cost, status;
RESET ROLE;
SELECT * FROM regress_totals(1230);
DROP OWNED BY regress_app2;
DROP ROLE regress_app2;
SELECT * FROM credits.verify();

--
-- MC027 (0.2.0): an account whose balance is not in its grants -- 0.1 rows
-- restored into 0.2.0 and not carried over yet -- refuses debits, writing
-- nothing; carry_over_balances() puts the balance into a grant (and a debt
-- onto the awaiting batches), after which debits draw from it.  The restored
-- rows are made here the way a data-only restore writes them (triggers off).
--
BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO credits.accounts (account_id, balance) VALUES (1240, 300), (1241, -25);
INSERT INTO credits.ledger_entries (account_id, delta, balance_after, kind)
	VALUES (1240, 300, 300, 'open'), (1241, 0, 0, 'open');
INSERT INTO credits.recharges (recharge_id, account_id, credits, reason, need, max_credits)
	OVERRIDING SYSTEM VALUE VALUES (1240000, 1241, 25, 'shortfall', 25, 1000);
-- (its debit entry as a batch debited before 0.2.0 has it: no grant, no recharge)
INSERT INTO credits.send_batches (account_id, messages, cost, status, recharge_id,
								  entry_id, entry_delta, entry_balance_after)
	VALUES (1241, 25, 25, 'awaiting_credits', 1240000,
			nextval('credits.ledger_entry_id_seq'), -25, -25);
UPDATE credits.accounts SET in_flight = 25 WHERE account_id = 1241;
COMMIT;
SELECT account_id, regexp_replace(problem, '\d{7,}', '#', 'g') AS problem
  FROM credits.verify() WHERE account_id IN (1240, 1241);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1240, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(1240);
SELECT credits.carry_over_balances() AS carried;
SELECT account_id, source, credits, remaining, carried_over, note FROM credits.grants
 WHERE account_id IN (1240, 1241) ORDER BY account_id;
SELECT account_id, cost, owed FROM credits.send_batches WHERE account_id = 1241;
SELECT * FROM credits.verify() WHERE account_id IN (1240, 1241);
SELECT credits.carry_over_balances() AS carried_again;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1240, 10) RETURNING cost, status, owed;
SELECT * FROM regress_totals(1240);
-- 1241's recharge succeeds: its grant pays the carried-over debt first.
SELECT credits FROM credits.claim_recharges(1000) WHERE account_id = 1241;
SELECT status FROM credits.complete_recharge(1240000, 'ref-1241');
SELECT cost, status, owed FROM credits.send_batches WHERE account_id = 1241;
SELECT kind, delta, balance_after, grant_id IS NOT NULL AS has_grant FROM credits.ledger
 WHERE account_id = 1241 ORDER BY entry_id;
SELECT * FROM credits.verify();

--
-- ON CONFLICT DO NOTHING on a unique index of a DBA's (not the idempotency
-- key, which the debit checks first): the row would be debited, then
-- skipped.  With such an index every debited row is read back at the end of
-- the statement, and a skipped one refuses the statement (MC022): nothing
-- is debited.  (A conflict that raises 23505 rolls back anyway.)
--
SELECT balance FROM credits.open_account(1250, 100);
ALTER TABLE credits.send_batches ADD COLUMN regress_ext_ref text;
CREATE UNIQUE INDEX regress_ext_ref ON credits.send_batches (account_id, regress_ext_ref);
INSERT INTO credits.send_batches (account_id, messages, regress_ext_ref) VALUES (1250, 5, 'a');
INSERT INTO credits.send_batches (account_id, messages, regress_ext_ref) VALUES (1250, 5, 'a')
	ON CONFLICT (account_id, regress_ext_ref) DO NOTHING;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages, regress_ext_ref) VALUES (1250, 7, 'b'), (1250, 5, 'a')
	ON CONFLICT DO NOTHING;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages, regress_ext_ref) VALUES (1250, 5, 'a');
\echo :LAST_ERROR_SQLSTATE
-- rows that do not conflict are debited as usual, read back or not
INSERT INTO credits.send_batches (account_id, messages, regress_ext_ref) VALUES (1250, 7, 'b'), (1250, 3, 'c')
	ON CONFLICT DO NOTHING;
SELECT * FROM regress_totals(1250);
DROP INDEX credits.regress_ext_ref;
ALTER TABLE credits.send_batches DROP COLUMN regress_ext_ref;
-- and without the index, nothing is read back: a statement debits as before
INSERT INTO credits.send_batches (account_id, messages) VALUES (1250, 1);
SELECT * FROM regress_totals(1250);
SELECT * FROM credits.verify();

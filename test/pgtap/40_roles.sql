-- test/pgtap/40_roles.sql: the privilege model (issue 4).
--
-- Six roles get exactly the GRANTs of the README's Privileges section
-- (app -> regress_app, payment_worker -> regress_worker, credits_admin ->
-- regress_admin, billing_admin -> regress_billing, credits_cron ->
-- regress_cron, reporting -> regress_reporting), and a seventh the
-- auditor's GRANT the README mentions (regress_auditor).  Nothing is
-- granted to PUBLIC.  Then:
--
--  1. a search_path attack on every SECURITY DEFINER function and on the
--     debit trigger: a schema regress_evil, owned by the application role,
--     holds hostile comparison and arithmetic operators for bigint, integer,
--     numeric, text and timestamptz, and hostile now(), format(),
--     date_trunc(), timezone(), make_interval(), pg_notify(), unnest(),
--     sum(), max(), min(), count(*) and more.  Each one logs its call (and returns the right
--     answer).  Every function is called, with valid arguments so that it
--     does real work, under "search_path = regress_evil, pg_catalog", and
--     nothing may be logged.  0.2.0: the grant and plan functions too, and
--     debits that draw from several grants, expire a grant on the way
--     (credits.clock_offset) and owe, then are repaid.  The hostile INSERTs come before any other
--     INSERT into credits.send_batches in this session, so the trigger
--     prepares its SPI plans under the hostile search_path;
--  2. the application can insert batches (debited as the table owner) and
--     read its rows, and cannot change balances, the ledger, policies,
--     prices or recharges, set what the extension sets, disable or bypass
--     the triggers, or call any function;
--  3. the worker claims, completes and fails and does nothing else; the
--     admin manages prices, accounts, credits and policies and cannot
--     claim; billing grants credits and runs plans; the cron role renews
--     plans and expires grants and recharges; reporting reads its views
--     and tables and calls its two functions; the auditor reads every table
--     and view; none of them writes anything else.
--
-- Accounts 4001-4099 belong to this file.  Run as a superuser; everything
-- (roles included) is rolled back.

BEGIN;
SELECT plan(345);

CREATE ROLE regress_app;
CREATE ROLE regress_worker;
CREATE ROLE regress_admin;
CREATE ROLE regress_billing;
CREATE ROLE regress_cron;
CREATE ROLE regress_reporting;
CREATE ROLE regress_auditor;

--------------------------------------------------------------------------------
-- The README's GRANTs, copied statement by statement
--------------------------------------------------------------------------------

CREATE TEMP TABLE readme_grants (id serial PRIMARY KEY, stmt text NOT NULL);
INSERT INTO readme_grants (stmt) VALUES
-- The application
($$GRANT USAGE ON SCHEMA credits TO regress_app$$),
($$GRANT SELECT, INSERT (account_id, messages, channel, idempotency_key) ON credits.send_batches TO regress_app$$),
($$GRANT SELECT ON credits.accounts, credits.prices, credits.recharges TO regress_app$$),
-- The payment worker
($$GRANT USAGE ON SCHEMA credits TO regress_worker$$),
($$GRANT SELECT ON credits.recharges, credits.recharge_queue TO regress_worker$$),
($$GRANT EXECUTE ON FUNCTION credits.claim_recharges(integer),
                          credits.complete_recharge(bigint, text, uuid),
                          credits.fail_recharge(bigint, text, uuid),
                          credits.release_recharge(bigint, uuid) TO regress_worker$$),
-- The policy admin
($$GRANT USAGE ON SCHEMA credits TO regress_admin$$),
($$GRANT SELECT, INSERT, UPDATE, DELETE ON credits.prices TO regress_admin$$),
($$GRANT EXECUTE ON FUNCTION credits.open_account(bigint, bigint),
                          credits.open_account(bigint, bigint, timestamptz),
                          credits.add_credits(bigint, bigint, text),
                          credits.enable_auto_recharge(bigint, bigint, bigint, bigint, bigint),
                          credits.disable_auto_recharge(bigint),
                          credits.expire_recharges(),
                          credits.verify() TO regress_admin$$),
-- The billing admin
($$GRANT USAGE ON SCHEMA credits TO regress_billing$$),
($$GRANT EXECUTE ON FUNCTION credits.grant_credits(bigint, bigint, text, timestamptz, integer, text),
                          credits.set_plan(bigint, bigint, timestamptz),
                          credits.cancel_plan(bigint) TO regress_billing$$),
-- The scheduled jobs
($$GRANT USAGE ON SCHEMA credits TO regress_cron$$),
($$GRANT EXECUTE ON FUNCTION credits.renew_plans(timestamptz),
                          credits.expire_grants(timestamptz),
                          credits.expire_recharges() TO regress_cron$$),
-- Reporting
($$GRANT USAGE ON SCHEMA credits TO regress_reporting$$),
($$GRANT SELECT ON credits.account_overview, credits.recharge_history,
                credits.usage_daily, credits.usage_monthly, credits.recharge_queue,
                credits.balance_by_grant, credits.grants, credits.plans TO regress_reporting$$),
($$GRANT EXECUTE ON FUNCTION credits.expiring_credits(interval),
                          credits.batch_funding(bigint) TO regress_reporting$$),
-- The auditor (the README's note under Reporting)
($$GRANT USAGE ON SCHEMA credits TO regress_auditor$$),
($$GRANT SELECT ON ALL TABLES IN SCHEMA credits TO regress_auditor$$);

SELECT lives_ok(g.stmt, format('README grant %s runs: %s', g.id, regexp_replace(g.stmt, '\s+', ' ', 'g')))
  FROM readme_grants g
 ORDER BY g.id;

--------------------------------------------------------------------------------
-- What each role holds, in full
--------------------------------------------------------------------------------

-- Every privilege a role has on the schema, its tables, views and sequences
-- (column privileges included), as 'object:PRIVILEGE'.
CREATE FUNCTION pg_temp.privileges_of(p_role name) RETURNS text[] LANGUAGE sql AS $$
	SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM (
		SELECT 'schema:' || p AS x
		  FROM unnest(ARRAY['USAGE', 'CREATE']) AS p
		 WHERE has_schema_privilege(p_role, 'credits', p)
		UNION ALL
		SELECT c.relname || ':' || p
		  FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p
		 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v')
		   AND CASE WHEN p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
					THEN has_any_column_privilege(p_role, c.oid, p)
					ELSE has_table_privilege(p_role, c.oid, p) END
		UNION ALL
		SELECT c.relname || ':' || p
		  FROM pg_class c, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p
		 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'S'
		   AND has_sequence_privilege(p_role, c.oid, p)) AS privs
$$;
CREATE FUNCTION pg_temp.functions_of(p_role name) RETURNS text[] LANGUAGE sql AS $$
	SELECT coalesce(array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text), '{}')
	  FROM pg_proc p
	 WHERE p.pronamespace = 'credits'::regnamespace
	   AND has_function_privilege(p_role, p.oid, 'EXECUTE')
$$;

SELECT is(pg_temp.privileges_of('regress_app'),
	ARRAY['accounts:SELECT', 'prices:SELECT', 'recharges:SELECT', 'schema:USAGE',
		  'send_batches:INSERT', 'send_batches:SELECT'],
	'application: SELECT on accounts, prices, recharges, send_batches; INSERT on send_batches; nothing else');
SELECT is((SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
			WHERE attrelid = 'credits.send_batches'::regclass AND attnum > 0 AND NOT attisdropped
			  AND has_column_privilege('regress_app', attrelid, attnum, 'INSERT')),
	ARRAY['account_id', 'messages', 'channel', 'idempotency_key'],
	'application: INSERT only on account_id, messages, channel, idempotency_key');
SELECT is(pg_temp.privileges_of('regress_worker'),
	ARRAY['recharge_queue:SELECT', 'recharges:SELECT', 'schema:USAGE'],
	'payment worker: SELECT on recharges and recharge_queue only');
SELECT is(pg_temp.privileges_of('regress_admin'),
	ARRAY['prices:DELETE', 'prices:INSERT', 'prices:SELECT', 'prices:UPDATE', 'schema:USAGE'],
	'policy admin: prices only');
SELECT is(pg_temp.privileges_of('regress_billing'), ARRAY['schema:USAGE'],
	'billing admin: no table, view or sequence');
SELECT is(pg_temp.privileges_of('regress_cron'), ARRAY['schema:USAGE'],
	'scheduled jobs: no table, view or sequence');
SELECT is(pg_temp.privileges_of('regress_reporting'),
	ARRAY['account_overview:SELECT', 'balance_by_grant:SELECT', 'grants:SELECT', 'plans:SELECT',
		  'recharge_history:SELECT', 'recharge_queue:SELECT', 'schema:USAGE',
		  'usage_daily:SELECT', 'usage_monthly:SELECT'],
	'reporting: SELECT on the report views, grants and plans, nothing else');
SELECT is(pg_temp.privileges_of('regress_auditor'),
	ARRAY['account_overview:SELECT', 'accounts:SELECT', 'auto_recharge:SELECT', 'balance_by_grant:SELECT',
		  'grants:SELECT', 'ledger:SELECT', 'ledger_entries:SELECT', 'plans:SELECT',
		  'prices:SELECT', 'recharge_history:SELECT', 'recharge_queue:SELECT', 'recharges:SELECT', 'schema:USAGE',
		  'send_batches:SELECT', 'usage_daily:SELECT', 'usage_monthly:SELECT'],
	'auditor: SELECT on every table and view (grants and plans included), nothing else');
SELECT is(pg_temp.privileges_of('public'), '{}'::text[],
	'PUBLIC: nothing on the schema, its tables (grants and plans included), views or sequences');
SELECT is(pg_temp.functions_of('regress_app'), '{}'::text[],
	'application: no credits function');
SELECT is(pg_temp.functions_of('regress_worker'),
	ARRAY['credits.claim_recharges(integer)', 'credits.complete_recharge(bigint,text,uuid)',
		  'credits.fail_recharge(bigint,text,uuid)', 'credits.release_recharge(bigint,uuid)'],
	'payment worker: claim_recharges, and complete_recharge, fail_recharge and release_recharge with a claim token, only');
SELECT is(pg_temp.functions_of('regress_admin'),
	ARRAY['credits.add_credits(bigint,bigint,text)', 'credits.disable_auto_recharge(bigint)',
		  'credits.enable_auto_recharge(bigint,bigint,bigint,bigint,bigint)',
		  'credits.expire_recharges()', 'credits.open_account(bigint,bigint)',
		  'credits.open_account(bigint,bigint,timestamp with time zone)', 'credits.verify()'],
	'policy admin: open_account (both forms), add_credits, enable/disable_auto_recharge, expire_recharges, verify only');
SELECT is(pg_temp.functions_of('regress_billing'),
	ARRAY['credits.cancel_plan(bigint)',
		  'credits.grant_credits(bigint,bigint,text,timestamp with time zone,integer,text)',
		  'credits.set_plan(bigint,bigint,timestamp with time zone)'],
	'billing admin: grant_credits, set_plan, cancel_plan only');
SELECT is(pg_temp.functions_of('regress_cron'),
	ARRAY['credits.expire_grants(timestamp with time zone)', 'credits.expire_recharges()',
		  'credits.renew_plans(timestamp with time zone)'],
	'scheduled jobs: renew_plans, expire_grants, expire_recharges only');
SELECT is(pg_temp.functions_of('regress_reporting'),
	ARRAY['credits.batch_funding(bigint)', 'credits.expiring_credits(interval)'],
	'reporting: expiring_credits and batch_funding only');
SELECT is(pg_temp.functions_of('regress_auditor'), '{}'::text[],
	'auditor: no credits function');
SELECT is(pg_temp.functions_of('public'), '{}'::text[],
	'PUBLIC: no credits function (none of the 0.2.0 ones either)');
SELECT is_empty(
	$$SELECT c.oid::regclass::text FROM pg_class c, aclexplode(c.relacl) x
	   WHERE c.oid IN ('credits.grants'::regclass, 'credits.plans'::regclass,
					   'credits.balance_by_grant'::regclass, 'credits.grants_grant_id_seq'::regclass)
		 AND x.grantee = 0
	  UNION ALL
	  SELECT p.oid::regprocedure::text FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
	   WHERE p.pronamespace = 'credits'::regnamespace AND x.grantee = 0
		 AND p.proname IN ('open_account', 'grant_credits', 'set_plan', 'cancel_plan', 'renew_plans',
						   'expire_grants', 'expiring_credits', 'batch_funding', 'carry_over_balances',
						   '_now', '_add_grant', '_expire_due', '_open_account', '_plan_period',
						   '_renew_plan', '_lock_account', '_flush_debits')$$,
	'no ACL of the 0.2.0 tables, view, sequence and functions names PUBLIC');

--------------------------------------------------------------------------------
-- 1. search_path attack
--------------------------------------------------------------------------------

CREATE SCHEMA regress_evil AUTHORIZATION regress_app;
GRANT USAGE ON SCHEMA regress_evil TO PUBLIC;
SET ROLE regress_app;
CREATE TABLE regress_evil.calls (what text NOT NULL, by_role name NOT NULL DEFAULT current_user);
GRANT SELECT, INSERT, DELETE ON regress_evil.calls TO PUBLIC;
DO $do$
DECLARE
	n integer := 0;
	op text;
	l text;
	r text;
	res text;
	-- hostile functions: name, argument list, result, body computing the right answer
	f record;
BEGIN
	-- Binary operators: comparisons and arithmetic on every pair of integer
	-- types, comparisons and || on text, comparisons and +/- interval on
	-- timestamptz.
	FOR op, l, r, res IN
		SELECT o, a, b,
			   CASE WHEN o IN ('+', '-', '*')
					THEN CASE WHEN 'numeric' IN (a, b) THEN 'numeric'
							  WHEN 'bigint' IN (a, b) THEN 'bigint' ELSE 'integer' END
					ELSE 'boolean' END
		  FROM unnest(ARRAY['=', '<>', '<', '>', '<=', '>=', '+', '-', '*']) AS o,
			   unnest(ARRAY['bigint', 'integer', 'numeric']) AS a,
			   unnest(ARRAY['bigint', 'integer', 'numeric']) AS b
		UNION ALL
		SELECT o, 'text', 'text', 'boolean'
		  FROM unnest(ARRAY['=', '<>', '<', '>', '<=', '>=']) AS o
		UNION ALL
		SELECT '||', 'text', 'text', 'text'
		UNION ALL
		SELECT o, 'timestamptz', 'timestamptz', 'boolean'
		  FROM unnest(ARRAY['=', '<>', '<', '>', '<=', '>=']) AS o
		UNION ALL
		SELECT o, 'timestamptz', 'interval', 'timestamptz'
		  FROM unnest(ARRAY['+', '-']) AS o
	LOOP
		n := n + 1;
		EXECUTE format(
			'CREATE FUNCTION regress_evil.op_%s(a %s, b %s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS '
			'$f$ BEGIN INSERT INTO regress_evil.calls (what) VALUES (%L); RETURN a OPERATOR(pg_catalog.%s) b; END $f$',
			n, l, r, res, format('%s(%s,%s)', op, l, r), op);
		EXECUTE format('CREATE OPERATOR regress_evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = regress_evil.op_%s)',
					   op, l, r, n);
	END LOOP;
	-- Prefix minus.
	FOREACH l IN ARRAY ARRAY['bigint', 'integer', 'numeric'] LOOP
		n := n + 1;
		EXECUTE format(
			'CREATE FUNCTION regress_evil.op_%s(a %s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS '
			'$f$ BEGIN INSERT INTO regress_evil.calls (what) VALUES (%L); RETURN OPERATOR(pg_catalog.-) a; END $f$',
			n, l, l, format('-(%s)', l));
		EXECUTE format('CREATE OPERATOR regress_evil.- (RIGHTARG = %s, FUNCTION = regress_evil.op_%s)', l, n);
	END LOOP;
	-- Functions with pg_catalog's names and signatures (or closer ones than
	-- pg_catalog's variadic "any").
	FOR f IN
		SELECT * FROM (VALUES
			('now', '', 'timestamptz', 'RETURN pg_catalog.now()'),
			('format', 'a text', 'text', 'RETURN pg_catalog.format(a)'),
			('format', 'a text, b text', 'text', 'RETURN pg_catalog.format(a, b)'),
			('format', 'a text, b bigint', 'text', 'RETURN pg_catalog.format(a, b)'),
			('format', 'a text, b bigint, c bigint', 'text', 'RETURN pg_catalog.format(a, b, c)'),
			('format', 'a text, b text, c text', 'text', 'RETURN pg_catalog.format(a, b, c)'),
			('date_trunc', 'a text, b timestamptz', 'timestamptz', 'RETURN pg_catalog.date_trunc(a, b)'),
			('date_trunc', 'a text, b timestamp', 'timestamp', 'RETURN pg_catalog.date_trunc(a, b)'),
			('timezone', 'a text, b timestamptz', 'timestamp', 'RETURN pg_catalog.timezone(a, b)'),
			('timezone', 'a text, b timestamp', 'timestamptz', 'RETURN pg_catalog.timezone(a, b)'),
			('make_interval', 'years integer DEFAULT 0, months integer DEFAULT 0, weeks integer DEFAULT 0, '
							  'days integer DEFAULT 0, hours integer DEFAULT 0, mins integer DEFAULT 0, '
							  'secs double precision DEFAULT 0.0', 'interval',
			 'RETURN pg_catalog.make_interval(years, months, weeks, days, hours, mins, secs)'),
			('pg_notify', 'a text, b text', 'void', 'PERFORM pg_catalog.pg_notify(a, b)'),
			('length', 'a text', 'integer', 'RETURN pg_catalog.length(a)'),
			('lower', 'a text', 'text', 'RETURN pg_catalog.lower(a)'),
			('concat', 'a text, b text', 'text', 'RETURN pg_catalog.concat(a, b)'),
			('abs', 'a bigint', 'bigint', 'RETURN pg_catalog.abs(a)'),
			('nextval', 'a regclass', 'bigint', 'RETURN pg_catalog.nextval(a)'),
			('unnest', 'a bigint[]', 'SETOF bigint', 'RETURN QUERY SELECT pg_catalog.unnest(a)'),
			('unnest', 'a anyarray', 'SETOF anyelement', 'RETURN QUERY SELECT pg_catalog.unnest(a)'),
			('cardinality', 'a anyarray', 'integer', 'RETURN pg_catalog.cardinality(a)'),
			('array_length', 'a anyarray, b integer', 'integer', 'RETURN pg_catalog.array_length(a, b)')
		) AS v(name, args, result, body)
	LOOP
		EXECUTE format(
			'CREATE FUNCTION regress_evil.%I(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS '
			'$f$ BEGIN INSERT INTO regress_evil.calls (what) VALUES (%L); %s; END $f$',
			f.name, f.args, f.result,
			format('%s(%s)', f.name,
				   (SELECT string_agg(split_part(btrim(a), ' ', 2), ',')
					  FROM unnest(string_to_array(regexp_replace(f.args, ' DEFAULT [0-9.]+', '', 'g'), ',')) AS a)),
			f.body);
	END LOOP;
END
$do$;
-- Aggregates: sum, max, min over bigint and count(*).
CREATE FUNCTION regress_evil.agg_sum(s numeric, v bigint) RETURNS numeric LANGUAGE plpgsql SET search_path = pg_catalog AS
	$f$ BEGIN INSERT INTO regress_evil.calls (what) VALUES ('sum(bigint)'); RETURN coalesce(s, 0) + v; END $f$;
CREATE AGGREGATE regress_evil.sum(bigint) (SFUNC = regress_evil.agg_sum, STYPE = numeric);
CREATE FUNCTION regress_evil.agg_max(s bigint, v bigint) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS
	$f$ BEGIN INSERT INTO regress_evil.calls (what) VALUES ('max(bigint)'); RETURN greatest(s, v); END $f$;
CREATE AGGREGATE regress_evil.max(bigint) (SFUNC = regress_evil.agg_max, STYPE = bigint);
CREATE FUNCTION regress_evil.agg_min(s bigint, v bigint) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS
	$f$ BEGIN INSERT INTO regress_evil.calls (what) VALUES ('min(bigint)'); RETURN least(s, v); END $f$;
CREATE AGGREGATE regress_evil.min(bigint) (SFUNC = regress_evil.agg_min, STYPE = bigint);
CREATE FUNCTION regress_evil.agg_count(s bigint) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS
	$f$ BEGIN INSERT INTO regress_evil.calls (what) VALUES ('count(*)'); RETURN s + 1; END $f$;
CREATE AGGREGATE regress_evil.count(*) (SFUNC = regress_evil.agg_count, STYPE = bigint, INITCOND = '0');
RESET ROLE;

-- attack(role, sql): runs sql as role (NULL: as the superuser running this
-- file) with search_path = regress_evil, pg_catalog, and returns 'ok', or
-- the error, or the hostile objects it called.
CREATE FUNCTION pg_temp.attack(p_role text, p_sql text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
	err text;
	called text;
BEGIN
	DELETE FROM regress_evil.calls;
	BEGIN
		IF p_role IS NOT NULL THEN
			PERFORM pg_catalog.set_config('role', p_role, true);
		END IF;
		PERFORM pg_catalog.set_config('search_path', 'regress_evil, pg_catalog', true);
		EXECUTE p_sql;
		PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
		PERFORM pg_catalog.set_config('role', 'none', true);
	EXCEPTION WHEN OTHERS THEN
		err := SQLSTATE || ': ' || SQLERRM;
	END;
	SELECT string_agg(w, ', ' ORDER BY w COLLATE "C") INTO called
	  FROM (SELECT DISTINCT c.what AS w FROM regress_evil.calls c) AS d;
	DELETE FROM regress_evil.calls;
	RETURN CASE WHEN err IS NOT NULL THEN 'error ' || err
				WHEN called IS NOT NULL THEN 'hostile objects called: ' || called
				ELSE 'ok' END;
END
$$;

-- The hostile objects work: the application's own SQL picks them up.
SELECT is(pg_temp.attack('regress_app',
	$$SELECT 1::bigint = 1::bigint, 1::bigint + 1::integer, 'a'::text < 'b'::text, now() >= now(),
			 format('%s', 'x'), sum(g::bigint), count(*), date_trunc('month', now())
		FROM generate_series(1, 2) AS g$$),
	'hostile objects called: +(bigint,integer), <(text,text), =(bigint,bigint), >=(timestamptz,timestamptz), '
	'count(*), date_trunc(text,timestamptz), format(text,text), now(), sum(bigint)',
	'control: under search_path regress_evil, pg_catalog the caller''s own SQL calls the hostile objects');

-- Every SECURITY DEFINER function is attacked below.
SELECT is(
	(SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
	  WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef),
	ARRAY['add_credits', 'batch_funding', 'cancel_plan', 'carry_over_balances', 'claim_recharges',
		  'complete_recharge', 'complete_recharge', 'disable_auto_recharge', 'enable_auto_recharge',
		  'expire_grants', 'expire_recharges', 'expiring_credits', 'fail_recharge', 'fail_recharge',
		  'grant_credits', 'open_account', 'open_account', 'release_recharge', 'release_recharge',
		  'renew_plans', 'set_plan', 'verify'],
	'the SECURITY DEFINER functions are exactly the twenty-two attacked below');

SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.open_account(4001, 0)$$), 'ok',
	'attack: open_account (admin)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.enable_auto_recharge(4001, 100, 1000, 500, 10000)$$), 'ok',
	'attack: enable_auto_recharge with target and monthly limit (admin)');
-- The trigger path: the first INSERTs into send_batches of this session.
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4001, 50, 'evil-1')$$), 'ok',
	'attack: trigger, a batch that opens a recharge (app, first INSERT of the session)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4001, 500, 'evil-2')$$), 'ok',
	'attack: trigger, a batch that grows the pending recharge (app)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4001, 500, 'evil-2')
	  ON CONFLICT (account_id, idempotency_key) DO NOTHING$$), 'ok',
	'attack: trigger, a repeated idempotency key with ON CONFLICT DO NOTHING (app)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (4001, 1, 'email'), (4001, 2, 'email'), (4001, 3, 'email')$$), 'ok',
	'attack: trigger, a multi-row INSERT covered by the in-flight recharge (app)');
SELECT is(pg_temp.attack('regress_worker', $$SELECT * FROM credits.claim_recharges(10)$$), 'ok',
	'attack: claim_recharges (worker)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (4001, 400)$$), 'ok',
	'attack: trigger, a batch that opens a second recharge while the first is processing (app)');
SELECT is(pg_temp.attack('regress_worker',
	$$SELECT credits.release_recharge(r.recharge_id, r.claim_token)
		FROM credits.recharges r WHERE r.account_id OPERATOR(pg_catalog.=) 4001
		 AND r.status OPERATOR(pg_catalog.=) 'processing'$$), 'ok',
	'attack: release_recharge with the claim token (worker)');
SELECT is(pg_temp.attack('regress_worker', $$SELECT * FROM credits.claim_recharges(10)$$), 'ok',
	'attack: claim_recharges of the released recharge (worker)');
SELECT is(pg_temp.attack('regress_worker',
	$$SELECT credits.complete_recharge(r.recharge_id, 'evil-ref-1', r.claim_token)
		FROM credits.recharges r WHERE r.recharge_id OPERATOR(pg_catalog.=)
			(SELECT pg_catalog.min(recharge_id) FROM credits.recharges WHERE account_id OPERATOR(pg_catalog.=) 4001)$$), 'ok',
	'attack: complete_recharge with the claim token (worker)');
SELECT is(pg_temp.attack('regress_worker', $$SELECT * FROM credits.claim_recharges(10)$$), 'ok',
	'attack: claim_recharges again (worker)');
SET LOCAL credits.max_payment_failures = 1;
SELECT is(pg_temp.attack('regress_worker',
	$$SELECT credits.fail_recharge(r.recharge_id, 'evil declined', r.claim_token)
		FROM credits.recharges r WHERE r.recharge_id OPERATOR(pg_catalog.=)
			(SELECT pg_catalog.max(recharge_id) FROM credits.recharges WHERE account_id OPERATOR(pg_catalog.=) 4001)$$), 'ok',
	'attack: fail_recharge with the claim token, refunds and the payment-failure turn-off with NOTIFY (worker)');
RESET credits.max_payment_failures;
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.enable_auto_recharge(4001, 100, 1000)$$), 'ok',
	'attack: enable_auto_recharge after the turn-off (admin)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (4001, 500)$$), 'ok',
	'attack: trigger, a batch that opens a third recharge (app)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.disable_auto_recharge(4001)$$), 'ok',
	'attack: disable_auto_recharge, cancelling a pending recharge and refunding (admin)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.enable_auto_recharge(4001, 100, 1000)$$), 'ok',
	'attack: enable_auto_recharge again (admin)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (4001, 500)$$), 'ok',
	'attack: trigger, a batch that opens a fourth recharge (app)');
UPDATE credits.recharges SET created_at = created_at - interval '2 hours'
 WHERE account_id = 4001 AND status = 'pending';
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.expire_recharges()$$), 'ok',
	'attack: expire_recharges, cancelling the aged recharge (admin)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.add_credits(4001, 1000, 'evil grant')$$), 'ok',
	'attack: add_credits (admin)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT * FROM credits.verify()$$), 'ok',
	'attack: verify (admin)');
-- The operators' forms without a claim token, on an account of their own.
DO $$ BEGIN PERFORM credits.open_account(4005, 0); PERFORM credits.enable_auto_recharge(4005, 0, 1000); END $$;
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (4005, 100)$$), 'ok',
	'attack: trigger, a batch that opens a recharge for the operator (app)');
SELECT is(pg_temp.attack('regress_worker', $$SELECT * FROM credits.claim_recharges(10)$$), 'ok',
	'attack: claim_recharges for the operator (worker)');
SELECT is(pg_temp.attack(NULL,
	$$SELECT credits.complete_recharge((SELECT pg_catalog.max(recharge_id) FROM credits.recharges WHERE account_id OPERATOR(pg_catalog.=) 4005), 'evil-ref-2')$$), 'ok',
	'attack: complete_recharge without a token (operator)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (4005, 100)$$), 'ok',
	'attack: trigger, a batch that opens a second recharge for the operator (app)');
SELECT is(pg_temp.attack('regress_worker', $$SELECT * FROM credits.claim_recharges(10)$$), 'ok',
	'attack: claim_recharges of it (worker)');
SELECT is(pg_temp.attack(NULL,
	$$SELECT credits.release_recharge((SELECT pg_catalog.max(recharge_id) FROM credits.recharges WHERE account_id OPERATOR(pg_catalog.=) 4005))$$), 'ok',
	'attack: release_recharge without a token (operator)');
SELECT is(pg_temp.attack(NULL,
	$$SELECT credits.fail_recharge((SELECT pg_catalog.max(recharge_id) FROM credits.recharges WHERE account_id OPERATOR(pg_catalog.=) 4005), 'evil operator')$$), 'ok',
	'attack: fail_recharge without a token, on the released recharge (operator)');
SELECT results_eq(
	$$SELECT kind, delta, balance_after, grant_id IS NOT NULL FROM credits.ledger WHERE account_id = 4005 ORDER BY entry_id$$,
	$$VALUES ('open'::text, 0::bigint, 0::bigint, false), ('debit', -100, -100, false),
			 ('recharge', 100, 0, true), ('repay', -100, -100, true), ('repay', 100, 0, false),
			 ('debit', -100, -100, false), ('refund', 100, 0, false)$$,
	'the operators'' attacked calls credited (the recharge grant repaying the debt) and refunded exactly as without the attack');

-- The attacked calls did their real work, and did it right.
-- 0.2.0: the recharge's grant repays each batch's debt, oldest first (a
-- pair of repay rows each); a batch that spends the grant and owes the rest
-- writes two debit rows, and its refund one row per part.
SELECT results_eq(
	$$SELECT kind, delta, balance_after, grant_id IS NOT NULL FROM credits.ledger WHERE account_id = 4001 ORDER BY entry_id$$,
	$$VALUES ('open'::text, 0::bigint, 0::bigint, false),
			 ('debit', -50, -50, false), ('debit', -500, -550, false),
			 ('debit', -1, -551, false), ('debit', -2, -553, false), ('debit', -3, -556, false),
			 ('debit', -400, -956, false),
			 ('recharge', 1000, 44, true),
			 ('repay', -50, -6, true), ('repay', 50, 44, false),
			 ('repay', -500, -456, true), ('repay', 500, 44, false),
			 ('repay', -1, 43, true), ('repay', 1, 44, false),
			 ('repay', -2, 42, true), ('repay', 2, 44, false),
			 ('repay', -3, 41, true), ('repay', 3, 44, false),
			 ('repay', -400, -356, true), ('repay', 400, 44, false),
			 ('refund', 400, 444, true),
			 ('debit', -444, 0, true), ('debit', -56, -56, false), ('refund', 56, 0, false), ('refund', 444, 444, true),
			 ('debit', -444, 0, true), ('debit', -56, -56, false), ('refund', 56, 0, false), ('refund', 444, 444, true),
			 ('grant', 1000, 1444, true)$$,
	'the attacked calls debited, credited, repaid, refunded and granted exactly as without the attack');
SELECT results_eq(
	$$SELECT status, credits, payment_ref FROM credits.recharges WHERE account_id = 4001 ORDER BY recharge_id$$,
	$$VALUES ('succeeded'::text, 1000::bigint, 'evil-ref-1'::text),
			 ('failed', 456, NULL), ('cancelled', 156, NULL), ('cancelled', 156, NULL)$$,
	'the four recharges: grown, completed, failed, cancelled by disable, expired');

-- 0.2.0: grants, plans and expiry under attack.  Account 4006 gets a signup
-- grant that expires (open_account's 3-argument form), a promotion that
-- expires, a plan and a purchase; the application's batch draws from three
-- grants at once.  Then the extension's clock moves 3 days
-- (credits.clock_offset): the next batch expires the promotion on its way;
-- one owes and is repaid by a new grant; disabling auto-recharge refunds it
-- to the two grants that paid for it.  The clock moves 40 days and the
-- plan renews.  Timestamps are put into the SQL as literals: the caller's
-- own now() and + would be the hostile ones.
SELECT is(pg_temp.attack('regress_admin',
	format('SELECT credits.open_account(4006, 100, %L)', now() + interval '1 day')), 'ok',
	'attack: open_account with an expiry (admin)');
SELECT is(pg_temp.attack('regress_admin',
	format('SELECT credits.open_account(4007, 10, %L)', now() + interval '1 day')), 'ok',
	'attack: open_account with an expiry, for expire_grants (admin)');
SELECT is(pg_temp.attack('regress_billing',
	format($$SELECT credits.grant_credits(account_id => 4006, credits => 50, expires_at => %L, note => 'evil promo')$$,
		   now() + interval '2 days')), 'ok',
	'attack: grant_credits, a promotion that expires (billing)');
SELECT is(pg_temp.attack('regress_billing',
	format('SELECT credits.set_plan(4006, 30, %L)', now() - interval '10 days')), 'ok',
	'attack: set_plan starting 10 days ago (billing)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.add_credits(4006, 20, 'evil purchase')$$), 'ok',
	'attack: add_credits, a purchase grant (admin)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4006, 170, 'grants-1')$$), 'ok',
	'attack: trigger, a batch drawing from the plan, signup and promo grants (app)');
SELECT is(pg_temp.attack('regress_reporting',
	format('SELECT * FROM credits.batch_funding(%s)',
		   (SELECT batch_id FROM credits.send_batches WHERE account_id = 4006 AND idempotency_key = 'grants-1'))), 'ok',
	'attack: batch_funding (reporting)');
SELECT is(pg_temp.attack('regress_reporting', $$SELECT * FROM credits.expiring_credits('3 days')$$), 'ok',
	'attack: expiring_credits (reporting)');
SET LOCAL credits.clock_offset = 259200;
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4006, 15, 'grants-2')$$), 'ok',
	'attack: trigger, 3 days later: a batch that expires the promotion first (app)');
SELECT is(pg_temp.attack('regress_cron', $$SELECT credits.expire_grants()$$), 'ok',
	'attack: expire_grants, with NOTIFY (cron)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.enable_auto_recharge(4006, 0, 1000)$$), 'ok',
	'attack: enable_auto_recharge on an account with grants (admin)');
SELECT is(pg_temp.attack('regress_app',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4006, 50, 'grants-3')$$), 'ok',
	'attack: trigger, a batch that spends the last grant and owes the rest (app)');
SELECT is(pg_temp.attack('regress_billing', $$SELECT credits.grant_credits(4006, 60)$$), 'ok',
	'attack: grant_credits that repays the debt (billing)');
SELECT is(pg_temp.attack('regress_admin', $$SELECT credits.disable_auto_recharge(4006)$$), 'ok',
	'attack: disable_auto_recharge, refunding a batch to the grants that paid for it (admin)');
SELECT is(pg_temp.attack('regress_billing', $$SELECT credits.cancel_plan(4006)$$), 'ok',
	'attack: cancel_plan (billing)');
SELECT is(pg_temp.attack('regress_billing', $$SELECT credits.set_plan(4006, 40)$$), 'ok',
	'attack: set_plan taking up the cancelled plan with a new amount (billing)');
SET LOCAL credits.clock_offset = 3456000;
SELECT is(pg_temp.attack('regress_cron', $$SELECT credits.renew_plans()$$), 'ok',
	'attack: renew_plans, 40 days later (cron)');
RESET credits.clock_offset;
-- A 0.1 account (a balance, no grant), as restored from an old dump.
INSERT INTO credits.accounts (account_id, balance) VALUES (4008, 70);
INSERT INTO credits.ledger_entries (account_id, delta, balance_after, kind) VALUES (4008, 70, 70, 'open');
SELECT is(pg_temp.attack(NULL, $$SELECT credits.carry_over_balances()$$), 'ok',
	'attack: carry_over_balances (superuser)');

SELECT results_eq(
	$$SELECT l.kind, l.delta, l.balance_after, g.source
		FROM credits.ledger l LEFT JOIN credits.grants g ON g.grant_id = l.grant_id
	   WHERE l.account_id = 4006 ORDER BY l.entry_id$$,
	$$VALUES ('open'::text, 100::bigint, 100::bigint, 'signup'::text),
			 ('grant', 50, 150, 'promo'),
			 ('plan', 30, 180, 'plan'),
			 ('grant', 20, 200, 'purchase'),
			 ('debit', -30, 170, 'plan'), ('debit', -100, 70, 'signup'), ('debit', -40, 30, 'promo'),
			 ('expire', -10, 20, 'promo'),
			 ('debit', -15, 5, 'purchase'),
			 ('debit', -5, 0, 'purchase'), ('debit', -45, -45, NULL),
			 ('grant', 60, 15, 'promo'),
			 ('repay', -45, -30, 'promo'), ('repay', 45, 15, NULL),
			 ('refund', 5, 20, 'purchase'), ('refund', 45, 65, 'promo'),
			 ('plan', 40, 105, 'plan')$$,
	'the attacked grant calls drew, expired, owed, repaid, refunded and renewed exactly as without the attack');
SELECT results_eq(
	$$SELECT g.account_id, g.source, g.credits, g.remaining, g.priority, g.carried_over, g.closed_at IS NOT NULL
		FROM credits.grants g WHERE g.account_id IN (4006, 4007, 4008) ORDER BY g.grant_id$$,
	$$VALUES (4006::bigint, 'signup'::text, 100::bigint, 0::bigint, 20, 0::bigint, true),
			 (4007, 'signup', 10, 0, 20, 0, true),
			 (4006, 'promo', 50, 0, 30, 0, true),
			 (4006, 'plan', 30, 0, 10, 0, true),
			 (4006, 'purchase', 20, 5, 50, 0, false),
			 (4006, 'promo', 60, 60, 30, 0, false),
			 (4006, 'plan', 40, 40, 10, 0, false),
			 (4008, 'purchase', 70, 70, 50, 70, false)$$,
	'the grants: spent, expired, renewed and carried over as without the attack');
SELECT results_eq(
	$$SELECT l.kind, l.delta FROM credits.ledger l WHERE l.account_id = 4007 ORDER BY l.entry_id$$,
	$$VALUES ('open'::text, 10::bigint), ('expire', -10)$$,
	'expire_grants expired account 4007''s signup grant');
SELECT is_empty($$SELECT * FROM credits.verify()$$, 'verify() is empty after the attacks');

--------------------------------------------------------------------------------
-- 2. The application
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(4002, 100); END $$;
SET ROLE regress_app;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4002, 30, 'app-1');
SELECT results_eq(
	$$SELECT cost, status FROM credits.send_batches WHERE account_id = 4002 AND idempotency_key = 'app-1'$$,
	$$VALUES (30::bigint, 'ready'::text)$$,
	'application: inserts a batch and reads it back');
SELECT results_eq(
	$$SELECT balance FROM credits.accounts WHERE account_id = 4002$$,
	$$VALUES (70::bigint)$$,
	'application: reads the debited balance');
SELECT lives_ok($$SELECT * FROM credits.prices$$, 'application: reads prices');
SELECT lives_ok($$SELECT * FROM credits.recharges WHERE account_id = 4001$$, 'application: reads recharges');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4002, 30, 'app-1')
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
RESET ROLE;
SELECT results_eq(
	$$SELECT kind, delta, balance_after FROM credits.ledger WHERE account_id = 4002 ORDER BY entry_id$$,
	$$VALUES ('open'::text, 100::bigint, 100::bigint), ('debit', -30, 70)$$,
	'application: its batch was debited (as the table owner) once, its retry not at all');

-- What each role must not do, one statement per row.
CREATE TEMP TABLE denied (
	id			serial PRIMARY KEY,
	role		name NOT NULL,
	description	text NOT NULL,
	sql			text NOT NULL
);
GRANT SELECT ON denied TO PUBLIC;

INSERT INTO denied (role, description, sql) VALUES
-- tables the application must not write
('regress_app', 'INSERT into accounts', $$INSERT INTO credits.accounts (account_id, balance) VALUES (4099, 1000000)$$),
('regress_app', 'UPDATE of balances', $$UPDATE credits.accounts SET balance = balance + 1000000$$),
('regress_app', 'DELETE from accounts', $$DELETE FROM credits.accounts$$),
('regress_app', 'TRUNCATE accounts', $$TRUNCATE credits.accounts CASCADE$$),
('regress_app', 'INSERT into the ledger', $$INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (4002, 1000, 1070, 'grant')$$),
('regress_app', 'UPDATE of the ledger', $$UPDATE credits.ledger SET delta = 0$$),
('regress_app', 'DELETE from the ledger', $$DELETE FROM credits.ledger$$),
('regress_app', 'TRUNCATE the ledger', $$TRUNCATE credits.ledger_entries$$),
('regress_app', 'INSERT of a policy', $$INSERT INTO credits.auto_recharge (account_id, enabled, min_balance, max_credits) VALUES (4002, true, 0, 1000000)$$),
('regress_app', 'UPDATE of policies', $$UPDATE credits.auto_recharge SET max_credits = 9000000000000000000$$),
('regress_app', 'DELETE of policies', $$DELETE FROM credits.auto_recharge$$),
('regress_app', 'TRUNCATE policies', $$TRUNCATE credits.auto_recharge$$),
('regress_app', 'INSERT of a price', $$INSERT INTO credits.prices (channel, credits_per_message) VALUES ('regress_free', 1)$$),
('regress_app', 'UPDATE of prices', $$UPDATE credits.prices SET credits_per_message = 1$$),
('regress_app', 'DELETE of prices', $$DELETE FROM credits.prices$$),
('regress_app', 'TRUNCATE prices', $$TRUNCATE credits.prices$$),
('regress_app', 'INSERT of a recharge', $$INSERT INTO credits.recharges (account_id, credits, reason, need, max_credits) VALUES (4002, 1, 'threshold', 1, 1)$$),
('regress_app', 'UPDATE of recharges', $$UPDATE credits.recharges SET status = 'succeeded'$$),
('regress_app', 'DELETE of recharges', $$DELETE FROM credits.recharges$$),
('regress_app', 'TRUNCATE recharges', $$TRUNCATE credits.recharges$$),
-- what the extension sets, and stored batches
('regress_app', 'INSERT naming cost', $$INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (4002, 1, 0)$$),
('regress_app', 'INSERT naming status', $$INSERT INTO credits.send_batches (account_id, messages, status) VALUES (4002, 1, 'ready')$$),
('regress_app', 'INSERT naming recharge_id', $$INSERT INTO credits.send_batches (account_id, messages, recharge_id) VALUES (4002, 1, 1)$$),
('regress_app', 'INSERT naming created_at', $$INSERT INTO credits.send_batches (account_id, messages, created_at) VALUES (4002, 1, now())$$),
('regress_app', 'INSERT naming batch_id with OVERRIDING SYSTEM VALUE', $$INSERT INTO credits.send_batches (batch_id, account_id, messages) OVERRIDING SYSTEM VALUE VALUES (1, 4002, 1)$$),
('regress_app', 'UPDATE of a batch''s status', $$UPDATE credits.send_batches SET status = 'ready'$$),
('regress_app', 'UPDATE of a batch''s idempotency_key', $$UPDATE credits.send_batches SET idempotency_key = 'x'$$),
('regress_app', 'ON CONFLICT DO UPDATE (needs UPDATE)', $$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4002, 30, 'app-1') ON CONFLICT (account_id, idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key$$),
('regress_app', 'DELETE of batches', $$DELETE FROM credits.send_batches$$),
('regress_app', 'TRUNCATE send_batches', $$TRUNCATE credits.send_batches$$),
('regress_app', 'SELECT FOR UPDATE of accounts (would block every debit)', $$SELECT * FROM credits.accounts FOR UPDATE$$),
('regress_app', 'SELECT FOR UPDATE of batches', $$SELECT * FROM credits.send_batches FOR UPDATE$$),
('regress_app', 'LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE', $$LOCK TABLE credits.accounts IN ACCESS EXCLUSIVE MODE$$),
('regress_app', 'setval of the batch_id sequence', $$SELECT setval('credits.send_batches_batch_id_seq', 1)$$),
('regress_app', 'setval of the entry_id sequence', $$SELECT setval('credits.ledger_entry_id_seq', 1)$$),
('regress_app', 'setval of the recharge_id sequence', $$SELECT setval('credits.recharges_recharge_id_seq', 1)$$),
-- disabling or bypassing the triggers
('regress_app', 'ALTER TABLE send_batches DISABLE TRIGGER credits_debit', $$ALTER TABLE credits.send_batches DISABLE TRIGGER credits_debit$$),
('regress_app', 'ALTER TABLE send_batches DISABLE TRIGGER ALL', $$ALTER TABLE credits.send_batches DISABLE TRIGGER ALL$$),
('regress_app', 'ALTER TABLE send_batches ENABLE REPLICA TRIGGER credits_debit', $$ALTER TABLE credits.send_batches ENABLE REPLICA TRIGGER credits_debit$$),
('regress_app', 'ALTER TABLE ledger DISABLE TRIGGER credits_guard', $$ALTER TABLE credits.ledger DISABLE TRIGGER credits_guard$$),
('regress_app', 'DROP TRIGGER credits_debit', $$DROP TRIGGER credits_debit ON credits.send_batches$$),
('regress_app', 'DROP TRIGGER credits_guard on the ledger', $$DROP TRIGGER credits_guard ON credits.ledger$$),
('regress_app', 'SET session_replication_role = replica', $$SET session_replication_role = replica$$),
('regress_app', 'SET LOCAL session_replication_role = replica', $$SET LOCAL session_replication_role = replica$$),
('regress_app', 'CREATE TRIGGER on send_batches', $$CREATE TRIGGER regress_skip BEFORE INSERT ON credits.send_batches FOR EACH ROW EXECUTE FUNCTION regress_evil.skip()$$),
('regress_app', 'CREATE TRIGGER on the ledger', $$CREATE TRIGGER regress_skip BEFORE INSERT ON credits.ledger_entries FOR EACH ROW EXECUTE FUNCTION regress_evil.skip()$$),
('regress_app', 'CREATE RULE ... DO INSTEAD NOTHING on send_batches', $$CREATE RULE regress_skip AS ON INSERT TO credits.send_batches DO INSTEAD NOTHING$$),
('regress_app', 'a child table INHERITS send_batches (rows without the trigger)', $$CREATE TABLE regress_evil.child () INHERITS (credits.send_batches)$$),
('regress_app', 'ENABLE ROW LEVEL SECURITY on accounts', $$ALTER TABLE credits.accounts ENABLE ROW LEVEL SECURITY$$),
('regress_app', 'the debit trigger function on a table of its own', $$CREATE TRIGGER regress_debit BEFORE INSERT ON regress_evil.own FOR EACH ROW EXECUTE FUNCTION credits.debit_batch()$$),
('regress_app', 'ALTER FUNCTION open_account SECURITY INVOKER', $$ALTER FUNCTION credits.open_account(bigint, bigint) SECURITY INVOKER$$),
('regress_app', 'ALTER FUNCTION complete_recharge RESET search_path', $$ALTER FUNCTION credits.complete_recharge(bigint, text) RESET search_path$$),
('regress_app', 'CREATE FUNCTION in schema credits', $$CREATE FUNCTION credits.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT pg_catalog.now()'$$),
('regress_app', 'CREATE OPERATOR in schema credits', $$CREATE OPERATOR credits.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = pg_catalog.int8eq)$$),
('regress_app', 'DROP EXTENSION credits', $$DROP EXTENSION credits CASCADE$$),
('regress_app', 'SET credits.max_payment_failures', $$SET credits.max_payment_failures = 1000$$),
('regress_app', 'COPY send_batches FROM PROGRAM', $$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'true'$$),
-- every function
('regress_app', 'open_account', $$SELECT credits.open_account(4098, 1000000)$$),
('regress_app', 'add_credits', $$SELECT credits.add_credits(4002, 1000000)$$),
('regress_app', 'enable_auto_recharge', $$SELECT credits.enable_auto_recharge(4002, 0, 1000000)$$),
('regress_app', 'disable_auto_recharge', $$SELECT credits.disable_auto_recharge(4001)$$),
('regress_app', 'expire_recharges', $$SELECT credits.expire_recharges()$$),
('regress_app', 'claim_recharges', $$SELECT credits.claim_recharges(10)$$),
('regress_app', 'complete_recharge', $$SELECT credits.complete_recharge(1, 'x')$$),
('regress_app', 'fail_recharge', $$SELECT credits.fail_recharge(1, 'x')$$),
('regress_app', 'verify', $$SELECT * FROM credits.verify()$$),
('regress_app', '_cancel_recharge', $$SELECT credits._cancel_recharge(1, 'x')$$),
('regress_app', '_credit', $$SELECT credits._credit(4002, 1000000, NULL)$$),
('regress_app', '_lock_account', $$SELECT credits._lock_account(4002)$$),
('regress_app', '_open_account', $$SELECT credits._open_account(4098, 1000000, NULL)$$),
('regress_app', '_cancel_recharge', $$SELECT credits._cancel_recharge(1, 'x')$$),
('regress_app', '_turn_off', $$SELECT credits._turn_off(4001, 'disabled_by_user')$$),
('regress_app', '_max_payment_failures', $$SELECT credits._max_payment_failures()$$),
('regress_app', '_recharge_expiry_seconds', $$SELECT credits._recharge_expiry_seconds()$$),
('regress_app', 'debit_batch, called directly', $$SELECT credits.debit_batch()$$),
('regress_app', 'guard_batch, called directly', $$SELECT credits.guard_batch()$$),
('regress_app', 'guard_ledger, called directly', $$SELECT credits.guard_ledger()$$),
-- 0.2.0: grants and plans, their functions and helpers
('regress_app', 'SELECT of grants', $$SELECT * FROM credits.grants$$),
('regress_app', 'SELECT of plans', $$SELECT * FROM credits.plans$$),
('regress_app', 'SELECT of balance_by_grant', $$SELECT * FROM credits.balance_by_grant$$),
('regress_app', 'INSERT of a grant', $$INSERT INTO credits.grants (account_id, source, credits, remaining, priority) VALUES (4002, 'promo', 1000000, 1000000, 0)$$),
('regress_app', 'UPDATE of grants', $$UPDATE credits.grants SET remaining = credits, expires_at = NULL$$),
('regress_app', 'DELETE of grants', $$DELETE FROM credits.grants$$),
('regress_app', 'TRUNCATE grants', $$TRUNCATE credits.grants$$),
('regress_app', 'INSERT of a plan', $$INSERT INTO credits.plans (account_id, monthly_credits, anchored_at, period_start, period_end) VALUES (4002, 1000000, now(), now(), now() + interval '1 month')$$),
('regress_app', 'UPDATE of plans', $$UPDATE credits.plans SET monthly_credits = 1000000$$),
('regress_app', 'DELETE of plans', $$DELETE FROM credits.plans$$),
('regress_app', 'TRUNCATE plans', $$TRUNCATE credits.plans$$),
('regress_app', 'setval of the grant_id sequence', $$SELECT setval('credits.grants_grant_id_seq', 1)$$),
('regress_app', 'open_account with an expiry', $$SELECT credits.open_account(4098, 1000000, NULL)$$),
('regress_app', 'grant_credits', $$SELECT credits.grant_credits(4002, 1000000)$$),
('regress_app', 'set_plan', $$SELECT credits.set_plan(4002, 1000000)$$),
('regress_app', 'cancel_plan', $$SELECT credits.cancel_plan(4006)$$),
('regress_app', 'renew_plans', $$SELECT credits.renew_plans()$$),
('regress_app', 'expire_grants', $$SELECT credits.expire_grants()$$),
('regress_app', 'expiring_credits', $$SELECT * FROM credits.expiring_credits('1 year')$$),
('regress_app', 'batch_funding', $$SELECT * FROM credits.batch_funding(1)$$),
('regress_app', 'carry_over_balances', $$SELECT credits.carry_over_balances()$$),
('regress_app', '_add_grant', $$SELECT credits._add_grant(4002, 'promo', 1000000, 0, NULL, NULL, NULL)$$),
('regress_app', '_expire_due', $$SELECT credits._expire_due(4006, now())$$),
('regress_app', '_renew_plan', $$SELECT credits._renew_plan(4006, now(), 0, 0)$$),
('regress_app', '_plan_period', $$SELECT credits._plan_period(now(), now())$$),
('regress_app', '_now', $$SELECT credits._now()$$),
('regress_app', '_flush_debits', $$SELECT credits._flush_debits(4002)$$),
('regress_app', 'SET credits.clock_offset', $$SET credits.clock_offset = 31536000$$),
-- the payment worker
('regress_worker', 'add_credits', $$SELECT credits.add_credits(4002, 1000000)$$),
('regress_worker', 'open_account', $$SELECT credits.open_account(4097, 1000000)$$),
('regress_worker', 'enable_auto_recharge', $$SELECT credits.enable_auto_recharge(4002, 0, 1000000)$$),
('regress_worker', 'disable_auto_recharge', $$SELECT credits.disable_auto_recharge(4001)$$),
('regress_worker', 'expire_recharges', $$SELECT credits.expire_recharges()$$),
('regress_worker', 'complete_recharge without a claim token', $$SELECT credits.complete_recharge(1, 'x')$$),
('regress_worker', 'fail_recharge without a claim token', $$SELECT credits.fail_recharge(1, 'x')$$),
('regress_worker', 'release_recharge without a claim token', $$SELECT credits.release_recharge(1)$$),
('regress_worker', '_turn_off', $$SELECT credits._turn_off(4001, 'disabled_by_user')$$),
('regress_worker', 'INSERT of a batch', $$INSERT INTO credits.send_batches (account_id, messages) VALUES (4002, 1)$$),
('regress_worker', 'UPDATE of recharges', $$UPDATE credits.recharges SET credits = 1$$),
('regress_worker', 'UPDATE of balances', $$UPDATE credits.accounts SET balance = 0$$),
('regress_worker', 'INSERT into the ledger', $$INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (4002, 1, 71, 'grant')$$),
('regress_worker', 'SET session_replication_role', $$SET session_replication_role = replica$$),
('regress_worker', 'grant_credits', $$SELECT credits.grant_credits(4002, 1000000)$$),
('regress_worker', 'set_plan', $$SELECT credits.set_plan(4002, 1000000)$$),
('regress_worker', 'renew_plans', $$SELECT credits.renew_plans()$$),
('regress_worker', 'expire_grants', $$SELECT credits.expire_grants()$$),
('regress_worker', 'UPDATE of grants', $$UPDATE credits.grants SET remaining = credits$$),
('regress_worker', 'INSERT of a plan', $$INSERT INTO credits.plans (account_id, monthly_credits, anchored_at, period_start, period_end) VALUES (4002, 1, now(), now(), now() + interval '1 month')$$),
-- the policy admin
('regress_admin', 'claim_recharges', $$SELECT credits.claim_recharges(10)$$),
('regress_admin', 'complete_recharge', $$SELECT credits.complete_recharge(1, 'x')$$),
('regress_admin', 'fail_recharge', $$SELECT credits.fail_recharge(1, 'x')$$),
('regress_admin', '_cancel_recharge', $$SELECT credits._cancel_recharge(1, 'failed')$$),
('regress_admin', '_credit', $$SELECT credits._credit(4003, 1, NULL)$$),
('regress_admin', 'INSERT of a batch', $$INSERT INTO credits.send_batches (account_id, messages) VALUES (4002, 1)$$),
('regress_admin', 'UPDATE of balances', $$UPDATE credits.accounts SET balance = 0$$),
('regress_admin', 'INSERT into the ledger', $$INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (4002, 1, 71, 'grant')$$),
('regress_admin', 'UPDATE of policies behind the functions', $$UPDATE credits.auto_recharge SET max_credits = 9000000000000000000$$),
('regress_admin', 'UPDATE of recharges', $$UPDATE credits.recharges SET status = 'succeeded'$$),
('regress_admin', 'ALTER TABLE send_batches DISABLE TRIGGER', $$ALTER TABLE credits.send_batches DISABLE TRIGGER credits_debit$$),
('regress_admin', 'SET session_replication_role', $$SET session_replication_role = replica$$),
('regress_admin', 'grant_credits', $$SELECT credits.grant_credits(4002, 1000000)$$),
('regress_admin', 'set_plan', $$SELECT credits.set_plan(4002, 1000000)$$),
('regress_admin', 'cancel_plan', $$SELECT credits.cancel_plan(4006)$$),
('regress_admin', 'renew_plans', $$SELECT credits.renew_plans()$$),
('regress_admin', 'expire_grants', $$SELECT credits.expire_grants()$$),
('regress_admin', '_add_grant', $$SELECT credits._add_grant(4002, 'promo', 1000000, 0, NULL, NULL, NULL)$$),
('regress_admin', 'UPDATE of grants', $$UPDATE credits.grants SET remaining = credits$$),
('regress_admin', 'DELETE of plans', $$DELETE FROM credits.plans$$),
-- the billing admin
('regress_billing', 'open_account', $$SELECT credits.open_account(4095, 1000000)$$),
('regress_billing', 'add_credits', $$SELECT credits.add_credits(4002, 1000000)$$),
('regress_billing', 'renew_plans', $$SELECT credits.renew_plans()$$),
('regress_billing', 'expire_grants', $$SELECT credits.expire_grants()$$),
('regress_billing', 'enable_auto_recharge', $$SELECT credits.enable_auto_recharge(4002, 0, 1000000)$$),
('regress_billing', 'claim_recharges', $$SELECT credits.claim_recharges(10)$$),
('regress_billing', '_add_grant', $$SELECT credits._add_grant(4002, 'promo', 1000000, 0, NULL, NULL, NULL)$$),
('regress_billing', '_expire_due', $$SELECT credits._expire_due(4006, now())$$),
('regress_billing', 'SELECT of grants', $$SELECT * FROM credits.grants$$),
('regress_billing', 'INSERT of a grant', $$INSERT INTO credits.grants (account_id, source, credits, remaining, priority) VALUES (4002, 'promo', 1000000, 1000000, 0)$$),
('regress_billing', 'UPDATE of plans', $$UPDATE credits.plans SET monthly_credits = 1000000$$),
('regress_billing', 'INSERT of a batch', $$INSERT INTO credits.send_batches (account_id, messages) VALUES (4002, 1)$$),
('regress_billing', 'SET credits.clock_offset', $$SET credits.clock_offset = 31536000$$),
-- the scheduled jobs
('regress_cron', 'grant_credits', $$SELECT credits.grant_credits(4002, 1000000)$$),
('regress_cron', 'set_plan', $$SELECT credits.set_plan(4002, 1000000)$$),
('regress_cron', 'cancel_plan', $$SELECT credits.cancel_plan(4006)$$),
('regress_cron', 'add_credits', $$SELECT credits.add_credits(4002, 1000000)$$),
('regress_cron', '_expire_due', $$SELECT credits._expire_due(4006, now())$$),
('regress_cron', '_renew_plan', $$SELECT credits._renew_plan(4006, now(), 0, 0)$$),
('regress_cron', 'UPDATE of grants', $$UPDATE credits.grants SET expires_at = now()$$),
('regress_cron', 'DELETE of plans', $$DELETE FROM credits.plans$$),
('regress_cron', 'INSERT of a batch', $$INSERT INTO credits.send_batches (account_id, messages) VALUES (4002, 1)$$),
('regress_cron', 'SET credits.clock_offset (renewing plans early)', $$SET credits.clock_offset = 31536000$$),
-- reporting
('regress_reporting', 'INSERT of a batch', $$INSERT INTO credits.send_batches (account_id, messages) VALUES (4002, 1)$$),
('regress_reporting', 'UPDATE of balances', $$UPDATE credits.accounts SET balance = 0$$),
('regress_reporting', 'DELETE of prices', $$DELETE FROM credits.prices$$),
('regress_reporting', 'INSERT into the ledger', $$INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (4002, 1, 71, 'grant')$$),
('regress_reporting', 'UPDATE of policies', $$UPDATE credits.auto_recharge SET enabled = false$$),
('regress_reporting', 'UPDATE of recharges', $$UPDATE credits.recharges SET status = 'failed'$$),
('regress_reporting', 'TRUNCATE prices', $$TRUNCATE credits.prices$$),
('regress_reporting', 'SELECT FOR UPDATE of accounts', $$SELECT * FROM credits.accounts FOR UPDATE$$),
('regress_reporting', 'verify', $$SELECT * FROM credits.verify()$$),
('regress_reporting', 'open_account', $$SELECT credits.open_account(4096, 1)$$),
('regress_reporting', 'claim_recharges', $$SELECT credits.claim_recharges(10)$$),
('regress_reporting', 'SELECT of accounts (the raw tables are the auditor''s)', $$SELECT * FROM credits.accounts$$),
('regress_reporting', 'INSERT of a grant', $$INSERT INTO credits.grants (account_id, source, credits, remaining, priority) VALUES (4002, 'promo', 1000000, 1000000, 0)$$),
('regress_reporting', 'UPDATE of grants', $$UPDATE credits.grants SET remaining = credits$$),
('regress_reporting', 'DELETE of plans', $$DELETE FROM credits.plans$$),
('regress_reporting', 'SELECT FOR UPDATE of grants', $$SELECT * FROM credits.grants FOR UPDATE$$),
('regress_reporting', 'grant_credits', $$SELECT credits.grant_credits(4002, 1000000)$$),
('regress_reporting', 'renew_plans', $$SELECT credits.renew_plans()$$),
('regress_reporting', 'expire_grants', $$SELECT credits.expire_grants()$$),
-- the auditor
('regress_auditor', 'INSERT of a batch', $$INSERT INTO credits.send_batches (account_id, messages) VALUES (4002, 1)$$),
('regress_auditor', 'UPDATE of balances', $$UPDATE credits.accounts SET balance = 0$$),
('regress_auditor', 'UPDATE of grants', $$UPDATE credits.grants SET remaining = credits$$),
('regress_auditor', 'INSERT of a plan', $$INSERT INTO credits.plans (account_id, monthly_credits, anchored_at, period_start, period_end) VALUES (4002, 1, now(), now(), now() + interval '1 month')$$),
('regress_auditor', 'TRUNCATE grants', $$TRUNCATE credits.grants$$),
('regress_auditor', 'batch_funding', $$SELECT * FROM credits.batch_funding(1)$$),
('regress_auditor', 'verify', $$SELECT * FROM credits.verify()$$);

-- Objects of the application's own, for the trigger attempts above.
SET ROLE regress_app;
CREATE FUNCTION regress_evil.skip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TABLE regress_evil.own (LIKE credits.send_batches);
RESET ROLE;

SET ROLE regress_app;
SELECT throws_ok(d.sql, '42501', NULL, format('application cannot: %s (42501)', d.description))
  FROM denied d WHERE d.role = 'regress_app' ORDER BY d.id;
RESET ROLE;
SET ROLE regress_worker;
SELECT throws_ok(d.sql, '42501', NULL, format('payment worker cannot: %s (42501)', d.description))
  FROM denied d WHERE d.role = 'regress_worker' ORDER BY d.id;
RESET ROLE;
SET ROLE regress_admin;
SELECT throws_ok(d.sql, '42501', NULL, format('policy admin cannot: %s (42501)', d.description))
  FROM denied d WHERE d.role = 'regress_admin' ORDER BY d.id;
RESET ROLE;
SET ROLE regress_billing;
SELECT throws_ok(d.sql, '42501', NULL, format('billing admin cannot: %s (42501)', d.description))
  FROM denied d WHERE d.role = 'regress_billing' ORDER BY d.id;
RESET ROLE;
SET ROLE regress_cron;
SELECT throws_ok(d.sql, '42501', NULL, format('scheduled jobs cannot: %s (42501)', d.description))
  FROM denied d WHERE d.role = 'regress_cron' ORDER BY d.id;
RESET ROLE;
SET ROLE regress_reporting;
SELECT throws_ok(d.sql, '42501', NULL, format('reporting cannot: %s (42501)', d.description))
  FROM denied d WHERE d.role = 'regress_reporting' ORDER BY d.id;
RESET ROLE;
SET ROLE regress_auditor;
SELECT throws_ok(d.sql, '42501', NULL, format('auditor cannot: %s (42501)', d.description))
  FROM denied d WHERE d.role = 'regress_auditor' ORDER BY d.id;
RESET ROLE;

-- And every credits function that a role was not granted, whatever it is
-- (internal helpers and trigger functions included, present or future):
-- called with NULL arguments, each must refuse with 42501.  The NULLs are
-- sub-selects: a STRICT function of constant NULLs is folded away by the
-- planner before the privilege check.
CREATE FUNCTION pg_temp.unrefused_calls(p_role name) RETURNS text[]
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	f record;
	leaks text[] := '{}';
BEGIN
	FOR f IN
		SELECT p.oid::regprocedure::text AS sig,
			   format('SELECT credits.%I(%s)', p.proname,
					  (SELECT coalesce(string_agg('(SELECT NULL::' || format_type(t, NULL) || ')', ', ' ORDER BY o), '')
						 FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, o))) AS sql
		  FROM pg_proc p
		 WHERE p.pronamespace = 'credits'::regnamespace
		   AND NOT has_function_privilege(p_role, p.oid, 'EXECUTE')
		 ORDER BY 1
	LOOP
		BEGIN
			PERFORM set_config('role', p_role, true);
			EXECUTE f.sql;
			leaks := leaks || (f.sig || ': no error');
		EXCEPTION
			WHEN insufficient_privilege THEN NULL;
			WHEN OTHERS THEN leaks := leaks || (f.sig || ': ' || SQLSTATE);
		END;
		PERFORM set_config('role', 'none', true);
	END LOOP;
	RETURN leaks;
END
$$;
SELECT is(pg_temp.unrefused_calls('regress_app'), '{}'::text[],
	'application: every credits function refuses it (42501)');
SELECT is(pg_temp.unrefused_calls('regress_worker'), '{}'::text[],
	'payment worker: every credits function but its three refuses it (42501)');
SELECT is(pg_temp.unrefused_calls('regress_admin'), '{}'::text[],
	'policy admin: every credits function but its seven refuses it (42501)');
SELECT is(pg_temp.unrefused_calls('regress_billing'), '{}'::text[],
	'billing admin: every credits function but its three refuses it (42501)');
SELECT is(pg_temp.unrefused_calls('regress_cron'), '{}'::text[],
	'scheduled jobs: every credits function but its three refuses it (42501)');
SELECT is(pg_temp.unrefused_calls('regress_reporting'), '{}'::text[],
	'reporting: every credits function but its two refuses it (42501)');
SELECT is(pg_temp.unrefused_calls('regress_auditor'), '{}'::text[],
	'auditor: every credits function refuses it (42501)');

SELECT is((SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'credits.send_batches'::regclass AND tgname = 'credits_debit'),
	'O', 'the debit trigger is still enabled after all that');

--------------------------------------------------------------------------------
-- 3. What the worker, the admin and reporting may do
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.enable_auto_recharge(4002, 0, 1000); END $$;
SET ROLE regress_app;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4002, 100, 'app-2'), (4002, 100, 'app-3');
RESET ROLE;

SET ROLE regress_worker;
SELECT results_eq(
	$$SELECT account_id, credits FROM credits.claim_recharges(10)$$,
	$$VALUES (4002::bigint, 130::bigint)$$,
	'payment worker: claims the pending recharge');
SELECT lives_ok(
	$$SELECT credits.complete_recharge(recharge_id, 'regress-worker-ref', claim_token)
		FROM credits.recharges WHERE recharge_id = (SELECT min(recharge_id) FROM credits.recharges WHERE account_id = 4002)$$,
	'payment worker: completes it with its claim token');
RESET ROLE;
SET ROLE regress_app;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (4002, 100, 'app-4');
RESET ROLE;
SET ROLE regress_worker;
SELECT lives_ok($$SELECT credits.claim_recharges(10)$$, 'payment worker: claims the next one');
SELECT lives_ok(
	$$SELECT credits.fail_recharge(recharge_id, 'regress declined', claim_token)
		FROM credits.recharges WHERE recharge_id = (SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 4002)$$,
	'payment worker: fails it with its claim token');
SELECT results_eq($$SELECT pending, processing FROM credits.recharge_queue$$,
	$$VALUES (0::bigint, 0::bigint)$$,
	'payment worker: reads the recharge queue');
SELECT results_eq(
	$$SELECT status FROM credits.recharges WHERE account_id = 4002 ORDER BY recharge_id$$,
	$$VALUES ('succeeded'::text), ('failed')$$,
	'payment worker: reads the recharges it settled');
RESET ROLE;

SET ROLE regress_admin;
SELECT lives_ok($$INSERT INTO credits.prices (channel, credits_per_message) VALUES ('regress_sms', 7)$$,
	'policy admin: adds a price');
SELECT lives_ok($$UPDATE credits.prices SET credits_per_message = 8 WHERE channel = 'regress_sms'$$,
	'policy admin: changes a price');
SELECT lives_ok($$DELETE FROM credits.prices WHERE channel = 'regress_sms'$$,
	'policy admin: removes a price');
SELECT lives_ok($$SELECT credits.open_account(4003, 10)$$, 'policy admin: opens an account');
SELECT lives_ok($$SELECT credits.add_credits(4003, 5, 'regress grant')$$, 'policy admin: grants credits');
SELECT lives_ok($$SELECT credits.enable_auto_recharge(4003, 0, 100)$$, 'policy admin: enables auto-recharge');
SELECT lives_ok($$SELECT credits.disable_auto_recharge(4003)$$, 'policy admin: disables auto-recharge');
SELECT is_empty($$SELECT * FROM credits.verify()$$, 'policy admin: runs verify()');
RESET ROLE;

SET ROLE regress_billing;
SELECT lives_ok($$SELECT credits.grant_credits(4003, 7, 'promo', note => 'regress goodwill')$$,
	'billing admin: grants promotional credits');
SELECT lives_ok($$SELECT credits.set_plan(4003, 100)$$, 'billing admin: starts a plan');
SELECT lives_ok($$SELECT credits.cancel_plan(4003)$$, 'billing admin: cancels it');
RESET ROLE;

SET ROLE regress_cron;
SELECT is(credits.renew_plans(), 0, 'scheduled jobs: renew_plans (nothing due)');
SELECT is(credits.expire_grants(), 0::bigint, 'scheduled jobs: expire_grants (nothing due)');
SELECT is(credits.expire_recharges(), 0, 'scheduled jobs: expire_recharges (nothing due)');
RESET ROLE;

CREATE TEMP TABLE regress_batch_4006 AS
	SELECT batch_id FROM credits.send_batches WHERE account_id = 4006 AND idempotency_key = 'grants-1';
GRANT SELECT ON regress_batch_4006 TO PUBLIC;
SET ROLE regress_reporting;
SELECT lives_ok(format('SELECT * FROM credits.%I', c.relname), format('reporting reads credits.%s', c.relname))
  FROM unnest(ARRAY['account_overview', 'balance_by_grant', 'grants', 'plans', 'recharge_history',
					'recharge_queue', 'usage_daily', 'usage_monthly']) AS c(relname)
 ORDER BY c.relname;
SELECT results_eq(
	$$SELECT balance, plan_credits, promo_credits, bought_credits FROM credits.account_overview WHERE account_id = 4003$$,
	$$VALUES (122::bigint, 100::numeric, 7::numeric, 5::numeric)$$,
	'reporting: the account overview shows what the admins did');
SELECT results_eq(
	$$SELECT source, credits FROM credits.batch_funding((SELECT batch_id FROM regress_batch_4006))$$,
	$$VALUES ('signup'::text, 100::bigint), ('promo', 40), ('plan', 30)$$,
	'reporting: batch_funding shows the grants that paid for a batch');
SELECT is_empty($$SELECT * FROM credits.expiring_credits('1 hour') WHERE account_id BETWEEN 4001 AND 4099$$,
	'reporting: expiring_credits (nothing of this file''s accounts lapses within the hour)');
RESET ROLE;

SET ROLE regress_auditor;
SELECT lives_ok(format('SELECT * FROM credits.%I', c.relname), format('auditor reads credits.%s', c.relname))
  FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY c.relname;
RESET ROLE;

SELECT is_empty($$SELECT * FROM credits.verify()$$, 'verify() is empty at the end');

SELECT * FROM finish();
ROLLBACK;

-- test/pgtap/00_schema.sql: the schema contract of the credits extension.
--
-- Tables (grants and plans since 0.2.0), columns and types, keys, CHECK
-- constraints and indexes, identity columns, the shipped price, the
-- public functions with their exact signatures, the triggers, privileges
-- (nothing for PUBLIC), search_path on SECURITY DEFINER functions, and the
-- installed version.  Runs in a database where CREATE EXTENSION credits was
-- done; everything is rolled back.

BEGIN;
SELECT plan(253);

--------------------------------------------------------------------------------
-- Extension and schema
--------------------------------------------------------------------------------

SELECT has_extension('credits', 'extension credits is installed');
SELECT has_schema('credits', 'schema credits exists');
SELECT is(
	(SELECT e.extnamespace::regnamespace::text FROM pg_catalog.pg_extension e
	  WHERE e.extname = 'credits'),
	'credits',
	'extension credits lives in schema credits');
SELECT is(
	(SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'credits'),
	(SELECT a.default_version FROM pg_catalog.pg_available_extensions a
	  WHERE a.name = 'credits'),
	'installed version equals credits.control default_version');
SELECT is(
	(SELECT e.extrelocatable FROM pg_catalog.pg_extension e WHERE e.extname = 'credits'),
	false,
	'extension credits is not relocatable');

SELECT tables_are('credits',
	ARRAY['accounts', 'prices', 'send_batches', 'auto_recharge', 'recharges', 'ledger_entries', 'grants', 'plans'],
	'schema credits has exactly the eight tables (grants and plans since 0.2.0; ledger_entries, the ledger table renamed, since 0.3.0)');

--------------------------------------------------------------------------------
-- credits.accounts
--------------------------------------------------------------------------------

SELECT has_table('credits', 'accounts', 'table credits.accounts exists');
SELECT has_column('credits', 'accounts', 'account_id', 'accounts.account_id exists');
SELECT col_type_is('credits', 'accounts', 'account_id', 'bigint', 'accounts.account_id is bigint');
SELECT col_is_pk('credits', 'accounts', 'account_id', 'accounts.account_id is the primary key');
SELECT has_column('credits', 'accounts', 'balance', 'accounts.balance exists');
SELECT col_type_is('credits', 'accounts', 'balance', 'bigint', 'accounts.balance is bigint');
SELECT col_not_null('credits', 'accounts', 'balance', 'accounts.balance is NOT NULL');
SELECT has_column('credits', 'accounts', 'in_flight', 'accounts.in_flight exists');
SELECT col_type_is('credits', 'accounts', 'in_flight', 'bigint', 'accounts.in_flight is bigint');
SELECT has_column('credits', 'accounts', 'created_at', 'accounts.created_at exists');
SELECT col_type_is('credits', 'accounts', 'created_at', 'timestamp with time zone',
	'accounts.created_at is timestamptz');

--------------------------------------------------------------------------------
-- credits.prices
--------------------------------------------------------------------------------

SELECT has_table('credits', 'prices', 'table credits.prices exists');
SELECT has_column('credits', 'prices', 'channel', 'prices.channel exists');
SELECT col_type_is('credits', 'prices', 'channel', 'text', 'prices.channel is text');
SELECT col_is_pk('credits', 'prices', 'channel', 'prices.channel is the primary key');
SELECT has_column('credits', 'prices', 'credits_per_message', 'prices.credits_per_message exists');
SELECT col_type_is('credits', 'prices', 'credits_per_message', 'integer',
	'prices.credits_per_message is integer');
SELECT col_not_null('credits', 'prices', 'credits_per_message',
	'prices.credits_per_message is NOT NULL');
SELECT col_has_check('credits', 'prices', 'credits_per_message',
	'prices.credits_per_message has a CHECK constraint');
SELECT throws_ok(
	$$INSERT INTO credits.prices (channel, credits_per_message) VALUES ('regress_zero', 0)$$,
	'23514', NULL,
	'prices.credits_per_message CHECK refuses 0');
SELECT throws_ok(
	$$INSERT INTO credits.prices (channel, credits_per_message) VALUES ('regress_neg', -1)$$,
	'23514', NULL,
	'prices.credits_per_message CHECK refuses a negative price');
SELECT results_eq(
	$$SELECT channel, credits_per_message FROM credits.prices ORDER BY channel$$,
	$$VALUES ('email'::text, 1)$$,
	'the extension ships exactly the price (''email'', 1)');

--------------------------------------------------------------------------------
-- credits.send_batches
--------------------------------------------------------------------------------

SELECT has_table('credits', 'send_batches', 'table credits.send_batches exists');
SELECT has_column('credits', 'send_batches', 'batch_id', 'send_batches.batch_id exists');
SELECT col_type_is('credits', 'send_batches', 'batch_id', 'bigint', 'send_batches.batch_id is bigint');
SELECT col_is_pk('credits', 'send_batches', 'batch_id', 'send_batches.batch_id is the primary key');
SELECT has_column('credits', 'send_batches', 'account_id', 'send_batches.account_id exists');
SELECT col_type_is('credits', 'send_batches', 'account_id', 'bigint', 'send_batches.account_id is bigint');
SELECT col_not_null('credits', 'send_batches', 'account_id', 'send_batches.account_id is NOT NULL');
SELECT has_column('credits', 'send_batches', 'messages', 'send_batches.messages exists');
SELECT col_type_is('credits', 'send_batches', 'messages', 'integer', 'send_batches.messages is integer');
SELECT col_not_null('credits', 'send_batches', 'messages', 'send_batches.messages is NOT NULL');
SELECT has_column('credits', 'send_batches', 'channel', 'send_batches.channel exists');
SELECT col_type_is('credits', 'send_batches', 'channel', 'text', 'send_batches.channel is text');
SELECT col_not_null('credits', 'send_batches', 'channel', 'send_batches.channel is NOT NULL');
SELECT col_default_is('credits', 'send_batches', 'channel', 'email',
	'send_batches.channel defaults to ''email''');
SELECT has_column('credits', 'send_batches', 'idempotency_key', 'send_batches.idempotency_key exists');
SELECT col_type_is('credits', 'send_batches', 'idempotency_key', 'text',
	'send_batches.idempotency_key is text');
SELECT col_is_null('credits', 'send_batches', 'idempotency_key',
	'send_batches.idempotency_key is nullable');
SELECT has_column('credits', 'send_batches', 'cost', 'send_batches.cost exists');
SELECT col_type_is('credits', 'send_batches', 'cost', 'bigint', 'send_batches.cost is bigint');
SELECT has_column('credits', 'send_batches', 'status', 'send_batches.status exists');
SELECT col_type_is('credits', 'send_batches', 'status', 'text', 'send_batches.status is text');
SELECT has_column('credits', 'send_batches', 'recharge_id', 'send_batches.recharge_id exists');
SELECT col_type_is('credits', 'send_batches', 'recharge_id', 'bigint', 'send_batches.recharge_id is bigint');
SELECT col_is_null('credits', 'send_batches', 'recharge_id', 'send_batches.recharge_id is nullable');
SELECT has_column('credits', 'send_batches', 'created_at', 'send_batches.created_at exists');
SELECT col_type_is('credits', 'send_batches', 'created_at', 'timestamp with time zone',
	'send_batches.created_at is timestamptz');
SELECT col_is_unique('credits', 'send_batches', ARRAY['account_id', 'idempotency_key']::name[],
	'send_batches has UNIQUE (account_id, idempotency_key)');
SELECT has_column('credits', 'send_batches', 'owed', 'send_batches.owed exists (0.2.0)');
SELECT col_type_is('credits', 'send_batches', 'owed', 'bigint', 'send_batches.owed is bigint');
SELECT col_not_null('credits', 'send_batches', 'owed', 'send_batches.owed is NOT NULL');
SELECT col_default_is('credits', 'send_batches', 'owed', '0', 'send_batches.owed defaults to 0');
SELECT col_has_check('credits', 'send_batches', 'owed', 'send_batches.owed has a CHECK constraint');
SELECT matches(
	(SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c
	  WHERE c.conrelid = 'credits.send_batches'::regclass AND c.contype = 'c'
		AND pg_catalog.pg_get_constraintdef(c.oid) LIKE '%owed%'),
	'owed >= 0',
	'send_batches.owed CHECK: owed >= 0');

--------------------------------------------------------------------------------
-- credits.auto_recharge
--------------------------------------------------------------------------------

SELECT has_table('credits', 'auto_recharge', 'table credits.auto_recharge exists');
SELECT has_column('credits', 'auto_recharge', 'account_id', 'auto_recharge.account_id exists');
SELECT col_type_is('credits', 'auto_recharge', 'account_id', 'bigint', 'auto_recharge.account_id is bigint');
SELECT col_is_pk('credits', 'auto_recharge', 'account_id', 'auto_recharge.account_id is the primary key');
SELECT has_column('credits', 'auto_recharge', 'enabled', 'auto_recharge.enabled exists');
SELECT col_type_is('credits', 'auto_recharge', 'enabled', 'boolean', 'auto_recharge.enabled is boolean');
SELECT has_column('credits', 'auto_recharge', 'min_balance', 'auto_recharge.min_balance exists');
SELECT col_type_is('credits', 'auto_recharge', 'min_balance', 'bigint', 'auto_recharge.min_balance is bigint');
SELECT has_column('credits', 'auto_recharge', 'max_credits', 'auto_recharge.max_credits exists');
SELECT col_type_is('credits', 'auto_recharge', 'max_credits', 'bigint', 'auto_recharge.max_credits is bigint');

--------------------------------------------------------------------------------
-- credits.recharges
--------------------------------------------------------------------------------

SELECT has_table('credits', 'recharges', 'table credits.recharges exists');
SELECT has_column('credits', 'recharges', 'recharge_id', 'recharges.recharge_id exists');
SELECT col_type_is('credits', 'recharges', 'recharge_id', 'bigint', 'recharges.recharge_id is bigint');
SELECT col_is_pk('credits', 'recharges', 'recharge_id', 'recharges.recharge_id is the primary key');
SELECT has_column('credits', 'recharges', 'account_id', 'recharges.account_id exists');
SELECT col_type_is('credits', 'recharges', 'account_id', 'bigint', 'recharges.account_id is bigint');
SELECT has_column('credits', 'recharges', 'credits', 'recharges.credits exists');
SELECT col_type_is('credits', 'recharges', 'credits', 'bigint', 'recharges.credits is bigint');
SELECT has_column('credits', 'recharges', 'status', 'recharges.status exists');
SELECT col_type_is('credits', 'recharges', 'status', 'text', 'recharges.status is text');
SELECT has_column('credits', 'recharges', 'reason', 'recharges.reason exists');
SELECT col_type_is('credits', 'recharges', 'reason', 'text', 'recharges.reason is text');
SELECT has_column('credits', 'recharges', 'batch_id', 'recharges.batch_id exists');
SELECT col_type_is('credits', 'recharges', 'batch_id', 'bigint', 'recharges.batch_id is bigint');
SELECT col_is_null('credits', 'recharges', 'batch_id', 'recharges.batch_id is nullable');
SELECT has_column('credits', 'recharges', 'balance_seen', 'recharges.balance_seen exists');
SELECT col_type_is('credits', 'recharges', 'balance_seen', 'bigint', 'recharges.balance_seen is bigint');
SELECT has_column('credits', 'recharges', 'payment_ref', 'recharges.payment_ref exists');
SELECT col_type_is('credits', 'recharges', 'payment_ref', 'text', 'recharges.payment_ref is text');
SELECT col_is_unique('credits', 'recharges', 'payment_ref', 'recharges.payment_ref is UNIQUE');
SELECT has_column('credits', 'recharges', 'created_at', 'recharges.created_at exists');
SELECT col_type_is('credits', 'recharges', 'created_at', 'timestamp with time zone',
	'recharges.created_at is timestamptz');
SELECT has_column('credits', 'recharges', 'claimed_at', 'recharges.claimed_at exists');
SELECT col_type_is('credits', 'recharges', 'claimed_at', 'timestamp with time zone',
	'recharges.claimed_at is timestamptz');
SELECT has_column('credits', 'recharges', 'settled_at', 'recharges.settled_at exists');
SELECT col_type_is('credits', 'recharges', 'settled_at', 'timestamp with time zone',
	'recharges.settled_at is timestamptz');
SELECT has_column('credits', 'recharges', 'failure_reason', 'recharges.failure_reason exists');
SELECT col_type_is('credits', 'recharges', 'failure_reason', 'text', 'recharges.failure_reason is text');

--------------------------------------------------------------------------------
-- credits.ledger
--------------------------------------------------------------------------------

SELECT has_view('credits', 'ledger', 'credits.ledger is a view (0.3.0): the batches'' debit entries and ledger_entries');
SELECT has_column('credits', 'ledger', 'entry_id', 'ledger.entry_id exists');
SELECT col_type_is('credits', 'ledger', 'entry_id', 'bigint', 'ledger.entry_id is bigint');
SELECT has_column('credits', 'ledger', 'account_id', 'ledger.account_id exists');
SELECT col_type_is('credits', 'ledger', 'account_id', 'bigint', 'ledger.account_id is bigint');
SELECT has_column('credits', 'ledger', 'delta', 'ledger.delta exists');
SELECT col_type_is('credits', 'ledger', 'delta', 'bigint', 'ledger.delta is bigint');
SELECT has_column('credits', 'ledger', 'balance_after', 'ledger.balance_after exists');
SELECT col_type_is('credits', 'ledger', 'balance_after', 'bigint', 'ledger.balance_after is bigint');
SELECT has_column('credits', 'ledger', 'kind', 'ledger.kind exists');
SELECT col_type_is('credits', 'ledger', 'kind', 'text', 'ledger.kind is text');
SELECT has_column('credits', 'ledger', 'batch_id', 'ledger.batch_id exists');
SELECT col_type_is('credits', 'ledger', 'batch_id', 'bigint', 'ledger.batch_id is bigint');
SELECT has_column('credits', 'ledger', 'recharge_id', 'ledger.recharge_id exists');
SELECT col_type_is('credits', 'ledger', 'recharge_id', 'bigint', 'ledger.recharge_id is bigint');
SELECT has_column('credits', 'ledger', 'created_at', 'ledger.created_at exists');
SELECT col_type_is('credits', 'ledger', 'created_at', 'timestamp with time zone',
	'ledger.created_at is timestamptz');
SELECT has_column('credits', 'ledger', 'grant_id', 'ledger.grant_id exists (0.2.0)');
SELECT col_type_is('credits', 'ledger', 'grant_id', 'bigint', 'ledger.grant_id is bigint');
SELECT has_table('credits', 'ledger_entries', 'table credits.ledger_entries exists');
SELECT col_is_pk('credits', 'ledger_entries', 'entry_id', 'ledger_entries.entry_id is the primary key');
SELECT is(
	(SELECT string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
	   FROM pg_catalog.pg_attribute a
	  WHERE a.attrelid = 'credits.ledger_entries'::regclass AND a.attnum > 0 AND NOT a.attisdropped),
	(SELECT string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
	   FROM pg_catalog.pg_attribute a
	  WHERE a.attrelid = 'credits.ledger'::regclass AND a.attnum > 0 AND NOT a.attisdropped),
	'ledger_entries has the columns of the ledger view, in the same order and types');
SELECT col_is_null('credits', 'ledger_entries', 'grant_id', 'ledger_entries.grant_id is nullable (owed parts, rows before 0.2.0)');
SELECT results_eq(
	$$SELECT a.attname::text COLLATE "default", pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
		FROM pg_catalog.pg_attribute a
	   WHERE a.attrelid = 'credits.send_batches'::regclass AND a.attname LIKE 'entry%' AND NOT a.attisdropped
	   ORDER BY a.attnum$$,
	$$VALUES ('entry_id', 'bigint', false), ('entry_delta', 'bigint', false),
			 ('entry_balance_after', 'bigint', false), ('entry_grant_id', 'bigint', false),
			 ('entry_recharge_id', 'bigint', false)$$,
	'send_batches carries its debit entry (0.3.0), nullable: batches debited before 0.3.0 have none');

--------------------------------------------------------------------------------
-- credits.grants (0.2.0)
--------------------------------------------------------------------------------

SELECT has_table('credits', 'grants', 'table credits.grants exists');
SELECT columns_are('credits', 'grants',
	ARRAY['grant_id', 'account_id', 'source', 'credits', 'remaining', 'priority', 'expires_at',
		  'created_at', 'recharge_id', 'period_start', 'note', 'carried_over', 'closed_at'],
	'grants has exactly the columns of doc/grants.md');
SELECT results_eq(
	$$SELECT a.attname::text COLLATE "default", pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
		FROM pg_catalog.pg_attribute a
	   WHERE a.attrelid = 'credits.grants'::regclass AND a.attnum > 0 AND NOT a.attisdropped
	   ORDER BY a.attnum$$,
	$$VALUES ('grant_id', 'bigint', true), ('account_id', 'bigint', true), ('source', 'text', true),
			 ('credits', 'bigint', true), ('remaining', 'bigint', true), ('priority', 'integer', true),
			 ('expires_at', 'timestamp with time zone', false), ('created_at', 'timestamp with time zone', true),
			 ('recharge_id', 'bigint', false), ('period_start', 'timestamp with time zone', false),
			 ('note', 'text', false), ('carried_over', 'bigint', true), ('closed_at', 'timestamp with time zone', false)$$,
	'grants: column order, types and NOT NULL');
SELECT col_is_pk('credits', 'grants', 'grant_id', 'grants.grant_id is the primary key');
SELECT fk_ok('credits', 'grants', 'account_id', 'credits', 'accounts', 'account_id',
	'grants.account_id references accounts');
SELECT col_default_is('credits', 'grants', 'carried_over', '0', 'grants.carried_over defaults to 0');
SELECT col_default_is('credits', 'grants', 'created_at', 'now()', 'grants.created_at defaults to now()');
-- One CHECK constraint only (a debit updates its grant, and every CHECK is
-- rebuilt per UPDATE statement: bench/PROFILE.md); verify() check 20 holds
-- the rest.
SELECT is(
	(SELECT array_agg(pg_catalog.pg_get_constraintdef(c.oid) ORDER BY c.conname)
	   FROM pg_catalog.pg_constraint c
	  WHERE c.conrelid = 'credits.grants'::regclass AND c.contype = 'c'),
	ARRAY['CHECK ((remaining >= 0))'],
	'grants has one CHECK constraint, remaining >= 0 (the others are verify() check 20)');

-- Malformed rows, inserted directly as the owner (the extension itself
-- never writes such rows): the table refuses what its constraints cover,
-- and verify() names every other one.
DO $$ BEGIN PERFORM credits.open_account(901, 0); END $$;
CREATE TEMP TABLE regress_bad_grants (what text NOT NULL, sqlstate text NOT NULL, sql text NOT NULL);
INSERT INTO regress_bad_grants VALUES
	('negative remaining', '23514', $$(901, 'promo', 5, -1, 30, NULL, NULL, 0, NULL)$$),
	('an unknown account', '23503', $$(999999901, 'promo', 5, 5, 30, NULL, NULL, 0, NULL)$$),
	('NULL credits', '23502', $$(901, 'promo', NULL, 5, 30, NULL, NULL, 0, NULL)$$),
	('NULL priority', '23502', $$(901, 'promo', 5, 5, NULL, NULL, NULL, 0, NULL)$$);
SELECT throws_ok(
	'INSERT INTO credits.grants (account_id, source, credits, remaining, priority, recharge_id, period_start, carried_over, closed_at) VALUES '
		|| b.sql,
	b.sqlstate, NULL, format('grants refuses %s (%s)', b.what, b.sqlstate))
  FROM regress_bad_grants b ORDER BY b.what;
CREATE TEMP TABLE regress_malformed_grants (what text NOT NULL, sql text NOT NULL);
INSERT INTO regress_malformed_grants VALUES
	('credits 0', $$(901, 'promo', 0, 0, 30, NULL, NULL, 0, NULL)$$),
	('negative credits', $$(901, 'promo', -5, 0, 30, NULL, NULL, 0, NULL)$$),
	('remaining above credits', $$(901, 'promo', 5, 6, 30, NULL, NULL, 0, NULL)$$),
	('priority -1', $$(901, 'promo', 5, 5, -1, NULL, NULL, 0, NULL)$$),
	('priority 101', $$(901, 'promo', 5, 5, 101, NULL, NULL, 0, NULL)$$),
	('an unknown source', $$(901, 'gift', 5, 5, 30, NULL, NULL, 0, NULL)$$),
	('a recharge grant without a recharge_id', $$(901, 'recharge', 5, 5, 50, NULL, NULL, 0, NULL)$$),
	('a purchase grant naming a recharge', $$(901, 'purchase', 5, 5, 50, 12345, NULL, 0, NULL)$$),
	('a plan grant without a period_start', $$(901, 'plan', 5, 5, 10, NULL, NULL, 0, NULL)$$),
	('a promo grant with a period_start', $$(901, 'promo', 5, 5, 30, NULL, now(), 0, NULL)$$),
	('negative carried_over', $$(901, 'purchase', 5, 5, 50, NULL, NULL, -1, NULL)$$),
	('carried_over above credits', $$(901, 'purchase', 5, 5, 50, NULL, NULL, 6, NULL)$$);
CREATE FUNCTION pg_temp.malformed_reported(row_sql text) RETURNS bigint LANGUAGE plpgsql AS $f$
DECLARE
	n bigint;
BEGIN
	EXECUTE 'INSERT INTO credits.grants (account_id, source, credits, remaining, priority, recharge_id, period_start, carried_over, closed_at) VALUES ' || row_sql;
	SELECT count(*) INTO n FROM credits.verify() v WHERE v.problem LIKE 'grant % is malformed:%';
	DELETE FROM credits.grants WHERE account_id = 901;
	RETURN n;
END
$f$;
SELECT is(pg_temp.malformed_reported(m.sql), 1::bigint,
		  format('verify() reports a grant with %s (check 20)', m.what))
  FROM regress_malformed_grants m ORDER BY m.what;
SELECT is(pg_temp.malformed_reported(
		$$(901, 'promo', 5, 1, 30, NULL, NULL, 0, now())$$ ), 0::bigint,
	'a closed grant with credits left is check 17''s (not malformed)');
SELECT lives_ok(
	$$INSERT INTO credits.grants (account_id, source, credits, remaining, priority, period_start, expires_at, recharge_id)
		VALUES (901, 'plan', 5, 5, 10, '2026-01-01 00:00+00', '2026-02-01 00:00+00', NULL),
			   (901, 'plan', 5, 5, 10, '2026-02-01 00:00+00', '2026-03-01 00:00+00', NULL),
			   (901, 'recharge', 5, 0, 50, NULL, NULL, 987654321)$$,
	'grants takes two plan periods of one account and a recharge grant');
SELECT is((SELECT count(*) FROM credits.verify() v WHERE v.problem LIKE 'grant % is malformed:%'), 0::bigint,
	'verify() finds those well formed');
SELECT throws_ok(
	$$INSERT INTO credits.grants (account_id, source, credits, remaining, priority, period_start, expires_at)
		VALUES (901, 'plan', 7, 7, 10, '2026-02-01 00:00+00', '2026-03-01 00:00+00')$$,
	'23505', NULL, 'grants refuses a second plan grant for one account and period (23505)');
SELECT is(pg_temp.malformed_reported(
		$$(901, 'recharge', 7, 7, 50, 987654321, NULL, 0, NULL)$$), 2::bigint,
	'verify() reports two grants for one recharge (check 20)');
SELECT throws_ok(
	$$INSERT INTO credits.grants (grant_id, account_id, source, credits, remaining, priority)
		VALUES (1, 901, 'promo', 7, 7, 30)$$,
	'428C9', NULL, 'grants.grant_id is GENERATED ALWAYS (428C9)');

--------------------------------------------------------------------------------
-- credits.plans (0.2.0)
--------------------------------------------------------------------------------

SELECT has_table('credits', 'plans', 'table credits.plans exists');
SELECT results_eq(
	$$SELECT a.attname::text COLLATE "default", pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
		FROM pg_catalog.pg_attribute a
	   WHERE a.attrelid = 'credits.plans'::regclass AND a.attnum > 0 AND NOT a.attisdropped
	   ORDER BY a.attnum$$,
	$$VALUES ('account_id', 'bigint', true), ('monthly_credits', 'bigint', true),
			 ('anchored_at', 'timestamp with time zone', true), ('period_start', 'timestamp with time zone', true),
			 ('period_end', 'timestamp with time zone', true), ('cancelled_at', 'timestamp with time zone', false),
			 ('ended_at', 'timestamp with time zone', false), ('created_at', 'timestamp with time zone', true),
			 ('updated_at', 'timestamp with time zone', true)$$,
	'plans: exactly these columns, in order, with their types and NOT NULL');
SELECT col_is_pk('credits', 'plans', 'account_id', 'plans.account_id is the primary key (one plan per account)');
SELECT fk_ok('credits', 'plans', 'account_id', 'credits', 'accounts', 'account_id',
	'plans.account_id references accounts');
SELECT throws_ok(
	$$INSERT INTO credits.plans (account_id, monthly_credits, anchored_at, period_start, period_end)
		VALUES (901, 0, '2026-01-01 00:00+00', '2026-01-01 00:00+00', '2026-02-01 00:00+00')$$,
	'23514', NULL, 'plans refuses monthly_credits 0 (23514)');
SELECT throws_ok(
	$$INSERT INTO credits.plans (account_id, monthly_credits, anchored_at, period_start, period_end)
		VALUES (901, 10, '2026-01-01 00:00+00', '2026-01-01 00:00+00', '2026-01-01 00:00+00')$$,
	'23514', NULL, 'plans refuses a period that ends when it starts (23514)');
SELECT throws_ok(
	$$INSERT INTO credits.plans (account_id, monthly_credits, anchored_at, period_start, period_end)
		VALUES (999999901, 10, '2026-01-01 00:00+00', '2026-01-01 00:00+00', '2026-02-01 00:00+00')$$,
	'23503', NULL, 'plans refuses an unknown account (23503)');

--------------------------------------------------------------------------------
-- Indexes of 0.2.0
--------------------------------------------------------------------------------

SELECT results_eq(
	$$SELECT i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid)
		FROM pg_catalog.pg_index i
	   WHERE i.indrelid IN ('credits.grants'::regclass, 'credits.plans'::regclass)
	   ORDER BY 1$$,
	$$VALUES
		('credits.grants_expiry_idx',
		 'CREATE INDEX grants_expiry_idx ON credits.grants USING btree (expires_at) WHERE ((closed_at IS NULL) AND (expires_at IS NOT NULL))'),
		('credits.grants_one_per_plan_period',
		 'CREATE UNIQUE INDEX grants_one_per_plan_period ON credits.grants USING btree (account_id, period_start) WHERE (source = ''plan''::text)'),
		('credits.grants_open_idx',
		 'CREATE INDEX grants_open_idx ON credits.grants USING btree (account_id) WHERE (closed_at IS NULL)'),
		('credits.grants_pkey',
		 'CREATE UNIQUE INDEX grants_pkey ON credits.grants USING btree (grant_id)'),
		('credits.plans_due_idx',
		 'CREATE INDEX plans_due_idx ON credits.plans USING btree (period_end) WHERE (ended_at IS NULL)'),
		('credits.plans_pkey',
		 'CREATE UNIQUE INDEX plans_pkey ON credits.plans USING btree (account_id)')$$,
	'grants and plans have exactly these indexes: open grants per account, due expiries, one plan grant per period, due plans');
SELECT results_eq(
	$$SELECT i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid)
		FROM pg_catalog.pg_index i
	   WHERE i.indrelid IN ('credits.ledger_entries'::regclass, 'credits.send_batches'::regclass)
		 AND i.indexrelid::regclass::text IN ('credits.ledger_one_refund_per_batch_grant', 'credits.ledger_batch_idx',
											  'credits.ledger_grant_events_idx', 'credits.send_batches_owed_idx',
											  'credits.ledger_one_refund_per_batch')
	   ORDER BY 1$$,
	$$VALUES
		('credits.ledger_batch_idx',
		 'CREATE INDEX ledger_batch_idx ON credits.ledger_entries USING btree (batch_id) WHERE ((batch_id IS NOT NULL) AND ((kind <> ''debit''::text) OR (recharge_id IS NOT NULL)))'),
		('credits.ledger_grant_events_idx',
		 'CREATE INDEX ledger_grant_events_idx ON credits.ledger_entries USING btree (grant_id) WHERE (kind = ANY (ARRAY[''refund''::text, ''expire''::text]))'),
		('credits.ledger_one_refund_per_batch_grant',
		 'CREATE UNIQUE INDEX ledger_one_refund_per_batch_grant ON credits.ledger_entries USING btree (batch_id, COALESCE(grant_id, (0)::bigint)) WHERE (kind = ''refund''::text)'),
		('credits.send_batches_owed_idx',
		 'CREATE INDEX send_batches_owed_idx ON credits.send_batches USING btree (account_id, batch_id) WHERE (owed > 0)')$$,
	'ledger and send_batches: one refund per batch and grant (not per batch), the refund and grant-event indexes, the debts index');

--------------------------------------------------------------------------------
-- Identity columns, and tables pg_dump keeps
--------------------------------------------------------------------------------

SELECT results_eq(
	$$SELECT c.relname::text COLLATE "default", a.attname::text COLLATE "default"
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
	   WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'r'
		 AND a.attidentity IN ('a', 'd') AND NOT a.attisdropped
	   ORDER BY 1, 2$$,
	$$VALUES ('grants', 'grant_id'), ('ledger_entries', 'entry_id'), ('recharges', 'recharge_id'), ('send_batches', 'batch_id')$$,
	'batch_id, recharge_id, entry_id and grant_id are the identity columns');

SELECT set_eq(
	$$SELECT c.oid::regclass::text FROM pg_catalog.pg_extension e,
			 unnest(e.extconfig) AS x(oid) JOIN pg_catalog.pg_class c ON c.oid = x.oid
	   WHERE e.extname = 'credits' AND c.relkind = 'r'$$,
	ARRAY['credits.accounts', 'credits.prices', 'credits.send_batches',
		  'credits.auto_recharge', 'credits.recharges', 'credits.ledger_entries',
		  'credits.grants', 'credits.plans'],
	'all eight tables are registered with pg_extension_config_dump');
SELECT set_eq(
	$$SELECT c.oid::regclass::text FROM pg_catalog.pg_extension e,
			 unnest(e.extconfig) AS x(oid) JOIN pg_catalog.pg_class c ON c.oid = x.oid
	   WHERE e.extname = 'credits' AND c.relkind = 'S'$$,
	ARRAY['credits.send_batches_batch_id_seq', 'credits.recharges_recharge_id_seq',
		  'credits.ledger_entry_id_seq', 'credits.grants_grant_id_seq'],
	'the four identity sequences are registered with pg_extension_config_dump');

--------------------------------------------------------------------------------
-- Statuses and kinds the CHECK constraints allow
--------------------------------------------------------------------------------

SELECT matches(
	(SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c
	  WHERE c.conrelid = 'credits.send_batches'::regclass AND c.contype = 'c'
		AND pg_catalog.pg_get_constraintdef(c.oid) LIKE '%status%'),
	'ready.*awaiting_credits.*failed',
	'send_batches.status is one of ready, awaiting_credits, failed');
SELECT matches(
	(SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c
	  WHERE c.conrelid = 'credits.recharges'::regclass AND c.contype = 'c'
		AND pg_catalog.pg_get_constraintdef(c.oid) LIKE '%status%'),
	'pending.*processing.*succeeded.*failed.*cancelled',
	'recharges.status is one of pending, processing, succeeded, failed, cancelled');
SELECT matches(
	(SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c
	  WHERE c.conrelid = 'credits.ledger_entries'::regclass AND c.contype = 'c'
		AND pg_catalog.pg_get_constraintdef(c.oid) LIKE '%kind%'),
	'open.*grant.*debit.*recharge.*refund.*plan.*expire.*repay',
	'ledger.kind is one of open, grant, debit, recharge, refund, plan, expire, repay');

--------------------------------------------------------------------------------
-- Public functions: exact signatures and return types
--------------------------------------------------------------------------------

SELECT has_function('credits', 'open_account', ARRAY['bigint', 'bigint'],
	'credits.open_account(bigint, bigint) exists');
SELECT function_returns('credits', 'open_account', ARRAY['bigint', 'bigint'], 'credits.accounts',
	'credits.open_account returns credits.accounts');
SELECT has_function('credits', 'add_credits', ARRAY['bigint', 'bigint', 'text'],
	'credits.add_credits(bigint, bigint, text) exists');
SELECT function_returns('credits', 'add_credits', ARRAY['bigint', 'bigint', 'text'], 'bigint',
	'credits.add_credits returns bigint');
SELECT has_function('credits', 'enable_auto_recharge', ARRAY['bigint', 'bigint', 'bigint', 'bigint', 'bigint'],
	'credits.enable_auto_recharge(bigint, bigint, bigint, bigint, bigint) exists');
SELECT function_returns('credits', 'enable_auto_recharge', ARRAY['bigint', 'bigint', 'bigint', 'bigint', 'bigint'],
	'credits.auto_recharge', 'credits.enable_auto_recharge returns credits.auto_recharge');
SELECT has_function('credits', 'disable_auto_recharge', ARRAY['bigint'],
	'credits.disable_auto_recharge(bigint) exists');
SELECT function_returns('credits', 'disable_auto_recharge', ARRAY['bigint'],
	'credits.auto_recharge', 'credits.disable_auto_recharge returns credits.auto_recharge');
SELECT has_function('credits', 'claim_recharges', ARRAY['integer'],
	'credits.claim_recharges(integer) exists');
SELECT function_returns('credits', 'claim_recharges', ARRAY['integer'], 'setof credits.recharges',
	'credits.claim_recharges returns SETOF credits.recharges');
SELECT has_function('credits', 'complete_recharge', ARRAY['bigint', 'text'],
	'credits.complete_recharge(bigint, text) exists');
SELECT function_returns('credits', 'complete_recharge', ARRAY['bigint', 'text'], 'credits.recharges',
	'credits.complete_recharge returns credits.recharges');
SELECT has_function('credits', 'fail_recharge', ARRAY['bigint', 'text'],
	'credits.fail_recharge(bigint, text) exists');
SELECT function_returns('credits', 'fail_recharge', ARRAY['bigint', 'text'], 'credits.recharges',
	'credits.fail_recharge returns credits.recharges');
SELECT has_function('credits', 'verify', ARRAY[]::name[], 'credits.verify() exists');
SELECT function_returns('credits', 'verify', ARRAY[]::name[], 'setof record',
	'credits.verify returns a set');
-- 0.2.0
SELECT has_function('credits', 'open_account', ARRAY['bigint', 'bigint', 'timestamp with time zone'],
	'credits.open_account(bigint, bigint, timestamptz) exists');
SELECT function_returns('credits', 'open_account', ARRAY['bigint', 'bigint', 'timestamp with time zone'],
	'credits.accounts', 'credits.open_account(bigint, bigint, timestamptz) returns credits.accounts');
SELECT has_function('credits', 'grant_credits',
	ARRAY['bigint', 'bigint', 'text', 'timestamp with time zone', 'integer', 'text'],
	'credits.grant_credits(bigint, bigint, text, timestamptz, integer, text) exists');
SELECT function_returns('credits', 'grant_credits',
	ARRAY['bigint', 'bigint', 'text', 'timestamp with time zone', 'integer', 'text'], 'bigint',
	'credits.grant_credits returns bigint');
SELECT has_function('credits', 'set_plan', ARRAY['bigint', 'bigint', 'timestamp with time zone'],
	'credits.set_plan(bigint, bigint, timestamptz) exists');
SELECT function_returns('credits', 'set_plan', ARRAY['bigint', 'bigint', 'timestamp with time zone'],
	'credits.plans', 'credits.set_plan returns credits.plans');
SELECT has_function('credits', 'cancel_plan', ARRAY['bigint'], 'credits.cancel_plan(bigint) exists');
SELECT function_returns('credits', 'cancel_plan', ARRAY['bigint'], 'credits.plans',
	'credits.cancel_plan returns credits.plans');
SELECT has_function('credits', 'renew_plans', ARRAY['timestamp with time zone'],
	'credits.renew_plans(timestamptz) exists');
SELECT function_returns('credits', 'renew_plans', ARRAY['timestamp with time zone'], 'integer',
	'credits.renew_plans returns integer');
SELECT has_function('credits', 'expire_grants', ARRAY['timestamp with time zone'],
	'credits.expire_grants(timestamptz) exists');
SELECT function_returns('credits', 'expire_grants', ARRAY['timestamp with time zone'], 'bigint',
	'credits.expire_grants returns bigint');
SELECT has_function('credits', 'expiring_credits', ARRAY['interval'],
	'credits.expiring_credits(interval) exists');
SELECT function_returns('credits', 'expiring_credits', ARRAY['interval'], 'setof record',
	'credits.expiring_credits returns a set');
SELECT has_function('credits', 'batch_funding', ARRAY['bigint'], 'credits.batch_funding(bigint) exists');
SELECT function_returns('credits', 'batch_funding', ARRAY['bigint'], 'setof record',
	'credits.batch_funding returns a set');
SELECT has_function('credits', 'carry_over_balances', ARRAY[]::name[],
	'credits.carry_over_balances() exists');
SELECT function_returns('credits', 'carry_over_balances', ARRAY[]::name[], 'integer',
	'credits.carry_over_balances returns integer');

-- Argument names and defaults are part of the interface (named notation).
SELECT results_eq(
	$$SELECT p.proname::text COLLATE "default", pg_catalog.pg_get_function_arguments(p.oid),
			 pg_catalog.pg_get_function_result(p.oid)
		FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'credits'::regnamespace
		 AND p.proname IN ('open_account', 'add_credits', 'enable_auto_recharge',
						   'disable_auto_recharge', 'claim_recharges', 'complete_recharge',
						   'fail_recharge', 'release_recharge', 'verify',
						   'grant_credits', 'set_plan', 'cancel_plan', 'renew_plans',
						   'expire_grants', 'expiring_credits', 'batch_funding', 'carry_over_balances')
	   ORDER BY 1, 2$$,
	$$VALUES
		('add_credits', 'account_id bigint, credits bigint, note text DEFAULT NULL::text', 'bigint'),
		('batch_funding', 'batch_id bigint', 'TABLE(grant_id bigint, source text, credits bigint)'),
		('cancel_plan', 'account_id bigint', 'credits.plans'),
		('carry_over_balances', '', 'integer'),
		('claim_recharges', 'max_rows integer DEFAULT 1', 'SETOF credits.recharges'),
		('complete_recharge', 'recharge_id bigint, payment_ref text', 'credits.recharges'),
		('complete_recharge', 'recharge_id bigint, payment_ref text, claim_token uuid', 'credits.recharges'),
		('disable_auto_recharge', 'account_id bigint', 'credits.auto_recharge'),
		('enable_auto_recharge', 'account_id bigint, min_balance bigint, max_credits bigint, target_balance bigint DEFAULT NULL::bigint, monthly_limit bigint DEFAULT NULL::bigint',
		 'credits.auto_recharge'),
		('expire_grants', 'at timestamp with time zone DEFAULT NULL::timestamp with time zone', 'bigint'),
		('expiring_credits', 'within interval',
		 'TABLE(account_id bigint, grant_id bigint, source text, remaining bigint, expires_at timestamp with time zone)'),
		('fail_recharge', 'recharge_id bigint, reason text', 'credits.recharges'),
		('fail_recharge', 'recharge_id bigint, reason text, claim_token uuid', 'credits.recharges'),
		('grant_credits', 'account_id bigint, credits bigint, source text DEFAULT ''promo''::text, expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone, priority integer DEFAULT NULL::integer, note text DEFAULT NULL::text',
		 'bigint'),
		('open_account', 'account_id bigint, initial_credits bigint DEFAULT 0', 'credits.accounts'),
		('open_account', 'account_id bigint, initial_credits bigint, initial_expires_at timestamp with time zone', 'credits.accounts'),
		('release_recharge', 'recharge_id bigint', 'credits.recharges'),
		('release_recharge', 'recharge_id bigint, claim_token uuid', 'credits.recharges'),
		('renew_plans', 'at timestamp with time zone DEFAULT NULL::timestamp with time zone', 'integer'),
		('set_plan', 'account_id bigint, monthly_credits bigint, starts_at timestamp with time zone DEFAULT NULL::timestamp with time zone', 'credits.plans'),
		('verify', '', 'TABLE(account_id bigint, problem text)')$$,
	'the public functions have exactly these overloads, argument names and defaults (complete, fail and release: with and without a claim token; open_account: with and without an expiry)');

-- Every public API function runs with its owner's rights.
SELECT is_definer('credits', 'open_account', ARRAY['bigint', 'bigint'],
	'credits.open_account is SECURITY DEFINER');
SELECT is_definer('credits', 'add_credits', ARRAY['bigint', 'bigint', 'text'],
	'credits.add_credits is SECURITY DEFINER');
SELECT is_definer('credits', 'enable_auto_recharge', ARRAY['bigint', 'bigint', 'bigint', 'bigint', 'bigint'],
	'credits.enable_auto_recharge is SECURITY DEFINER');
SELECT is_definer('credits', 'disable_auto_recharge', ARRAY['bigint'],
	'credits.disable_auto_recharge is SECURITY DEFINER');
SELECT is_definer('credits', 'claim_recharges', ARRAY['integer'],
	'credits.claim_recharges is SECURITY DEFINER');
SELECT is_definer('credits', 'complete_recharge', ARRAY['bigint', 'text'],
	'credits.complete_recharge is SECURITY DEFINER');
SELECT is_definer('credits', 'fail_recharge', ARRAY['bigint', 'text'],
	'credits.fail_recharge is SECURITY DEFINER');
SELECT is_definer('credits', 'verify', ARRAY[]::name[],
	'credits.verify is SECURITY DEFINER');
SELECT results_eq(
	$$SELECT p.oid::regprocedure::text, p.prosecdef
		FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'credits'::regnamespace
		 AND p.proname IN ('open_account', 'grant_credits', 'set_plan', 'cancel_plan', 'renew_plans',
						   'expire_grants', 'expiring_credits', 'batch_funding', 'carry_over_balances')
	   ORDER BY 1$$,
	$$VALUES ('credits.batch_funding(bigint)', true),
			 ('credits.cancel_plan(bigint)', true),
			 ('credits.carry_over_balances()', true),
			 ('credits.expire_grants(timestamp with time zone)', true),
			 ('credits.expiring_credits(interval)', true),
			 ('credits.grant_credits(bigint,bigint,text,timestamp with time zone,integer,text)', true),
			 ('credits.open_account(bigint,bigint)', true),
			 ('credits.open_account(bigint,bigint,timestamp with time zone)', true),
			 ('credits.renew_plans(timestamp with time zone)', true),
			 ('credits.set_plan(bigint,bigint,timestamp with time zone)', true)$$,
	'the 0.2.0 functions (and both open_account overloads) are SECURITY DEFINER');
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef
		 AND (p.proname LIKE '\_%' OR p.prorettype = 'pg_catalog.trigger'::regtype)$$,
	'no internal (_name) or trigger function is SECURITY DEFINER');

-- Every SECURITY DEFINER function pins search_path.
SELECT isnt_empty(
	$$SELECT p.oid FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef$$,
	'schema credits has SECURITY DEFINER functions');
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text, p.proconfig
		FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef
		 AND (p.proconfig IS NULL
			  OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'])$$,
	'every SECURITY DEFINER function sets search_path = pg_catalog, pg_temp');

--------------------------------------------------------------------------------
-- Triggers
--------------------------------------------------------------------------------

SELECT triggers_are('credits', 'send_batches', ARRAY['credits_debit', 'credits_flush', 'credits_guard', 'credits_guard_truncate'],
	'send_batches has exactly the debit, flush and guard triggers');
SELECT triggers_are('credits', 'ledger_entries', ARRAY['credits_guard', 'credits_guard_truncate'],
	'ledger_entries has exactly the guard triggers');
SELECT triggers_are('credits', 'ledger', ARRAY['credits_guard', 'credits_restore'],
	'the ledger view has exactly the guard and restore triggers');
SELECT trigger_is('credits', 'ledger', 'credits_restore', 'credits', 'restore_ledger_entry',
	'ledger.credits_restore calls credits.restore_ledger_entry()');
SELECT trigger_is('credits', 'send_batches', 'credits_debit', 'credits', 'debit_batch',
	'send_batches.credits_debit calls credits.debit_batch()');
SELECT trigger_is('credits', 'send_batches', 'credits_guard', 'credits', 'guard_batch',
	'send_batches.credits_guard calls credits.guard_batch()');
SELECT trigger_is('credits', 'send_batches', 'credits_guard_truncate', 'credits', 'guard_batch',
	'send_batches.credits_guard_truncate calls credits.guard_batch()');
SELECT trigger_is('credits', 'ledger', 'credits_guard', 'credits', 'guard_ledger',
	'ledger.credits_guard calls credits.guard_ledger()');
SELECT trigger_is('credits', 'ledger_entries', 'credits_guard', 'credits', 'guard_ledger',
	'ledger_entries.credits_guard calls credits.guard_ledger()');
SELECT trigger_is('credits', 'ledger_entries', 'credits_guard_truncate', 'credits', 'guard_ledger',
	'ledger_entries.credits_guard_truncate calls credits.guard_ledger()');
SELECT results_eq(
	$$SELECT t.tgrelid::regclass::text, t.tgname::text COLLATE "default",
			 regexp_replace(pg_catalog.pg_get_triggerdef(t.oid), ' EXECUTE .*$', '')
		FROM pg_catalog.pg_trigger t
	   WHERE t.tgrelid IN ('credits.send_batches'::regclass, 'credits.ledger'::regclass,
						   'credits.ledger_entries'::regclass)
		 AND NOT t.tgisinternal
	   ORDER BY 1, 2$$,
	$$VALUES
		('credits.ledger', 'credits_guard',
		 'CREATE TRIGGER credits_guard INSTEAD OF DELETE OR UPDATE ON credits.ledger FOR EACH ROW'),
		('credits.ledger', 'credits_restore',
		 'CREATE TRIGGER credits_restore INSTEAD OF INSERT ON credits.ledger FOR EACH ROW'),
		('credits.ledger_entries', 'credits_guard',
		 'CREATE TRIGGER credits_guard BEFORE DELETE OR UPDATE ON credits.ledger_entries FOR EACH ROW'),
		('credits.ledger_entries', 'credits_guard_truncate',
		 'CREATE TRIGGER credits_guard_truncate BEFORE TRUNCATE ON credits.ledger_entries FOR EACH STATEMENT'),
		('credits.send_batches', 'credits_debit',
		 'CREATE TRIGGER credits_debit BEFORE INSERT ON credits.send_batches FOR EACH ROW'),
		('credits.send_batches', 'credits_flush',
		 'CREATE TRIGGER credits_flush AFTER INSERT ON credits.send_batches FOR EACH STATEMENT'),
		('credits.send_batches', 'credits_guard',
		 'CREATE TRIGGER credits_guard BEFORE DELETE OR UPDATE ON credits.send_batches FOR EACH ROW'),
		('credits.send_batches', 'credits_guard_truncate',
		 'CREATE TRIGGER credits_guard_truncate BEFORE TRUNCATE ON credits.send_batches FOR EACH STATEMENT')$$,
	'triggers: BEFORE per row for INSERT/UPDATE/DELETE, BEFORE TRUNCATE per statement, INSTEAD OF on the ledger view, and the AFTER INSERT statement flush');
SELECT is_empty(
	$$SELECT t.tgname FROM pg_catalog.pg_trigger t
	   WHERE t.tgrelid IN ('credits.send_batches'::regclass, 'credits.ledger'::regclass,
						   'credits.ledger_entries'::regclass)
		 AND NOT t.tgisinternal AND t.tgenabled <> 'O' AND t.tgname <> 'credits_restore'$$,
	'the credits triggers are enabled');
SELECT is((SELECT t.tgenabled::text FROM pg_catalog.pg_trigger t
			WHERE t.tgrelid = 'credits.ledger'::regclass AND t.tgname = 'credits_restore'),
	'A', 'the ledger view''s restore trigger fires always, under session_replication_role = replica too');

--------------------------------------------------------------------------------
-- Report views of 0.2.0
--------------------------------------------------------------------------------

SELECT has_view('credits', 'balance_by_grant', 'view credits.balance_by_grant exists');
SELECT results_eq(
	$$SELECT a.attname::text COLLATE "default" FROM pg_catalog.pg_attribute a
	   WHERE a.attrelid = 'credits.balance_by_grant'::regclass AND a.attnum > 0 ORDER BY a.attnum$$,
	$$VALUES ('grant_id'), ('account_id'), ('source'), ('priority'), ('granted'), ('drawn'), ('refunded'),
			 ('expired'), ('remaining'), ('expires_at'), ('state'), ('created_at'), ('closed_at'),
			 ('period_start'), ('recharge_id'), ('note')$$,
	'balance_by_grant: one row per grant with what it granted, drew, got back, expired and has left');
SELECT results_eq(
	$$SELECT a.attname::text COLLATE "default" FROM pg_catalog.pg_attribute a
	   WHERE a.attrelid = 'credits.account_overview'::regclass AND a.attnum > 0 ORDER BY a.attnum$$,
	$$VALUES ('account_id'), ('balance'), ('in_flight'), ('available'), ('auto_recharge'), ('min_balance'),
			 ('max_credits'), ('target_balance'), ('monthly_limit'), ('bought_this_month'),
			 ('committed_this_month'), ('monthly_room'), ('payment_failures'), ('disabled_at'),
			 ('disabled_reason'),
			 ('plan_credits'), ('free_credits'), ('promo_credits'), ('bought_credits'), ('owed'),
			 ('next_expiry'), ('next_expiry_credits')$$,
	'account_overview keeps its 0.1 columns and gains the 0.2.0 ones at the end');
SELECT is(
	(SELECT c.reloptions FROM pg_catalog.pg_class c WHERE c.oid = 'credits.balance_by_grant'::regclass),
	ARRAY['security_barrier=true'],
	'balance_by_grant is a security_barrier view');

--------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC
--------------------------------------------------------------------------------

SELECT ok(NOT pg_catalog.has_schema_privilege('public', 'credits', 'CREATE'),
	'PUBLIC cannot create objects in schema credits');
SELECT is_empty(
	$$SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		 AND pg_catalog.has_table_privilege('public', c.oid,
				'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
	'PUBLIC has no privilege on any table of schema credits');
SELECT is_empty(
	$$SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		 AND pg_catalog.has_any_column_privilege('public', c.oid,
				'SELECT, INSERT, UPDATE, REFERENCES')$$,
	'PUBLIC has no privilege on any column of schema credits');
SELECT is_empty(
	$$SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'credits'::regnamespace
		 AND CASE WHEN c.relkind = 'S'
				  THEN pg_catalog.has_sequence_privilege('public', c.oid, 'USAGE, SELECT, UPDATE')
				  ELSE false END$$,
	'PUBLIC has no privilege on any sequence of schema credits');
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'credits'::regnamespace
		 AND pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')$$,
	'PUBLIC cannot execute any function of schema credits');
SELECT is_empty(
	$$SELECT c.oid::regclass::text FROM pg_catalog.pg_class c,
			 pg_catalog.aclexplode(c.relacl) x
	   WHERE c.relnamespace = 'credits'::regnamespace AND x.grantee = 0
	  UNION ALL
	  SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p,
			 pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) x
	   WHERE p.pronamespace = 'credits'::regnamespace AND x.grantee = 0$$,
	'no ACL in schema credits names PUBLIC');
SELECT table_privs_are('credits', 'accounts', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.accounts');
SELECT table_privs_are('credits', 'send_batches', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.send_batches');
SELECT table_privs_are('credits', 'ledger', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.ledger');
SELECT table_privs_are('credits', 'ledger_entries', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.ledger_entries');
SELECT table_privs_are('credits', 'grants', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.grants');
SELECT table_privs_are('credits', 'plans', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.plans');
SELECT table_privs_are('credits', 'balance_by_grant', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.balance_by_grant');
SELECT sequence_privs_are('credits', 'grants_grant_id_seq', 'public', ARRAY[]::text[],
	'PUBLIC has no privilege on credits.grants_grant_id_seq');
SELECT function_privs_are('credits', 'add_credits', ARRAY['bigint', 'bigint', 'text'], 'public',
	ARRAY[]::text[], 'PUBLIC cannot execute credits.add_credits');
SELECT function_privs_are('credits', 'complete_recharge', ARRAY['bigint', 'text'], 'public',
	ARRAY[]::text[], 'PUBLIC cannot execute credits.complete_recharge');
SELECT function_privs_are('credits', 'open_account', ARRAY['bigint', 'bigint', 'timestamp with time zone'], 'public',
	ARRAY[]::text[], 'PUBLIC cannot execute credits.open_account(bigint, bigint, timestamptz)');
SELECT function_privs_are('credits', 'grant_credits',
	ARRAY['bigint', 'bigint', 'text', 'timestamp with time zone', 'integer', 'text'], 'public',
	ARRAY[]::text[], 'PUBLIC cannot execute credits.grant_credits');
SELECT function_privs_are('credits', 'carry_over_balances', ARRAY[]::name[], 'public',
	ARRAY[]::text[], 'PUBLIC cannot execute credits.carry_over_balances');
SELECT function_privs_are('credits', 'set_plan', ARRAY['bigint', 'bigint', 'timestamp with time zone'], 'public',
	ARRAY[]::text[], 'PUBLIC cannot execute credits.set_plan');
SELECT function_privs_are('credits', '_add_grant',
	ARRAY['bigint', 'text', 'bigint', 'integer', 'timestamp with time zone', 'text', 'timestamp with time zone'], 'public',
	ARRAY[]::text[], 'PUBLIC cannot execute credits._add_grant');

SELECT * FROM finish();
ROLLBACK;

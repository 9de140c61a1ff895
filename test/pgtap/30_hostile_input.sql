-- test/pgtap/30_hostile_input.sql: hostile input (issue 4).
--
-- One table of bad inputs -- NULL in every argument, zero and negative
-- counts, integer and bigint overflow of cost and balance, unknown
-- accounts, channels and recharges, odd and huge strings in keys,
-- references, channels, notes and reasons, wrong types in INSERT and COPY --
-- each run as one throws_ok with the SQLSTATE the README's Errors table
-- documents (or, where PostgreSQL answers before the extension does,
-- PostgreSQL's own).  Then: every total and every table is exactly as it
-- was before the cases, verify() is empty, the extension still debits, and
-- a 1 MB failure reason (no index on it) is stored intact.
--
-- Accounts 3001-3099 belong to this file; recharge ids are looked up, never
-- hard-coded.  COPY cases read FROM PROGRAM, so this file runs as a
-- superuser (as pg_prove does in scripts/test).  Everything is rolled back.

BEGIN;
SELECT plan(123);

-- Helpers, gone at ROLLBACK.
-- The account's n-th recharge, oldest first.
CREATE FUNCTION pg_temp.rc(bigint, integer) RETURNS bigint LANGUAGE sql AS
	'SELECT recharge_id FROM credits.recharges WHERE account_id = $1
	  ORDER BY recharge_id OFFSET $2 - 1 LIMIT 1';
-- 1 MiB of text that does not compress (so TOAST cannot shrink an index
-- entry below the btree limit).
CREATE FUNCTION pg_temp.mb() RETURNS text LANGUAGE sql IMMUTABLE AS
	'SELECT string_agg(md5(g::text), '''' ORDER BY g) FROM generate_series(1, 32768) AS g';
-- Inserts one batch inside a subtransaction (an EXCEPTION block): called
-- from the row of an INSERT that is debiting the same account, that is MC019.
CREATE FUNCTION pg_temp.nested_batch(acct bigint) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		INSERT INTO credits.send_batches (account_id, messages) VALUES (acct, 1);
	EXCEPTION WHEN division_by_zero THEN NULL;
	END;
	RETURN 1;
END
$$;
-- Every total the brief names, plus a fingerprint of every row of every
-- table, so "unchanged" means unchanged.
CREATE FUNCTION pg_temp.totals() RETURNS TABLE (
	accounts bigint, balance_sum numeric, in_flight_sum numeric,
	ledger_rows bigint, ledger_sum numeric, batches bigint, batch_cost_sum numeric,
	recharges bigint, recharge_sum numeric, policies bigint, prices bigint,
	fingerprint text)
LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM credits.accounts),
		   (SELECT coalesce(sum(balance), 0) FROM credits.accounts),
		   (SELECT coalesce(sum(in_flight), 0) FROM credits.accounts),
		   (SELECT count(*) FROM credits.ledger),
		   (SELECT coalesce(sum(delta), 0) FROM credits.ledger),
		   (SELECT count(*) FROM credits.send_batches),
		   (SELECT coalesce(sum(cost), 0) FROM credits.send_batches),
		   (SELECT count(*) FROM credits.recharges),
		   (SELECT coalesce(sum(credits), 0) FROM credits.recharges),
		   (SELECT count(*) FROM credits.auto_recharge),
		   (SELECT count(*) FROM credits.prices),
		   md5(concat_ws('|',
			   (SELECT string_agg(t::text, ',' ORDER BY t.account_id) FROM credits.accounts t),
			   (SELECT string_agg(t::text, ',' ORDER BY t.entry_id) FROM credits.ledger t),
			   (SELECT string_agg(t::text, ',' ORDER BY t.batch_id) FROM credits.send_batches t),
			   (SELECT string_agg(t::text, ',' ORDER BY t.recharge_id) FROM credits.recharges t),
			   (SELECT string_agg(t::text, ',' ORDER BY t.account_id) FROM credits.auto_recharge t),
			   (SELECT string_agg(t::text, ',' ORDER BY t.channel) FROM credits.prices t)))
$$;

--------------------------------------------------------------------------------
-- Set-up: accounts in every state the cases need
--------------------------------------------------------------------------------
-- 3001: 999 credits, no policy, one batch with key 'regress-dup'.
-- 3002: 0 credits, auto-recharge max_credits 100.
-- 3003: 0 credits, auto-recharge max_credits 100, monthly_limit 50.
-- 3004: the largest bigint balance.
-- 3005: two batches of 2147483647 messages at 2147483647 credits: balance
--       -9223372028264841218, one more such batch underflows the bigint.
-- 3006: a processing recharge of 600 for an awaiting batch of 1100, and a
--       balance of 2^63 - 1001: refunding the batch would overflow.
--       (Completing a recharge past 2^63 - 1 is tested at the end: that
--       state needs balance + in_flight above 2^63 - 1, see there.)
-- 3007: recharge A succeeded with 'regress-ref-1', B processing, C pending.

INSERT INTO credits.prices (channel, credits_per_message) VALUES ('regress_max', 2147483647);
DO $$
BEGIN
	PERFORM credits.open_account(3001, 1000);
	PERFORM credits.open_account(3002, 0);
	PERFORM credits.enable_auto_recharge(3002, 0, 100);
	PERFORM credits.open_account(3003, 0);
	PERFORM credits.enable_auto_recharge(3003, 0, 100, NULL, 50);
	PERFORM credits.open_account(3004, 9223372036854775807);
	PERFORM credits.open_account(3005, 0);
	PERFORM credits.enable_auto_recharge(3005, 0, 9223372036854775807);
	PERFORM credits.open_account(3006, 1000);
	PERFORM credits.enable_auto_recharge(3006, 500, 1000);
	PERFORM credits.open_account(3007, 0);
	PERFORM credits.enable_auto_recharge(3007, 0, 100);
END
$$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (3001, 1, 'regress-dup');
INSERT INTO credits.send_batches (account_id, messages, channel)
	VALUES (3005, 2147483647, 'regress_max'), (3005, 2147483647, 'regress_max');
INSERT INTO credits.send_batches (account_id, messages) VALUES (3006, 1100), (3007, 10);
DO $$
BEGIN
	PERFORM credits.claim_recharges(100);
	PERFORM credits.add_credits(3006, 9223372036854774907);
	PERFORM credits.complete_recharge(pg_temp.rc(3007, 1), 'regress-ref-1');
END
$$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (3007, 10);
DO $$ BEGIN PERFORM credits.claim_recharges(100); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (3007, 10);

SELECT results_eq(
	$$SELECT account_id, balance, in_flight FROM credits.accounts
	   WHERE account_id BETWEEN 3001 AND 3099 ORDER BY account_id$$,
	$$VALUES (3001::bigint, 999::bigint, 0::bigint),
			 (3002, 0, 0),
			 (3003, 0, 0),
			 (3004, 9223372036854775807, 0),
			 (3005, -9223372028264841218, 9223372028264841218),
			 (3006, 9223372036854774807, 600),
			 (3007, -20, 20)$$,
	'set-up: the accounts are in the states the cases need');
SELECT results_eq(
	$$SELECT status, credits, payment_ref FROM credits.recharges WHERE account_id = 3007 ORDER BY recharge_id$$,
	$$VALUES ('succeeded'::text, 10::bigint, 'regress-ref-1'::text),
			 ('processing', 10, NULL), ('pending', 10, NULL)$$,
	'set-up: account 3007 has a succeeded, a processing and a pending recharge');
SELECT is_empty($$SELECT * FROM credits.verify()$$, 'set-up: verify() is empty');

CREATE TEMP TABLE totals_before AS SELECT * FROM pg_temp.totals();

--------------------------------------------------------------------------------
-- The cases
--------------------------------------------------------------------------------

CREATE TEMP TABLE cases (
	id			serial PRIMARY KEY,
	description	text NOT NULL,
	sql			text NOT NULL,
	sqlstate	char(5) NOT NULL,
	message		text				-- checked too when not null
);

-- NULL in every argument that must not be NULL
INSERT INTO cases (description, sql, sqlstate) VALUES
('open_account(NULL, 0)',
	$$SELECT credits.open_account(NULL, 0)$$, '22004'),
('open_account(id, NULL)',
	$$SELECT credits.open_account(3099, NULL)$$, '22004'),
('add_credits(NULL, 10)',
	$$SELECT credits.add_credits(NULL, 10)$$, '22004'),
('add_credits(id, NULL)',
	$$SELECT credits.add_credits(3001, NULL)$$, '22004'),
('enable_auto_recharge(NULL, 0, 100)',
	$$SELECT credits.enable_auto_recharge(NULL, 0, 100)$$, '22004'),
('enable_auto_recharge(id, NULL, 100)',
	$$SELECT credits.enable_auto_recharge(3001, NULL, 100)$$, '22004'),
('enable_auto_recharge(id, 0, NULL)',
	$$SELECT credits.enable_auto_recharge(3001, 0, NULL)$$, '22004'),
('disable_auto_recharge(NULL)',
	$$SELECT credits.disable_auto_recharge(NULL)$$, '22004'),
('claim_recharges(NULL): README, "NULL arguments are refused with 22004"',
	$$SELECT credits.claim_recharges(NULL)$$, '22004'),
('complete_recharge(NULL, ref)',
	$$SELECT credits.complete_recharge(NULL, 'regress-ref-x')$$, '22004'),
('complete_recharge(id, NULL)',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), NULL)$$, '22004'),
('fail_recharge(NULL, reason)',
	$$SELECT credits.fail_recharge(NULL, 'declined')$$, '22004'),
('fail_recharge(id, NULL)',
	$$SELECT credits.fail_recharge(pg_temp.rc(3007, 2), NULL)$$, '22004'),
('batch with account_id NULL',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (NULL, 1)$$, '23502'),
('batch with messages NULL',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, NULL)$$, 'MC011'),
('batch with channel NULL',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3001, 1, NULL)$$, '23502');

-- Zero and negative counts and amounts
INSERT INTO cases (description, sql, sqlstate) VALUES
('batch of 0 messages',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 0)$$, 'MC011'),
('batch of -5 messages',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, -5)$$, 'MC011'),
('multi-row INSERT whose second row has 0 messages (the first row''s debit goes too)',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 5), (3001, 0)$$, 'MC011'),
('open_account with -1 initial credits',
	$$SELECT credits.open_account(3099, -1)$$, 'MC014'),
('add_credits of 0',
	$$SELECT credits.add_credits(3001, 0)$$, 'MC014'),
('add_credits of -1',
	$$SELECT credits.add_credits(3001, -1)$$, 'MC014'),
('add_credits of the smallest bigint',
	$$SELECT credits.add_credits(3001, -9223372036854775808)$$, 'MC014'),
('enable_auto_recharge with min_balance -1',
	$$SELECT credits.enable_auto_recharge(3001, -1, 100)$$, 'MC013'),
('enable_auto_recharge with max_credits 0',
	$$SELECT credits.enable_auto_recharge(3001, 0, 0)$$, 'MC013'),
('enable_auto_recharge with target_balance below min_balance',
	$$SELECT credits.enable_auto_recharge(3001, 100, 1000, 99)$$, 'MC013'),
('enable_auto_recharge with monthly_limit 0',
	$$SELECT credits.enable_auto_recharge(3001, 0, 100, NULL, 0)$$, 'MC013'),
('claim_recharges(0)',
	$$SELECT credits.claim_recharges(0)$$, '22023'),
('claim_recharges(-1)',
	$$SELECT credits.claim_recharges(-1)$$, '22023');

-- Integer and bigint overflow of counts, cost and balance
INSERT INTO cases (description, sql, sqlstate, message) VALUES
('batch of 2147483648 messages (integer overflow)',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 2147483648)$$,
	'22003', 'integer out of range'),
('batch of ''2147483648'' messages as text',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, '2147483648')$$,
	'22003', 'value "2147483648" is out of range for type integer'),
('batch for account 2^63 (bigint overflow)',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (9223372036854775808, 1)$$,
	'22003', 'bigint out of range'),
('open_account with 2^63 initial credits',
	$$SELECT credits.open_account(3099, '9223372036854775808')$$,
	'22003', 'value "9223372036854775808" is out of range for type bigint'),
('claim_recharges(''2147483648'')',
	$$SELECT credits.claim_recharges('2147483648')$$,
	'22003', 'value "2147483648" is out of range for type integer');
INSERT INTO cases (description, sql, sqlstate) VALUES
('add_credits(1) to a balance of 2^63 - 1',
	$$SELECT credits.add_credits(3004, 1)$$, 'MC012'),
('add_credits(2^63 - 1) to a balance of 999',
	$$SELECT credits.add_credits(3001, 9223372036854775807)$$, 'MC012'),
('a batch whose debit takes the balance below -2^63',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3005, 2147483647, 'regress_max')$$, 'MC012'),
('failing a recharge whose refund would take the balance above 2^63 - 1',
	$$SELECT credits.fail_recharge(pg_temp.rc(3006, 1), 'declined')$$, 'MC012');

-- Unknown accounts, channels and recharges; wrong states
INSERT INTO cases (description, sql, sqlstate) VALUES
('batch for an unknown account',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3999, 1)$$, 'MC003'),
('batch for account 0',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (0, 1)$$, 'MC003'),
('add_credits to an unknown account',
	$$SELECT credits.add_credits(3999, 10)$$, 'MC003'),
('enable_auto_recharge on an unknown account',
	$$SELECT credits.enable_auto_recharge(3999, 0, 10)$$, 'MC003'),
('disable_auto_recharge on an unknown account',
	$$SELECT credits.disable_auto_recharge(3999)$$, 'MC003'),
('batch on a channel without a price',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3001, 1, 'carrier-pigeon')$$, 'MC004'),
('batch on the empty channel',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3001, 1, '')$$, 'MC004'),
('batch on channel ''EMAIL'' (channels are case-sensitive)',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3001, 1, 'EMAIL')$$, 'MC004'),
('complete_recharge of recharge -1',
	$$SELECT credits.complete_recharge(-1, 'regress-ref-x')$$, 'MC005'),
('fail_recharge of recharge 2^63 - 1',
	$$SELECT credits.fail_recharge(9223372036854775807, 'declined')$$, 'MC005'),
('open_account on an existing account',
	$$SELECT credits.open_account(3001, 5)$$, 'MC010'),
('batch above the balance, auto-recharge off',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 1000)$$, 'MC001'),
('batch needing a recharge above max_credits',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3002, 101)$$, 'MC002'),
('batch needing a recharge above the monthly limit',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3003, 60)$$, 'MC018'),
('complete_recharge of a succeeded recharge with another reference',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 1), 'regress-ref-other')$$, 'MC006'),
('fail_recharge of a succeeded recharge',
	$$SELECT credits.fail_recharge(pg_temp.rc(3007, 1), 'declined')$$, 'MC006'),
('complete_recharge with a reference another recharge used',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), 'regress-ref-1')$$, 'MC017'),
('complete_recharge of a pending recharge',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 3), 'regress-ref-x')$$, 'MC015'),
('fail_recharge of a pending recharge',
	$$SELECT credits.fail_recharge(pg_temp.rc(3007, 3), 'declined')$$, 'MC015'),
('complete_recharge with an empty reference',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), '')$$, 'MC021'),
('complete_recharge with a reference of blanks',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), E' \t ')$$, 'MC021'),
('complete_recharge with a leading blank',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), ' ch_1')$$, 'MC021'),
('complete_recharge with a trailing newline',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), E'ch_1\n')$$, 'MC021'),
('complete_recharge with a 256-byte reference (128 two-byte characters)',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), repeat('é', 128))$$, 'MC021'),
('batch that sets cost',
	$$INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (3001, 1, 0)$$, 'MC007'),
('batch that sets status',
	$$INSERT INTO credits.send_batches (account_id, messages, status) VALUES (3001, 1, 'ready')$$, 'MC007'),
('batch that sets recharge_id',
	$$INSERT INTO credits.send_batches (account_id, messages, recharge_id) VALUES (3001, 1, 1)$$, 'MC007'),
('batch that sets batch_id',
	$$INSERT INTO credits.send_batches (batch_id, account_id, messages) VALUES (1, 3001, 1)$$, '428C9'),
('a batch inserted in a subtransaction while the enclosing INSERT debits the same account',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 1), (3001, pg_temp.nested_batch(3001))$$, 'MC019'),
('batch repeating an idempotency key without ON CONFLICT',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (3001, 1, 'regress-dup')$$, '23505'),
('ON CONFLICT DO UPDATE that changes messages',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (3001, 1, 'regress-dup')
	  ON CONFLICT (account_id, idempotency_key) DO UPDATE SET messages = 1000$$, 'MC008'),
('UPDATE of a batch''s messages',
	$$UPDATE credits.send_batches SET messages = 1 WHERE account_id = 3006$$, 'MC008'),
('UPDATE of a batch''s status',
	$$UPDATE credits.send_batches SET status = 'ready' WHERE account_id = 3006$$, 'MC008'),
('UPDATE of a batch''s recharge_id to NULL',
	$$UPDATE credits.send_batches SET recharge_id = NULL WHERE account_id = 3006$$, 'MC008'),
('DELETE of a batch',
	$$DELETE FROM credits.send_batches WHERE account_id = 3001$$, 'MC008'),
('TRUNCATE of send_batches',
	$$TRUNCATE credits.send_batches$$, 'MC008'),
('UPDATE of a ledger row',
	$$UPDATE credits.ledger SET delta = 0 WHERE account_id = 3001$$, 'MC009'),
('DELETE of a ledger row',
	$$DELETE FROM credits.ledger WHERE account_id = 3001$$, 'MC009'),
('TRUNCATE of the ledger',
	$$TRUNCATE credits.ledger_entries$$, 'MC009');

-- Odd and huge strings in keys, channels, references, notes and reasons
INSERT INTO cases (description, sql, sqlstate, message) VALUES
('key with quotes and backslashes on an unknown account',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	  VALUES (3999, 1, $k$it's a "key" \ with \\ backslashes; DROP TABLE credits.ledger; --$k$)$$,
	'MC003', 'account 3999 does not exist'),
('channel with quotes and backslashes: named as given in the message',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3001, 1, $c$x'y"z\$c$)$$,
	'MC004', $m$channel "x'y"z\" has no price$m$),
('channel with an escaped NUL, E''\\000''',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3001, 1, E'sms\000')$$,
	'22021', format('invalid byte sequence for encoding "%s": 0x00', current_setting('server_encoding'))),
('idempotency key containing chr(0)',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (3001, 1, 'k' || chr(0))$$,
	'54000', 'null character not permitted'),
('payment_ref made of a NUL byte (convert_from)',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), convert_from('\x00'::bytea, 'UTF8'))$$,
	'22021', format('invalid byte sequence for encoding "%s": 0x00', current_setting('server_encoding'))),
('fail reason with a Unicode escape U&''\\0000''',
	$$SELECT credits.fail_recharge(pg_temp.rc(3007, 2), U&'\0000')$$,
	'42601', 'invalid Unicode escape value'),
('1 MB idempotency key on a funded account: larger than a btree entry may be',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (3001, 1, pg_temp.mb())$$,
	'54000', NULL),
('1 MB payment_ref on a processing recharge: over 255 bytes',
	$$SELECT credits.complete_recharge(pg_temp.rc(3007, 2), pg_temp.mb())$$,
	'MC021', NULL),
('1 MB channel',
	$$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (3001, 1, pg_temp.mb())$$,
	'MC004', NULL),
('1 MB key with quotes and backslashes on an unknown account',
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	  VALUES (3999, 1, $k$'\"$k$ || pg_temp.mb() || $k$\'$k$)$$,
	'MC003', NULL),
('1 MB note on a grant of 0 credits',
	$$SELECT credits.add_credits(3001, 0, pg_temp.mb())$$,
	'MC014', NULL),
('1 MB reason failing a pending recharge',
	$$SELECT credits.fail_recharge(pg_temp.rc(3007, 3), pg_temp.mb())$$,
	'MC015', NULL);

-- Wrong types, in INSERT and in COPY (COPY ... FROM PROGRAM: superuser)
INSERT INTO cases (description, sql, sqlstate, message) VALUES
('batch of ''abc'' messages',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 'abc')$$,
	'22P02', 'invalid input syntax for type integer: "abc"'),
('batch of 1.5e10 messages',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 1.5e10)$$,
	'22003', 'integer out of range'),
('batch of true messages',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, true)$$,
	'42804', NULL),
('batch for account ''x''',
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES ('x', 1)$$,
	'22P02', 'invalid input syntax for type bigint: "x"'),
('open_account(''abc'')',
	$$SELECT credits.open_account('abc')$$,
	'22P02', 'invalid input syntax for type bigint: "abc"'),
('COPY: messages ''abc''',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "3001\tabc\n"'$$,
	'22P02', 'invalid input syntax for type integer: "abc"'),
('COPY: messages 2147483648',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "3001\t2147483648\n"'$$,
	'22003', 'value "2147483648" is out of range for type integer'),
('COPY: account_id 1.5',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "1.5\t1\n"'$$,
	'22P02', 'invalid input syntax for type bigint: "1.5"'),
('COPY: a third column',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "3001\t1\t7\n"'$$,
	'22P04', 'extra data after last expected column'),
('COPY: a missing column',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "3001\n"'$$,
	'22P04', 'missing data for column "messages"'),
('COPY: a good row, then a bad one (the good row''s debit goes too)',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "3001\t5\n3001\tzz\n"'$$,
	'22P02', 'invalid input syntax for type integer: "zz"'),
('COPY: setting cost',
	$$COPY credits.send_batches (account_id, messages, cost) FROM PROGRAM 'printf "3001\t1\t0\n"'$$,
	'MC007', NULL),
('COPY: 0 messages',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "3001\t0\n"'$$,
	'MC011', NULL),
('COPY: an unknown account',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "3999\t1\n"'$$,
	'MC003', NULL),
('COPY: account_id \N',
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "\\\\N\t1\n"'$$,
	'23502', NULL);

SELECT cmp_ok((SELECT count(*)::integer FROM cases), '>=', 40, 'at least 40 hostile cases');
SELECT is((SELECT count(*)::integer FROM cases), 104, 'the case count this file plans for');

SELECT throws_ok(c.sql, c.sqlstate, c.message, format('case %s: %s -> %s', c.id, c.description, c.sqlstate))
  FROM cases c
 ORDER BY c.id;

--------------------------------------------------------------------------------
-- After the cases: nothing moved
--------------------------------------------------------------------------------

SELECT results_eq(
	$$SELECT * FROM pg_temp.totals()$$,
	$$SELECT * FROM totals_before$$,
	'after every case: balances, in_flight, ledger count and sum, batches, recharges, policies, prices and every row are unchanged');
SELECT is_empty($$SELECT * FROM credits.verify()$$, 'after every case: verify() is empty');

-- The refused statements left the trigger and the functions in working order.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (3001, 10, 'regress-after');
SELECT results_eq(
	$$SELECT b.cost, b.status, l.delta, l.balance_after, a.balance
		FROM credits.send_batches b
		JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
		JOIN credits.accounts a ON a.account_id = b.account_id
	   WHERE b.account_id = 3001 AND b.idempotency_key = 'regress-after'$$,
	$$VALUES (10::bigint, 'ready'::text, -10::bigint, 989::bigint, 989::bigint)$$,
	'a good batch after the cases is priced and debited as usual');

-- Odd strings that are legal are stored intact and still deduplicate.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	VALUES (3001, 2, $k$it's "odd" \ \\ \n	tab, ünïcödé ✓ 🙂$k$)
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	VALUES (3001, 2, $k$it's "odd" \ \\ \n	tab, ünïcödé ✓ 🙂$k$)
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT results_eq(
	$q$SELECT count(*), sum(cost) FROM credits.send_batches
	   WHERE account_id = 3001 AND idempotency_key = $k$it's "odd" \ \\ \n	tab, ünïcödé ✓ 🙂$k$$q$,
	$$VALUES (1::bigint, 2::numeric)$$,
	'a key with quotes, backslashes, a tab and non-ASCII is stored intact and debited once');

-- A 1 MB failure reason has no index to overflow: it works, and is kept whole.
SELECT lives_ok(
	$$SELECT credits.fail_recharge(pg_temp.rc(3007, 2), pg_temp.mb())$$,
	'fail_recharge with a 1 MB reason works');
SELECT results_eq(
	$$SELECT status, length(failure_reason), md5(failure_reason) FROM credits.recharges
	   WHERE recharge_id = pg_temp.rc(3007, 2)$$,
	$$SELECT 'failed'::text, 1048576, md5(pg_temp.mb())$$,
	'the 1 MB reason is stored intact');
SELECT lives_ok(
	$$SELECT credits.fail_recharge(pg_temp.rc(3007, 2), pg_temp.mb())$$,
	'repeating fail_recharge with the same 1 MB reason is accepted (idempotent)');
SELECT results_eq(
	$$SELECT a.balance, a.in_flight,
			 (SELECT count(*) FROM credits.ledger l WHERE l.account_id = 3007 AND l.kind = 'refund'),
			 (SELECT string_agg(b.status, ',' ORDER BY b.batch_id) FROM credits.send_batches b WHERE b.account_id = 3007)
		FROM credits.accounts a WHERE a.account_id = 3007$$,
	$$VALUES (-10::bigint, 10::bigint, 1::bigint, 'ready,failed,awaiting_credits'::text)$$,
	'account 3007 after the failure: one refund of 10, in_flight down by 10');

--------------------------------------------------------------------------------
-- A recharge whose completion would overflow the balance
--------------------------------------------------------------------------------
-- 3008: balance 2^63 - 101 and a processing recharge of 600.  Every
-- invariant holds (completing the recharge is refused with MC012), so
-- verify() must say so, and the reports must still read.

DO $$ BEGIN PERFORM credits.open_account(3008, 1000); PERFORM credits.enable_auto_recharge(3008, 500, 1000); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (3008, 1100);
DO $$ BEGIN PERFORM credits.claim_recharges(100); PERFORM credits.add_credits(3008, 9223372036854775807); END $$;
SELECT results_eq(
	$$SELECT balance, in_flight FROM credits.accounts WHERE account_id = 3008$$,
	$$VALUES (9223372036854775707::bigint, 600::bigint)$$,
	'3008: balance 2^63 - 101 with 600 credits in flight');
SELECT lives_ok($$SELECT * FROM credits.verify()$$,
	'verify() runs when balance + in_flight exceeds 2^63 - 1');
SELECT lives_ok($$SELECT * FROM credits.account_overview$$,
	'credits.account_overview reads when balance + in_flight exceeds 2^63 - 1');
SELECT throws_ok($$SELECT credits.complete_recharge(pg_temp.rc(3008, 1), 'regress-ref-overflow')$$,
	'MC012', NULL, 'completing a recharge that would take the balance above 2^63 - 1: MC012');
SELECT results_eq(
	$$SELECT a.balance, a.in_flight, r.status FROM credits.accounts a
		JOIN credits.recharges r ON r.account_id = a.account_id WHERE a.account_id = 3008$$,
	$$VALUES (9223372036854775707::bigint, 600::bigint, 'processing'::text)$$,
	'the refused completion changed nothing');
-- Spend enough that balance + in_flight fits again.
INSERT INTO credits.send_batches (account_id, messages) VALUES (3008, 1000);

SELECT is_empty($$SELECT * FROM credits.verify()$$, 'verify() is empty at the end');

SELECT * FROM finish();
ROLLBACK;

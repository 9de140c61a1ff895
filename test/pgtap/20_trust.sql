-- test/pgtap/20_trust.sql: auto-recharge users can trust (issue 3): top-up
-- targets, the hard monthly limit, payment failures and auto-disable, expiry
-- of pending recharges, the report views and who may read them.
--
-- Accounts 2000-2999 belong to this file; identity values are never
-- hard-coded, they are looked up by account (and idempotency key).  Every
-- recharge and batch is created inside this transaction, so created_at is
-- now() unless a test backdates it; everything is rolled back at the end.
-- NOTIFY is covered by test/specs/recharge_notify.spec (a rolled-back
-- transaction sends nothing), concurrency by test/specs/monthly_limit_race.spec.

BEGIN;
SELECT plan(137);

-- Pending recharges left in the database by anyone else are claimed first,
-- so that expire_recharges() counts and claims below see only ours.
DO $$ BEGIN PERFORM count(*) FROM credits.claim_recharges(100000); END $$;

-- Helpers, gone at ROLLBACK.
CREATE FUNCTION pg_temp.bal(bigint) RETURNS bigint LANGUAGE sql AS
	'SELECT balance FROM credits.accounts WHERE account_id = $1';
CREATE FUNCTION pg_temp.in_flight(bigint) RETURNS bigint LANGUAGE sql AS
	'SELECT in_flight FROM credits.accounts WHERE account_id = $1';
-- The account's n-th recharge, oldest first.
CREATE FUNCTION pg_temp.rc(bigint, integer) RETURNS bigint LANGUAGE sql AS
	'SELECT recharge_id FROM credits.recharges WHERE account_id = $1
	  ORDER BY recharge_id OFFSET $2 - 1 LIMIT 1';
CREATE FUNCTION pg_temp.batch(bigint, text) RETURNS bigint LANGUAGE sql AS
	'SELECT batch_id FROM credits.send_batches WHERE account_id = $1 AND idempotency_key = $2';
-- Everything a refused batch must leave alone, in one line.
CREATE FUNCTION pg_temp.state(bigint) RETURNS text LANGUAGE sql AS $$
	SELECT format('balance %s, in_flight %s, batches %s, ledger %s, recharges %s',
		(SELECT balance FROM credits.accounts WHERE account_id = $1),
		(SELECT in_flight FROM credits.accounts WHERE account_id = $1),
		(SELECT count(*) FROM credits.send_batches WHERE account_id = $1),
		(SELECT count(*) FROM credits.ledger WHERE account_id = $1),
		(SELECT coalesce(string_agg(credits || ' ' || status, ', ' ORDER BY recharge_id), 'none')
		   FROM credits.recharges WHERE account_id = $1))
$$;
-- What counts against the monthly limit: pending + processing + succeeded
-- recharges opened this calendar month (UTC).
CREATE FUNCTION pg_temp.month_total(bigint) RETURNS bigint LANGUAGE sql AS $$
	SELECT coalesce(sum(credits), 0)::bigint FROM credits.recharges
	 WHERE account_id = $1 AND status IN ('pending', 'processing', 'succeeded')
	   AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;
-- A payment worker: claims every pending recharge (only the ones of the
-- account under test are pending when this is called) and returns this
-- account's; fails or completes the account's newest processing recharge.
CREATE FUNCTION pg_temp.claim(bigint) RETURNS SETOF credits.recharges LANGUAGE sql AS
	'SELECT * FROM credits.claim_recharges(100000) r WHERE r.account_id = $1 ORDER BY r.recharge_id';
CREATE FUNCTION pg_temp.fail_last(bigint, text DEFAULT 'card declined') RETURNS text LANGUAGE sql AS $$
	SELECT status FROM credits.fail_recharge(
		(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = $1 AND status = 'processing'), $2)
$$;
CREATE FUNCTION pg_temp.complete_last(bigint, text) RETURNS text LANGUAGE sql AS $$
	SELECT status FROM credits.complete_recharge(
		(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = $1 AND status = 'processing'), $2)
$$;
CREATE FUNCTION pg_temp.policy(bigint) RETURNS text LANGUAGE sql AS $$
	SELECT format('enabled %s, failures %s, reason %s, disabled_at %s',
				  enabled::text, payment_failures, coalesce(disabled_reason, 'null'),
				  CASE WHEN disabled_at IS NULL THEN 'null' WHEN disabled_at = now() THEN 'now' ELSE 'other' END)
	  FROM credits.auto_recharge WHERE account_id = $1
$$;

--------------------------------------------------------------------------------
-- Policy validation
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(2000, 100); END $$;
SELECT throws_ok($$SELECT credits.enable_auto_recharge(2000, 50, 1000, target_balance => 49)$$,
	'MC013', NULL, 'target_balance below min_balance: MC013');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(2000, 50, 1000, monthly_limit => 0)$$,
	'MC013', NULL, 'monthly_limit 0: MC013');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(2000, 50, 1000, monthly_limit => -100)$$,
	'MC013', NULL, 'negative monthly_limit: MC013');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(2000, NULL, 1000)$$,
	'22004', NULL, 'NULL min_balance: 22004');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(2000, 50, NULL)$$,
	'22004', NULL, 'NULL max_credits: 22004');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(2000, NULL, NULL, target_balance => 10)$$,
	'22004', NULL, 'NULL min_balance and max_credits with a target: 22004');
SELECT ok(NOT EXISTS (SELECT FROM credits.auto_recharge WHERE account_id = 2000),
	'the refused policies wrote nothing');
SELECT results_eq(
	$$SELECT enabled, min_balance, max_credits, target_balance, monthly_limit
		FROM credits.enable_auto_recharge(2000, 50, 1000, target_balance => 50, monthly_limit => 1)$$,
	$$VALUES (true, 50::bigint, 1000::bigint, 50::bigint, 1::bigint)$$,
	'target_balance = min_balance and monthly_limit 1 are valid');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(2000, 60, 1000, target_balance => 59, monthly_limit => 10)$$,
	'MC013', NULL, 'raising min_balance above the target: MC013');
SELECT results_eq(
	$$SELECT min_balance, target_balance, monthly_limit FROM credits.auto_recharge WHERE account_id = 2000$$,
	$$VALUES (50::bigint, 50::bigint, 1::bigint)$$,
	'a refused update leaves the stored policy as it was');
SELECT results_eq(
	$$SELECT target_balance, monthly_limit FROM credits.enable_auto_recharge(2000, 50, 1000)$$,
	$$VALUES (NULL::bigint, NULL::bigint)$$,
	'target_balance and monthly_limit default to NULL: enabling without them clears them');

--------------------------------------------------------------------------------
-- Target top-ups
--------------------------------------------------------------------------------

-- Shortfall: need 100 (0 - -100), top-up to the target 300: 400 credits.
DO $$ BEGIN PERFORM credits.open_account(2001, 0);
	PERFORM credits.enable_auto_recharge(2001, 0, 1000, target_balance => 300); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2001, 100, 't1');
SELECT results_eq(
	$$SELECT credits, need, reason, balance_seen, max_credits, batch_id, status FROM credits.recharges WHERE account_id = 2001$$,
	$$VALUES (400::bigint, 100::bigint, 'shortfall'::text, 0::bigint, 1000::bigint, pg_temp.batch(2001, 't1'), 'pending'::text)$$,
	'target: a need of 100 buys 400, bringing balance + in-flight to the target 300');
SELECT results_eq(
	$$SELECT balance, in_flight, balance + in_flight FROM credits.accounts WHERE account_id = 2001$$,
	$$VALUES (-100::bigint, 400::bigint, 300::bigint)$$,
	'target: balance -100, in_flight 400, available 300');
-- The next short batch is covered by what is in flight: no new recharge.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2001, 50, 't2');
SELECT results_eq(
	$$SELECT status, recharge_id FROM credits.send_batches WHERE batch_id = pg_temp.batch(2001, 't2')$$,
	$$SELECT 'awaiting_credits'::text, pg_temp.rc(2001, 1)$$,
	'target: a later short batch within the top-up awaits the same recharge');
SELECT is(pg_temp.state(2001), 'balance -150, in_flight 400, batches 2, ledger 3, recharges 400 pending',
	'target: the covered batch bought nothing more');

-- Threshold: balance 500, min 100, target 600; a batch of 450 leaves 50:
-- need 50, top-up 550, the batch itself is paid.
DO $$ BEGIN PERFORM credits.open_account(2002, 500);
	PERFORM credits.enable_auto_recharge(2002, 100, 1000, target_balance => 600); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2002, 450, 't1');
SELECT results_eq(
	$$SELECT r.credits, r.need, r.reason, r.balance_seen, b.status, b.recharge_id
		FROM credits.recharges r JOIN credits.send_batches b ON b.batch_id = r.batch_id
	   WHERE r.account_id = 2002$$,
	$$VALUES (550::bigint, 50::bigint, 'threshold'::text, 500::bigint, 'ready'::text, NULL::bigint)$$,
	'target on a threshold recharge: need 50, buys 550; the batch is ready');
SELECT is(pg_temp.bal(2002) + pg_temp.in_flight(2002), 600::bigint,
	'threshold top-up: available = target 600');

-- Capped at max_credits, never below the need.
DO $$ BEGIN PERFORM credits.open_account(2003, 0);
	PERFORM credits.enable_auto_recharge(2003, 0, 300, target_balance => 10000); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2003, 100);
SELECT results_eq(
	$$SELECT credits, need FROM credits.recharges WHERE account_id = 2003$$,
	$$VALUES (300::bigint, 100::bigint)$$,
	'target 10000: the top-up is capped at max_credits 300');
-- balance -100, in_flight 300: a batch of 700 needs 500 > max_credits.
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2003, 700)$$,
	'MC002', NULL, 'target: a need (500) above max_credits (300) is refused with MC002');
SELECT is(pg_temp.state(2003), 'balance -100, in_flight 300, batches 1, ledger 2, recharges 300 pending',
	'the MC002 refusal wrote nothing');
-- A batch of 500 needs exactly 300 = max_credits: the pending recharge is
-- full, so a second recharge of 300 (need 300, top-up capped at 300).
INSERT INTO credits.send_batches (account_id, messages) VALUES (2003, 500);
SELECT results_eq(
	$$SELECT credits, need, status FROM credits.recharges WHERE account_id = 2003 ORDER BY recharge_id$$,
	$$VALUES (300::bigint, 100::bigint, 'pending'::text), (300::bigint, 300::bigint, 'pending'::text)$$,
	'target: a need of exactly max_credits opens a second recharge of max_credits');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2003, 301)$$,
	'MC002', NULL, 'target: a need of max_credits + 1 is refused with MC002');
SELECT is(pg_temp.state(2003), 'balance -600, in_flight 600, batches 2, ledger 3, recharges 300 pending, 300 pending',
	'account 2003 after the refusal');

-- Growing a pending recharge towards the target, within max_credits.
-- min 0, max 500, target 200: a batch of 100 opens R1 of 300 (available 200).
-- A batch of 250: available -50, need 50, top-up 250, but R1 has room for
-- 200 only: R1 grows to 500, available 150.  A batch of 200: available -50,
-- need 50, R1 is full: R2 of 250 (back to the target).
DO $$ BEGIN PERFORM credits.open_account(2004, 0);
	PERFORM credits.enable_auto_recharge(2004, 0, 500, target_balance => 200); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2004, 100, 'g1');
SELECT is(pg_temp.state(2004), 'balance -100, in_flight 300, batches 1, ledger 2, recharges 300 pending',
	'grow: the first batch opens a recharge of 300');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2004, 250, 'g2');
SELECT results_eq(
	$$SELECT credits, need, max_credits, status FROM credits.recharges WHERE account_id = 2004$$,
	$$VALUES (500::bigint, 100::bigint, 500::bigint, 'pending'::text)$$,
	'grow: the pending recharge grows by 200, up to max_credits 500, not by the 250 the target asks');
SELECT results_eq(
	$$SELECT balance, in_flight, balance + in_flight FROM credits.accounts WHERE account_id = 2004$$,
	$$VALUES (-350::bigint, 500::bigint, 150::bigint)$$,
	'grow: in_flight is 500, the recharge''s real amount (available 150)');
SELECT is((SELECT recharge_id FROM credits.send_batches WHERE batch_id = pg_temp.batch(2004, 'g2')),
	pg_temp.rc(2004, 1), 'grow: the batch awaits the grown recharge');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2004, 200, 'g3');
SELECT results_eq(
	$$SELECT credits, need, status FROM credits.recharges WHERE account_id = 2004 ORDER BY recharge_id$$,
	$$VALUES (500::bigint, 100::bigint, 'pending'::text), (250::bigint, 50::bigint, 'pending'::text)$$,
	'grow: with the pending recharge full, a new one of 250 tops up to the target');
SELECT is(pg_temp.in_flight(2004),
	(SELECT sum(credits)::bigint FROM credits.recharges WHERE account_id = 2004 AND status IN ('pending', 'processing')),
	'grow: in_flight = the sum of pending and processing recharges (750)');
SELECT is(pg_temp.bal(2004) + pg_temp.in_flight(2004), 200::bigint, 'grow: available back at the target');
SELECT is_empty($$SELECT * FROM credits.verify() WHERE account_id BETWEEN 2000 AND 2009$$,
	'verify() is empty after the target top-ups');

--------------------------------------------------------------------------------
-- The monthly limit, at its exact boundary
--------------------------------------------------------------------------------

-- Limit 100, max_credits 1000: a first need of 101 (limit + 1) is refused,
-- 100 (the limit) is accepted, then 1 more is refused.
DO $$ BEGIN PERFORM credits.open_account(2010, 0);
	PERFORM credits.enable_auto_recharge(2010, 0, 1000, monthly_limit => 100); END $$;
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2010, 101)$$,
	'MC018', NULL, 'monthly limit 100: a need of 101 is refused with MC018');
SELECT is(pg_temp.state(2010), 'balance 0, in_flight 0, batches 0, ledger 1, recharges none',
	'the MC018 refusal wrote nothing');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2010, 100);
SELECT is(pg_temp.month_total(2010), 100::bigint, 'monthly limit 100: a need of exactly 100 is accepted');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2010, 1)$$,
	'MC018', 'monthly recharge limit exceeded for account 2010',
	'monthly limit reached: a need of 1 is refused with MC018');
SELECT is(pg_temp.state(2010), 'balance -100, in_flight 100, batches 1, ledger 2, recharges 100 pending',
	'the second refusal wrote nothing either');

-- Limit 100: 99 (limit - 1), then 1 more (the limit, by growing the pending
-- recharge), then 1 more (limit + 1): refused.
DO $$ BEGIN PERFORM credits.open_account(2011, 0);
	PERFORM credits.enable_auto_recharge(2011, 0, 1000, monthly_limit => 100); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2011, 99);
SELECT is(pg_temp.month_total(2011), 99::bigint, 'monthly limit 100: 99 bought');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2011, 1);
SELECT is(pg_temp.state(2011), 'balance -100, in_flight 100, batches 2, ledger 3, recharges 100 pending',
	'monthly limit 100: one more grows the pending recharge to exactly the limit');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2011, 1)$$,
	'MC018', NULL, 'monthly limit 100: the 101st credit is refused with MC018');
SELECT results_eq(
	$$SELECT monthly_limit, committed_this_month, monthly_room FROM credits.account_overview WHERE account_id = 2011$$,
	$$VALUES (100::bigint, 100::numeric, 0::numeric)$$,
	'account_overview: committed 100 of 100, room 0');

-- Pending, processing and succeeded all count; failed ones do not.
-- Limit 100, max_credits 40 (so every need opens its own recharge).
DO $$ BEGIN PERFORM credits.open_account(2012, 0);
	PERFORM credits.enable_auto_recharge(2012, 0, 40, monthly_limit => 100); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2012, 40);
SELECT is((SELECT count(*) FROM pg_temp.claim(2012)), 1::bigint, 'limit: R1 (40) claimed');
SELECT is(pg_temp.complete_last(2012, 'ref-2012-1'), 'succeeded', 'limit: R1 succeeded');
-- 0.2.0: R1's credits form a recharge grant that pays the batch's debt at
-- once, a repay pair (-40 on the grant, +40 without one).
SELECT results_eq(
	$$SELECT l.kind, l.delta, l.balance_after, l.recharge_id, l.grant_id IS NOT NULL FROM credits.ledger l
	   WHERE l.account_id = 2012 ORDER BY l.entry_id$$,
	$$SELECT * FROM (VALUES ('open'::text, 0::bigint, 0::bigint, NULL::bigint, false),
							('debit', -40, -40, pg_temp.rc(2012, 1), false),
							('recharge', 40, 0, pg_temp.rc(2012, 1), true),
							('repay', -40, -40, NULL, true),
							('repay', 40, 0, NULL, false)) AS v$$,
	'limit: R1 credited a recharge grant, which repaid the batch''s debt');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2012, 40);
SELECT is((SELECT count(*) FROM pg_temp.claim(2012)), 1::bigint, 'limit: R2 (40) claimed, processing');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2012, 20);
SELECT is(pg_temp.state(2012), 'balance -60, in_flight 60, batches 3, ledger 7, recharges 40 succeeded, 40 processing, 20 pending',
	'limit: succeeded 40 + processing 40 + pending 20 = the limit of 100');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2012, 1)$$,
	'MC018', NULL, 'limit: succeeded + processing + pending at the limit: MC018');
-- R2 fails: its batch is refunded and its 40 no longer count.
SELECT is(pg_temp.fail_last(2012), 'failed', 'limit: R2 fails');
SELECT is(pg_temp.month_total(2012), 60::bigint, 'limit: a failed recharge frees its room (60 of 100 used)');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2012, 40);
SELECT is(pg_temp.state(2012), 'balance -60, in_flight 60, batches 4, ledger 9, recharges 40 succeeded, 40 failed, 20 pending, 40 pending',
	'limit: the freed 40 are bought again');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2012, 1)$$,
	'MC018', NULL, 'limit: and then the month is full again');
SELECT is(pg_temp.month_total(2012), 100::bigint, 'limit: never more than 100');

-- A target top-up is clamped to the month's room, never below the need.
-- min 0, max 1000, target 900, limit 400: a need of 100 would top up by
-- 1000 (to 900) but buys 400.
DO $$ BEGIN PERFORM credits.open_account(2013, 0);
	PERFORM credits.enable_auto_recharge(2013, 0, 1000, target_balance => 900, monthly_limit => 400); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2013, 100);
SELECT results_eq(
	$$SELECT credits, need FROM credits.recharges WHERE account_id = 2013$$,
	$$VALUES (400::bigint, 100::bigint)$$,
	'target + limit: the top-up is clamped to the month''s room of 400');
-- available 300: a batch of 350 needs 50 with no room left.
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2013, 350)$$,
	'MC018', NULL, 'target + limit: a need beyond the room is refused, not clamped below the need');
SELECT is(pg_temp.state(2013), 'balance -100, in_flight 400, batches 1, ledger 2, recharges 400 pending',
	'target + limit: the refusal wrote nothing');

-- Growth of a pending recharge clamped to the room: min 0, max 1000,
-- target 300, limit 500.  A batch of 100 opens 400; a batch of 250 is
-- covered; a batch of 100 needs 50, tops up by 350, but 100 are left: the
-- pending recharge grows by 100 to 500.
DO $$ BEGIN PERFORM credits.open_account(2014, 0);
	PERFORM credits.enable_auto_recharge(2014, 0, 1000, target_balance => 300, monthly_limit => 500); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2014, 100), (2014, 250), (2014, 100);
SELECT results_eq(
	$$SELECT credits, need, status FROM credits.recharges WHERE account_id = 2014$$,
	$$VALUES (500::bigint, 100::bigint, 'pending'::text)$$,
	'target + limit: a pending recharge grows only by the month''s room');
SELECT results_eq(
	$$SELECT balance, in_flight FROM credits.accounts WHERE account_id = 2014$$,
	$$VALUES (-450::bigint, 500::bigint)$$,
	'target + limit: in_flight 500, available 50 (the need was 50)');

-- A pending recharge opened in an earlier month is not grown: the new need
-- opens a recharge of this month, which alone counts against this month.
DO $$ BEGIN PERFORM credits.open_account(2015, 0);
	PERFORM credits.enable_auto_recharge(2015, 0, 1000, monthly_limit => 100); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2015, 60);
UPDATE credits.recharges SET created_at = now() - interval '40 days' WHERE account_id = 2015;
SELECT is(pg_temp.month_total(2015), 0::bigint, 'previous month: the backdated recharge does not count this month');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2015, 70, 'new');
SELECT results_eq(
	$$SELECT credits, need, status, created_at < date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
		FROM credits.recharges WHERE account_id = 2015 ORDER BY recharge_id$$,
	$$VALUES (60::bigint, 60::bigint, 'pending'::text, true), (70::bigint, 70::bigint, 'pending'::text, false)$$,
	'previous month: the old pending recharge stays at 60, the need opens a new one of 70');
SELECT is((SELECT recharge_id FROM credits.send_batches WHERE batch_id = pg_temp.batch(2015, 'new')),
	pg_temp.rc(2015, 2), 'previous month: the batch awaits the new recharge');
SELECT results_eq(
	$$SELECT in_flight, committed_this_month, monthly_room FROM credits.account_overview WHERE account_id = 2015$$,
	$$VALUES (130::bigint, 70::numeric, 30::numeric)$$,
	'previous month: in_flight 130 (both), this month 70, room 30');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2015, 31)$$,
	'MC018', NULL, 'previous month: this month''s room is 30, a need of 31 is refused');
-- Turned off: its pending recharges are cancelled, so the expiry tests
-- below see none of them.
DO $$ BEGIN PERFORM credits.disable_auto_recharge(2015); END $$;
SELECT is_empty($$SELECT * FROM credits.verify() WHERE account_id BETWEEN 2010 AND 2019$$,
	'verify() is empty after the monthly limit tests');

--------------------------------------------------------------------------------
-- Payment failures and auto-disable
--------------------------------------------------------------------------------

SELECT is(current_setting('credits.max_payment_failures'), '3', 'credits.max_payment_failures defaults to 3');
DO $$ BEGIN PERFORM credits.open_account(2020, 0);
	PERFORM credits.enable_auto_recharge(2020, 0, 1000); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 10);
DO $$ BEGIN PERFORM pg_temp.claim(2020); END $$;
SELECT is(pg_temp.fail_last(2020), 'failed', 'failure 1');
SELECT is(pg_temp.policy(2020), 'enabled true, failures 1, reason null, disabled_at null',
	'after 1 failure: still on, 1 counted');
SELECT is((SELECT status FROM credits.fail_recharge(pg_temp.rc(2020, 1), 'card declined')), 'failed',
	'retrying the same failure is accepted');
SELECT is(pg_temp.policy(2020), 'enabled true, failures 1, reason null, disabled_at null',
	'a retried failure is not counted twice');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 10);
DO $$ BEGIN PERFORM pg_temp.claim(2020); END $$;
SELECT is(pg_temp.fail_last(2020), 'failed', 'failure 2');
SELECT is(pg_temp.policy(2020), 'enabled true, failures 2, reason null, disabled_at null',
	'after 2 failures: still on');
-- A success resets the count.
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 10);
DO $$ BEGIN PERFORM pg_temp.claim(2020); END $$;
SELECT is(pg_temp.complete_last(2020, 'ref-2020-1'), 'succeeded', 'a success');
SELECT is(pg_temp.policy(2020), 'enabled true, failures 0, reason null, disabled_at null',
	'a success resets the count to 0');
-- Two more failures, then two claimed recharges (R6, R7) and one pending (R8).
-- (The ledger counts below include the repay pairs of R3 and R7: each
-- succeeded recharge's grant pays its batch's debt.)
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 10);
DO $$ BEGIN PERFORM pg_temp.claim(2020); PERFORM pg_temp.fail_last(2020); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 10);
DO $$ BEGIN PERFORM pg_temp.claim(2020); PERFORM pg_temp.fail_last(2020); END $$;
SELECT is(pg_temp.policy(2020), 'enabled true, failures 2, reason null, disabled_at null',
	'2 failures after the success');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2020, 10, 'r6');
DO $$ BEGIN PERFORM pg_temp.claim(2020); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2020, 10, 'r7');
DO $$ BEGIN PERFORM pg_temp.claim(2020); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2020, 10, 'r8');
SELECT is(pg_temp.state(2020), 'balance -30, in_flight 30, batches 8, ledger 16, recharges 10 failed, 10 failed, 10 succeeded, 10 failed, 10 failed, 10 processing, 10 processing, 10 pending',
	'account 2020 before the third failure in a row');
SELECT is((SELECT status FROM credits.fail_recharge(pg_temp.rc(2020, 6), 'card declined')), 'failed',
	'failure 3 in a row');
SELECT is(pg_temp.policy(2020), 'enabled false, failures 3, reason payment_failed, disabled_at now',
	'after credits.max_payment_failures failures: off, disabled_reason payment_failed, disabled_at set');
SELECT results_eq(
	$$SELECT status, failure_reason FROM credits.recharges WHERE recharge_id IN (pg_temp.rc(2020, 7), pg_temp.rc(2020, 8)) ORDER BY recharge_id$$,
	$$VALUES ('processing'::text, NULL::text), ('cancelled'::text, 'auto-recharge turned off after payment failures'::text)$$,
	'the pending recharge is cancelled; the processing one is left to finish');
SELECT results_eq(
	$$SELECT idempotency_key, status FROM credits.send_batches WHERE idempotency_key IN ('r6', 'r7', 'r8') AND account_id = 2020 ORDER BY batch_id$$,
	$$VALUES ('r6'::text, 'failed'::text), ('r7'::text, 'awaiting_credits'::text), ('r8'::text, 'failed'::text)$$,
	'the failed and the cancelled recharges'' batches failed; the processing one''s still awaits');
SELECT results_eq(
	$$SELECT kind, delta FROM credits.ledger WHERE batch_id = pg_temp.batch(2020, 'r8') ORDER BY entry_id$$,
	$$VALUES ('debit'::text, -10::bigint), ('refund'::text, 10::bigint)$$,
	'the cancelled recharge''s batch was refunded');
SELECT is((SELECT auto_recharge FROM credits.account_overview WHERE account_id = 2020), 'off (payment_failed)',
	'account_overview shows why auto-recharge is off');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 20)$$,
	'MC001', NULL, 'auto-recharge off: a short batch is refused with MC001');
-- A later success resets the count but does not turn auto-recharge back on.
SELECT is((SELECT status FROM credits.complete_recharge(pg_temp.rc(2020, 7), 'ref-2020-7')), 'succeeded',
	'the processing recharge succeeds after the turn-off');
SELECT is(pg_temp.policy(2020), 'enabled false, failures 0, reason payment_failed, disabled_at now',
	'a success after the turn-off resets the count but leaves auto-recharge off');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 20)$$,
	'MC001', NULL, 'still off: only enable_auto_recharge turns it on');
SELECT is(pg_temp.policy(2020) || ' / ' || pg_temp.state(2020),
	'enabled false, failures 0, reason payment_failed, disabled_at now / balance 0, in_flight 0, batches 8, ledger 21, recharges 10 failed, 10 failed, 10 succeeded, 10 failed, 10 failed, 10 failed, 10 succeeded, 10 cancelled',
	'account 2020 after the turn-off');
-- An explicit enable turns it on again with a fresh count.
SELECT is((SELECT enabled FROM credits.enable_auto_recharge(2020, 0, 1000)), true, 're-enabled');
SELECT is(pg_temp.policy(2020), 'enabled true, failures 0, reason null, disabled_at null',
	'enable_auto_recharge clears payment_failures, disabled_reason and disabled_at');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 20);
SELECT is(pg_temp.in_flight(2020), 20::bigint, 're-enabled: a short batch opens a recharge again');

-- The threshold is a setting, read when a recharge fails.
DO $$ BEGIN PERFORM credits.open_account(2021, 0);
	PERFORM credits.enable_auto_recharge(2021, 0, 1000); END $$;
SET LOCAL credits.max_payment_failures = 1;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2021, 10);
DO $$ BEGIN PERFORM pg_temp.claim(2021); PERFORM pg_temp.fail_last(2021); END $$;
SELECT is(pg_temp.policy(2021), 'enabled false, failures 1, reason payment_failed, disabled_at now',
	'credits.max_payment_failures = 1: the first failure turns auto-recharge off');
-- Turned off by the user, a failure does not overwrite the reason.
DO $$ BEGIN PERFORM credits.open_account(2022, 0);
	PERFORM credits.enable_auto_recharge(2022, 0, 1000); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2022, 10);
DO $$ BEGIN PERFORM pg_temp.claim(2022); PERFORM credits.disable_auto_recharge(2022);
	PERFORM pg_temp.fail_last(2022); END $$;
SELECT is(pg_temp.policy(2022), 'enabled false, failures 1, reason disabled_by_user, disabled_at now',
	'a failure after disable_auto_recharge keeps disabled_reason disabled_by_user');
SELECT is((SELECT auto_recharge FROM credits.account_overview WHERE account_id = 2022), 'off (disabled_by_user)',
	'account_overview: off (disabled_by_user)');
RESET credits.max_payment_failures;
SELECT is(current_setting('credits.max_payment_failures'), '3', 'RESET restores the default');
SELECT throws_ok($$SET LOCAL credits.max_payment_failures = 0$$, '22023', NULL,
	'credits.max_payment_failures below 1: 22023');
SELECT throws_ok($$SET LOCAL credits.recharge_expiry = -1$$, '22023', NULL,
	'negative credits.recharge_expiry: 22023');
SELECT is_empty($$SELECT * FROM credits.verify() WHERE account_id BETWEEN 2020 AND 2029$$,
	'verify() is empty after the payment failure tests');

--------------------------------------------------------------------------------
-- Expiry of pending recharges
--------------------------------------------------------------------------------

SELECT is(current_setting('credits.recharge_expiry'), '1h', 'credits.recharge_expiry defaults to 1h');
SELECT is((SELECT count(*) FROM credits.recharges WHERE status = 'pending' AND account_id NOT BETWEEN 2030 AND 2039),
	(SELECT count(*) FROM credits.recharges WHERE status = 'pending' AND created_at = now() AND account_id NOT BETWEEN 2030 AND 2039),
	'no pending recharge older than this transaction exists outside the expiry accounts');
DO $$ BEGIN PERFORM credits.open_account(2030, 0);
	PERFORM credits.enable_auto_recharge(2030, 0, 1000); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2030, 40, 'e1');
SELECT is(credits.expire_recharges(), 0, 'a fresh pending recharge does not expire');
UPDATE credits.recharges SET created_at = now() - interval '30 minutes' WHERE recharge_id = pg_temp.rc(2030, 1);
SELECT is(credits.expire_recharges(), 0, 'pending for 30 minutes: not expired under the default 1h');
SET LOCAL credits.recharge_expiry = '20min';
SELECT is(credits.expire_recharges(), 1, 'credits.recharge_expiry = 20min: the 30-minute-old recharge expires');
SELECT results_eq(
	$$SELECT status, failure_reason LIKE 'expired%', settled_at = now() FROM credits.recharges WHERE recharge_id = pg_temp.rc(2030, 1)$$,
	$$VALUES ('cancelled'::text, true, true)$$,
	'the expired recharge is cancelled with an "expired" reason');
SELECT results_eq(
	$$SELECT b.status, (SELECT sum(delta)::bigint FROM credits.ledger l WHERE l.batch_id = b.batch_id AND l.kind = 'refund')
		FROM credits.send_batches b WHERE b.batch_id = pg_temp.batch(2030, 'e1')$$,
	$$VALUES ('failed'::text, 40::bigint)$$,
	'its batch failed and was refunded');
SELECT is(pg_temp.state(2030), 'balance 0, in_flight 0, batches 1, ledger 3, recharges 40 cancelled',
	'account 2030: balance and in_flight back to 0');
SELECT is(pg_temp.policy(2030), 'enabled true, failures 0, reason null, disabled_at null',
	'an expiry is not a payment failure and leaves auto-recharge on');
SELECT is(credits.expire_recharges(), 0, 'expire_recharges again: nothing left to expire');
-- The boundary: older than the setting, not as old as it.
INSERT INTO credits.send_batches (account_id, messages) VALUES (2030, 5);
SET LOCAL credits.recharge_expiry = 3600;
SELECT is(current_setting('credits.recharge_expiry'), '1h', 'a unitless value is in seconds');
UPDATE credits.recharges SET created_at = now() - interval '1 hour' WHERE recharge_id = pg_temp.rc(2030, 2);
SELECT is(credits.expire_recharges(), 0, 'pending for exactly credits.recharge_expiry: not expired');
UPDATE credits.recharges SET created_at = now() - interval '1 hour 1 second' WHERE recharge_id = pg_temp.rc(2030, 2);
SELECT is(credits.expire_recharges(), 1, 'pending one second longer: expired');
-- 0: never.
INSERT INTO credits.send_batches (account_id, messages) VALUES (2030, 5);
UPDATE credits.recharges SET created_at = now() - interval '30 days' WHERE recharge_id = pg_temp.rc(2030, 3);
SET LOCAL credits.recharge_expiry = 0;
SELECT is(credits.expire_recharges(), 0, 'credits.recharge_expiry = 0: nothing ever expires');
SELECT is((SELECT status FROM credits.recharges WHERE recharge_id = pg_temp.rc(2030, 3)), 'pending',
	'the 30-day-old recharge is still pending');
-- A processing recharge never expires.
DO $$ BEGIN PERFORM pg_temp.claim(2030); END $$;
SET LOCAL credits.recharge_expiry = '1min';
SELECT is(credits.expire_recharges(), 0, 'a claimed (processing) recharge does not expire');
SELECT is(pg_temp.state(2030), 'balance -5, in_flight 5, batches 3, ledger 6, recharges 40 cancelled, 5 cancelled, 5 processing',
	'account 2030 after the expiry tests');
-- An expired recharge gives its monthly room back.
DO $$ BEGIN PERFORM credits.open_account(2031, 0);
	PERFORM credits.enable_auto_recharge(2031, 0, 1000, monthly_limit => 50); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2031, 50);
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (2031, 1)$$,
	'MC018', NULL, 'expiry: the month is full');
UPDATE credits.recharges SET created_at = now() - interval '2 minutes' WHERE account_id = 2031;
SELECT is(credits.expire_recharges(), 1, 'expiry: the pending recharge of 2031 expires');
INSERT INTO credits.send_batches (account_id, messages) VALUES (2031, 50);
SELECT is(pg_temp.state(2031), 'balance -50, in_flight 50, batches 2, ledger 4, recharges 50 cancelled, 50 pending',
	'expiry: a cancelled recharge no longer counts against the month');
RESET credits.recharge_expiry;
SELECT is_empty($$SELECT * FROM credits.verify() WHERE account_id BETWEEN 2030 AND 2039$$,
	'verify() is empty after the expiry tests');

--------------------------------------------------------------------------------
-- The report views on a known scenario (days and months are UTC)
--------------------------------------------------------------------------------
-- Account 2040: 1,000 credits, min 100, max 2,000, target 500, limit 5,000;
-- trust_sms costs 5 per message.
--   b1 email 600: balance 400, no recharge.
--   b2 trust_sms 100 = 500: balance -100, need 200, top-up 600 (RA); RA
--      succeeds: balance 500, b2 ready.
--   b3 email 450: balance 50, need 50, top-up 450 (RB, threshold); RB fails;
--      nothing awaited it.
--   b4 email 200: balance -150, need 250, top-up 650 (RC); b5 email 100:
--      balance -250, covered by RC (available 400).  RC fails: b4 and b5
--      fail and are refunded: balance 50.
--   b6 email 10: balance 40, need 60, top-up 460 (RD, threshold), pending.

INSERT INTO credits.prices (channel, credits_per_message) VALUES ('trust_sms', 5);
DO $$ BEGIN PERFORM credits.open_account(2040, 1000);
	PERFORM credits.enable_auto_recharge(2040, 100, 2000, target_balance => 500, monthly_limit => 5000); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2040, 600);
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (2040, 100, 'trust_sms');
DO $$ BEGIN PERFORM pg_temp.claim(2040); PERFORM pg_temp.complete_last(2040, 'ref-2040-a'); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2040, 450);
DO $$ BEGIN PERFORM pg_temp.claim(2040); PERFORM pg_temp.fail_last(2040, 'insufficient funds'); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2040, 200);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2040, 100);
DO $$ BEGIN PERFORM pg_temp.claim(2040); PERFORM pg_temp.fail_last(2040); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2040, 10);
DO $$ BEGIN PERFORM credits.open_account(2041, 70); END $$;

SELECT results_eq(
	$$SELECT account_id, balance, in_flight, available, auto_recharge, min_balance, max_credits,
			 target_balance, monthly_limit, bought_this_month, committed_this_month, monthly_room,
			 payment_failures, disabled_at, disabled_reason
		FROM credits.account_overview WHERE account_id = 2040$$,
	$$VALUES (2040::bigint, 40::bigint, 460::bigint, 500::numeric, 'on'::text, 100::bigint, 2000::bigint,
			  500::bigint, 5000::bigint, 600::numeric, 1060::numeric, 3940::numeric,
			  2, NULL::timestamptz, NULL::text)$$,
	'account_overview: every column for account 2040 (bought = RA; committed = RA + RD)');
SELECT results_eq(
	$$SELECT balance, in_flight, available, auto_recharge, min_balance, monthly_limit,
			 bought_this_month, committed_this_month, monthly_room, payment_failures
		FROM credits.account_overview WHERE account_id = 2041$$,
	$$VALUES (70::bigint, 0::bigint, 70::numeric, 'never set'::text, NULL::bigint, NULL::bigint,
			  0::numeric, 0::numeric, NULL::numeric, NULL::integer)$$,
	'account_overview: an account without a policy');
SELECT results_eq(
	$$SELECT status, reason, batch_messages, batch_channel, batch_cost, balance_seen, need, credits,
			 beyond_need, max_credits, batches_covered, payment_ref, failure_reason
		FROM credits.recharge_history WHERE account_id = 2040 ORDER BY recharge_id$$,
	$$VALUES
		('succeeded'::text, 'shortfall'::text, 100, 'trust_sms'::text, 500::bigint, 400::bigint, 200::bigint, 600::bigint,
		 400::bigint, 2000::bigint, 1::bigint, 'ref-2040-a'::text, NULL::text),
		('failed', 'threshold', 450, 'email', 450, 500, 50, 450, 400, 2000, 0, NULL, 'insufficient funds'),
		('failed', 'shortfall', 200, 'email', 200, 50, 250, 650, 400, 2000, 2, NULL, 'card declined'),
		('pending', 'threshold', 10, 'email', 10, 50, 60, 460, 400, 2000, 0, NULL, NULL)$$,
	'recharge_history: need, credits, beyond_need and batches_covered of each recharge');
SELECT results_eq(
	$$SELECT claimed_at IS NOT NULL, settled_at IS NOT NULL, wait_for_worker, time_to_settle
		FROM credits.recharge_history WHERE account_id = 2040 ORDER BY recharge_id$$,
	$$VALUES (true, true, '0'::interval, '0'::interval), (true, true, '0', '0'),
			 (true, true, '0', '0'), (false, false, NULL, NULL)$$,
	'recharge_history: timings (all within this transaction; RD not yet claimed)');
SELECT results_eq(
	$$SELECT day = (now() AT TIME ZONE 'UTC')::date, channel, batches, failed_batches, messages,
			 credits_debited, credits_refunded, recharges, credits_bought
		FROM credits.usage_daily WHERE account_id = 2040 ORDER BY channel$$,
	$$VALUES (true, 'email'::text, 5::bigint, 2::bigint, 1060::bigint, 1360::numeric, 300::numeric, 0::bigint, 0::numeric),
			 (true, 'trust_sms'::text, 1::bigint, 0::bigint, 100::bigint, 500::numeric, 0::numeric, 1::bigint, 600::numeric)$$,
	'usage_daily: today''s batches, messages (failed excluded), debits, refunds and purchases per channel');
SELECT results_eq(
	$$SELECT month = date_trunc('month', now() AT TIME ZONE 'UTC')::date, channel, batches, failed_batches,
			 messages, credits_debited, credits_refunded, recharges, credits_bought
		FROM credits.usage_monthly WHERE account_id = 2040 ORDER BY channel$$,
	$$VALUES (true, 'email'::text, 5::bigint, 2::bigint, 1060::bigint, 1360::bigint, 300::bigint, 0::bigint, 0::bigint),
			 (true, 'trust_sms'::text, 1::bigint, 0::bigint, 100::bigint, 500::bigint, 0::bigint, 1::bigint, 600::bigint)$$,
	'usage_monthly: this month''s sums equal the days''');
SELECT is(
	(SELECT sum(credits_debited - credits_refunded) - sum(credits_bought) FROM credits.usage_monthly WHERE account_id = 2040),
	1000::numeric - pg_temp.bal(2040),
	'usage_monthly: opening balance - (debited - refunded) + bought = the balance');
SELECT is_empty($$SELECT * FROM credits.verify() WHERE account_id BETWEEN 2040 AND 2049$$,
	'verify() is empty after the report scenario');

--------------------------------------------------------------------------------
-- A reporting role: SELECT on the four views, nothing else
--------------------------------------------------------------------------------

CREATE ROLE regress_trust_reader;
GRANT USAGE ON SCHEMA credits TO regress_trust_reader;
GRANT SELECT ON credits.account_overview, credits.recharge_history,
	credits.usage_daily, credits.usage_monthly TO regress_trust_reader;
SET LOCAL ROLE regress_trust_reader;
SELECT results_eq(
	$$SELECT balance, available, auto_recharge, committed_this_month FROM credits.account_overview WHERE account_id = 2040$$,
	$$VALUES (40::bigint, 500::numeric, 'on'::text, 1060::numeric)$$,
	'the reporting role reads account_overview');
SELECT results_eq(
	$$SELECT count(*), sum(credits) FROM credits.recharge_history WHERE account_id = 2040$$,
	$$VALUES (4::bigint, 2160::numeric)$$,
	'the reporting role reads recharge_history');
SELECT results_eq(
	$$SELECT sum(messages) FROM credits.usage_daily WHERE account_id = 2040$$,
	$$VALUES (1160::numeric)$$,
	'the reporting role reads usage_daily');
SELECT results_eq(
	$$SELECT sum(credits_bought) FROM credits.usage_monthly WHERE account_id = 2040$$,
	$$VALUES (600::numeric)$$,
	'the reporting role reads usage_monthly');
SELECT throws_ok($$SELECT * FROM credits.accounts$$, '42501', NULL,
	'the reporting role cannot read accounts');
SELECT throws_ok($$SELECT * FROM credits.recharges$$, '42501', NULL,
	'the reporting role cannot read recharges');
SELECT throws_ok($$SELECT * FROM credits.send_batches$$, '42501', NULL,
	'the reporting role cannot read send_batches');
SELECT throws_ok($$SELECT * FROM credits.ledger$$, '42501', NULL,
	'the reporting role cannot read the ledger');
SELECT throws_ok($$SELECT * FROM credits.auto_recharge$$, '42501', NULL,
	'the reporting role cannot read auto_recharge');
SELECT throws_ok($$SELECT * FROM credits.verify()$$, '42501', NULL,
	'the reporting role cannot call verify');
SELECT throws_ok($$SELECT credits.expire_recharges()$$, '42501', NULL,
	'the reporting role cannot call expire_recharges');
SELECT throws_ok($$SET LOCAL credits.recharge_expiry = '1s'$$, '42501', NULL,
	'the reporting role cannot change credits.recharge_expiry (superuser only)');
SELECT throws_ok($$SET LOCAL credits.max_payment_failures = 1000$$, '42501', NULL,
	'the reporting role cannot change credits.max_payment_failures (superuser only)');
RESET ROLE;

SELECT is_empty($$SELECT * FROM credits.verify()$$, 'verify() finds no problem at the end');

SELECT * FROM finish();
ROLLBACK;

-- test/pgtap/10_rules.sql: the behaviour contract of the credits extension,
-- rules 1 to 11 and the other errors, each with the SQLSTATE it raises.
--
-- Accounts 1001-1999 belong to this file; identity values (batch_id,
-- recharge_id) are never hard-coded, they are looked up by account and
-- idempotency key.  Everything runs in one transaction that is rolled back.

BEGIN;
SELECT plan(232);

-- Helpers, gone at ROLLBACK.
CREATE FUNCTION pg_temp.bal(bigint) RETURNS bigint LANGUAGE sql AS
	'SELECT balance FROM credits.accounts WHERE account_id = $1';
CREATE FUNCTION pg_temp.in_flight(bigint) RETURNS bigint LANGUAGE sql AS
	'SELECT in_flight FROM credits.accounts WHERE account_id = $1';
CREATE FUNCTION pg_temp.entries(bigint) RETURNS bigint LANGUAGE sql AS
	'SELECT count(*) FROM credits.ledger WHERE account_id = $1';
CREATE FUNCTION pg_temp.batch(bigint, text) RETURNS bigint LANGUAGE sql AS
	'SELECT batch_id FROM credits.send_batches WHERE account_id = $1 AND idempotency_key = $2';
CREATE FUNCTION pg_temp.batches(bigint) RETURNS bigint LANGUAGE sql AS
	'SELECT count(*) FROM credits.send_batches WHERE account_id = $1';
-- The account's n-th recharge, oldest first.
CREATE FUNCTION pg_temp.rc(bigint, integer) RETURNS bigint LANGUAGE sql AS
	'SELECT recharge_id FROM credits.recharges WHERE account_id = $1
	  ORDER BY recharge_id OFFSET $2 - 1 LIMIT 1';
CREATE FUNCTION pg_temp.recharges(bigint) RETURNS bigint LANGUAGE sql AS
	'SELECT count(*) FROM credits.recharges WHERE account_id = $1';
-- The account's only grant of a source (0.2.0: every credit lives in a grant).
CREATE FUNCTION pg_temp.grant_of(bigint, text) RETURNS bigint LANGUAGE sql AS
	'SELECT grant_id FROM credits.grants WHERE account_id = $1 AND source = $2';

--------------------------------------------------------------------------------
-- Accounts: open_account, add_credits and their errors
--------------------------------------------------------------------------------

SELECT results_eq(
	$$SELECT account_id, balance, in_flight FROM credits.open_account(1001, 100)$$,
	$$VALUES (1001::bigint, 100::bigint, 0::bigint)$$,
	'open_account returns the new account with its initial balance');
SELECT results_eq(
	$$SELECT kind, delta, balance_after, batch_id, recharge_id FROM credits.ledger WHERE account_id = 1001$$,
	$$VALUES ('open'::text, 100::bigint, 100::bigint, NULL::bigint, NULL::bigint)$$,
	'open_account writes one ''open'' ledger row');
SELECT throws_ok($$SELECT credits.open_account(1001, 5)$$, 'MC010', NULL,
	'open_account on an existing account: MC010');
SELECT is(pg_temp.bal(1001), 100::bigint, 'the failed open_account left the balance alone');
SELECT throws_ok($$SELECT credits.open_account(1002, -1)$$, 'MC014', NULL,
	'open_account with negative initial credits: MC014');
SELECT ok(NOT EXISTS (SELECT FROM credits.accounts WHERE account_id = 1002),
	'the refused account was not opened');
SELECT results_eq(
	$$SELECT balance FROM credits.open_account(1002)$$,
	$$VALUES (0::bigint)$$,
	'open_account defaults initial_credits to 0');

SELECT is(credits.add_credits(1001, 50, 'regress grant'), 150::bigint,
	'add_credits returns the new balance');
SELECT results_eq(
	$$SELECT kind, delta, balance_after, note FROM credits.ledger
	   WHERE account_id = 1001 ORDER BY entry_id DESC LIMIT 1$$,
	$$VALUES ('grant'::text, 50::bigint, 150::bigint, 'regress grant'::text)$$,
	'add_credits writes one ''grant'' ledger row with the note');
SELECT is(credits.add_credits(account_id => 1001, credits => 5), 155::bigint,
	'add_credits works with named arguments and no note');
SELECT throws_ok($$SELECT credits.add_credits(1001, 0)$$, 'MC014', NULL,
	'add_credits of 0 credits: MC014');
SELECT throws_ok($$SELECT credits.add_credits(1001, -7)$$, 'MC014', NULL,
	'add_credits of negative credits: MC014');
SELECT throws_ok($$SELECT credits.add_credits(1999, 10)$$, 'MC003', NULL,
	'add_credits to an unknown account: MC003');
SELECT is(pg_temp.entries(1001), 3::bigint, 'account 1001: one ledger row per change, none for refusals');

-- Balance overflow.
SELECT lives_ok($$SELECT credits.open_account(1003, 9223372036854775807)$$,
	'an account may open with the largest bigint balance');
SELECT throws_ok($$SELECT credits.add_credits(1003, 1)$$, 'MC012', NULL,
	'add_credits that overflows the balance: MC012');
SELECT is(pg_temp.bal(1003), 9223372036854775807::bigint, 'the overflowing grant left the balance alone');

--------------------------------------------------------------------------------
-- Rules 2 and 3: every row is priced and debited, whatever the INSERT form
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(1010, 1000); END $$;
INSERT INTO credits.prices (channel, credits_per_message) VALUES ('regress_sms', 3);

INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1010, 10, 'single');
SELECT results_eq(
	$$SELECT messages, channel, cost, status, recharge_id FROM credits.send_batches
	   WHERE batch_id = pg_temp.batch(1010, 'single')$$,
	$$VALUES (10, 'email'::text, 10::bigint, 'ready'::text, NULL::bigint)$$,
	'single INSERT: cost = messages x 1 on the default channel email, status ready');
SELECT results_eq(
	$$SELECT kind, delta, balance_after FROM credits.ledger
	   WHERE batch_id = pg_temp.batch(1010, 'single')$$,
	$$VALUES ('debit'::text, -10::bigint, 990::bigint)$$,
	'single INSERT: one debit ledger row naming the batch');
SELECT is(pg_temp.bal(1010), 990::bigint, 'single INSERT: balance debited');

INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
	VALUES (1010, 7, 'regress_sms', 'sms');
SELECT is((SELECT cost FROM credits.send_batches WHERE batch_id = pg_temp.batch(1010, 'sms')),
	21::bigint, 'cost = messages x credits_per_message of the batch''s channel');
SELECT is(pg_temp.bal(1010), 969::bigint, 'the sms batch was debited its cost');

INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	VALUES (1010, 2, 'multi-a'), (1010, 3, 'multi-b');
SELECT results_eq(
	$$SELECT b.cost, b.status, l.delta FROM credits.send_batches b
		JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	   WHERE b.idempotency_key IN ('multi-a', 'multi-b') ORDER BY b.batch_id$$,
	$$VALUES (2::bigint, 'ready'::text, -2::bigint), (3::bigint, 'ready'::text, -3::bigint)$$,
	'multi-row INSERT: each row priced and debited');

INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	SELECT 1010, g, 'select-' || g FROM generate_series(1, 4) AS g;
SELECT results_eq(
	$$SELECT b.cost, l.delta FROM credits.send_batches b
		JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	   WHERE b.idempotency_key LIKE 'select-%' ORDER BY b.batch_id$$,
	$$VALUES (1::bigint, -1::bigint), (2::bigint, -2::bigint), (3::bigint, -3::bigint), (4::bigint, -4::bigint)$$,
	'INSERT ... SELECT: each row priced and debited');

COPY credits.send_batches (account_id, messages, channel, idempotency_key) FROM STDIN;
1010	5	email	copy-1
1010	6	regress_sms	copy-2
\.
SELECT results_eq(
	$$SELECT b.cost, b.status, l.delta FROM credits.send_batches b
		JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	   WHERE b.idempotency_key LIKE 'copy-%' ORDER BY b.batch_id$$,
	$$VALUES (5::bigint, 'ready'::text, -5::bigint), (18::bigint, 'ready'::text, -18::bigint)$$,
	'COPY: each row priced and debited');

SELECT is(pg_temp.bal(1010), 1000::bigint - (10 + 21 + 2 + 3 + 1 + 2 + 3 + 4 + 5 + 18),
	'account 1010: balance = opening - the sum of costs');
SELECT is_empty(
	$$SELECT b.batch_id FROM credits.send_batches b
	   WHERE b.account_id = 1010
		 AND (SELECT count(*) FROM credits.ledger l
			   WHERE l.batch_id = b.batch_id AND l.kind = 'debit' AND l.delta = -b.cost
				 AND l.account_id = b.account_id) <> 1$$,
	'account 1010: every batch has exactly one debit row of its cost');
SELECT is(pg_temp.entries(1010), 1 + pg_temp.batches(1010),
	'account 1010: one ledger row per change (open + one per batch)');

-- Rule 3 at the boundary: balance = cost.
DO $$ BEGIN PERFORM credits.open_account(1011, 25); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1011, 25, 'all');
SELECT results_eq(
	$$SELECT status, cost FROM credits.send_batches WHERE batch_id = pg_temp.batch(1011, 'all')$$,
	$$VALUES ('ready'::text, 25::bigint)$$,
	'a batch costing exactly the balance is ready');
SELECT is(pg_temp.bal(1011), 0::bigint, 'and takes the balance to zero');

--------------------------------------------------------------------------------
-- Batch errors: unknown account and channel, bad messages
--------------------------------------------------------------------------------

SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1999, 1)$$,
	'MC003', NULL, 'batch for an unknown account: MC003');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1010, 1, 'regress_pigeon')$$,
	'MC004', NULL, 'batch on a channel with no price: MC004');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1010, NULL)$$,
	'MC011', NULL, 'batch with NULL messages: MC011');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1010, 0)$$,
	'MC011', NULL, 'batch with zero messages: MC011');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1010, -3)$$,
	'MC011', NULL, 'batch with negative messages: MC011');
SELECT is(pg_temp.bal(1010), 931::bigint, 'refused batches debited nothing');
SELECT is(pg_temp.batches(1010), 10::bigint, 'refused batches were not stored');

--------------------------------------------------------------------------------
-- Rule 4: not enough credits, auto-recharge off
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(1020, 5); END $$;
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1020, 6)$$,
	'MC001', NULL, 'batch above the balance with auto-recharge off: MC001');
SELECT throws_ok(
	$$INSERT INTO credits.send_batches (account_id, messages) VALUES (1020, 3), (1020, 3)$$,
	'MC001', NULL, 'multi-row INSERT whose second row is short: MC001');
SELECT throws_ok(
	$$COPY credits.send_batches (account_id, messages) FROM PROGRAM 'printf "1020\t4\n1020\t4\n"'$$,
	'MC001', NULL, 'COPY whose second row is short: MC001');
SELECT is(pg_temp.bal(1020), 5::bigint, 'account 1020: balance untouched by the refusals');
SELECT is(pg_temp.batches(1020), 0::bigint, 'account 1020: no batch written');
SELECT is(pg_temp.entries(1020), 1::bigint, 'account 1020: no ledger row beyond the opening');
SELECT is(pg_temp.recharges(1020), 0::bigint, 'account 1020: no recharge opened');
SELECT lives_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1020, 5)$$,
	'the same account can still spend exactly its balance');

--------------------------------------------------------------------------------
-- Rule 5: auto-recharge on
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(1030, 100); END $$;
SELECT results_eq(
	$$SELECT account_id, enabled, min_balance, max_credits FROM credits.enable_auto_recharge(1030, 50, 200)$$,
	$$VALUES (1030::bigint, true, 50::bigint, 200::bigint)$$,
	'enable_auto_recharge returns the policy row, enabled');
SELECT is(pg_temp.recharges(1030), 0::bigint, 'enable_auto_recharge opened no recharge');

-- b1: 100 -> 70, available 70 >= 50: nothing to do.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1030, 30, 'b1');
SELECT results_eq(
	$$SELECT status, recharge_id FROM credits.send_batches WHERE batch_id = pg_temp.batch(1030, 'b1')$$,
	$$VALUES ('ready'::text, NULL::bigint)$$,
	'b1 above min_balance: ready, no recharge');
SELECT is(pg_temp.recharges(1030), 0::bigint, 'b1 opened no recharge');

-- b2: 70 -> 30, available 30 < 50: a threshold recharge of 20.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1030, 40, 'b2');
SELECT results_eq(
	$$SELECT status, recharge_id FROM credits.send_batches WHERE batch_id = pg_temp.batch(1030, 'b2')$$,
	$$VALUES ('ready'::text, NULL::bigint)$$,
	'b2 below min_balance but not below zero: ready, no recharge_id');
SELECT results_eq(
	$$SELECT credits, status, reason, batch_id, balance_seen FROM credits.recharges WHERE account_id = 1030$$,
	$$SELECT 20::bigint, 'pending'::text, 'threshold'::text, pg_temp.batch(1030, 'b2'), 70::bigint$$,
	'b2 opened a pending threshold recharge of min_balance - available, naming b2 and the balance it saw');
SELECT is(pg_temp.bal(1030), 30::bigint, 'b2 was debited');
SELECT is(pg_temp.in_flight(1030), 20::bigint, 'in_flight counts the pending recharge');

-- b3: 30 -> 20, available 40 < 50: the pending recharge grows by 10.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1030, 10, 'b3');
SELECT results_eq(
	$$SELECT count(*), max(credits) FROM credits.recharges WHERE account_id = 1030$$,
	$$VALUES (1::bigint, 30::bigint)$$,
	'b3: the need was added to the pending recharge, no new one');
SELECT is((SELECT status FROM credits.send_batches WHERE batch_id = pg_temp.batch(1030, 'b3')),
	'ready', 'b3 is ready');

-- b4: 20 -> -30, available 0 < 50: need 50, pending 30 + 50 <= 200: grows to 80.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1030, 50, 'b4');
SELECT results_eq(
	$$SELECT status, recharge_id FROM credits.send_batches WHERE batch_id = pg_temp.batch(1030, 'b4')$$,
	$$SELECT 'awaiting_credits'::text, pg_temp.rc(1030, 1)$$,
	'b4 took the balance below zero: awaiting_credits, covered by the pending recharge');
SELECT results_eq(
	$$SELECT count(*), max(credits) FROM credits.recharges WHERE account_id = 1030$$,
	$$VALUES (1::bigint, 80::bigint)$$,
	'b4: the pending recharge grew to 80');
SELECT is(pg_temp.bal(1030), -30::bigint, 'b4 was debited below zero');
SELECT results_eq(
	$$SELECT delta, balance_after, recharge_id, grant_id FROM credits.ledger
	   WHERE batch_id = pg_temp.batch(1030, 'b4') AND kind = 'debit' ORDER BY entry_id$$,
	$$SELECT * FROM (VALUES (-20::bigint, 0::bigint, pg_temp.rc(1030, 1), pg_temp.grant_of(1030, 'signup')),
							(-30, -30, pg_temp.rc(1030, 1), NULL)) AS v$$,
	'b4: one debit row for the 20 left in the signup grant, one without a grant for the 30 it owes; both name the recharge it awaits');
SELECT results_eq(
	$$SELECT b.owed, g.remaining, g.closed_at IS NOT NULL FROM credits.send_batches b, credits.grants g
	   WHERE b.batch_id = pg_temp.batch(1030, 'b4') AND g.grant_id = pg_temp.grant_of(1030, 'signup')$$,
	$$VALUES (30::bigint, 0::bigint, true)$$,
	'b4 owes 30, the signup grant is spent and closed');

-- b5: need 300 > max_credits 200: refused, nothing written.
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1030, 300, 'b5')$$,
	'MC002', NULL, 'a batch needing more than max_credits: MC002');
SELECT is(pg_temp.bal(1030), -30::bigint, 'MC002: balance untouched');
SELECT results_eq(
	$$SELECT count(*), max(credits) FROM credits.recharges WHERE account_id = 1030$$,
	$$VALUES (1::bigint, 80::bigint)$$,
	'MC002: the pending recharge did not grow');
SELECT is(pg_temp.batch(1030, 'b5'), NULL, 'MC002: no batch written');

-- b6: -30 -> -180, available -100: need 150; 80 + 150 > 200 but 150 <= 200: a new recharge.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1030, 150, 'b6');
SELECT results_eq(
	$$SELECT credits, status, reason, batch_id, balance_seen FROM credits.recharges
	   WHERE recharge_id = pg_temp.rc(1030, 2)$$,
	$$SELECT 150::bigint, 'pending'::text, 'shortfall'::text, pg_temp.batch(1030, 'b6'), -30::bigint$$,
	'b6: the pending recharge cannot take the need, so a new shortfall recharge of the need opens');
SELECT is((SELECT credits FROM credits.recharges WHERE recharge_id = pg_temp.rc(1030, 1)), 80::bigint,
	'b6: the first recharge kept its 80');
SELECT results_eq(
	$$SELECT status, recharge_id FROM credits.send_batches WHERE batch_id = pg_temp.batch(1030, 'b6')$$,
	$$SELECT 'awaiting_credits'::text, pg_temp.rc(1030, 2)$$,
	'b6 awaits the new recharge');
SELECT results_eq(
	$$SELECT balance, in_flight FROM credits.accounts WHERE account_id = 1030$$,
	$$VALUES (-180::bigint, 230::bigint)$$,
	'account 1030: balance -180, in_flight 80 + 150');

-- A first shortfall opens a shortfall recharge.
DO $$ BEGIN PERFORM credits.open_account(1031, 5); END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1031, 0, 100); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1031, 12, 'short');
SELECT results_eq(
	$$SELECT credits, status, reason, batch_id, balance_seen FROM credits.recharges WHERE account_id = 1031$$,
	$$SELECT 7::bigint, 'pending'::text, 'shortfall'::text, pg_temp.batch(1031, 'short'), 5::bigint$$,
	'a batch below zero with min_balance 0 opens a shortfall recharge of exactly the deficit');
SELECT results_eq(
	$$SELECT cost, status, recharge_id FROM credits.send_batches WHERE account_id = 1031$$,
	$$SELECT 12::bigint, 'awaiting_credits'::text, pg_temp.rc(1031, 1)$$,
	'and the batch awaits it');

-- max_credits boundaries: a pending recharge may grow to exactly max_credits,
-- and one recharge may be exactly max_credits.
DO $$ BEGIN PERFORM credits.open_account(1033, 0); END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1033, 0, 10); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1033, 4, 'x1');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1033, 6, 'x2');
SELECT results_eq(
	$$SELECT credits FROM credits.recharges WHERE account_id = 1033 ORDER BY recharge_id$$,
	$$VALUES (10::bigint)$$,
	'pending credits + need = max_credits: the pending recharge grows to max_credits');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1033, 1, 'x3');
SELECT results_eq(
	$$SELECT credits, status, reason FROM credits.recharges WHERE account_id = 1033 ORDER BY recharge_id$$,
	$$VALUES (10::bigint, 'pending'::text, 'shortfall'::text), (1, 'pending', 'shortfall')$$,
	'pending credits + need > max_credits: a second pending recharge of the need');
SELECT results_eq(
	$$SELECT idempotency_key, status, recharge_id FROM credits.send_batches WHERE account_id = 1033 ORDER BY batch_id$$,
	$$VALUES ('x1'::text, 'awaiting_credits'::text, pg_temp.rc(1033, 1)),
			 ('x2', 'awaiting_credits', pg_temp.rc(1033, 1)),
			 ('x3', 'awaiting_credits', pg_temp.rc(1033, 2))$$,
	'each batch awaits the recharge its need went into');
DO $$ BEGIN PERFORM credits.open_account(1034, 0); END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1034, 0, 10); END $$;
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1034, 11)$$,
	'MC002', NULL, 'need = max_credits + 1: MC002');
SELECT lives_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1034, 10)$$,
	'need = max_credits is accepted');
SELECT is((SELECT credits FROM credits.recharges WHERE account_id = 1034), 10::bigint,
	'a recharge of exactly max_credits opened');
DO $$ BEGIN PERFORM credits.disable_auto_recharge(a) FROM generate_series(1033, 1034) AS a; END $$;

-- Balance + in-flight overflow in the debit: MC012.
DO $$ BEGIN PERFORM credits.open_account(1032, 0); END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1032, 100, 1000); END $$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1032, 1);
DO $$ BEGIN PERFORM credits.add_credits(1032, 9223372036854775807); END $$;
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1032, 1)$$,
	'MC012', NULL, 'a debit whose balance + in-flight overflows: MC012');
SELECT is(pg_temp.batches(1032), 1::bigint, 'MC012: no batch written');

--------------------------------------------------------------------------------
-- Rule 6: enable_auto_recharge validation, disable_auto_recharge
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(1040, 0); END $$;
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1040, -1, 10)$$, 'MC013', NULL,
	'enable_auto_recharge with negative min_balance: MC013');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1040, 0, 0)$$, 'MC013', NULL,
	'enable_auto_recharge with max_credits 0: MC013');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1040, 0, -5)$$, 'MC013', NULL,
	'enable_auto_recharge with negative max_credits: MC013');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1040, NULL, 10)$$, '22004', NULL,
	'enable_auto_recharge with NULL min_balance: 22004');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1040, 0, NULL)$$, '22004', NULL,
	'enable_auto_recharge with NULL max_credits: 22004');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1999, 0, 10)$$, 'MC003', NULL,
	'enable_auto_recharge on an unknown account: MC003');
SELECT throws_ok($$SELECT credits.disable_auto_recharge(1999)$$, 'MC003', NULL,
	'disable_auto_recharge on an unknown account: MC003');
SELECT ok(NOT EXISTS (SELECT FROM credits.auto_recharge WHERE account_id = 1040),
	'refused policies were not stored');

SELECT results_eq(
	$$SELECT enabled, min_balance, max_credits FROM credits.enable_auto_recharge(1040, 500, 1000)$$,
	$$VALUES (true, 500::bigint, 1000::bigint)$$,
	'enable_auto_recharge on an account far below min_balance');
SELECT results_eq(
	$$SELECT enabled, min_balance, max_credits FROM credits.enable_auto_recharge(1040, 500, 1000)$$,
	$$VALUES (true, 500::bigint, 1000::bigint)$$,
	'enable_auto_recharge again: same policy (idempotent)');
SELECT results_eq(
	$$SELECT enabled, min_balance, max_credits FROM credits.enable_auto_recharge(1040, 10, 100)$$,
	$$VALUES (true, 10::bigint, 100::bigint)$$,
	'enable_auto_recharge with new values updates the policy');
SELECT is((SELECT count(*) FROM credits.auto_recharge WHERE account_id = 1040), 1::bigint,
	'one policy row per account');
SELECT is(pg_temp.recharges(1040), 0::bigint, 'enable_auto_recharge never opens a recharge');

-- Disable account 1030 (two pending recharges, b4 and b6 awaiting).
SELECT results_eq(
	$$SELECT account_id, enabled, min_balance, max_credits FROM credits.disable_auto_recharge(1030)$$,
	$$VALUES (1030::bigint, false, 50::bigint, 200::bigint)$$,
	'disable_auto_recharge returns the policy row, disabled');
SELECT results_eq(
	$$SELECT status FROM credits.recharges WHERE account_id = 1030 ORDER BY recharge_id$$,
	$$VALUES ('cancelled'::text), ('cancelled'::text)$$,
	'disable_auto_recharge cancelled the pending recharges');
SELECT results_eq(
	$$SELECT idempotency_key, status FROM credits.send_batches WHERE account_id = 1030 ORDER BY batch_id$$,
	$$VALUES ('b1'::text, 'ready'::text), ('b2', 'ready'), ('b3', 'ready'), ('b4', 'failed'), ('b6', 'failed')$$,
	'disable_auto_recharge failed the awaiting batches, left the ready ones');
SELECT results_eq(
	$$SELECT batch_id, sum(delta)::bigint, count(*) = count(DISTINCT coalesce(grant_id, 0)),
			 min(recharge_id), max(recharge_id)
		FROM credits.ledger
	   WHERE account_id = 1030 AND kind = 'refund' GROUP BY batch_id ORDER BY batch_id$$,
	$$VALUES (pg_temp.batch(1030, 'b4'), 50::bigint, true, pg_temp.rc(1030, 1), pg_temp.rc(1030, 1)),
			 (pg_temp.batch(1030, 'b6'), 150::bigint, true, pg_temp.rc(1030, 2), pg_temp.rc(1030, 2))$$,
	'per failed batch: refund rows totalling its cost, one per grant, naming its recharge');
SELECT results_eq(
	$$SELECT delta, grant_id FROM credits.ledger
	   WHERE batch_id = pg_temp.batch(1030, 'b4') AND kind = 'refund' ORDER BY grant_id NULLS FIRST$$,
	$$SELECT * FROM (VALUES (30::bigint, NULL::bigint), (20, pg_temp.grant_of(1030, 'signup'))) AS v$$,
	'b4''s refund puts each part back where it came from: the 30 owed forgiven, the 20 back in the signup grant');
SELECT is_empty(
	$$SELECT f.* FROM unnest(ARRAY[pg_temp.batch(1030, 'b4'), pg_temp.batch(1030, 'b6')]) AS b(id),
			 credits.batch_funding(b.id) AS f$$,
	'batch_funding: the refunded batches are paid for by nothing');
SELECT results_eq(
	$$SELECT coalesce(sum(owed), 0)::bigint FROM credits.send_batches WHERE account_id = 1030$$,
	$$VALUES (0::bigint)$$,
	'account 1030 owes nothing after the refunds');
SELECT results_eq(
	$$SELECT balance, in_flight FROM credits.accounts WHERE account_id = 1030$$,
	$$VALUES (20::bigint, 0::bigint)$$,
	'account 1030 after disable: balance 20 (100 - 30 - 40 - 10), nothing in flight');
CREATE TEMP TABLE regress_entries_1030 AS SELECT pg_temp.entries(1030) AS n;
SELECT results_eq(
	$$SELECT account_id, enabled, min_balance, max_credits FROM credits.disable_auto_recharge(1030)$$,
	$$VALUES (1030::bigint, false, 50::bigint, 200::bigint)$$,
	'disable_auto_recharge again returns the same policy row (idempotent)');
SELECT is(pg_temp.entries(1030), (SELECT n FROM regress_entries_1030),
	'the second disable wrote nothing');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1030, 21)$$,
	'MC001', NULL, 'after disable, a batch above the balance: MC001');
SELECT is(pg_temp.recharges(1030), 2::bigint, 'after disable, no recharge is opened');
SELECT throws_ok($$SELECT credits.complete_recharge(pg_temp.rc(1030, 1), 'regress-ref-cancelled')$$,
	'MC006', NULL, 'complete_recharge of a cancelled recharge: MC006');
SELECT results_eq(
	$$SELECT enabled, min_balance, max_credits FROM credits.enable_auto_recharge(1030, 50, 200)$$,
	$$VALUES (true, 50::bigint, 200::bigint)$$,
	'enable_auto_recharge turns a disabled policy back on');
SELECT is(pg_temp.recharges(1030), 2::bigint,
	're-enabling below min_balance opens no recharge');
DO $$ BEGIN PERFORM credits.disable_auto_recharge(1030); END $$;

-- Account 1031's pending recharge goes too.
SELECT lives_ok($$SELECT credits.disable_auto_recharge(1031)$$, 'disable account 1031');
SELECT results_eq(
	$$SELECT r.status, b.status, a.balance FROM credits.recharges r
		JOIN credits.send_batches b USING (account_id) JOIN credits.accounts a USING (account_id)
	   WHERE r.account_id = 1031$$,
	$$VALUES ('cancelled'::text, 'failed'::text, 5::bigint)$$,
	'account 1031: recharge cancelled, batch failed, cost refunded');
SELECT lives_ok($$SELECT credits.disable_auto_recharge(1032)$$, 'disable account 1032');

-- A processing recharge is left alone by disable.
DO $$ BEGIN PERFORM credits.open_account(1041, 0); END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1041, 0, 100); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1041, 10, 'p1');
SELECT results_eq(
	$$SELECT recharge_id, status FROM credits.claim_recharges(1)$$,
	$$SELECT pg_temp.rc(1041, 1), 'processing'::text$$,
	'claim_recharges claims the only pending recharge');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1041, 5, 'p2');
SELECT results_eq(
	$$SELECT r.credits, r.status, r.recharge_id = pg_temp.rc(1041, 2) FROM credits.recharges r
		JOIN credits.send_batches b USING (recharge_id) WHERE b.batch_id = pg_temp.batch(1041, 'p2')$$,
	$$VALUES (5::bigint, 'pending'::text, true)$$,
	'a processing recharge does not grow: p2 opened a new pending one');
SELECT lives_ok($$SELECT credits.disable_auto_recharge(1041)$$, 'disable account 1041');
SELECT results_eq(
	$$SELECT status FROM credits.recharges WHERE account_id = 1041 ORDER BY recharge_id$$,
	$$VALUES ('processing'::text), ('cancelled'::text)$$,
	'disable cancelled the pending recharge and left the processing one');
SELECT results_eq(
	$$SELECT idempotency_key, status FROM credits.send_batches WHERE account_id = 1041 ORDER BY batch_id$$,
	$$VALUES ('p1'::text, 'awaiting_credits'::text), ('p2', 'failed')$$,
	'the batch of the processing recharge still awaits it');
SELECT results_eq(
	$$SELECT balance, in_flight FROM credits.accounts WHERE account_id = 1041$$,
	$$VALUES (-10::bigint, 10::bigint)$$,
	'account 1041: p2 refunded, the processing recharge still in flight');
SELECT results_eq(
	$$SELECT status, payment_ref FROM credits.complete_recharge(pg_temp.rc(1041, 1), 'regress-ref-1041')$$,
	$$VALUES ('succeeded'::text, 'regress-ref-1041'::text)$$,
	'the processing recharge completes after disable');
SELECT results_eq(
	$$SELECT a.balance, a.in_flight, b.status FROM credits.accounts a JOIN credits.send_batches b USING (account_id)
	   WHERE b.batch_id = pg_temp.batch(1041, 'p1')$$,
	$$VALUES (0::bigint, 0::bigint, 'ready'::text)$$,
	'and its batch is ready, the balance back to 0');

SELECT is((SELECT count(*) FROM credits.recharges WHERE status = 'pending'), 0::bigint,
	'no pending recharge left before the claim tests');

--------------------------------------------------------------------------------
-- Rule 7: claim_recharges
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(a, 0) FROM generate_series(1050, 1053) AS a; END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(a, 0, 1000) FROM generate_series(1050, 1053) AS a; END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	VALUES (1050, 10, 'c'), (1051, 20, 'c'), (1052, 30, 'c');

SELECT throws_ok($$SELECT * FROM credits.claim_recharges(0)$$, '22023', NULL,
	'claim_recharges(0): 22023');
SELECT throws_ok($$SELECT * FROM credits.claim_recharges(-1)$$, '22023', NULL,
	'claim_recharges(-1): 22023');
SELECT throws_ok($$SELECT * FROM credits.claim_recharges(NULL)$$, '22004', NULL,
	'claim_recharges(NULL): 22004, as every NULL argument');
SELECT is((SELECT count(*) FROM credits.recharges WHERE status = 'pending'), 3::bigint,
	'refused claims claimed nothing');

SELECT results_eq(
	$$SELECT account_id, credits, status, claimed_at IS NOT NULL FROM credits.claim_recharges(2) ORDER BY recharge_id$$,
	$$VALUES (1050::bigint, 10::bigint, 'processing'::text, true), (1051, 20, 'processing', true)$$,
	'claim_recharges(2) returns the two oldest pending recharges, now processing');
SELECT results_eq(
	$$SELECT account_id, status FROM credits.recharges WHERE account_id BETWEEN 1050 AND 1052 ORDER BY recharge_id$$,
	$$VALUES (1050::bigint, 'processing'::text), (1051, 'processing'), (1052, 'pending')$$,
	'the claim is stored, the third recharge is still pending');
SELECT results_eq(
	$$SELECT account_id, status FROM credits.claim_recharges()$$,
	$$VALUES (1052::bigint, 'processing'::text)$$,
	'claim_recharges() claims one by default');
SELECT is_empty($$SELECT * FROM credits.claim_recharges(10)$$,
	'claim_recharges with nothing pending returns no row');

--------------------------------------------------------------------------------
-- Rule 8: complete_recharge and fail_recharge
--------------------------------------------------------------------------------

SELECT results_eq(
	$$SELECT status, payment_ref, settled_at IS NOT NULL FROM credits.complete_recharge(pg_temp.rc(1050, 1), 'regress-ref-a')$$,
	$$VALUES ('succeeded'::text, 'regress-ref-a'::text, true)$$,
	'complete_recharge marks the recharge succeeded with its payment_ref');
SELECT results_eq(
	$$SELECT source, credits, remaining, priority, expires_at, recharge_id FROM credits.grants
	   WHERE account_id = 1050$$,
	$$SELECT 'recharge'::text, 10::bigint, 0::bigint, 50, NULL::timestamptz, pg_temp.rc(1050, 1)$$,
	'complete_recharge opens a recharge grant of its credits (priority 50, never expires), spent on the debt');
SELECT results_eq(
	$$SELECT kind, delta, balance_after, batch_id, recharge_id, grant_id FROM credits.ledger
	   WHERE account_id = 1050 AND kind NOT IN ('open', 'debit') ORDER BY entry_id$$,
	$$SELECT * FROM (VALUES
		('recharge'::text, 10::bigint, 0::bigint, NULL::bigint, pg_temp.rc(1050, 1), pg_temp.grant_of(1050, 'recharge')),
		('repay', -10, -10, pg_temp.batch(1050, 'c'), NULL, pg_temp.grant_of(1050, 'recharge')),
		('repay', 10, 0, pg_temp.batch(1050, 'c'), NULL, NULL)) AS v$$,
	'complete_recharge writes one ''recharge'' ledger row of its credits, then a repay pair paying the batch''s debt from the new grant');
SELECT results_eq(
	$$SELECT a.balance, a.in_flight, b.status FROM credits.accounts a JOIN credits.send_batches b USING (account_id)
	   WHERE a.account_id = 1050$$,
	$$VALUES (0::bigint, 0::bigint, 'ready'::text)$$,
	'complete_recharge credits the account and makes its awaiting batches ready');

SELECT results_eq(
	$$SELECT status, payment_ref FROM credits.complete_recharge(pg_temp.rc(1050, 1), 'regress-ref-a')$$,
	$$VALUES ('succeeded'::text, 'regress-ref-a'::text)$$,
	'complete_recharge again with the same payment_ref succeeds');
SELECT results_eq(
	$$SELECT balance, (SELECT count(*) FROM credits.ledger WHERE account_id = 1050) FROM credits.accounts WHERE account_id = 1050$$,
	$$VALUES (0::bigint, 5::bigint)$$,
	'and changes nothing (open, debit, recharge and the repay pair: no second recharge ledger row)');
SELECT throws_ok($$SELECT credits.complete_recharge(pg_temp.rc(1050, 1), 'regress-ref-other')$$,
	'MC006', NULL, 'complete_recharge of a succeeded recharge with another payment_ref: MC006');
SELECT throws_ok($$SELECT credits.fail_recharge(pg_temp.rc(1050, 1), 'declined')$$,
	'MC006', NULL, 'fail_recharge of a succeeded recharge: MC006');
SELECT throws_ok($$SELECT credits.complete_recharge(pg_temp.rc(1051, 1), 'regress-ref-a')$$,
	'MC017', NULL, 'complete_recharge with a payment_ref used by another recharge: MC017');
SELECT is((SELECT status FROM credits.recharges WHERE recharge_id = pg_temp.rc(1051, 1)), 'processing',
	'MC017 left the recharge processing');
SELECT throws_ok($$SELECT credits.complete_recharge((SELECT max(recharge_id) + 1000 FROM credits.recharges), 'regress-ref-x')$$,
	'MC005', NULL, 'complete_recharge of an unknown recharge: MC005');
SELECT throws_ok($$SELECT credits.fail_recharge((SELECT max(recharge_id) + 1000 FROM credits.recharges), 'declined')$$,
	'MC005', NULL, 'fail_recharge of an unknown recharge: MC005');

-- fail_recharge
SELECT results_eq(
	$$SELECT status, failure_reason, settled_at IS NOT NULL FROM credits.fail_recharge(pg_temp.rc(1051, 1), 'card declined')$$,
	$$VALUES ('failed'::text, 'card declined'::text, true)$$,
	'fail_recharge marks the recharge failed with the reason');
SELECT results_eq(
	$$SELECT b.status, a.balance, a.in_flight FROM credits.send_batches b JOIN credits.accounts a USING (account_id)
	   WHERE b.account_id = 1051$$,
	$$VALUES ('failed'::text, 0::bigint, 0::bigint)$$,
	'fail_recharge fails the awaiting batch and refunds it');
SELECT results_eq(
	$$SELECT kind, delta, batch_id, recharge_id FROM credits.ledger WHERE account_id = 1051 ORDER BY entry_id$$,
	$$SELECT * FROM (VALUES ('open'::text, 0::bigint, NULL::bigint, NULL::bigint),
							('debit', -20, pg_temp.batch(1051, 'c'), pg_temp.rc(1051, 1)),
							('refund', 20, pg_temp.batch(1051, 'c'), pg_temp.rc(1051, 1))) AS v$$,
	'account 1051 ledger: open, debit (naming the recharge it awaits), refund of the cost');
SELECT throws_ok($$SELECT credits.complete_recharge(pg_temp.rc(1051, 1), 'regress-ref-b')$$,
	'MC006', NULL, 'complete_recharge of a failed recharge: MC006');

-- Several awaiting batches on one recharge.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1053, 4, 'm1'), (1053, 6, 'm2');
SELECT results_eq(
	$$SELECT count(*), max(credits), max(status) FROM credits.recharges WHERE account_id = 1053$$,
	$$VALUES (1::bigint, 10::bigint, 'pending'::text)$$,
	'two shortfall batches share one pending recharge of 10');
SELECT throws_ok($$SELECT credits.complete_recharge(pg_temp.rc(1053, 1), 'regress-ref-c')$$,
	'MC015', NULL, 'complete_recharge of an unclaimed (pending) recharge: MC015');
SELECT is((SELECT status FROM credits.recharges WHERE recharge_id = pg_temp.rc(1053, 1)), 'pending',
	'MC015 left the recharge pending');
SELECT is((SELECT count(*) FROM credits.claim_recharges(5)), 1::bigint, 'claim it');
SELECT lives_ok($$SELECT credits.fail_recharge(pg_temp.rc(1053, 1), 'insufficient funds')$$,
	'fail the recharge of two batches');
SELECT results_eq(
	$$SELECT b.idempotency_key, b.status, l.delta FROM credits.send_batches b
		JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'refund'
	   WHERE b.account_id = 1053 ORDER BY b.batch_id$$,
	$$VALUES ('m1'::text, 'failed'::text, 4::bigint), ('m2', 'failed', 6)$$,
	'each failed batch got one refund of its own cost');
SELECT lives_ok($$SELECT credits.fail_recharge(pg_temp.rc(1053, 1), 'insufficient funds')$$,
	'fail_recharge again with the same reason is accepted');
SELECT is(pg_temp.entries(1053), 5::bigint, 'and writes nothing (open + 2 debits + 2 refunds)');

-- 1052: complete with a third payment_ref.
SELECT lives_ok($$SELECT credits.complete_recharge(pg_temp.rc(1052, 1), 'regress-ref-c')$$,
	'complete the third claimed recharge');
SELECT is(pg_temp.bal(1052), 0::bigint, 'account 1052 back to 0');

--------------------------------------------------------------------------------
-- Rule 9: INSERT ... ON CONFLICT (account_id, idempotency_key) DO NOTHING
--------------------------------------------------------------------------------

DO $$ BEGIN PERFORM credits.open_account(1060, 100); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1060, 10, 'k1')
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1060, 10, 'k1')
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT is(pg_temp.bal(1060), 90::bigint, 'the same key twice: debited once');
SELECT is((SELECT count(*) FROM credits.ledger WHERE batch_id = pg_temp.batch(1060, 'k1')), 1::bigint,
	'the same key twice: one ledger row');
SELECT is(pg_temp.batches(1060), 1::bigint, 'the same key twice: one batch');

INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	VALUES (1060, 5, 'k2'), (1060, 5, 'k2')
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT is(pg_temp.bal(1060), 85::bigint, 'the same key twice in one statement: debited once');
SELECT is(pg_temp.batches(1060), 2::bigint, 'the same key twice in one statement: one batch');

INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
	SELECT 1060, 1, k FROM (VALUES ('k1'), ('k2'), ('k3')) AS v(k)
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT is(pg_temp.bal(1060), 84::bigint, 'INSERT ... SELECT with two old keys and a new one: only the new one debited');

SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1060, 10, 'k1')$$,
	'23505', NULL, 'plain INSERT of a used key: unique_violation');
SELECT is(pg_temp.bal(1060), 84::bigint, 'and nothing was debited');

DO $$ BEGIN PERFORM credits.open_account(1061, 10); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1061, 10, 'k1')
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT lives_ok(
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1061, 10, 'k1')
		ON CONFLICT (account_id, idempotency_key) DO NOTHING$$,
	'a retried key on an emptied account is skipped, not refused for credits');
SELECT results_eq(
	$$SELECT balance, (SELECT count(*) FROM credits.send_batches WHERE account_id = 1061) FROM credits.accounts WHERE account_id = 1061$$,
	$$VALUES (0::bigint, 1::bigint)$$,
	'account 1061: one batch, debited once, key shared with account 1060 without conflict');

INSERT INTO credits.send_batches (account_id, messages) VALUES (1060, 1), (1060, 1)
	ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT is(pg_temp.bal(1060), 82::bigint, 'batches without a key never conflict: both debited');

--------------------------------------------------------------------------------
-- Rule 10: managed columns, immutable batches, append-only ledger (as owner)
--------------------------------------------------------------------------------

SELECT is((SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c WHERE c.oid = 'credits.send_batches'::regclass),
	current_user::text, 'these tests run as the owner of send_batches');

DO $$ BEGIN PERFORM credits.open_account(1070, 100); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1070, 10, 'g');
CREATE TEMP TABLE regress_batch_before AS
	SELECT * FROM credits.send_batches WHERE account_id = 1070;

SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (1070, 10, 0)$$,
	'MC007', NULL, 'INSERT setting cost: MC007');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages, status) VALUES (1070, 10, 'ready')$$,
	'MC007', NULL, 'INSERT setting status: MC007');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages, recharge_id) VALUES (1070, 10, 1)$$,
	'MC007', NULL, 'INSERT setting recharge_id: MC007');
SELECT throws_ok(
	$$COPY credits.send_batches (account_id, messages, cost) FROM PROGRAM 'printf "1070\t10\t0\n"'$$,
	'MC007', NULL, 'COPY setting cost: MC007');

SELECT throws_ok($$UPDATE credits.send_batches SET account_id = 1060 WHERE account_id = 1070$$,
	'MC008', NULL, 'UPDATE of account_id: MC008');
SELECT throws_ok($$UPDATE credits.send_batches SET messages = 1 WHERE account_id = 1070$$,
	'MC008', NULL, 'UPDATE of messages: MC008');
SELECT throws_ok($$UPDATE credits.send_batches SET channel = 'regress_sms' WHERE account_id = 1070$$,
	'MC008', NULL, 'UPDATE of channel: MC008');
SELECT throws_ok($$UPDATE credits.send_batches SET cost = 0 WHERE account_id = 1070$$,
	'MC008', NULL, 'UPDATE of cost: MC008');
SELECT throws_ok($$UPDATE credits.send_batches SET status = 'failed' WHERE account_id = 1070$$,
	'MC008', NULL, 'UPDATE of status outside the extension: MC008');
SELECT throws_ok($$UPDATE credits.send_batches SET recharge_id = 1 WHERE account_id = 1070$$,
	'MC008', NULL, 'UPDATE of recharge_id outside the extension: MC008');
SELECT throws_ok($$DELETE FROM credits.send_batches WHERE account_id = 1070$$,
	'MC008', NULL, 'DELETE of a batch: MC008');
SELECT throws_ok($$TRUNCATE credits.send_batches$$,
	'MC008', NULL, 'TRUNCATE of send_batches: MC008');
SELECT throws_ok(
	$$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1070, 99, 'g')
		ON CONFLICT (account_id, idempotency_key) DO UPDATE SET messages = excluded.messages$$,
	'MC008', NULL, 'ON CONFLICT DO UPDATE changing messages: MC008');
SELECT results_eq(
	$$SELECT * FROM credits.send_batches WHERE account_id = 1070$$,
	$$SELECT * FROM regress_batch_before$$,
	'the batch is unchanged');

SELECT throws_ok($$UPDATE credits.ledger SET delta = 0 WHERE account_id = 1070$$,
	'MC009', NULL, 'UPDATE of the ledger: MC009');
SELECT throws_ok($$DELETE FROM credits.ledger WHERE account_id = 1070$$,
	'MC009', NULL, 'DELETE from the ledger: MC009');
SELECT throws_ok($$TRUNCATE credits.ledger$$,
	'42809', NULL, 'TRUNCATE of the ledger (a view since 0.3.0): refused by PostgreSQL, 42809');
SELECT throws_ok($$TRUNCATE credits.ledger_entries$$,
	'MC009', NULL, 'TRUNCATE of ledger_entries: MC009');
SELECT throws_ok($$UPDATE credits.ledger_entries SET delta = 0 WHERE account_id = 1070$$,
	'MC009', NULL, 'UPDATE of ledger_entries: MC009');
SELECT throws_ok($$UPDATE credits.send_batches SET entry_delta = 0 WHERE account_id = 1070$$,
	'MC008', NULL, 'UPDATE of a batch''s debit entry: MC008');
SELECT is(pg_temp.entries(1070), 2::bigint, 'the ledger rows are still there');
SELECT is(pg_temp.bal(1070), 90::bigint, 'account 1070: balance 90');

--------------------------------------------------------------------------------
-- Rules 10 and 11 by role: an application, an admin with table rights, nobody
--------------------------------------------------------------------------------

CREATE ROLE regress_app;
GRANT USAGE ON SCHEMA credits TO regress_app;
GRANT INSERT, SELECT ON credits.send_batches TO regress_app;
CREATE ROLE regress_table_admin;
GRANT USAGE ON SCHEMA credits TO regress_table_admin;
GRANT ALL ON ALL TABLES IN SCHEMA credits TO regress_table_admin;
CREATE ROLE regress_nobody;
GRANT USAGE ON SCHEMA credits TO regress_nobody;

DO $$ BEGIN PERFORM credits.open_account(1080, 100); END $$;
DO $$ BEGIN PERFORM credits.open_account(1081, 5); END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1081, 0, 100); END $$;

SET LOCAL ROLE regress_app;
SELECT lives_ok($$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1080, 10, 'app')$$,
	'the application role inserts a batch');
SELECT lives_ok($$INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1081, 12, 'app')$$,
	'the application role inserts a batch that opens a recharge');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1080, 1000)$$,
	'MC001', NULL, 'the application role gets MC001 like anyone');
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (1080, 1, 0)$$,
	'MC007', NULL, 'the application role cannot set cost: MC007');
SELECT throws_ok($$UPDATE credits.accounts SET balance = 1000000 WHERE account_id = 1080$$,
	'42501', NULL, 'the application role cannot UPDATE accounts');
SELECT throws_ok($$UPDATE credits.ledger SET delta = 0 WHERE account_id = 1080$$,
	'42501', NULL, 'the application role cannot UPDATE the ledger');
SELECT throws_ok($$INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (1080, 1000, 1090, 'grant')$$,
	'42501', NULL, 'the application role cannot INSERT into the ledger');
SELECT throws_ok($$UPDATE credits.recharges SET status = 'succeeded' WHERE account_id = 1081$$,
	'42501', NULL, 'the application role cannot UPDATE recharges');
SELECT throws_ok($$UPDATE credits.send_batches SET status = 'ready' WHERE account_id = 1081$$,
	'42501', NULL, 'the application role cannot UPDATE send_batches');
SELECT throws_ok($$UPDATE credits.auto_recharge SET max_credits = 1000000 WHERE account_id = 1081$$,
	'42501', NULL, 'the application role cannot UPDATE auto_recharge');
SELECT throws_ok($$UPDATE credits.prices SET credits_per_message = 1000 WHERE channel = 'email'$$,
	'42501', NULL, 'the application role cannot UPDATE prices');
SELECT throws_ok($$SELECT credits.add_credits(1080, 1000)$$,
	'42501', NULL, 'the application role cannot call add_credits');
SELECT throws_ok($$SELECT credits.open_account(1082, 1000)$$,
	'42501', NULL, 'the application role cannot call open_account');
SELECT throws_ok($$SELECT * FROM credits.claim_recharges(1)$$,
	'42501', NULL, 'the application role cannot call claim_recharges');
SELECT throws_ok($$SELECT credits.complete_recharge(1, 'regress-ref-app')$$,
	'42501', NULL, 'the application role cannot call complete_recharge');
SELECT throws_ok($$SELECT credits.fail_recharge(1, 'regress')$$,
	'42501', NULL, 'the application role cannot call fail_recharge');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1080, 0, 1000000)$$,
	'42501', NULL, 'the application role cannot call enable_auto_recharge');
SELECT throws_ok($$SELECT credits.disable_auto_recharge(1081)$$,
	'42501', NULL, 'the application role cannot call disable_auto_recharge');
SELECT throws_ok($$SELECT credits._cancel_recharge(1, 'ready')$$,
	'42501', NULL, 'the application role cannot call the internal _cancel_recharge');
RESET ROLE;

SELECT results_eq(
	$$SELECT b.cost, b.status, l.delta, a.balance FROM credits.send_batches b
		JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
		JOIN credits.accounts a ON a.account_id = b.account_id
	   WHERE b.batch_id = pg_temp.batch(1080, 'app')$$,
	$$VALUES (10::bigint, 'ready'::text, -10::bigint, 90::bigint)$$,
	'the application''s batch was priced and debited by the trigger as the table owner');
SELECT results_eq(
	$$SELECT b.status, b.recharge_id, r.credits, r.reason FROM credits.send_batches b
		JOIN credits.recharges r USING (recharge_id)
	   WHERE b.batch_id = pg_temp.batch(1081, 'app')$$,
	$$SELECT 'awaiting_credits'::text, pg_temp.rc(1081, 1), 7::bigint, 'shortfall'::text$$,
	'the application''s batch opened a shortfall recharge through the trigger');

-- Even a role with every table privilege cannot rewrite history.
SET LOCAL ROLE regress_table_admin;
SELECT throws_ok($$UPDATE credits.send_batches SET cost = 0 WHERE account_id = 1080$$,
	'MC008', NULL, 'a role with UPDATE on send_batches still cannot change cost: MC008');
SELECT throws_ok($$DELETE FROM credits.send_batches WHERE account_id = 1080$$,
	'MC008', NULL, 'a role with DELETE on send_batches still cannot delete: MC008');
SELECT throws_ok($$TRUNCATE credits.send_batches$$,
	'MC008', NULL, 'a role with TRUNCATE on send_batches still cannot truncate: MC008');
SELECT throws_ok($$DELETE FROM credits.ledger WHERE account_id = 1080$$,
	'MC009', NULL, 'a role with DELETE on the ledger still cannot delete: MC009');
SELECT throws_ok($$TRUNCATE credits.ledger_entries$$,
	'MC009', NULL, 'a role with TRUNCATE on ledger_entries still cannot truncate: MC009');
RESET ROLE;

-- Rule 11: a role with no grant beyond USAGE on the schema (what PUBLIC has, plus USAGE).
SET LOCAL ROLE regress_nobody;
SELECT throws_ok($$INSERT INTO credits.send_batches (account_id, messages) VALUES (1080, 1)$$,
	'42501', NULL, 'PUBLIC cannot insert batches');
SELECT throws_ok($$SELECT * FROM credits.accounts$$,
	'42501', NULL, 'PUBLIC cannot read accounts');
SELECT throws_ok($$SELECT * FROM credits.ledger$$,
	'42501', NULL, 'PUBLIC cannot read the ledger');
SELECT throws_ok($$INSERT INTO credits.prices VALUES ('regress_free', 1)$$,
	'42501', NULL, 'PUBLIC cannot change prices');
SELECT throws_ok($$SELECT credits.add_credits(1080, 1000)$$,
	'42501', NULL, 'PUBLIC cannot call add_credits');
SELECT throws_ok($$SELECT credits.enable_auto_recharge(1080, 0, 1000000)$$,
	'42501', NULL, 'PUBLIC cannot call enable_auto_recharge');
SELECT throws_ok($$SELECT * FROM credits.claim_recharges(1)$$,
	'42501', NULL, 'PUBLIC cannot call claim_recharges');
SELECT throws_ok($$SELECT * FROM credits.verify()$$,
	'42501', NULL, 'PUBLIC cannot call verify');
RESET ROLE;
SELECT is(pg_temp.bal(1080), 90::bigint, 'account 1080 unchanged by the refused attempts');

--------------------------------------------------------------------------------
-- Rule 1 across everything above
--------------------------------------------------------------------------------

SELECT is_empty(
	$$SELECT a.account_id FROM credits.accounts a
	   WHERE a.balance <> (SELECT coalesce(sum(l.delta), 0) FROM credits.ledger l WHERE l.account_id = a.account_id)$$,
	'every balance equals the sum of its ledger deltas');
SELECT is_empty(
	$$SELECT l.entry_id FROM credits.ledger l
	   WHERE l.delta <> 0
		 AND CASE l.kind WHEN 'debit' THEN l.delta > 0
						 WHEN 'expire' THEN l.delta > 0 OR l.grant_id IS NULL
						 WHEN 'repay' THEN (l.delta < 0) <> (l.grant_id IS NOT NULL) OR l.batch_id IS NULL
						 ELSE l.delta < 0 END$$,
	'debits and expiries are negative, a repay is negative on its grant and positive without one, every other kind non-negative');
SELECT is_empty(
	$$SELECT l.batch_id FROM credits.ledger l WHERE l.kind = 'repay'
	   GROUP BY l.batch_id HAVING sum(l.delta) <> 0
			OR count(*) FILTER (WHERE l.grant_id IS NULL) <> count(*) FILTER (WHERE l.grant_id IS NOT NULL)$$,
	'repay rows come in pairs: per batch they total 0');
SELECT is_empty(
	$$SELECT g.grant_id FROM credits.grants g
	   WHERE g.remaining <> g.carried_over + (SELECT coalesce(sum(l.delta), 0) FROM credits.ledger l WHERE l.grant_id = g.grant_id)$$,
	'every grant''s remaining equals its carried-over credits plus its ledger rows');
SELECT is_empty(
	$$SELECT a.account_id FROM credits.accounts a
	   WHERE a.balance <> (SELECT coalesce(sum(g.remaining), 0) FROM credits.grants g WHERE g.account_id = a.account_id)
						 - (SELECT coalesce(sum(b.owed), 0) FROM credits.send_batches b WHERE b.account_id = a.account_id)$$,
	'every balance equals what its grants have left minus what its batches owe');
SELECT is_empty($$SELECT * FROM credits.verify()$$,
	'verify() finds no problem after rules 1-11');

--------------------------------------------------------------------------------
-- The covering recharge of a batch that needs no new credits
--------------------------------------------------------------------------------
-- min_balance 30 makes b1 open a 40-credit recharge R1, which a worker claims;
-- b2 then opens R2 of 5.  With min_balance lowered to 0, b3 (20) needs no new
-- credits: R1's surplus covers it.  If R1 then fails, b3 must not end up
-- "ready" on a 5-credit R2 with the account 20 credits short.

DO $$ BEGIN PERFORM credits.disable_auto_recharge(1081); END $$;
SELECT is((SELECT count(*) FROM credits.recharges WHERE status = 'pending'), 0::bigint,
	'no pending recharge left before the scenario');
DO $$ BEGIN PERFORM credits.open_account(1090, 0); END $$;
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1090, 30, 100); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1090, 10, 'b1');
SELECT results_eq($$SELECT recharge_id, credits FROM credits.claim_recharges(1)$$,
	$$SELECT pg_temp.rc(1090, 1), 40::bigint$$, 'claim R1 of 40 credits');
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1090, 5, 'b2');
DO $$ BEGIN PERFORM credits.enable_auto_recharge(1090, 0, 100); END $$;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1090, 20, 'b3');
SELECT is(pg_temp.recharges(1090), 2::bigint, 'b3 needed no new recharge');
DO $$ BEGIN PERFORM credits.fail_recharge(pg_temp.rc(1090, 1), 'declined'); END $$;
SELECT is_empty($$SELECT * FROM credits.verify() WHERE account_id = 1090$$,
	'after the recharge covering b3 fails, the account is consistent (verify)');

SELECT is_empty($$SELECT * FROM credits.verify()$$, 'verify() finds no problem at the end');

SELECT * FROM finish();
ROLLBACK;

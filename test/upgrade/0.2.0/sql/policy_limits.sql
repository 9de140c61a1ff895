--
-- policy_limits: top-up targets, the hard monthly limit, payment failures
-- and auto-disable, re-enable, and expiry of pending recharges
--
\set SHOW_CONTEXT never
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(1000);

-- Policy validation for the new arguments.
SELECT balance FROM credits.open_account(800, 100);
SELECT credits.enable_auto_recharge(800, 50, 1000, target_balance => 49);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.enable_auto_recharge(800, 50, 1000, monthly_limit => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM credits.auto_recharge WHERE account_id = 800;

-- Target: the need is 30 (50 - 20), but the recharge tops available up to
-- the target of 500: 480 credits, one charge instead of many.
SELECT enabled, min_balance, max_credits, target_balance, monthly_limit
  FROM credits.enable_auto_recharge(800, 50, 1000, target_balance => 500);
INSERT INTO credits.send_batches (account_id, messages) VALUES (800, 80) RETURNING status;
SELECT credits, need, reason, balance_seen FROM credits.recharges WHERE account_id = 800;
-- Small batches now fit under min_balance without another charge.
INSERT INTO credits.send_batches (account_id, messages) VALUES (800, 10), (800, 10), (800, 10);
SELECT count(*) AS recharges, sum(credits) AS credits FROM credits.recharges WHERE account_id = 800;
-- A big shortfall grows the pending recharge towards the target, within
-- max_credits: balance -510, available -30, need 80, top-up 530, but the
-- recharge has room for 520 more only -> 1000, available 490.
INSERT INTO credits.send_batches (account_id, messages) VALUES (800, 500) RETURNING status;
SELECT credits, need, reason FROM credits.recharges WHERE account_id = 800;
SELECT balance, in_flight, balance + in_flight AS available FROM credits.accounts WHERE account_id = 800;

-- The top-up never exceeds max_credits, and is never less than the need.
SELECT balance FROM credits.open_account(801, 0);
SELECT enabled FROM credits.enable_auto_recharge(801, 0, 300, target_balance => 10000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (801, 100);
SELECT credits, need FROM credits.recharges WHERE account_id = 801;
-- balance -100: a batch of 700 needs 500 > max_credits 300: refused.
INSERT INTO credits.send_batches (account_id, messages) VALUES (801, 700);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(801);

-- The monthly limit is a hard cap on pending + processing + succeeded
-- recharges opened this month (UTC), tested at its exact boundary.
SELECT balance FROM credits.open_account(802, 0);
SELECT enabled FROM credits.enable_auto_recharge(802, 0, 1000, monthly_limit => 250);
INSERT INTO credits.send_batches (account_id, messages) VALUES (802, 100);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT status FROM credits.complete_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 802), 'ref-802-1');
INSERT INTO credits.send_batches (account_id, messages) VALUES (802, 100);
SELECT credits, status FROM credits.recharges WHERE account_id = 802 ORDER BY recharge_id;
-- 200 of 250 used: a need of 51 is refused, nothing written ...
SELECT * FROM regress_totals(802);
INSERT INTO credits.send_batches (account_id, messages) VALUES (802, 51);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(802);
-- ... a need of exactly 50 fills the month to the limit ...
INSERT INTO credits.send_batches (account_id, messages) VALUES (802, 50) RETURNING status;
SELECT sum(credits) AS month_total FROM credits.recharges
 WHERE account_id = 802 AND status IN ('pending', 'processing', 'succeeded');
-- ... and then even one credit is refused.
INSERT INTO credits.send_batches (account_id, messages) VALUES (802, 1);
\echo :LAST_ERROR_SQLSTATE
-- A failed recharge no longer counts: its room comes back.
SELECT count(*) FROM credits.claim_recharges(10);
SELECT status FROM credits.fail_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 802), 'card declined');
INSERT INTO credits.send_batches (account_id, messages) VALUES (802, 150) RETURNING status;
SELECT credits, status FROM credits.recharges WHERE account_id = 802 ORDER BY recharge_id;
-- A target top-up is clamped to the month's room, never below the need.
SELECT balance FROM credits.open_account(803, 0);
SELECT enabled FROM credits.enable_auto_recharge(803, 0, 1000, target_balance => 900, monthly_limit => 400);
INSERT INTO credits.send_batches (account_id, messages) VALUES (803, 100);
SELECT credits, need FROM credits.recharges WHERE account_id = 803;
SELECT auto_recharge, monthly_limit, committed_this_month, monthly_room
  FROM credits.account_overview WHERE account_id = 803;

-- A pending recharge opened in an earlier month is not grown: the new
-- need opens a recharge of this month, so each month's count is exact.
SELECT balance FROM credits.open_account(804, 0);
SELECT enabled FROM credits.enable_auto_recharge(804, 0, 1000, monthly_limit => 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (804, 60);
UPDATE credits.recharges SET created_at = created_at - interval '40 days' WHERE account_id = 804;
INSERT INTO credits.send_batches (account_id, messages) VALUES (804, 70);
SELECT credits, status, created_at < now() - interval '30 days' AS last_month
  FROM credits.recharges WHERE account_id = 804 ORDER BY recharge_id;

-- Payment failures: after credits.max_payment_failures (default 3)
-- consecutive failures, auto-recharge turns itself off.
SHOW credits.max_payment_failures;
SELECT balance FROM credits.open_account(805, 0);
SELECT enabled FROM credits.enable_auto_recharge(805, 0, 1000);
CREATE FUNCTION regress_fail_next(acct bigint) RETURNS text LANGUAGE sql AS $$
	SELECT count(*) FROM credits.claim_recharges(100);
	SELECT status FROM credits.fail_recharge(
		(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = acct), 'card declined');
$$;
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
SELECT regress_fail_next(805);
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
SELECT regress_fail_next(805);
SELECT enabled, payment_failures FROM credits.auto_recharge WHERE account_id = 805;
-- a success resets the count
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
SELECT count(*) FROM credits.claim_recharges(100);
SELECT status FROM credits.complete_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 805), 'ref-805');
SELECT enabled, payment_failures FROM credits.auto_recharge WHERE account_id = 805;
-- three failures in a row; a pending recharge opened meanwhile is cancelled
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
SELECT regress_fail_next(805);
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
SELECT regress_fail_next(805);
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
SELECT count(*) FROM credits.claim_recharges(100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
SELECT status FROM credits.fail_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 805 AND status = 'processing'),
	'card declined');
SELECT enabled, payment_failures, disabled_reason, disabled_at IS NOT NULL AS disabled
  FROM credits.auto_recharge WHERE account_id = 805;
SELECT credits, status, failure_reason FROM credits.recharges WHERE account_id = 805 ORDER BY recharge_id;
SELECT cost, status FROM credits.send_batches WHERE account_id = 805 ORDER BY batch_id;
SELECT auto_recharge FROM credits.account_overview WHERE account_id = 805;
-- It stays off: a short batch is refused as with auto-recharge off ...
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10);
\echo :LAST_ERROR_SQLSTATE
-- ... until enable_auto_recharge is called explicitly, which resets the count.
SELECT enabled, payment_failures, disabled_reason FROM credits.enable_auto_recharge(805, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (805, 10) RETURNING status;
-- The threshold is a setting (PGC_SUSET).
SET credits.max_payment_failures = 1;
SELECT regress_fail_next(805);
SELECT enabled, disabled_reason FROM credits.auto_recharge WHERE account_id = 805;
RESET credits.max_payment_failures;
SET credits.max_payment_failures = 0;
SET credits.no_such_setting = 1;

-- Expiry: pending recharges older than credits.recharge_expiry are
-- cancelled and their batches failed with refunds.
SHOW credits.recharge_expiry;
SELECT balance FROM credits.open_account(806, 0);
SELECT enabled FROM credits.enable_auto_recharge(806, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (806, 40);
SELECT credits.expire_recharges();
UPDATE credits.recharges SET created_at = now() - interval '2 hours'
 WHERE account_id = 806 AND status = 'pending';
SELECT credits.expire_recharges();
SELECT credits, status, failure_reason FROM credits.recharges WHERE account_id = 806;
SELECT cost, status FROM credits.send_batches WHERE account_id = 806;
SELECT * FROM regress_totals(806);
-- 0 turns expiry off.
INSERT INTO credits.send_batches (account_id, messages) VALUES (806, 40);
UPDATE credits.recharges SET created_at = now() - interval '2 days'
 WHERE account_id = 806 AND status = 'pending';
SET credits.recharge_expiry = 0;
SELECT credits.expire_recharges();
SET credits.recharge_expiry = '1d';
SELECT credits.expire_recharges();
RESET credits.recharge_expiry;
DROP FUNCTION regress_fail_next(bigint);
SELECT * FROM credits.verify();

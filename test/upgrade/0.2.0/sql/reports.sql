--
-- reports: the views on a known scenario (days and months are UTC)
--
\set SHOW_CONTEXT never
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(1000);

-- Account 900: 1,000 credits, auto-recharge on (min 100, max 2,000,
-- target 500, monthly limit 5,000); sms costs 7 per message here.
INSERT INTO credits.prices VALUES ('sms_report', 7);
SELECT balance FROM credits.open_account(900, 1000);
SELECT enabled FROM credits.enable_auto_recharge(900, 100, 2000, target_balance => 500, monthly_limit => 5000);
-- 600 email: balance 400, no recharge.
INSERT INTO credits.send_batches (account_id, messages) VALUES (900, 600);
-- 100 sms = 700: balance -300, need 400, top-up to 500 = 800 (recharge A).
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (900, 100, 'sms_report');
-- A is claimed and succeeds: balance 500.
SELECT count(*) FROM credits.claim_recharges(10);
SELECT status FROM credits.complete_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 900), 'ref-900-a');
-- 450 email: balance 50, need 50, top-up 450 (recharge B, threshold);
-- B fails: nothing awaited it, so no batch fails.
INSERT INTO credits.send_batches (account_id, messages) VALUES (900, 450);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT status FROM credits.fail_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 900), 'insufficient funds');
-- 200 email: balance -150, need 250, top-up 650 (recharge C), still pending.
INSERT INTO credits.send_batches (account_id, messages) VALUES (900, 200);

SELECT account_id, balance, in_flight, available, auto_recharge, min_balance, max_credits,
	   target_balance, monthly_limit, bought_this_month, committed_this_month, monthly_room,
	   payment_failures, disabled_reason
  FROM credits.account_overview WHERE account_id = 900;

SELECT status, reason, batch_messages, batch_channel, batch_cost, balance_seen, need, credits,
	   beyond_need, max_credits, batches_covered, payment_ref, failure_reason,
	   claimed_at IS NOT NULL AS claimed, settled_at IS NOT NULL AS settled
  FROM credits.recharge_history WHERE account_id = 900 ORDER BY recharge_id;

SELECT day = (now() AT TIME ZONE 'UTC')::date AS today, channel, batches, failed_batches, messages,
	   credits_debited, credits_refunded, recharges, credits_bought
  FROM credits.usage_daily WHERE account_id = 900 ORDER BY channel;

SELECT month = date_trunc('month', now() AT TIME ZONE 'UTC')::date AS this_month, channel,
	   batches, messages, credits_debited, credits_refunded, recharges, credits_bought
  FROM credits.usage_monthly WHERE account_id = 900 ORDER BY channel;

-- A reporting role needs SELECT on the views only.
CREATE ROLE regress_analyst;
GRANT USAGE ON SCHEMA credits TO regress_analyst;
GRANT SELECT ON credits.account_overview, credits.recharge_history,
	credits.usage_daily, credits.usage_monthly TO regress_analyst;
SET ROLE regress_analyst;
SELECT balance, auto_recharge FROM credits.account_overview WHERE account_id = 900;
SELECT count(*) FROM credits.recharge_history WHERE account_id = 900;
SELECT sum(messages) FROM credits.usage_monthly WHERE account_id = 900;
SELECT count(*) FROM credits.recharges;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP OWNED BY regress_analyst;
DROP ROLE regress_analyst;
SELECT * FROM credits.verify();

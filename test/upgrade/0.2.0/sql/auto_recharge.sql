--
-- auto_recharge: rule 5 (the recharge decision) and rule 6 (the policy)
--
\set SHOW_CONTEXT never
SELECT balance FROM credits.open_account(200, 1000);

-- Policy validation: each bad argument is refused, nothing is stored.
SELECT credits.enable_auto_recharge(200, -1, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.enable_auto_recharge(200, 0, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.enable_auto_recharge(200, NULL, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.enable_auto_recharge(299, 0, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM credits.auto_recharge WHERE account_id = 200;

-- Turning it on opens no recharge, even below min_balance.
SELECT account_id, enabled, min_balance, max_credits, disabled_reason
  FROM credits.enable_auto_recharge(200, min_balance => 2000, max_credits => 5000);
SELECT * FROM regress_totals(200);
-- ... and it is idempotent.
SELECT account_id, enabled, min_balance, max_credits
  FROM credits.enable_auto_recharge(200, min_balance => 2000, max_credits => 5000);

-- Threshold: balance stays >= 0 but falls under min_balance.  Need =
-- 2000 - (1000 - 100 + 0) = 1100; the batch is ready.
INSERT INTO credits.send_batches (account_id, messages) VALUES (200, 100)
RETURNING cost, status, recharge_id;
SELECT credits, status, reason, balance_seen, max_credits FROM credits.recharges WHERE account_id = 200;
-- The next batch's need is added to the same pending recharge.
INSERT INTO credits.send_batches (account_id, messages) VALUES (200, 300)
RETURNING cost, status, recharge_id;
SELECT credits, status, reason FROM credits.recharges WHERE account_id = 200;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 200;

-- Shortfall: the balance goes below zero.  Balance 600, in flight 1400; a
-- batch of 2000 leaves -1400, available 0, need 2000 -> 3400 pending <= 5000.
INSERT INTO credits.send_batches (account_id, messages) VALUES (200, 2000)
RETURNING cost, status,
	recharge_id = (SELECT recharge_id FROM credits.recharges WHERE account_id = 200) AS covered_by_pending;
SELECT credits, status, reason FROM credits.recharges WHERE account_id = 200;

-- The pending recharge is now 3400; a need of 2000 no longer fits in it
-- (5400 > 5000), so a second pending recharge is opened.
INSERT INTO credits.send_batches (account_id, messages) VALUES (200, 2000)
RETURNING cost, status;
SELECT b.recharge_id = (SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 200) AS covered_by_new
  FROM credits.send_batches b WHERE b.account_id = 200 ORDER BY b.batch_id DESC LIMIT 1;
SELECT credits, status, reason, balance_seen FROM credits.recharges WHERE account_id = 200 ORDER BY recharge_id;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 200;

-- Recharge limit exceeded: a need above max_credits refuses the batch,
-- nothing is written, no partial purchase.
SELECT * FROM regress_totals(200);
INSERT INTO credits.send_batches (account_id, messages) VALUES (200, 5001);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(200);

-- Covered without a new need: in-flight recharges already exceed what the
-- account lacks, so a shortfall batch awaits the newest in-flight recharge.
SELECT balance FROM credits.open_account(201, 0);
SELECT enabled FROM credits.enable_auto_recharge(201, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (201, 400) RETURNING status;
SELECT credits.add_credits(201, 400);
-- balance 0, in flight 400: a batch of 300 leaves -300, available 100 >= 0.
INSERT INTO credits.send_batches (account_id, messages) VALUES (201, 300)
RETURNING status, recharge_id = (SELECT recharge_id FROM credits.recharges WHERE account_id = 201) AS covered;
SELECT * FROM regress_totals(201);

-- min_balance 0 and a batch that exactly empties the account: no recharge.
SELECT balance FROM credits.open_account(202, 50);
SELECT enabled FROM credits.enable_auto_recharge(202, 0, 10);
INSERT INTO credits.send_batches (account_id, messages) VALUES (202, 50) RETURNING status, recharge_id;
SELECT * FROM regress_totals(202);
-- one more message: need 1, within max_credits 10
INSERT INTO credits.send_batches (account_id, messages) VALUES (202, 1) RETURNING status;
SELECT credits, reason FROM credits.recharges WHERE account_id = 202;

-- Disable: the pending recharges are cancelled and their awaiting batches
-- failed with one refund each; a processing recharge is left to finish.
-- Account 200 has two pending recharges; a worker claims the older one first.
SELECT credits, status FROM credits.claim_recharges(1) WHERE account_id = 200;
SELECT account_id, enabled, min_balance, max_credits, disabled_reason
  FROM credits.disable_auto_recharge(200);
SELECT credits, status, failure_reason FROM credits.recharges WHERE account_id = 200 ORDER BY recharge_id;
SELECT b.cost, b.status, l.delta AS refund
  FROM credits.send_batches b LEFT JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'refund'
 WHERE b.account_id = 200 ORDER BY b.batch_id;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 200;
-- Disabling again changes nothing and returns the same policy.
SELECT * FROM regress_totals(200);
SELECT account_id, enabled, disabled_reason FROM credits.disable_auto_recharge(200);
SELECT * FROM regress_totals(200);
-- With auto-recharge off, a short batch is refused again.
INSERT INTO credits.send_batches (account_id, messages) VALUES (200, 1);
\echo :LAST_ERROR_SQLSTATE
-- Disabling an account that never had a policy returns null; unknown account fails.
SELECT (credits.disable_auto_recharge(202)).account_id IS NOT NULL AS had_policy;
SELECT balance FROM credits.open_account(203, 5);
SELECT (credits.disable_auto_recharge(203)).account_id IS NULL AS no_policy;
SELECT credits.disable_auto_recharge(299);
\echo :LAST_ERROR_SQLSTATE
-- Re-enabling clears the disabled marks and opens nothing by itself.
SELECT enabled, disabled_at IS NULL AS cleared, disabled_reason FROM credits.enable_auto_recharge(200, 0, 5000);
SELECT count(*) AS pending FROM credits.recharges WHERE account_id = 200 AND status = 'pending';
SELECT * FROM credits.verify();

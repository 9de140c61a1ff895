--
-- recharge_worker: claim, complete and fail (rules 7 and 8)
--
-- Settle whatever earlier suites left pending, so claims below see only ours.
\set SHOW_CONTEXT never
SELECT count(*) > 0 AS cleared FROM credits.claim_recharges(1000);

SELECT balance FROM credits.open_account(300, 0);
SELECT enabled FROM credits.enable_auto_recharge(300, 0, 1000);
SELECT balance FROM credits.open_account(301, 0);
SELECT enabled FROM credits.enable_auto_recharge(301, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (300, 100), (300, 50), (301, 70);
SELECT account_id, credits, status, reason FROM credits.recharges
 WHERE account_id IN (300, 301) ORDER BY recharge_id;
SELECT recharge_id AS r300 FROM credits.recharges WHERE account_id = 300 \gset
SELECT recharge_id AS r301 FROM credits.recharges WHERE account_id = 301 \gset

-- claim_recharges: bad max_rows, unclaimed recharges cannot be settled.
SELECT * FROM credits.claim_recharges(0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM credits.claim_recharges(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(:r300, 'ref-300');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r300, 'declined');
\echo :LAST_ERROR_SQLSTATE

-- Oldest first, up to max_rows.
SELECT account_id, credits, status, claimed_at IS NOT NULL AS claimed FROM credits.claim_recharges(1);
SELECT account_id, credits, status FROM credits.claim_recharges(5);
SELECT count(*) FROM credits.claim_recharges(5);

-- A claimed recharge's amount never changes: a new shortfall opens a new one.
INSERT INTO credits.send_batches (account_id, messages) VALUES (300, 10)
RETURNING status, recharge_id = :r300 AS same_recharge;
SELECT credits, status FROM credits.recharges WHERE account_id = 300 ORDER BY recharge_id;

-- complete_recharge: argument errors first.
SELECT credits.complete_recharge(:r300, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(:r300, '');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(NULL, 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(-1, 'x');
\echo :LAST_ERROR_SQLSTATE

-- Credits arrive, awaiting batches become ready.
SELECT * FROM regress_totals(300);
SELECT credits, status, payment_ref, settled_at IS NOT NULL AS settled
  FROM credits.complete_recharge(:r300, 'ref-300');
SELECT cost, status FROM credits.send_batches WHERE account_id = 300 ORDER BY batch_id;
SELECT delta, balance_after, kind FROM credits.ledger WHERE account_id = 300 ORDER BY entry_id;
SELECT * FROM regress_totals(300);
-- The same payment reference again changes nothing.
SELECT credits, status, payment_ref FROM credits.complete_recharge(:r300, 'ref-300');
SELECT * FROM regress_totals(300);
-- Another reference on a settled recharge fails, so does failing it.
SELECT credits.complete_recharge(:r300, 'ref-other');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r300, 'declined');
\echo :LAST_ERROR_SQLSTATE
-- A payment reference belongs to one recharge.
SELECT credits.complete_recharge(:r301, 'ref-300');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(301);

-- fail_recharge: the recharge fails, its awaiting batches fail and each
-- one's cost is refunded.
SELECT credits.fail_recharge(:r301, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT credits, status, failure_reason FROM credits.fail_recharge(:r301, 'card declined');
SELECT cost, status FROM credits.send_batches WHERE account_id = 301;
SELECT delta, balance_after, kind FROM credits.ledger WHERE account_id = 301 ORDER BY entry_id;
SELECT * FROM regress_totals(301);
-- Failing it again with the same reason is a no-op; completing it fails.
SELECT status FROM credits.fail_recharge(:r301, 'card declined');
SELECT credits.complete_recharge(:r301, 'late-ref');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r301, 'another reason');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(301);

-- The recharge opened after the claim is settled too.
SELECT recharge_id AS r300b FROM credits.recharges WHERE account_id = 300 AND status = 'pending' \gset
SELECT count(*) FROM credits.claim_recharges(10);
SELECT status FROM credits.complete_recharge(:r300b, 'ref-300b');
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 300;

-- A failed recharge also fails the batches that relied on its credits.
-- Recharge A (40) is a shortfall of 10 plus a threshold top-up of 30; after
-- min_balance is lowered, a batch of 20 lives on A's spare credits although
-- it names the newer pending recharge B.  When A fails, refunding A's own
-- batch is not enough (balance -25, in flight 5), so that batch fails too.
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(1000);
SELECT balance FROM credits.open_account(302, 0);
SELECT enabled FROM credits.enable_auto_recharge(302, 30, 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (302, 10);
SELECT credits AS a_credits FROM credits.claim_recharges(1);
INSERT INTO credits.send_batches (account_id, messages) VALUES (302, 5);
SELECT enabled FROM credits.enable_auto_recharge(302, 0, 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (302, 20) RETURNING status;
SELECT credits, status FROM credits.recharges WHERE account_id = 302 ORDER BY recharge_id;
SELECT status FROM credits.fail_recharge(
	(SELECT min(recharge_id) FROM credits.recharges WHERE account_id = 302), 'card declined');
SELECT cost, status FROM credits.send_batches WHERE account_id = 302 ORDER BY batch_id;
SELECT delta, balance_after, kind FROM credits.ledger WHERE account_id = 302 ORDER BY entry_id;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 302;
-- B still pays for the batch that truly awaits it.
SELECT count(*) FROM credits.claim_recharges(10);
SELECT status FROM credits.complete_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 302), 'ref-302');
SELECT cost, status FROM credits.send_batches WHERE account_id = 302 ORDER BY batch_id;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 302;

-- A succeeded recharge turns its batches ready only as far as the balance
-- pays for them (found by the model-based test, seed 70).  Recharge A (110,
-- a top-up to 100) is in flight when B (101) opens; the batch of 50 names B
-- but lives on A's spare credits.  B succeeds first: the batch of 101 is
-- ready, the batch of 50 now awaits A.  A fails: both of A's batches fail.
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(1000);
SELECT balance FROM credits.open_account(303, 0);
SELECT enabled FROM credits.enable_auto_recharge(303, 0, 1000, target_balance => 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (303, 10);
SELECT credits FROM credits.claim_recharges(1);
INSERT INTO credits.send_batches (account_id, messages) VALUES (303, 101);
INSERT INTO credits.send_batches (account_id, messages) VALUES (303, 50);
SELECT credits FROM credits.claim_recharges(1);
SELECT status FROM credits.complete_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 303), 'ref-303');
SELECT b.cost, b.status, r.credits AS awaits_recharge_of
  FROM credits.send_batches b LEFT JOIN credits.recharges r ON r.recharge_id = b.recharge_id
 WHERE b.account_id = 303 ORDER BY b.batch_id;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 303;
SELECT status FROM credits.fail_recharge(
	(SELECT min(recharge_id) FROM credits.recharges WHERE account_id = 303), 'card declined');
SELECT cost, status FROM credits.send_batches WHERE account_id = 303 ORDER BY batch_id;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 303;
SELECT * FROM credits.verify();

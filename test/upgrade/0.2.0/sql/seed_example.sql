--
-- seed_example: 3,000 credits on hand, a batch of 5,000 messages,
-- auto-recharge on: the batch is accepted and a pending recharge of the
-- missing 2,000 credits is opened, then a worker settles it.
--
\set SHOW_CONTEXT never
SELECT account_id, balance, in_flight FROM credits.open_account(42, 3000);
SELECT account_id, enabled, min_balance, max_credits
  FROM credits.enable_auto_recharge(42, min_balance => 0, max_credits => 10000);

INSERT INTO credits.send_batches (account_id, messages) VALUES (42, 5000)
RETURNING cost, status, recharge_id IS NOT NULL AS has_recharge;

SELECT credits, status, reason, balance_seen,
	   batch_id = (SELECT batch_id FROM credits.send_batches WHERE account_id = 42) AS opened_by_batch
  FROM credits.recharges WHERE account_id = 42;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 42;

-- The payment worker takes it ...
SELECT account_id, credits, status FROM credits.claim_recharges(10);
-- ... charges the card, and settles it.
SELECT account_id, credits, status, payment_ref
  FROM credits.complete_recharge((SELECT recharge_id FROM credits.recharges WHERE account_id = 42),
								 'card-charge-ref-1');

-- The batch is now ready, the balance is 0, the ledger shows +3000, -5000, +2000.
SELECT cost, status FROM credits.send_batches WHERE account_id = 42;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 42;
SELECT delta, balance_after, kind FROM credits.ledger WHERE account_id = 42 ORDER BY entry_id;
SELECT * FROM credits.verify();

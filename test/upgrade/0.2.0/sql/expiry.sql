--
-- expiry: no expired credit is ever spent (0.2.0, doc/grants.md "Expiry"):
-- the debit expires due grants first, by the clock at the moment it locks
-- the account; expire_grants and expiring_credits; a refund into a grant
-- that has expired; credits.recharge_credit_lifetime; and the views
-- balance_by_grant and account_overview.  Uses the helpers of
-- sql/grants.sql.  (NOTIFY credits_expiring is in the isolation spec
-- expiring_notify: psql prints a notification with the backend's PID.)
--
-- Expiries are set relative to the clock and never printed; the clock is
-- moved with credits.clock_offset, and regress_clock() is the extension's
-- clock (clock_timestamp() plus the offset).
--
\set SHOW_CONTEXT never
-- verify() runs after every section: JIT-compiling it costs seconds a call.
SET jit = off;
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(100000);
CREATE FUNCTION regress_clock() RETURNS timestamptz LANGUAGE sql AS $$
	SELECT clock_timestamp()
		   + make_interval(secs => (SELECT setting::float8 FROM pg_settings WHERE name = 'credits.clock_offset'))
$$;

--
-- A debit expires the account's due grants before it reads the balance.
-- Account 4000 has 50 bought credits (g1) and a promo of 100 (g2) that
-- expires two seconds after it is granted.  After three seconds a batch of 30
-- does not touch the promo (it would go first, priority 30 < 50): the
-- statement writes an 'expire' row of -100 for g2, then debits g1.  With
-- 20 left, a batch of 30 is refused (auto-recharge off).
--
SELECT account_id, balance FROM credits.open_account(4000);
SELECT credits.add_credits(4000, 50, 'bought');
SELECT credits.grant_credits(4000, 100, expires_at => clock_timestamp() + interval '2 seconds',
							 note => 'two seconds') IS NOT NULL AS granted;
SELECT pg_sleep(3);
INSERT INTO credits.send_batches (account_id, messages) VALUES (4000, 30) RETURNING cost, status, owed;
SELECT * FROM regress_grants(4000);
SELECT * FROM regress_ledger(4000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (4000, 30);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_grant_totals(4000);
SELECT * FROM credits.verify();

--
-- "Now" for expiry is the clock when the account is locked, not the
-- transaction's start.  Account 4001: in one transaction a promo of 100
-- expiring two seconds later is granted, the transaction sleeps three
-- seconds, and a batch of 30 is debited: the promo has expired by then
-- (though not as of now(), the transaction's start) and is not spent.
--
SELECT account_id, balance FROM credits.open_account(4001);
SELECT credits.add_credits(4001, 50, 'bought');
BEGIN;
SELECT credits.grant_credits(4001, 100, expires_at => clock_timestamp() + interval '2 seconds',
							 note => 'two seconds') IS NOT NULL AS granted;
SELECT pg_sleep(3);
INSERT INTO credits.send_batches (account_id, messages) VALUES (4001, 30) RETURNING cost, status;
SELECT expires_at > now() AS after_transaction_start FROM credits.grants WHERE account_id = 4001 AND note = 'two seconds';
COMMIT;
SELECT * FROM regress_grants(4001);
SELECT * FROM regress_ledger(4001);
SELECT * FROM credits.verify();

--
-- expire_grants(at) expires the grants due by "at" of accounts nobody is
-- debiting, so that reports are true; expiring_credits(within) lists the
-- credits that lapse within an interval.  Account 4002: g1 a promo of 100
-- expiring in one hour, g2 a promo of 100 expiring in three hours, g3 100
-- bought (never).  Account 4003: a signup grant of 100 (never) and g2 a
-- promo of 40 expiring in one hour.
--
SELECT account_id, balance FROM credits.open_account(4002);
SELECT credits.grant_credits(4002, 100, expires_at => regress_clock() + interval '1 hour', note => 'one hour') IS NOT NULL AS granted;
SELECT credits.grant_credits(4002, 100, expires_at => regress_clock() + interval '3 hours', note => 'three hours') IS NOT NULL AS granted;
SELECT credits.add_credits(4002, 100, 'bought');
SELECT account_id, balance FROM credits.open_account(4003, 100);
SELECT credits.grant_credits(4003, 40, expires_at => regress_clock() + interval '1 hour', note => 'one hour') IS NOT NULL AS granted;
-- Within two hours: 4002's g1 and 4003's g2; within a day: 4002's g2 too.
-- Grants that never expire are never listed.
SELECT account_id, regress_g(grant_id) AS g, source, remaining, expires_at > regress_clock() AS in_future
  FROM credits.expiring_credits(interval '2 hours') WHERE account_id IN (4002, 4003) ORDER BY account_id, grant_id;
SELECT account_id, regress_g(grant_id) AS g, source, remaining
  FROM credits.expiring_credits(interval '1 day') WHERE account_id IN (4002, 4003) ORDER BY account_id, grant_id;
-- Nothing is due yet.
SELECT credits.expire_grants(regress_clock()) AS expired;
-- Two hours later: the two one-hour grants expire ('expire' rows of -100
-- and -40); a second call finds nothing; an earlier "at" finds nothing.
SET credits.clock_offset = 7200;
SELECT credits.expire_grants(regress_clock()) AS expired;
SELECT credits.expire_grants(regress_clock()) AS expired;
SELECT credits.expire_grants(regress_clock() - interval '90 minutes') AS expired;
SELECT * FROM regress_grants(4002);
SELECT * FROM regress_ledger(4002);
SELECT * FROM regress_ledger(4003);
-- Within two hours of the moved clock: 4002's g2 only.
SELECT account_id, regress_g(grant_id) AS g, source, remaining
  FROM credits.expiring_credits(interval '2 hours') WHERE account_id IN (4002, 4003) ORDER BY account_id, grant_id;
-- MC026: an "at" after the clock would lapse g2 early: refused, nothing
-- expired.
\set VERBOSITY terse
SELECT credits.expire_grants(regress_clock() + interval '2 hours');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT * FROM regress_grant_totals(4002);
-- Four hours after the start a batch of 10 on 4002 expires g2 itself and
-- is paid from g3.
SET credits.clock_offset = 14400;
-- (expiring_credits lists g2 while it is due and not yet expired)
SELECT account_id, regress_g(grant_id) AS g, remaining, expires_at <= regress_clock() AS due
  FROM credits.expiring_credits(interval '1 minute') WHERE account_id IN (4002, 4003);
INSERT INTO credits.send_batches (account_id, messages) VALUES (4002, 10) RETURNING cost, status;
SELECT * FROM regress_ledger(4002) OFFSET 5;
SELECT credits.expire_grants(regress_clock()) AS expired;
SELECT * FROM credits.verify();
RESET credits.clock_offset;

--
-- expire_grants works in chunks of 1,000 accounts: 2,100 accounts
-- (41001-43100) with a promo of 1 credit expiring in one hour, and 41001
-- with a second one: two hours later one call expires all 2,101 grants
-- (three chunks), and nothing is left due.
--
SELECT count(*) FROM generate_series(41001, 43100) a, LATERAL credits.open_account(a) o,
	   LATERAL credits.grant_credits(a, 1, expires_at => regress_clock() + interval '1 hour') g;
SELECT credits.grant_credits(41001, 1, expires_at => regress_clock() + interval '1 hour') IS NOT NULL AS granted;
SET credits.clock_offset = 7200;
SELECT credits.expire_grants(regress_clock()) AS expired;
SELECT count(*) AS due_left FROM credits.grants WHERE closed_at IS NULL AND expires_at <= regress_clock();
SELECT count(*) AS expire_rows, sum(delta) AS credits, count(DISTINCT account_id) AS accounts,
	   (SELECT count(*) FROM credits.accounts
		 WHERE account_id BETWEEN 41001 AND 43100 AND balance <> 0) AS balances_left
  FROM credits.ledger WHERE kind = 'expire' AND account_id BETWEEN 41001 AND 43100;
SELECT * FROM credits.verify();
RESET credits.clock_offset;

--
-- Every function that locks an account expires its due grants first, in
-- the same transaction: add_credits, enable_auto_recharge, grant_credits,
-- set_plan.  Accounts 4004-4007 each have a promo of 100 expiring in one
-- hour; two hours later each function writes the promo's 'expire' row
-- before its own row.
--
SELECT count(*) FROM generate_series(4004, 4007) a, LATERAL credits.open_account(a) o,
	   LATERAL credits.grant_credits(a, 100, expires_at => regress_clock() + interval '1 hour', note => 'one hour') g;
SET credits.clock_offset = 7200;
SELECT credits.add_credits(4004, 10, 'bought');
SELECT enabled FROM credits.enable_auto_recharge(4005, min_balance => 0, max_credits => 100);
SELECT credits.grant_credits(4006, 10, note => 'promo') IS NOT NULL AS granted;
SELECT monthly_credits FROM credits.set_plan(4007, 10, regress_clock());
SELECT account_id, (regress_ledger(account_id)).* FROM generate_series(4004, 4007) account_id;
SELECT * FROM credits.verify();
SELECT cancelled_at IS NOT NULL AS cancelled FROM credits.cancel_plan(4007);
RESET credits.clock_offset;

--
-- A refund into a grant that has expired meanwhile: the part goes back to
-- the grant (a 'refund' row) and expires at once (an 'expire' row).
-- Account 4010 (auto-recharge on) has a promo of 100 expiring in one hour;
-- b1 (150) spends it and owes 50.  Two hours later the recharge fails: b1
-- fails, 100 goes back to the promo and expires, and the 50 owed is
-- cancelled.  Balance 0, nothing owed.
--
SELECT account_id, balance FROM credits.open_account(4010);
SELECT enabled FROM credits.enable_auto_recharge(4010, min_balance => 0, max_credits => 1000);
SELECT credits.grant_credits(4010, 100, expires_at => regress_clock() + interval '1 hour', note => 'one hour') IS NOT NULL AS granted;
INSERT INTO credits.send_batches (account_id, messages) VALUES (4010, 150) RETURNING cost, status, owed;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 4010;
SET credits.clock_offset = 7200;
SELECT credits, status FROM credits.fail_recharge(
	(SELECT recharge_id FROM credits.recharges WHERE account_id = 4010), 'card declined');
SELECT * FROM regress_batches(4010);
SELECT * FROM regress_grants(4010);
SELECT * FROM regress_ledger(4010);
SELECT * FROM regress_funding(4010, 1);
SELECT * FROM regress_grant_totals(4010);
SELECT * FROM credits.verify();
RESET credits.clock_offset;

--
-- credits.recharge_credit_lifetime (seconds, 0 = never): the lifetime of a
-- recharge grant, counted from its settlement.  Account 4020 (auto-recharge
-- on, target 500): b1 (100) owes 100 and opens a recharge of 600.  With a
-- lifetime of one hour, the recharge grant (source recharge, priority 50)
-- expires one hour after complete_recharge; it repays the 100 and keeps
-- 500, which expire_grants lapses two hours later.  With the setting back
-- at 0, the next recharge grant never expires.
--
SELECT account_id, balance FROM credits.open_account(4020);
SELECT enabled FROM credits.enable_auto_recharge(4020, min_balance => 0, max_credits => 1000, target_balance => 500);
INSERT INTO credits.send_batches (account_id, messages) VALUES (4020, 100) RETURNING cost, status, owed;
SELECT credits, status FROM credits.recharges WHERE account_id = 4020;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 4020;
SET credits.recharge_credit_lifetime = 3600;
SELECT regress_clock() AS before_settle \gset
SELECT credits, status FROM credits.complete_recharge(
	(SELECT recharge_id FROM credits.recharges WHERE account_id = 4020), 'ref-4020-1');
SELECT regress_clock() AS after_settle \gset
SELECT * FROM regress_grants(4020);
SELECT expires_at BETWEEN :'before_settle'::timestamptz + interval '1 hour'
					  AND :'after_settle'::timestamptz + interval '1 hour' AS one_hour_after_settlement
  FROM credits.grants WHERE account_id = 4020 AND source = 'recharge';
SELECT * FROM regress_batches(4020);
SELECT * FROM regress_ledger(4020);
SET credits.clock_offset = 7200;
SELECT credits.expire_grants(regress_clock()) AS expired;
SELECT * FROM regress_ledger(4020) OFFSET 5;
RESET credits.clock_offset;
RESET credits.recharge_credit_lifetime;
SHOW credits.recharge_credit_lifetime;
INSERT INTO credits.send_batches (account_id, messages) VALUES (4020, 10) RETURNING cost, status, owed;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 4020;
SELECT credits, status FROM credits.complete_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 4020), 'ref-4020-2');
SELECT * FROM regress_grants(4020);
-- Not negative.  (The message's wording differs between PostgreSQL
-- versions: the SQLSTATE only.)
\set VERBOSITY sqlstate
SET credits.recharge_credit_lifetime = -1;
\set VERBOSITY default
SHOW credits.recharge_credit_lifetime;
SELECT * FROM credits.verify();

--
-- The views.  Account 4030: 500 free credits (signup), a plan of 1,000 a
-- month (set now), a promo of 200 expiring in ten days, a promo of 50
-- expiring in five days, 300 bought.  A batch of 1,200 takes the plan's
-- 1,000 and 200 of the signup grant.  account_overview's new columns: plan
-- 0, free 300, promo 250, bought 300, owed 0; the next expiry is the
-- five-day promo's, 50 credits (the plan grant is empty).
--
SELECT account_id, balance FROM credits.open_account(4030, 500);
SELECT monthly_credits FROM credits.set_plan(4030, 1000);
SELECT credits.grant_credits(4030, 200, expires_at => now() + interval '10 days', note => 'ten days') IS NOT NULL AS granted;
SELECT credits.grant_credits(4030, 50, expires_at => now() + interval '5 days', note => 'five days') IS NOT NULL AS granted;
SELECT credits.add_credits(4030, 300, 'bought');
INSERT INTO credits.send_batches (account_id, messages) VALUES (4030, 1200) RETURNING cost, status;
SELECT balance, plan_credits, free_credits, promo_credits, bought_credits, owed,
	   next_expiry = (SELECT expires_at FROM credits.grants WHERE account_id = 4030 AND note = 'five days') AS next_is_five_days,
	   next_expiry_credits
  FROM credits.account_overview WHERE account_id = 4030;
-- Auto-recharge on: b2 (1,000) spends the 850 left (signup 300, the
-- five-day promo, the ten-day promo, then the bought 300) and owes 150.
SELECT enabled FROM credits.enable_auto_recharge(4030, min_balance => 0, max_credits => 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (4030, 1000) RETURNING cost, status, owed;
SELECT balance, plan_credits, free_credits, promo_credits, bought_credits, owed,
	   next_expiry IS NULL AS no_next_expiry, next_expiry_credits
  FROM credits.account_overview WHERE account_id = 4030;
SELECT * FROM regress_funding(4030, 2);
-- The recharge fails: b2's 850 go back to the grants they came from, the
-- 150 owed is cancelled.
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 4030;
SELECT credits, status FROM credits.fail_recharge(
	(SELECT recharge_id FROM credits.recharges WHERE account_id = 4030), 'card declined');
-- Six days later the five-day promo's 50 has expired (expire_grants).
SET credits.clock_offset = 518400;
SELECT credits.expire_grants(regress_clock()) AS expired;
SELECT balance, plan_credits, free_credits, promo_credits, bought_credits, owed,
	   next_expiry = (SELECT expires_at FROM credits.grants WHERE account_id = 4030 AND note = 'ten days') AS next_is_ten_days,
	   next_expiry_credits
  FROM credits.account_overview WHERE account_id = 4030;
-- balance_by_grant: per grant, what it granted, drew, got back, expired and
-- has left, and its state.  The signup grant was drawn for 200 (b1) and
-- 300 (b2) and got 300 back: 500 - 500 + 300 = 300 left; the five-day
-- promo was drawn for 50, got 50 back, and 50 expired.
SELECT regress_g(grant_id) AS g, source, priority, granted, drawn, refunded, expired, remaining,
	   state, note
  FROM credits.balance_by_grant WHERE account_id = 4030 ORDER BY grant_id;
SELECT * FROM regress_ledger(4030);
SELECT * FROM credits.verify();
SELECT cancelled_at IS NOT NULL AS cancelled FROM credits.cancel_plan(4030);
RESET credits.clock_offset;
SELECT * FROM credits.verify();

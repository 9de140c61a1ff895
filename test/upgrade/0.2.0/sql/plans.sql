--
-- plans: monthly plan credits (0.2.0, doc/grants.md "Plans"): periods
-- counted from the anchor with month-end dates clamped, renewal without
-- rollover and its idempotence, missed periods, cancel_plan, a plan taken
-- up again, the seed example on a plan, and the errors.  Uses the helpers
-- of sql/grants.sql.
--
-- The extension's clock is moved with credits.clock_offset (superuser,
-- seconds) to fixed instants of two calendar years ahead: Y+0 is a leap
-- year at least two years after today, Y+1 the year after.  Dates print as
-- "Y+n-MM-DD HH:MI" (UTC), so the output does not depend on the day the
-- suite runs.  The clock only moves forward, and every section ends its
-- plans (cancel_plan, then renew_plans after their period), so the next
-- section's renew_plans counts only its own plans.
--
\set SHOW_CONTEXT never
-- verify() runs after every section: JIT-compiling it costs seconds a call.
SET jit = off;
CREATE TABLE regress_y0 AS
SELECT min(y) AS y0
  FROM generate_series(extract(year FROM now())::integer + 2, extract(year FROM now())::integer + 5) y
 WHERE y % 4 = 0 AND (y % 100 <> 0 OR y % 400 = 0);
-- regress_t(n, month, day, hour): that instant of year Y+n, UTC.
CREATE FUNCTION regress_t(n integer, m integer, d integer, h integer DEFAULT 0) RETURNS timestamptz
LANGUAGE sql AS $$
	SELECT make_timestamptz((SELECT y0 FROM regress_y0) + n, m, d, h, 0, 0, 'UTC')
$$;
-- regress_d(t): t as Y+n-MM-DD HH:MI (UTC).
CREATE FUNCTION regress_d(t timestamptz) RETURNS text LANGUAGE sql AS $$
	SELECT 'Y' || to_char(extract(year FROM t AT TIME ZONE 'UTC')::integer - (SELECT y0 FROM regress_y0), 'SG0')
		   || to_char(t AT TIME ZONE 'UTC', '-MM-DD HH24:MI')
$$;
-- regress_clock_to(t): move this session's extension clock to t (a little
-- after it: whole seconds, rounded up).
CREATE FUNCTION regress_clock_to(t timestamptz) RETURNS text LANGUAGE sql AS $$
	SELECT set_config('credits.clock_offset',
					  ceil(extract(epoch FROM t - clock_timestamp()))::bigint::text, false);
	SELECT regress_d(t)
$$;
-- An account's plan, and its plan grants oldest first.
CREATE FUNCTION regress_plan(acct bigint)
RETURNS TABLE (monthly_credits bigint, anchored_at text, period_start text, period_end text, cancelled boolean)
LANGUAGE sql AS $$
	SELECT monthly_credits, regress_d(anchored_at), regress_d(period_start), regress_d(period_end),
		   cancelled_at IS NOT NULL
	  FROM credits.plans WHERE account_id = acct
$$;
CREATE FUNCTION regress_plan_grants(acct bigint)
RETURNS TABLE (g text, priority integer, credits bigint, remaining bigint, period_start text,
			   expires_at text, closed boolean)
LANGUAGE sql AS $$
	SELECT regress_g(grant_id), priority, credits, remaining, regress_d(period_start),
		   regress_d(expires_at), closed_at IS NOT NULL
	  FROM credits.grants WHERE account_id = acct AND source = 'plan' ORDER BY grant_id
$$;

-- Plans of earlier suites (anchored on the real date) are cancelled and
-- renewed out first; so are grants that expire before Y+0.
SELECT regress_clock_to(regress_t(0, 1, 31, 12)) AS clock;
SELECT count(*) >= 0 AS cleared FROM credits.plans p, LATERAL credits.cancel_plan(p.account_id) c;
SELECT credits.renew_plans(regress_t(0, 1, 31, 12)) >= 0 AS cleared;
SELECT credits.expire_grants(regress_t(0, 1, 31, 12)) >= 0 AS cleared;
SELECT count(*) AS plans_left FROM credits.plans WHERE cancelled_at IS NULL OR period_end > regress_t(0, 1, 31, 12);

--
-- Month-end clamping, and renewal without rollover.  Account 3000's plan
-- (1,000 a month) is anchored on 31 January of the leap year Y+0: period k
-- is [anchor + k months, anchor + k+1 months), so the periods start on 31
-- January, 29 February, 31 March, 30 April.  set_plan grants the current
-- period at once (a 'plan' grant, priority 10, expiring at the period's
-- end, with its period_start; a 'plan' ledger row).  Each renewal expires
-- what is left of the old grant (an 'expire' row; nothing is carried over)
-- and grants the new period's 1,000: the balance stays 1,000.
--
SELECT account_id, balance FROM credits.open_account(3000);
SELECT account_id, monthly_credits, regress_d(anchored_at) AS anchored_at,
	   regress_d(period_start) AS period_start, regress_d(period_end) AS period_end, cancelled_at
  FROM credits.set_plan(3000, 1000, regress_t(0, 1, 31));
SELECT * FROM regress_plan_grants(3000);
SELECT * FROM regress_ledger(3000);
SELECT regress_clock_to(regress_t(0, 2, 29, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 2, 29, 12)) AS renewed;
SELECT * FROM regress_plan(3000);
SELECT regress_clock_to(regress_t(0, 3, 31, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 3, 31, 12)) AS renewed;
SELECT * FROM regress_plan(3000);
SELECT regress_clock_to(regress_t(0, 4, 30, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 4, 30, 12)) AS renewed;
SELECT * FROM regress_plan(3000);
SELECT * FROM regress_plan_grants(3000);
SELECT * FROM regress_ledger(3000);
SELECT balance FROM credits.accounts WHERE account_id = 3000;
SELECT * FROM credits.verify();
-- End of the section: cancelled, the plan ends with its period (the last
-- grant's 1,000 expire; no new period).
SELECT monthly_credits, cancelled_at IS NOT NULL AS cancelled FROM credits.cancel_plan(3000);
SELECT regress_clock_to(regress_t(0, 5, 31, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 5, 31, 12)) AS renewed;
SELECT * FROM regress_ledger(3000) OFFSET 7;
SELECT * FROM credits.verify();

--
-- Renewal of a partly spent grant, exactly at the period's end, and its
-- idempotence.  Account 3001: 1,000 a month from 1 June, 400 spent.
-- renew_plans(at) renews the plans whose period ended by "at": not by 30
-- June 23:00, exactly at 1 July 00:00.  The 600 left expire; the new grant
-- is 1,000, not 1,600.  Called again, for the same or a later instant in
-- the same period, renew_plans does nothing: one grant per period.
--
SELECT regress_clock_to(regress_t(0, 6, 10, 12)) AS clock;
SELECT account_id, balance FROM credits.open_account(3001);
SELECT monthly_credits, regress_d(period_start) AS period_start, regress_d(period_end) AS period_end
  FROM credits.set_plan(3001, 1000, regress_t(0, 6, 1));
INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 400) RETURNING cost, status;
SELECT regress_clock_to(regress_t(0, 7, 1, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 6, 30, 23)) AS renewed;
SELECT credits.renew_plans(regress_t(0, 7, 1, 0)) AS renewed;
SELECT credits.renew_plans(regress_t(0, 7, 1, 0)) AS renewed;
SELECT credits.renew_plans(regress_t(0, 7, 1, 12)) AS renewed;
SELECT * FROM regress_plan(3001);
SELECT * FROM regress_plan_grants(3001);
SELECT * FROM regress_ledger(3001);
SELECT period_start = regress_t(0, 7, 1) AS this_period, count(*)
  FROM credits.grants WHERE account_id = 3001 GROUP BY 1 ORDER BY 1;
-- The new period's credits are spent as usual.
INSERT INTO credits.send_batches (account_id, messages) VALUES (3001, 100) RETURNING cost, status;
SELECT * FROM regress_plan_grants(3001);
SELECT * FROM credits.verify();
SELECT monthly_credits FROM credits.cancel_plan(3001);
SELECT regress_clock_to(regress_t(0, 8, 1, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 8, 1, 12)) AS renewed;
SELECT * FROM credits.verify();

--
-- Missed periods are skipped.  Account 3002's plan (500) is set on 15
-- August of Y+0 with starts_at 10 November of the year before: it grants
-- only the period containing now, [10 August, 10 September), not the nine
-- periods already over.  Then renew_plans does not run for months: on 20
-- November one call expires the August grant and grants only the current
-- period, [10 November, 10 December).
--
SELECT regress_clock_to(regress_t(0, 8, 15, 12)) AS clock;
SELECT account_id, balance FROM credits.open_account(3002);
SELECT monthly_credits, regress_d(anchored_at) AS anchored_at, regress_d(period_start) AS period_start,
	   regress_d(period_end) AS period_end
  FROM credits.set_plan(3002, 500, regress_t(-1, 11, 10));
SELECT * FROM regress_plan_grants(3002);
SELECT regress_clock_to(regress_t(0, 11, 20, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 11, 20, 12)) AS renewed;
SELECT * FROM regress_plan(3002);
SELECT * FROM regress_plan_grants(3002);
SELECT * FROM regress_ledger(3002);
SELECT * FROM credits.verify();
SELECT monthly_credits FROM credits.cancel_plan(3002);
SELECT regress_clock_to(regress_t(0, 12, 10, 12)) AS clock;
SELECT credits.renew_plans(regress_t(0, 12, 10, 12)) AS renewed;
SELECT * FROM credits.verify();

--
-- cancel_plan: no further periods; the current grant is still spent and
-- lasts to its expiry.  Account 3003: 700 a month from 5 January of Y+1,
-- 100 spent, then cancelled; cancelling again changes nothing (same
-- cancelled_at); 100 more is spent from the plan grant.  When the period
-- ends, renew_plans expires the 500 left and grants nothing; a later call
-- does nothing, and cancel_plan is still accepted.
--
SELECT regress_clock_to(regress_t(1, 1, 10, 12)) AS clock;
SELECT account_id, balance FROM credits.open_account(3003);
SELECT monthly_credits FROM credits.set_plan(3003, 700, regress_t(1, 1, 5));
INSERT INTO credits.send_batches (account_id, messages) VALUES (3003, 100) RETURNING cost, status;
SELECT monthly_credits, regress_d(period_start) AS period_start, regress_d(period_end) AS period_end,
	   cancelled_at IS NOT NULL AS cancelled
  FROM credits.cancel_plan(3003);
SELECT cancelled_at AS cancelled_first FROM credits.plans WHERE account_id = 3003 \gset
SELECT cancelled_at = :'cancelled_first' AS same_cancelled_at FROM credits.cancel_plan(3003);
INSERT INTO credits.send_batches (account_id, messages) VALUES (3003, 100) RETURNING cost, status;
SELECT * FROM regress_plan_grants(3003);
--
-- A cancelled plan whose period has not ended is taken up again by
-- set_plan; the new amount applies from the next period.  Account 3004:
-- 600 from 10 January, cancelled, then set to 800: not cancelled any more,
-- the current grant stays 600 and nothing is granted now; on 10 February
-- the period renews with 800.
--
SELECT account_id, balance FROM credits.open_account(3004);
SELECT monthly_credits FROM credits.set_plan(3004, 600, regress_t(1, 1, 10));
SELECT cancelled_at IS NOT NULL AS cancelled FROM credits.cancel_plan(3004);
SELECT monthly_credits, regress_d(anchored_at) AS anchored_at, regress_d(period_start) AS period_start,
	   regress_d(period_end) AS period_end, cancelled_at IS NOT NULL AS cancelled
  FROM credits.set_plan(3004, 800, regress_t(1, 1, 10));
SELECT * FROM regress_plan_grants(3004);
SELECT * FROM regress_ledger(3004);
SELECT * FROM credits.verify();
-- 5 February: 3003's period ends (it was cancelled): 500 expire, no grant.
SELECT regress_clock_to(regress_t(1, 2, 5, 12)) AS clock;
SELECT credits.renew_plans(regress_t(1, 2, 5, 12)) AS renewed;
SELECT credits.renew_plans(regress_t(1, 2, 5, 12)) AS renewed;
SELECT * FROM regress_plan(3003);
SELECT * FROM regress_plan_grants(3003);
SELECT * FROM regress_ledger(3003);
SELECT cancelled_at IS NOT NULL AS cancelled FROM credits.cancel_plan(3003);
-- 10 February: 3004's plan renews with the new 800.
SELECT regress_clock_to(regress_t(1, 2, 10, 12)) AS clock;
SELECT credits.renew_plans(regress_t(1, 2, 10, 12)) AS renewed;
SELECT * FROM regress_plan(3004);
SELECT * FROM regress_plan_grants(3004);
SELECT * FROM regress_ledger(3004);
SELECT * FROM credits.verify();
-- A plan whose last period has ended starts afresh: 3003 is set again
-- (300 from 10 February 12:00): a new anchor, the period from it, a grant.
SELECT monthly_credits, regress_d(anchored_at) AS anchored_at, regress_d(period_start) AS period_start,
	   regress_d(period_end) AS period_end, cancelled_at IS NOT NULL AS cancelled
  FROM credits.set_plan(3003, 300, regress_t(1, 2, 10, 12));
SELECT * FROM regress_plan_grants(3003);
SELECT * FROM credits.verify();
SELECT count(*) FROM credits.plans p, LATERAL credits.cancel_plan(p.account_id) c
 WHERE p.account_id IN (3003, 3004);
SELECT regress_clock_to(regress_t(1, 3, 10, 12)) AS clock;
SELECT credits.renew_plans(regress_t(1, 3, 10, 12)) AS renewed;
SELECT * FROM credits.verify();

--
-- Month-end clamping in a year that is not a leap year, for a plan started
-- in the past.  Account 3005's plan is set on 10 March of Y+1 with starts_at
-- 31 January: the current period is [28 February, 31 March) (period 0,
-- from 31 January, is over and is not granted); the next is [31 March,
-- 30 April).
--
SELECT account_id, balance FROM credits.open_account(3005);
SELECT monthly_credits, regress_d(anchored_at) AS anchored_at, regress_d(period_start) AS period_start,
	   regress_d(period_end) AS period_end
  FROM credits.set_plan(3005, 100, regress_t(1, 1, 31));
SELECT regress_clock_to(regress_t(1, 3, 31, 12)) AS clock;
SELECT credits.renew_plans(regress_t(1, 3, 31, 12)) AS renewed;
SELECT * FROM regress_plan(3005);
SELECT * FROM regress_plan_grants(3005);
SELECT * FROM credits.verify();
SELECT monthly_credits FROM credits.cancel_plan(3005);
SELECT regress_clock_to(regress_t(1, 4, 30, 12)) AS clock;
SELECT credits.renew_plans(regress_t(1, 4, 30, 12)) AS renewed;
SELECT * FROM credits.verify();

--
-- The seed example on a plan: 3,000 plan credits, 5,000 messages to send,
-- auto-recharge on.  The batch spends the 3,000, owes 2,000 and awaits a
-- recharge of the missing 2,000 (balance -2,000).  When the worker settles
-- it, the recharge grant (2,000) pays what is owed first (a repay pair):
-- the batch is ready, owes nothing, the balance is 0, and batch_funding
-- says 3,000 plan credits and 2,000 recharge credits paid for it.
--
SELECT regress_clock_to(regress_t(1, 5, 10, 12)) AS clock;
SELECT account_id, balance FROM credits.open_account(3020);
SELECT monthly_credits, regress_d(period_start) AS period_start, regress_d(period_end) AS period_end
  FROM credits.set_plan(3020, 3000, regress_t(1, 5, 1));
SELECT enabled FROM credits.enable_auto_recharge(3020, min_balance => 0, max_credits => 10000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (3020, 5000)
RETURNING cost, status, owed, recharge_id IS NOT NULL AS has_recharge;
SELECT credits, status, reason, balance_seen, need FROM credits.recharges WHERE account_id = 3020;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 3020;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 3020;
SELECT credits, status FROM credits.complete_recharge(
	(SELECT recharge_id FROM credits.recharges WHERE account_id = 3020), 'ref-3020');
SELECT * FROM regress_batches(3020);
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 3020;
SELECT * FROM regress_grants(3020);
SELECT * FROM regress_ledger(3020);
SELECT * FROM regress_funding(3020, 1);
SELECT * FROM credits.verify();
SELECT monthly_credits FROM credits.cancel_plan(3020);
SELECT regress_clock_to(regress_t(1, 6, 1, 12)) AS clock;
SELECT credits.renew_plans(regress_t(1, 6, 1, 12)) AS renewed;
SELECT * FROM credits.verify();

--
-- A new period's credits pay what the account owes first.  Account 3021
-- (100 a month from 1 June of Y+1, auto-recharge on): b1 (150) spends the
-- 100 and owes 50 while its recharge is pending.  On 1 July the renewal
-- expires nothing (the June grant is empty) and the July grant of 100
-- repays b1's 50 (a repay pair): 50 left, nothing owed.  The recharge then
-- succeeds: b1 is ready and the recharge grant keeps all its 50.
--
SELECT regress_clock_to(regress_t(1, 6, 5, 12)) AS clock;
SELECT account_id, balance FROM credits.open_account(3021);
SELECT monthly_credits FROM credits.set_plan(3021, 100, regress_t(1, 6, 1));
SELECT enabled FROM credits.enable_auto_recharge(3021, min_balance => 0, max_credits => 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (3021, 150) RETURNING cost, status, owed;
SELECT regress_clock_to(regress_t(1, 7, 1, 12)) AS clock;
SELECT credits.renew_plans(regress_t(1, 7, 1, 12)) AS renewed;
SELECT * FROM regress_batches(3021);
SELECT * FROM regress_plan_grants(3021);
SELECT * FROM regress_ledger(3021);
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 3021;
SELECT credits, status FROM credits.complete_recharge(
	(SELECT recharge_id FROM credits.recharges WHERE account_id = 3021), 'ref-3021');
SELECT * FROM regress_batches(3021);
SELECT * FROM regress_grants(3021);
SELECT * FROM regress_funding(3021, 1);
SELECT * FROM credits.verify();
SELECT monthly_credits FROM credits.cancel_plan(3021);

--
-- Errors, each followed by proof that nothing was written.  The clock is
-- 1 July of Y+1, 12:00.
--
SELECT account_id, balance FROM credits.open_account(3030);
-- MC014: monthly_credits not positive
SELECT credits.set_plan(3030, 0, regress_t(1, 6, 1));
\echo :LAST_ERROR_SQLSTATE
SELECT credits.set_plan(3030, -100, regress_t(1, 6, 1));
\echo :LAST_ERROR_SQLSTATE
-- MC024: starts_at in the future (of the extension's clock).  (Terse:
-- the DETAIL shows both instants.)
\set VERBOSITY terse
SELECT credits.set_plan(3030, 100, regress_t(1, 7, 2));
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- MC025: cancel_plan on an account without a plan
SELECT credits.cancel_plan(3030);
\echo :LAST_ERROR_SQLSTATE
-- MC003: an unknown account; 22004: NULL arguments
SELECT credits.set_plan(3999, 100, regress_t(1, 6, 1));
\echo :LAST_ERROR_SQLSTATE
SELECT credits.cancel_plan(3999);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.set_plan(NULL, 100, regress_t(1, 6, 1));
\echo :LAST_ERROR_SQLSTATE
SELECT credits.set_plan(3030, NULL, regress_t(1, 6, 1));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS plans FROM credits.plans WHERE account_id = 3030;
SELECT * FROM regress_grant_totals(3030);
-- MC026: renew_plans or expire_grants at an instant after the clock: at
-- 1 August they would end 3021's July period and lapse its 50 credits
-- early.  Refused; every grant is unchanged.
SELECT count(*) AS grants, sum(remaining) AS remaining FROM credits.grants \gset before_
\set VERBOSITY terse
SELECT credits.renew_plans(regress_t(1, 8, 1, 12));
\echo :LAST_ERROR_SQLSTATE
SELECT credits.expire_grants(regress_t(1, 8, 1, 12));
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT count(*) = :before_grants AS same_grants, sum(remaining) = :before_remaining AS same_remaining
  FROM credits.grants;
SELECT * FROM credits.verify();
RESET credits.clock_offset;

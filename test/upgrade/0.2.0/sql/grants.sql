--
-- grants: where an account's credits live (0.2.0, doc/grants.md): the
-- draw-down order, one debit row per grant, batch_funding, the signup
-- grant, what a batch owes and how it is repaid, refunds back to the grants
-- they came from, and the errors of the grant functions.  (Plans: plans;
-- expiry and the views: expiry.)
--
-- Grant ids, batch ids and recharge ids depend on the suites before this
-- one, so the helpers below name an account's grants g1, g2, ... and its
-- batches b1, b2, ... in id order.  plans and expiry use them too.
--
\set SHOW_CONTEXT never
-- verify() runs after every section: JIT-compiling it costs seconds a call.
SET jit = off;
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(100000);

-- An account's grants, oldest first.
CREATE FUNCTION regress_grants(acct bigint)
RETURNS TABLE (g text, source text, priority integer, credits bigint, remaining bigint,
			   expires boolean, closed boolean, note text)
LANGUAGE sql AS $$
	SELECT 'g' || row_number() OVER (ORDER BY grant_id), source, priority, credits, remaining,
		   expires_at IS NOT NULL, closed_at IS NOT NULL, note
	  FROM credits.grants WHERE account_id = acct ORDER BY grant_id
$$;
-- The label of a grant or a batch within its account.
CREATE FUNCTION regress_g(gid bigint) RETURNS text LANGUAGE sql STRICT AS $$
	SELECT 'g' || count(*) FROM credits.grants g
	 WHERE g.account_id = (SELECT account_id FROM credits.grants WHERE grant_id = gid)
	   AND g.grant_id <= gid
$$;
CREATE FUNCTION regress_b(bid bigint) RETURNS text LANGUAGE sql STRICT AS $$
	SELECT 'b' || count(*) FROM credits.send_batches b
	 WHERE b.account_id = (SELECT account_id FROM credits.send_batches WHERE batch_id = bid)
	   AND b.batch_id <= bid
$$;
-- An account's ledger, in order, with grants and batches by label.
CREATE FUNCTION regress_ledger(acct bigint)
RETURNS TABLE (kind text, delta bigint, balance_after bigint, g text, b text, note text)
LANGUAGE sql AS $$
	SELECT kind, delta, balance_after, regress_g(grant_id), regress_b(batch_id), note
	  FROM credits.ledger WHERE account_id = acct ORDER BY entry_id
$$;
-- Which grants paid for a batch (the account's n-th batch).
CREATE FUNCTION regress_funding(acct bigint, n integer)
RETURNS TABLE (g text, source text, credits bigint)
LANGUAGE sql AS $$
	SELECT regress_g(f.grant_id), f.source, f.credits
	  FROM (SELECT batch_id FROM credits.send_batches WHERE account_id = acct
			 ORDER BY batch_id OFFSET n - 1 LIMIT 1) b,
		   LATERAL credits.batch_funding(b.batch_id) f
	 ORDER BY f.grant_id
$$;
-- An account's batches with what each owes.
CREATE FUNCTION regress_batches(acct bigint)
RETURNS TABLE (b text, cost bigint, status text, owed bigint)
LANGUAGE sql AS $$
	SELECT regress_b(batch_id), cost, status, owed
	  FROM credits.send_batches WHERE account_id = acct ORDER BY batch_id
$$;
-- Balance, owed and grants in one row, to show a refused call wrote nothing.
CREATE FUNCTION regress_grant_totals(acct bigint)
RETURNS TABLE (balance bigint, remaining numeric, owed numeric, grants bigint, ledger_rows bigint)
LANGUAGE sql AS $$
	SELECT (SELECT balance FROM credits.accounts WHERE account_id = acct),
		   (SELECT coalesce(sum(remaining), 0) FROM credits.grants WHERE account_id = acct),
		   (SELECT coalesce(sum(owed), 0) FROM credits.send_batches WHERE account_id = acct),
		   (SELECT count(*) FROM credits.grants WHERE account_id = acct),
		   (SELECT count(*) FROM credits.ledger WHERE account_id = acct)
$$;

--
-- Draw-down rule 1: the lowest priority first.  Account 2000 holds three
-- grants that never expire: g1 a purchase (add_credits, priority 50), g2 a
-- promo (grant_credits' default source, priority 30) and g3 a promo given
-- priority 5.  A batch of 150 takes g3's 100, then 50 of g2; g1 is
-- untouched.  A debit over two grants writes two debit rows, both naming
-- the batch, in the order drawn, and together its cost.
--
SELECT account_id, balance FROM credits.open_account(2000);
SELECT credits.add_credits(2000, 100, 'bought');
SELECT credits.grant_credits(2000, 100, note => 'promo') IS NOT NULL AS granted;
SELECT credits.grant_credits(2000, 100, 'promo', priority => 5, note => 'promo first') IS NOT NULL AS granted;
SELECT * FROM regress_grants(2000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2000, 150)
RETURNING cost, status, owed;
SELECT * FROM regress_grants(2000);
SELECT * FROM regress_ledger(2000);
SELECT * FROM regress_funding(2000, 1);
-- One statement, two batches: the trigger spends from the grants in memory.
-- b2 (60) takes g2's last 50 and 10 of g1; b3 (90) takes the rest of g1.
INSERT INTO credits.send_batches (account_id, messages) VALUES (2000, 60), (2000, 90)
RETURNING cost, status, owed;
SELECT * FROM regress_grants(2000);
SELECT * FROM regress_ledger(2000) OFFSET 6;
SELECT * FROM regress_funding(2000, 2);
SELECT * FROM regress_funding(2000, 3);
-- Every grant is empty: a further batch is refused (auto-recharge off).
INSERT INTO credits.send_batches (account_id, messages) VALUES (2000, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_grant_totals(2000);
SELECT * FROM credits.verify();

--
-- Draw-down rule 2: within a priority, the soonest expiry first, and grants
-- that never expire last.  Account 2001: promos (priority 30) g1 never
-- expiring, g2 expiring in 20 days, g3 in 10 days, and g4 of priority 40
-- expiring tomorrow: priority comes before expiry, so g4 goes last.  A
-- batch of 350 takes g3, g2, g1 (100 each) and 50 of g4.
--
SELECT account_id, balance FROM credits.open_account(2001);
SELECT credits.grant_credits(2001, 100, note => 'never') IS NOT NULL AS granted;
SELECT credits.grant_credits(2001, 100, expires_at => now() + interval '20 days', note => '20 days') IS NOT NULL AS granted;
SELECT credits.grant_credits(2001, 100, expires_at => now() + interval '10 days', note => '10 days') IS NOT NULL AS granted;
SELECT credits.grant_credits(2001, 100, expires_at => now() + interval '1 day', priority => 40, note => '1 day, priority 40') IS NOT NULL AS granted;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2001, 350)
RETURNING cost, status, owed;
SELECT * FROM regress_grants(2001);
SELECT * FROM regress_ledger(2001);
SELECT * FROM regress_funding(2001, 1);
SELECT * FROM credits.verify();

--
-- Draw-down rule 3: same priority and same expiry: the oldest grant
-- (lowest grant_id) first.  Account 2002: g1 and g2 purchases (never
-- expiring), then g3 and g4 promos with one and the same expiry, g4
-- granted after g3 but for more credits.  A batch of 150 takes g3's 100
-- and 50 of g4 (the promos go first by priority); a batch of 200 takes the
-- 100 left of g4, then 100 of g1; g2 is untouched.
--
SELECT account_id, balance FROM credits.open_account(2002);
SELECT credits.add_credits(2002, 100, 'first bought');
SELECT credits.add_credits(2002, 100, 'second bought');
SELECT now() + interval '7 days' AS same_expiry \gset
SELECT credits.grant_credits(2002, 100, expires_at => :'same_expiry', note => 'first promo') IS NOT NULL AS granted;
SELECT credits.grant_credits(2002, 150, expires_at => :'same_expiry', note => 'second promo') IS NOT NULL AS granted;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2002, 150) RETURNING cost, status;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2002, 200) RETURNING cost, status;
SELECT * FROM regress_grants(2002);
SELECT * FROM regress_ledger(2002);
SELECT * FROM regress_funding(2002, 2);
SELECT * FROM credits.verify();

--
-- The default priorities: plan 10, signup 20, promo 30, purchase 50 (and
-- recharge 50: see below).  Account 2003 opens with 100 free credits (a
-- signup grant), gets a promo of 100 and buys 100: a batch of 250 takes
-- signup, promo, then 50 of the purchase.  grant_credits takes a source:
-- a signup or purchase grant made there gets that source's priority.
--
SELECT account_id, balance FROM credits.open_account(2003, 100);
SELECT credits.add_credits(2003, 100, 'bought');
SELECT credits.grant_credits(2003, 100, 'promo', note => 'promo') IS NOT NULL AS granted;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2003, 250) RETURNING cost, status;
SELECT * FROM regress_grants(2003);
SELECT * FROM regress_ledger(2003);
SELECT credits.grant_credits(2003, 10, 'signup', note => 'late signup bonus') IS NOT NULL AS granted;
SELECT credits.grant_credits(2003, 10, 'purchase', note => 'sold by hand') IS NOT NULL AS granted;
SELECT * FROM regress_grants(2003) OFFSET 3;
SELECT * FROM credits.verify();

--
-- The 500 free credits: open_account's initial credits form a signup grant
-- (priority 20) that never expires; its 'open' ledger row names the grant.
-- The three-argument form gives the grant an expiry (NULL: never).  An
-- account opened with no credits has no grant and an 'open' row of 0
-- without one.
--
SELECT account_id, balance, in_flight FROM credits.open_account(2010, 500);
SELECT * FROM regress_grants(2010);
SELECT * FROM regress_ledger(2010);
SELECT account_id, balance FROM credits.open_account(2011);
SELECT * FROM regress_grants(2011);
SELECT * FROM regress_ledger(2011);
SELECT account_id, balance FROM credits.open_account(2012, 500, now() + interval '30 days');
SELECT g, source, priority, credits, remaining, expires FROM regress_grants(2012);
SELECT expires_at = created_at + interval '30 days' AS expires_as_asked
  FROM credits.grants WHERE account_id = 2012;
SELECT account_id, balance FROM credits.open_account(2013, 500, NULL);
SELECT g, source, priority, credits, remaining, expires FROM regress_grants(2013);
SELECT * FROM credits.verify();

--
-- Owed and repayment.  Account 2020 (100 free credits, auto-recharge on):
-- b1 (300) spends the 100 and owes 200; b2 (50) owes 50.  The balance is
-- -250 = -(what is owed) and every grant is empty.  The next credits to
-- arrive pay the debts first, oldest batch first, each repayment a pair of
-- 'repay' rows (-x on the new grant, +x without a grant) naming the batch:
-- add_credits(220) repays b1's 200 and 20 of b2's 50 (balance -30, the
-- grant empty); add_credits(100) repays b2's last 30 and leaves 70.  The
-- recharge of 250 then succeeds: a recharge grant (priority 50) of 250 with
-- nothing left to repay; both batches become ready.
--
SELECT account_id, balance FROM credits.open_account(2020, 100);
SELECT enabled FROM credits.enable_auto_recharge(2020, min_balance => 0, max_credits => 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 300) RETURNING cost, status, owed;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2020, 50) RETURNING cost, status, owed;
SELECT credits, status FROM credits.recharges WHERE account_id = 2020;
SELECT * FROM regress_grant_totals(2020);
SELECT balance, owed FROM credits.account_overview WHERE account_id = 2020;
SELECT * FROM regress_ledger(2020);
SELECT credits.add_credits(2020, 220, 'top-up');
SELECT * FROM regress_batches(2020);
SELECT * FROM regress_ledger(2020) OFFSET 3;
SELECT credits.add_credits(2020, 100, 'second top-up');
SELECT * FROM regress_batches(2020);
SELECT * FROM regress_ledger(2020) OFFSET 8;
SELECT * FROM regress_grants(2020);
SELECT balance, owed FROM credits.account_overview WHERE account_id = 2020;
SELECT * FROM regress_funding(2020, 1);
SELECT * FROM regress_funding(2020, 2);
SELECT * FROM credits.verify();
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 2020;
SELECT credits, status FROM credits.complete_recharge(
	(SELECT recharge_id FROM credits.recharges WHERE account_id = 2020), 'ref-2020');
SELECT * FROM regress_batches(2020);
SELECT * FROM regress_grants(2020);
SELECT * FROM regress_ledger(2020) OFFSET 11;
SELECT * FROM credits.verify();

--
-- A refund goes back where the batch's cost came from.  Account 2030 (100
-- free credits, auto-recharge on): b1 (150) spends the 100 (g1) and owes
-- 50; add_credits(30) (g2) repays 30 of it.  The recharge fails: b1 fails,
-- and its refund puts 100 back into g1, 30 back into g2 and cancels the 20
-- still owed.  Balance 130, nothing owed, both grants open again, and
-- batch_funding shows nothing left paid for the batch.
--
SELECT account_id, balance FROM credits.open_account(2030, 100);
SELECT enabled FROM credits.enable_auto_recharge(2030, min_balance => 0, max_credits => 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2030, 150) RETURNING cost, status, owed;
SELECT credits.add_credits(2030, 30, 'top-up');
SELECT * FROM regress_batches(2030);
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 2030;
SELECT credits, status FROM credits.fail_recharge(
	(SELECT recharge_id FROM credits.recharges WHERE account_id = 2030), 'card declined');
SELECT * FROM regress_batches(2030);
SELECT * FROM regress_grants(2030);
SELECT * FROM regress_ledger(2030);
SELECT * FROM regress_grant_totals(2030);
SELECT * FROM regress_funding(2030, 1);
SELECT * FROM credits.verify();

--
-- Refunded credits pay what another batch owes first.  Account 2031 (100
-- free credits, auto-recharge on): b1 (150) spends the 100 and owes 50
-- (recharge r1, which a worker claims); b2 (30) owes 30 (recharge r2, r1
-- being claimed).  r1 fails: b1's refund cancels its own 50 and puts 100
-- back into g1, and those credits at once repay b2's 30 (a repay pair):
-- g1 keeps 70, nobody owes anything, and b2 still awaits r2.
--
SELECT account_id, balance FROM credits.open_account(2031, 100);
SELECT enabled FROM credits.enable_auto_recharge(2031, min_balance => 0, max_credits => 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2031, 150) RETURNING cost, status, owed;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 2031;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2031, 30) RETURNING cost, status, owed;
SELECT credits, status FROM credits.recharges WHERE account_id = 2031 ORDER BY recharge_id;
SELECT credits, status FROM credits.fail_recharge(
	(SELECT min(recharge_id) FROM credits.recharges WHERE account_id = 2031), 'card declined');
SELECT * FROM regress_batches(2031);
SELECT * FROM regress_grants(2031);
SELECT * FROM regress_ledger(2031);
SELECT * FROM regress_funding(2031, 2);
SELECT * FROM regress_grant_totals(2031);
SELECT * FROM credits.verify();

--
-- One settlement refunds all the batches it fails before the credits that
-- came back pay any debt.  Account 2032 (100 free credits, auto-recharge
-- on): b1 (150) spends the 100 and owes 50, b2 (30) owes 30, both covered
-- by recharge r1 (80), which a worker claims; b3 (40) owes 40 and opens
-- r2.  r1 fails: b1's refund (50 forgiven, 100 back into g1) and b2's (30
-- forgiven) come first; then g1 repays b3's 40.  b2 is never repaid just
-- before being refunded.
--
SELECT account_id, balance FROM credits.open_account(2032, 100);
SELECT enabled FROM credits.enable_auto_recharge(2032, min_balance => 0, max_credits => 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2032, 150), (2032, 30) RETURNING cost, status, owed;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 2032;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2032, 40) RETURNING cost, status, owed;
SELECT credits, status FROM credits.recharges WHERE account_id = 2032 ORDER BY recharge_id;
SELECT credits, status FROM credits.fail_recharge(
	(SELECT min(recharge_id) FROM credits.recharges WHERE account_id = 2032), 'card declined');
SELECT * FROM regress_batches(2032);
SELECT * FROM regress_ledger(2032);
SELECT * FROM regress_grant_totals(2032);
SELECT * FROM credits.verify();

--
-- Errors of the grant functions, each followed by proof that nothing was
-- written (account 2000's totals and grants are those above).
--
SELECT * FROM regress_grant_totals(2000);
-- MC014: a grant of no credits, or fewer
SELECT credits.grant_credits(2000, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(2000, -5);
\echo :LAST_ERROR_SQLSTATE
-- MC023: an expiry that is not in the future (the transaction's start is
-- already past; a day ago).  (Terse: the DETAIL shows both instants.)
\set VERBOSITY terse
SELECT credits.grant_credits(2000, 10, expires_at => now());
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(2000, 10, expires_at => now() - interval '1 day');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- MC023: an unknown source; plan and recharge credits come only from
-- plans and recharges; 22004: no source
SELECT credits.grant_credits(2000, 10, 'gift');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(2000, 10, 'plan');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(2000, 10, 'recharge');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(2000, 10, NULL);
\echo :LAST_ERROR_SQLSTATE
-- MC023: a priority outside 0-100 (both ends are allowed)
SELECT credits.grant_credits(2000, 10, priority => 101);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(2000, 10, priority => -1);
\echo :LAST_ERROR_SQLSTATE
-- MC003: an unknown account; 22004: a NULL account or amount
SELECT credits.grant_credits(2999, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(NULL, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.grant_credits(2000, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_grant_totals(2000);
SELECT credits.grant_credits(2000, 1, priority => 0, note => 'priority 0') IS NOT NULL AS granted;
SELECT credits.grant_credits(2000, 1, priority => 100, note => 'priority 100') IS NOT NULL AS granted;
SELECT * FROM regress_grants(2000) OFFSET 3;
-- MC023: open_account with an expiry that is not in the future; MC014:
-- negative initial credits.  The account is not created.
\set VERBOSITY terse
SELECT credits.open_account(2014, 500, now());
\echo :LAST_ERROR_SQLSTATE
SELECT credits.open_account(2014, 500, now() - interval '1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.open_account(2014, -1, now() + interval '1 day');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT count(*) AS accounts, (SELECT count(*) FROM credits.grants WHERE account_id = 2014) AS grants,
	   (SELECT count(*) FROM credits.ledger WHERE account_id = 2014) AS ledger_rows
  FROM credits.accounts WHERE account_id = 2014;
SELECT * FROM credits.verify();

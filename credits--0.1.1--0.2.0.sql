/* credits--0.1.1--0.2.0.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION credits UPDATE TO '0.2.0'" to load this file. \quit

/*
 * 0.2.0: credit grants, plans and expiry (doc/grants.md).
 *
 * Every credit now lives in a grant (credits.grants) with a source, a
 * priority and an optional expiry; debits draw from grants in a stated
 * order, and what they cannot pay is owed (send_batches.owed) until credits
 * arrive.  accounts.balance stays the one number every decision uses:
 * balance = sum(remaining) - owed.  Writes of balances, grants and debts are
 * all in the C module ledger.c; these functions validate, lock and call it.
 *
 * Upgrading: each positive 0.1 balance becomes one "purchase" grant, a
 * negative balance becomes owed by the account's awaiting batches (newest
 * first).  No ledger row and no balance changes.
 */

--------------------------------------------------------------------------------
-- Tables
--------------------------------------------------------------------------------

-- One CHECK only.  A debit updates its grant, and PostgreSQL rebuilds every
-- CHECK constraint of a table from its stored tree on each UPDATE statement:
-- with the eight this table would naturally have, that was half of what a
-- debit cost more than in 0.1.0 (bench/PROFILE.md).  Only ledger.c writes
-- grants; verify() check 20 holds the rest (source, priority, bounds, the
-- recharge and plan columns).
CREATE TABLE credits.grants (
	grant_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	account_id	bigint NOT NULL REFERENCES credits.accounts,
	source		text NOT NULL,
	credits		bigint NOT NULL,
	remaining	bigint NOT NULL CHECK (remaining >= 0),
	priority	integer NOT NULL,
	expires_at	timestamptz,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	recharge_id	bigint,
	period_start timestamptz,
	note		text,
	carried_over bigint NOT NULL DEFAULT 0,
	closed_at	timestamptz
);
COMMENT ON TABLE credits.grants IS
	'Where every credit lives: credits granted to an account by a source, spent in draw-down order (priority, soonest expiry, oldest), lapsing at expires_at. Changed only by the extension.';
COMMENT ON COLUMN credits.grants.source IS
	'signup (open_account), plan (a plan period), purchase (add_credits, grant_credits), recharge (a succeeded recharge), promo (grant_credits).';
COMMENT ON COLUMN credits.grants.remaining IS
	'Credits left. Equals carried_over + the sum of the grant''s ledger rows.';
COMMENT ON COLUMN credits.grants.priority IS
	'0-100, lower is spent first. Defaults: plan 10, signup 20, promo 30, purchase and recharge 50.';
COMMENT ON COLUMN credits.grants.expires_at IS
	'When what is left lapses (an "expire" ledger row). NULL: never.';
COMMENT ON COLUMN credits.grants.period_start IS
	'For plan grants: the start of the plan period it belongs to (its expires_at is the period end).';
COMMENT ON COLUMN credits.grants.carried_over IS
	'Credits the grant got without a ledger row: only the grants the 0.2.0 update made from 0.1 balances.';
COMMENT ON COLUMN credits.grants.closed_at IS
	'When remaining reached 0 (spent or expired); NULL while it has credits.';
-- The debit trigger reads an account's open grants once per statement; a
-- debit changes only remaining, so its UPDATE is HOT (closed_at changes once).
CREATE INDEX grants_open_idx ON credits.grants (account_id) WHERE closed_at IS NULL;
-- expire_grants finds due grants by expiry.
CREATE INDEX grants_expiry_idx ON credits.grants (expires_at)
	WHERE closed_at IS NULL AND expires_at IS NOT NULL;
-- One plan grant per plan period: renew_plans cannot grant a period twice.
CREATE UNIQUE INDEX grants_one_per_plan_period ON credits.grants (account_id, period_start)
	WHERE source = 'plan';

CREATE TABLE credits.plans (
	account_id	bigint PRIMARY KEY REFERENCES credits.accounts,
	monthly_credits bigint NOT NULL CHECK (monthly_credits > 0),
	anchored_at timestamptz NOT NULL,
	period_start timestamptz NOT NULL,
	period_end	timestamptz NOT NULL,
	cancelled_at timestamptz,
	ended_at	timestamptz,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CHECK (period_end > period_start)
);
COMMENT ON TABLE credits.plans IS
	'Monthly plans: each period grants monthly_credits that lapse at the period end (no rollover). Changed through set_plan, cancel_plan and renew_plans.';
COMMENT ON COLUMN credits.plans.monthly_credits IS
	'What the next period grants (the current period''s grant keeps its own amount).';
COMMENT ON COLUMN credits.plans.anchored_at IS
	'The start periods are counted from, in whole calendar months (UTC), month ends clamped.';
COMMENT ON COLUMN credits.plans.period_start IS 'The current (or last) period.';
COMMENT ON COLUMN credits.plans.cancelled_at IS
	'Set by cancel_plan: no further periods; the current grant lasts to its expiry.';
COMMENT ON COLUMN credits.plans.ended_at IS
	'When renew_plans found the last period of a cancelled plan over.';
CREATE INDEX plans_due_idx ON credits.plans (period_end) WHERE ended_at IS NULL;

-- The ledger names the grant each row moves.
ALTER TABLE credits.ledger ADD COLUMN grant_id bigint;
COMMENT ON COLUMN credits.ledger.grant_id IS
	'The grant whose remaining this row moves by delta; NULL: what is owed (or, before 0.2.0, no grant).';
COMMENT ON COLUMN credits.ledger.recharge_id IS
	'recharge: the recharge credited; refund: the recharge that failed; debit: the recharge the batch awaited when debited (0.2.0).';
ALTER TABLE credits.ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE credits.ledger ADD CONSTRAINT ledger_kind_check
	CHECK (kind IN ('open', 'grant', 'debit', 'recharge', 'refund', 'plan', 'expire', 'repay'));
-- A refund puts a batch's cost back per grant: once per (batch, grant).
DROP INDEX credits.ledger_one_refund_per_batch;
CREATE UNIQUE INDEX ledger_one_refund_per_batch_grant
	ON credits.ledger (batch_id, (COALESCE(grant_id, 0))) WHERE kind = 'refund';
-- A refund reads what paid for a batch.  Only batches that awaited a
-- recharge are refunded, and only their debit rows name it: the debit rows
-- of ready batches (nearly all) stay out of this index, off the hot path.
CREATE INDEX ledger_batch_idx ON credits.ledger (batch_id)
	WHERE batch_id IS NOT NULL AND (kind <> 'debit' OR recharge_id IS NOT NULL);
-- balance_by_grant reads a grant's refunds and expiries (rare rows).
CREATE INDEX ledger_grant_events_idx ON credits.ledger (grant_id)
	WHERE kind IN ('refund', 'expire');

-- What each batch owes.
ALTER TABLE credits.send_batches ADD COLUMN owed bigint NOT NULL DEFAULT 0;
-- (owed <= cost is checked by verify(): a constraint here would fire before
-- the clearer MC022 when a later trigger changes a debited row's cost)
ALTER TABLE credits.send_batches ADD CONSTRAINT send_batches_owed_check
	CHECK (owed >= 0);
COMMENT ON COLUMN credits.send_batches.owed IS
	'Credits of the cost no grant could pay when it was debited, not yet paid by credits that arrived since. Set by the extension.';
CREATE INDEX send_batches_owed_idx ON credits.send_batches (account_id, batch_id)
	WHERE owed > 0;

SELECT pg_catalog.pg_extension_config_dump('credits.grants', '');
SELECT pg_catalog.pg_extension_config_dump('credits.plans', '');
SELECT pg_catalog.pg_extension_config_dump('credits.grants_grant_id_seq', '');

--------------------------------------------------------------------------------
-- 0.1 balances become grants and debts (no ledger row, no balance changes)
--------------------------------------------------------------------------------

-- Pays what an account owes from its open grants (ledger.c); the caller
-- holds the account lock.
CREATE FUNCTION credits._repay_owed(account_id bigint) RETURNS void
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'credits_repay_owed';

-- Adds to what a batch owes (ledger.c); the caller holds the account lock.
CREATE FUNCTION credits._add_owed(batch_id bigint, credits bigint) RETURNS void
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'credits_add_owed';

-- Run by this update, and by a DBA after restoring a dump taken before
-- 0.2.0 into 0.2.0 (the restore recreates the extension at 0.2.0 and then
-- loads 0.1 rows, which have no grants).  For every account whose balance is
-- not what its grants and debts say (verify() check 16): credits the grants
-- miss become one purchase grant (carried_over, no ledger row) that pays
-- what the account owes; a debt they miss is owed by the awaiting batches
-- that back it (verify() check 13), newest first.  No ledger row and no
-- balance changes.
CREATE FUNCTION credits.carry_over_balances()
	RETURNS integer
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	accounts bigint[];
	acct bigint;
	missing numeric;
	b record;
	changed integer := 0;
BEGIN
	SELECT array_agg(a.account_id ORDER BY a.account_id) INTO accounts
	  FROM credits.accounts a
	 WHERE a.balance <> (SELECT coalesce(sum(g.remaining), 0) FROM credits.grants g
						  WHERE g.account_id = a.account_id)
					   - (SELECT coalesce(sum(sb.owed), 0) FROM credits.send_batches sb
						  WHERE sb.account_id = a.account_id AND sb.owed > 0);
	FOREACH acct IN ARRAY coalesce(accounts, '{}') LOOP
		PERFORM credits._flush_debits(acct);
		SELECT a.balance::numeric
			   - (SELECT coalesce(sum(g.remaining), 0) FROM credits.grants g WHERE g.account_id = acct)
			   + (SELECT coalesce(sum(sb.owed), 0) FROM credits.send_batches sb
				   WHERE sb.account_id = acct AND sb.owed > 0)
		  INTO missing
		  FROM credits.accounts a WHERE a.account_id = acct FOR NO KEY UPDATE;
		CONTINUE WHEN missing = 0;
		IF missing > 0 THEN
			INSERT INTO credits.grants (account_id, source, credits, remaining, priority, carried_over, note)
				VALUES (acct, 'purchase', missing, missing, 50, missing,
						'balance carried over from version 0.1');
			PERFORM credits._repay_owed(acct);
		ELSE
			FOR b IN
				SELECT w.batch_id, LEAST(w.spare, -missing - (w.newer_and_this - w.spare)) AS owes
				  FROM (SELECT sb.batch_id, sb.cost - sb.owed AS spare,
							   sum(sb.cost - sb.owed) OVER (ORDER BY sb.batch_id DESC) AS newer_and_this
						  FROM credits.send_batches sb
						 WHERE sb.account_id = acct AND sb.status = 'awaiting_credits'
						   AND sb.owed < sb.cost) w
				 WHERE -missing - (w.newer_and_this - w.spare) > 0
				 ORDER BY w.batch_id
			LOOP
				PERFORM credits._add_owed(b.batch_id, b.owes::bigint);
			END LOOP;
		END IF;
		changed := changed + 1;
	END LOOP;
	RETURN changed;
END
$$;
COMMENT ON FUNCTION credits.carry_over_balances() IS
	'Puts credits and debts that are in an account''s balance but not in its grants and batches into them, as the 0.2.0 update does for 0.1 balances (run it after restoring a dump taken before 0.2.0 into 0.2.0). Returns how many accounts it changed; 0 when there is nothing to do.';

SELECT credits.carry_over_balances();

--------------------------------------------------------------------------------
-- Internal functions (C; EXECUTE revoked from PUBLIC)
--------------------------------------------------------------------------------

-- The extension's clock: clock_timestamp() moved by credits.clock_offset.
CREATE FUNCTION credits._now() RETURNS timestamptz
	LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'credits_now';

-- Opens a grant and pays what the account owes from it; the caller validated
-- and holds the account lock.
CREATE FUNCTION credits._add_grant(account_id bigint, source text, credits bigint,
								   priority integer, expires_at timestamptz, note text,
								   period_start timestamptz)
	RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'credits_add_grant';

-- Expires the account's grants due at "at"; returns {grants, credits}.  The
-- caller holds the account lock.
CREATE FUNCTION credits._expire_due(account_id bigint, at timestamptz)
	RETURNS bigint[]
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'credits_expire_due';

DROP FUNCTION credits._open_account(bigint, bigint);
CREATE FUNCTION credits._open_account(account_id bigint, initial_credits bigint,
									  initial_expires_at timestamptz)
	RETURNS boolean
	LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'credits_open_account';

-- The period of a plan anchored at "anchor" that contains "at": whole
-- calendar months in UTC, month ends clamped (31 January + 1 month is 28/29
-- February, + 2 months is 31 March).  Before the anchor: the first period.
CREATE FUNCTION credits._plan_period(anchor timestamptz, at timestamptz,
									 OUT period_start timestamptz, OUT period_end timestamptz)
	LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a timestamp := anchor AT TIME ZONE 'UTC';
	t timestamp := at AT TIME ZONE 'UTC';
	k integer;
BEGIN
	k := ((extract(year FROM t) - extract(year FROM a)) * 12
		  + extract(month FROM t) - extract(month FROM a))::integer;
	WHILE k > 0 AND a + make_interval(months => k) > t LOOP
		k := k - 1;
	END LOOP;
	WHILE a + make_interval(months => k + 1) <= t LOOP
		k := k + 1;
	END LOOP;
	k := greatest(k, 0);
	period_start := (a + make_interval(months => k)) AT TIME ZONE 'UTC';
	period_end := (a + make_interval(months => k + 1)) AT TIME ZONE 'UTC';
END
$$;

-- Locks the account row (the first lock every writer takes), expires its due
-- grants (no decision reads a balance holding expired credits), and returns it.
CREATE OR REPLACE FUNCTION credits._lock_account(p_account_id bigint)
	RETURNS credits.accounts
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	acct credits.accounts;
BEGIN
	IF p_account_id IS NULL THEN
		RAISE EXCEPTION 'account_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM credits._flush_debits(p_account_id);
	PERFORM FROM credits.accounts a
		WHERE a.account_id = p_account_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'account % does not exist', p_account_id
			USING ERRCODE = 'MC003',
				  HINT = 'Open it first with credits.open_account().';
	END IF;
	PERFORM credits._expire_due(p_account_id, credits._now());
	SELECT * INTO acct FROM credits.accounts a WHERE a.account_id = p_account_id;
	RETURN acct;
END
$$;

-- Locks a plan's account and renews the plan if its period has ended by
-- "at": the old grant expires (under the lock), and unless the plan was
-- cancelled, the period containing "at" opens (nothing for a period already
-- over by the extension's clock).  Returns whether the plan was renewed or
-- ended, and adds what expired to expired_grants/expired_credits.
CREATE FUNCTION credits._renew_plan(p_account_id bigint, p_at timestamptz,
									INOUT expired_grants bigint, INOUT expired_credits bigint,
									OUT renewed boolean)
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p credits.plans;
	per record;
	lapsed bigint[];
	clock timestamptz;
BEGIN
	renewed := false;
	PERFORM credits._flush_debits(p_account_id);
	PERFORM FROM credits.accounts a WHERE a.account_id = p_account_id FOR NO KEY UPDATE;
	clock := credits._now();
	lapsed := credits._expire_due(p_account_id, clock);
	expired_grants := expired_grants + lapsed[1];
	expired_credits := expired_credits + lapsed[2];
	SELECT * INTO p FROM credits.plans pl WHERE pl.account_id = p_account_id FOR UPDATE;
	IF NOT FOUND OR p.ended_at IS NOT NULL OR p.period_end > p_at THEN
		RETURN;					-- renewed meanwhile, or not due
	END IF;
	renewed := true;
	IF p.cancelled_at IS NOT NULL THEN
		UPDATE credits.plans SET ended_at = p.period_end, updated_at = pg_catalog.now()
		 WHERE account_id = p_account_id;
		RETURN;
	END IF;
	per := credits._plan_period(p.anchored_at, p_at);
	UPDATE credits.plans
	   SET period_start = per.period_start, period_end = per.period_end,
		   updated_at = pg_catalog.now()
	 WHERE account_id = p_account_id;
	IF per.period_end > clock THEN
		PERFORM credits._add_grant(p_account_id, 'plan', p.monthly_credits, 10,
								   per.period_end, NULL, per.period_start);
	END IF;
END
$$;

--------------------------------------------------------------------------------
-- Accounts and credits
--------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION credits.open_account(account_id bigint, initial_credits bigint DEFAULT 0)
	RETURNS credits.accounts
	LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT credits.open_account(account_id, initial_credits, NULL::timestamptz);
$$;
COMMENT ON FUNCTION credits.open_account(bigint, bigint) IS
	'Opens an account; its initial credits (e.g. 500 free credits) form a signup grant that never expires (an "open" ledger row). Fails with MC010 if it exists.';

CREATE FUNCTION credits.open_account(account_id bigint, initial_credits bigint,
									 initial_expires_at timestamptz)
	RETURNS credits.accounts
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	acct credits.accounts;
BEGIN
	IF open_account.account_id IS NULL OR initial_credits IS NULL THEN
		RAISE EXCEPTION 'account_id and initial_credits must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF initial_credits < 0 THEN
		RAISE EXCEPTION 'initial credits must not be negative'
			USING ERRCODE = 'MC014',
				  DETAIL = format('initial_credits is %s.', initial_credits);
	END IF;
	IF initial_expires_at IS NOT NULL AND initial_expires_at <= credits._now() THEN
		RAISE EXCEPTION 'initial credits would expire at once'
			USING ERRCODE = 'MC023',
				  DETAIL = format('initial_expires_at is %s, and now is %s.',
								  initial_expires_at, credits._now()),
				  HINT = 'Give an expiry in the future, or NULL for credits that never expire.';
	END IF;
	IF NOT credits._open_account(open_account.account_id, initial_credits, initial_expires_at) THEN
		RAISE EXCEPTION 'account % already exists', open_account.account_id
			USING ERRCODE = 'MC010',
				  HINT = 'Use credits.add_credits() or credits.grant_credits() to add credits to an existing account.';
	END IF;
	SELECT * INTO acct FROM credits.accounts a WHERE a.account_id = open_account.account_id;
	RETURN acct;
END
$$;
COMMENT ON FUNCTION credits.open_account(bigint, bigint, timestamptz) IS
	'Opens an account; its initial credits form a signup grant (priority 20) lapsing at initial_expires_at (NULL: never). Fails with MC010 if it exists.';

COMMENT ON FUNCTION credits.add_credits(bigint, bigint, text) IS
	'A manual purchase: a purchase grant (priority 50) that never expires, a "grant" ledger row with the note; pays what the account owes first. Returns the new balance.';

CREATE FUNCTION credits.grant_credits(account_id bigint, credits bigint, source text DEFAULT 'promo',
									  expires_at timestamptz DEFAULT NULL,
									  priority integer DEFAULT NULL, note text DEFAULT NULL)
	RETURNS bigint
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	default_priority integer;
BEGIN
	IF grant_credits.credits IS NULL OR grant_credits.source IS NULL THEN
		RAISE EXCEPTION 'credits and source must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF grant_credits.credits <= 0 THEN
		RAISE EXCEPTION 'credits to grant must be positive'
			USING ERRCODE = 'MC014',
				  DETAIL = format('credits is %s.', grant_credits.credits);
	END IF;
	default_priority := CASE grant_credits.source
		WHEN 'signup' THEN 20 WHEN 'promo' THEN 30 WHEN 'purchase' THEN 50 END;
	IF default_priority IS NULL THEN
		RAISE EXCEPTION 'credits cannot be granted with source "%"', grant_credits.source
			USING ERRCODE = 'MC023',
				  HINT = 'Use signup, purchase or promo. Plan credits come from credits.set_plan(), recharge credits from recharges.';
	END IF;
	IF grant_credits.priority NOT BETWEEN 0 AND 100 THEN
		RAISE EXCEPTION 'priority must be between 0 and 100'
			USING ERRCODE = 'MC023',
				  DETAIL = format('priority is %s.', grant_credits.priority),
				  HINT = 'Lower is spent first; the defaults are plan 10, signup 20, promo 30, purchase 50.';
	END IF;
	IF grant_credits.expires_at <= credits._now() THEN
		RAISE EXCEPTION 'credits would expire at once'
			USING ERRCODE = 'MC023',
				  DETAIL = format('expires_at is %s, and now is %s.', grant_credits.expires_at, credits._now()),
				  HINT = 'Give an expiry in the future, or NULL for credits that never expire.';
	END IF;
	PERFORM credits._lock_account(grant_credits.account_id);
	RETURN credits._add_grant(grant_credits.account_id, grant_credits.source, grant_credits.credits,
							  coalesce(grant_credits.priority, default_priority),
							  grant_credits.expires_at, grant_credits.note, NULL);
END
$$;
COMMENT ON FUNCTION credits.grant_credits(bigint, bigint, text, timestamptz, integer, text) IS
	'For administrators: grants credits (source signup, purchase or promo; default promo, priority by source) that lapse at expires_at (NULL: never). Pays what the account owes first. Returns the grant_id.';

--------------------------------------------------------------------------------
-- Plans
--------------------------------------------------------------------------------

CREATE FUNCTION credits.set_plan(account_id bigint, monthly_credits bigint,
								 starts_at timestamptz DEFAULT NULL)
	RETURNS credits.plans
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p credits.plans;
	per record;
	clock timestamptz := credits._now();
	anchor timestamptz := coalesce(starts_at, clock);
	ignored record;
BEGIN
	IF set_plan.account_id IS NULL OR set_plan.monthly_credits IS NULL THEN
		RAISE EXCEPTION 'account_id and monthly_credits must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF set_plan.monthly_credits <= 0 THEN
		RAISE EXCEPTION 'monthly credits must be positive'
			USING ERRCODE = 'MC014',
				  DETAIL = format('monthly_credits is %s.', set_plan.monthly_credits);
	END IF;
	IF anchor > clock THEN
		RAISE EXCEPTION 'a plan cannot start in the future'
			USING ERRCODE = 'MC024',
				  DETAIL = format('starts_at is %s, and now is %s.', anchor, clock),
				  HINT = 'Call credits.set_plan() when the plan starts; starts_at may lie in the past.';
	END IF;
	PERFORM credits._lock_account(set_plan.account_id);
	SELECT * INTO p FROM credits.plans pl WHERE pl.account_id = set_plan.account_id FOR UPDATE;
	IF FOUND AND p.ended_at IS NULL AND (p.period_end > clock OR p.cancelled_at IS NULL) THEN
		-- A running plan: the new amount applies from the next period (and a
		-- cancelled one still in its period is taken up again).
		UPDATE credits.plans pl
		   SET monthly_credits = set_plan.monthly_credits, cancelled_at = NULL,
			   updated_at = pg_catalog.now()
		 WHERE pl.account_id = set_plan.account_id;
		IF p.period_end <= clock THEN
			-- its period is over and renew_plans has not run: renew it now
			ignored := credits._renew_plan(set_plan.account_id, clock, 0, 0);
		END IF;
	ELSE
		-- A new plan, or one whose last period has ended: start afresh (not
		-- over a period the old plan granted: one plan grant per moment).
		per := credits._plan_period(anchor, clock);
		IF FOUND AND per.period_start < p.period_end THEN
			RAISE EXCEPTION 'a new plan cannot start within the previous plan''s last period'
				USING ERRCODE = 'MC024',
					  DETAIL = format('starts_at %s makes the period from %s to %s, but the previous plan granted the period from %s to %s.',
									  anchor, per.period_start, per.period_end, p.period_start, p.period_end),
					  HINT = format('Start it at or after %s.', p.period_end);
		END IF;
		INSERT INTO credits.plans AS pl (account_id, monthly_credits, anchored_at, period_start, period_end)
			VALUES (set_plan.account_id, set_plan.monthly_credits, anchor, per.period_start, per.period_end)
			ON CONFLICT ON CONSTRAINT plans_pkey DO UPDATE
				SET monthly_credits = excluded.monthly_credits, anchored_at = excluded.anchored_at,
					period_start = excluded.period_start, period_end = excluded.period_end,
					cancelled_at = NULL, ended_at = NULL, updated_at = pg_catalog.now();
		PERFORM credits._add_grant(set_plan.account_id, 'plan', set_plan.monthly_credits, 10,
								   per.period_end, NULL, per.period_start);
	END IF;
	SELECT * INTO p FROM credits.plans pl WHERE pl.account_id = set_plan.account_id;
	RETURN p;
END
$$;
COMMENT ON FUNCTION credits.set_plan(bigint, bigint, timestamptz) IS
	'Starts a monthly plan (starts_at may lie in the past; NULL: now): the current period''s plan grant opens at once, lapsing at the period end. On an account with a running plan, the new amount applies from the next period. Returns the plan.';

CREATE FUNCTION credits.cancel_plan(account_id bigint)
	RETURNS credits.plans
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p credits.plans;
BEGIN
	PERFORM credits._lock_account(cancel_plan.account_id);
	UPDATE credits.plans pl
	   SET cancelled_at = coalesce(pl.cancelled_at, pg_catalog.now()),
		   updated_at = CASE WHEN pl.cancelled_at IS NULL THEN pg_catalog.now() ELSE pl.updated_at END
	 WHERE pl.account_id = cancel_plan.account_id
	RETURNING pl.* INTO p;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'account % has no plan', cancel_plan.account_id
			USING ERRCODE = 'MC025',
				  HINT = 'Start one with credits.set_plan().';
	END IF;
	RETURN p;
END
$$;
COMMENT ON FUNCTION credits.cancel_plan(bigint) IS
	'Cancels the account''s plan: no further periods; the current plan grant lasts to its expiry. Idempotent. MC025 without a plan.';

CREATE FUNCTION credits.renew_plans(at timestamptz DEFAULT NULL)
	RETURNS integer
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	clock timestamptz := credits._now();
	v_at timestamptz := coalesce(renew_plans.at, clock);
	acct bigint;
	r record;
	renewed integer := 0;
	grants_expired bigint := 0;
	credits_expired bigint := 0;
BEGIN
	IF v_at > clock THEN
		RAISE EXCEPTION 'renew_plans cannot run ahead of the clock'
			USING ERRCODE = 'MC026',
				  DETAIL = format('at is %s, and now is %s.', v_at, clock),
				  HINT = 'It would lapse plan credits before their period ends.';
	END IF;
	FOR acct IN
		SELECT pl.account_id FROM credits.plans pl
		 WHERE pl.ended_at IS NULL AND pl.period_end <= v_at
		 ORDER BY pl.account_id
	LOOP
		r := credits._renew_plan(acct, v_at, grants_expired, credits_expired);
		grants_expired := r.expired_grants;
		credits_expired := r.expired_credits;
		IF r.renewed THEN
			renewed := renewed + 1;
		END IF;
	END LOOP;
	IF grants_expired > 0 THEN
		PERFORM pg_catalog.pg_notify('credits_expiring',
			json_build_object('grants', grants_expired, 'credits', credits_expired)::text);
	END IF;
	RETURN renewed;
END
$$;
COMMENT ON FUNCTION credits.renew_plans(timestamptz) IS
	'For every plan whose period has ended by at (NULL: now): the old period''s grant lapses (an "expire" ledger row) and, unless cancelled, the period containing at opens (a "plan" row); missed periods are skipped. Idempotent. Returns the plans renewed or ended. Run it every few minutes (pg_cron).';

--------------------------------------------------------------------------------
-- Expiry
--------------------------------------------------------------------------------

CREATE FUNCTION credits.expire_grants(at timestamptz DEFAULT NULL)
	RETURNS bigint
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	clock timestamptz := credits._now();
	v_at timestamptz := coalesce(expire_grants.at, clock);
	chunk bigint[];
	acct bigint;
	after bigint := -9223372036854775808;
	lapsed bigint[];
	grants_expired bigint := 0;
	credits_expired bigint := 0;
BEGIN
	IF v_at > clock THEN
		RAISE EXCEPTION 'expire_grants cannot run ahead of the clock'
			USING ERRCODE = 'MC026',
				  DETAIL = format('at is %s, and now is %s.', v_at, clock),
				  HINT = 'It would lapse credits before their expiry.';
	END IF;
	-- Accounts with due grants, 1000 at a time in account order.  A busy
	-- account (locked by a writer) is skipped: its writer expires them.
	LOOP
		SELECT array_agg(d.account_id ORDER BY d.account_id) INTO chunk
		  FROM (SELECT DISTINCT g.account_id FROM credits.grants g
				 WHERE g.closed_at IS NULL AND g.expires_at <= v_at
				   AND g.account_id > after
				 ORDER BY g.account_id LIMIT 1000) d;
		EXIT WHEN chunk IS NULL;
		FOREACH acct IN ARRAY chunk LOOP
			PERFORM credits._flush_debits(acct);
			PERFORM FROM credits.accounts a WHERE a.account_id = acct
				FOR NO KEY UPDATE SKIP LOCKED;
			IF FOUND THEN
				lapsed := credits._expire_due(acct, v_at);
				grants_expired := grants_expired + lapsed[1];
				credits_expired := credits_expired + lapsed[2];
			END IF;
		END LOOP;
		after := chunk[array_upper(chunk, 1)];
		EXIT WHEN array_length(chunk, 1) < 1000;
	END LOOP;
	IF grants_expired > 0 THEN
		PERFORM pg_catalog.pg_notify('credits_expiring',
			json_build_object('grants', grants_expired, 'credits', credits_expired)::text);
	END IF;
	RETURN grants_expired;
END
$$;
COMMENT ON FUNCTION credits.expire_grants(timestamptz) IS
	'Expires grants due by at (NULL: now) on idle accounts (an "expire" ledger row each; accounts locked by a writer are skipped: their writer expires them), so that reports are true. Returns how many grants expired; one NOTIFY credits_expiring per call that expired any. Debits never need it: they expire what is due first.';

CREATE FUNCTION credits.expiring_credits(within interval)
	RETURNS TABLE (account_id bigint, grant_id bigint, source text, remaining bigint,
				   expires_at timestamptz)
	LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT g.account_id, g.grant_id, g.source, g.remaining, g.expires_at
	  FROM credits.grants g
	 WHERE g.closed_at IS NULL AND g.remaining > 0
	   AND g.expires_at <= credits._now() + within
	 ORDER BY g.expires_at, g.account_id, g.grant_id
$$;
COMMENT ON FUNCTION credits.expiring_credits(interval) IS
	'Per account and grant, the credits that will lapse within the interval (and those due but not expired yet), and when: for warning customers.';

CREATE FUNCTION credits.batch_funding(batch_id bigint)
	RETURNS TABLE (grant_id bigint, source text, credits bigint)
	LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT l.grant_id, g.source, (-sum(l.delta))::bigint
	  FROM credits.send_batches b
	  JOIN credits.ledger l ON l.account_id = b.account_id AND l.batch_id = b.batch_id
	  LEFT JOIN credits.grants g ON g.grant_id = l.grant_id
	 WHERE b.batch_id = batch_funding.batch_id AND b.status <> 'failed'
	   AND l.kind IN ('debit', 'repay', 'refund')
	 GROUP BY l.grant_id, g.source
	HAVING sum(l.delta) <> 0
	 ORDER BY l.grant_id NULLS LAST
$$;
COMMENT ON FUNCTION credits.batch_funding(bigint) IS
	'Which grants pay for a batch now: its debit, repay and refund ledger rows summed per grant. grant_id NULL: what it owes (for a batch debited before 0.2.0: its whole cost). A failed batch was refunded: no rows.';

--------------------------------------------------------------------------------
-- Audit
--------------------------------------------------------------------------------

-- jit off: on a ledger of tens of thousands of rows, compiling this query
-- costs several times what running it does.
CREATE OR REPLACE FUNCTION credits.verify()
	RETURNS TABLE (account_id bigint, problem text)
	LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	SET jit = off
AS $$
	-- 1. balance = sum(ledger.delta)
	SELECT a.account_id,
		   format('balance %s <> ledger sum %s', a.balance, coalesce(l.total, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT l.account_id, sum(l.delta) AS total
				   FROM credits.ledger l GROUP BY l.account_id) l USING (account_id)
	 WHERE a.balance IS DISTINCT FROM coalesce(l.total, 0)
	UNION ALL
	-- 2. each ledger row's balance_after continues the account's running sum
	SELECT l.account_id,
		   format('ledger entry %s: balance_after %s <> running sum %s',
				  l.entry_id, l.balance_after, l.running)
	  FROM (SELECT l.*, sum(l.delta) OVER (PARTITION BY l.account_id ORDER BY l.entry_id) AS running
			  FROM credits.ledger l) l
	 WHERE l.balance_after <> l.running
	UNION ALL
	-- 3. in_flight = sum of pending and processing recharges
	SELECT a.account_id,
		   format('in_flight %s <> pending and processing recharges %s', a.in_flight, coalesce(r.total, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT r.account_id, sum(r.credits) AS total FROM credits.recharges r
				  WHERE r.status IN ('pending', 'processing') GROUP BY r.account_id) r USING (account_id)
	 WHERE a.in_flight IS DISTINCT FROM coalesce(r.total, 0)
	UNION ALL
	-- 4. balance + in-flight recharges >= 0
	SELECT a.account_id, format('balance %s + in-flight %s is negative', a.balance, a.in_flight)
	  FROM credits.accounts a
	 WHERE a.balance::numeric + a.in_flight < 0
	UNION ALL
	-- 5. every batch has debit rows (one per grant drawn, and one for what it
	-- owed) totalling its cost
	SELECT b.account_id,
		   format('batch %s has %s debit rows totalling %s for cost %s',
				  b.batch_id, count(l.entry_id), coalesce(-sum(l.delta), 0), b.cost)
	  FROM credits.send_batches b
	  LEFT JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	 GROUP BY b.batch_id, b.account_id, b.cost
	HAVING count(l.entry_id) = 0 OR -sum(l.delta) <> b.cost
	UNION ALL
	-- 6. refunds of the cost exactly when the batch failed
	SELECT b.account_id,
		   format('batch %s is %s with %s refund rows totalling %s',
				  b.batch_id, b.status, count(l.entry_id), coalesce(sum(l.delta), 0))
	  FROM credits.send_batches b
	  LEFT JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'refund'
	 GROUP BY b.batch_id, b.account_id, b.cost, b.status
	HAVING (b.status = 'failed') <> (count(l.entry_id) > 0)
		OR (b.status = 'failed' AND sum(l.delta) <> b.cost)
	UNION ALL
	-- 7. an awaiting batch points at a recharge still in flight
	SELECT b.account_id,
		   format('batch %s awaits recharge %s which is %s',
				  b.batch_id, b.recharge_id, coalesce(r.status, 'missing'))
	  FROM credits.send_batches b
	  LEFT JOIN credits.recharges r ON r.recharge_id = b.recharge_id
	 WHERE b.status = 'awaiting_credits'
	   AND (r.status IS NULL OR r.status NOT IN ('pending', 'processing') OR r.account_id <> b.account_id)
	UNION ALL
	-- 8. a succeeded recharge credited exactly once, and no other recharge credited
	SELECT r.account_id,
		   format('recharge %s is %s with %s credit rows totalling %s for %s credits',
				  r.recharge_id, r.status, count(l.entry_id), coalesce(sum(l.delta), 0), r.credits)
	  FROM credits.recharges r
	  LEFT JOIN credits.ledger l ON l.recharge_id = r.recharge_id AND l.kind = 'recharge'
	 GROUP BY r.recharge_id, r.account_id, r.status, r.credits
	HAVING (r.status = 'succeeded') <> (count(l.entry_id) = 1) OR count(l.entry_id) > 1
		OR (r.status = 'succeeded' AND sum(l.delta) <> r.credits)
	UNION ALL
	-- 9. no recharge above the cap it was opened under
	SELECT r.account_id,
		   format('recharge %s of %s credits exceeds max_credits %s', r.recharge_id, r.credits, r.max_credits)
	  FROM credits.recharges r
	 WHERE r.credits > r.max_credits
	UNION ALL
	-- 10. a claimed recharge's amount never changed after the claim
	SELECT r.account_id,
		   format('recharge %s was claimed at %s credits but is now %s', r.recharge_id, r.claimed_credits, r.credits)
	  FROM credits.recharges r
	 WHERE r.claimed_at IS NOT NULL AND r.claimed_credits IS DISTINCT FROM r.credits
	UNION ALL
	-- 11. every ledger row names a batch, recharge or grant that exists
	SELECT l.account_id,
		   format('ledger entry %s (%s) names %s that does not exist', l.entry_id, l.kind,
				  CASE WHEN l.kind IN ('debit', 'refund', 'repay')
						AND NOT EXISTS (SELECT FROM credits.send_batches b WHERE b.batch_id = l.batch_id)
					   THEN 'batch ' || l.batch_id
					   WHEN l.kind = 'recharge'
						AND NOT EXISTS (SELECT FROM credits.recharges r WHERE r.recharge_id = l.recharge_id)
					   THEN 'recharge ' || l.recharge_id
					   ELSE 'grant ' || l.grant_id END)
	  FROM credits.ledger l
	 WHERE (l.kind IN ('debit', 'refund', 'repay')
			AND NOT EXISTS (SELECT FROM credits.send_batches b WHERE b.batch_id = l.batch_id))
		OR (l.kind = 'recharge'
			AND NOT EXISTS (SELECT FROM credits.recharges r WHERE r.recharge_id = l.recharge_id))
		OR (l.grant_id IS NOT NULL
			AND NOT EXISTS (SELECT FROM credits.grants g WHERE g.grant_id = l.grant_id
							AND g.account_id = l.account_id))
	UNION ALL
	-- 13. a negative balance is backed by awaiting batches, so that any
	-- recharge in flight can still fail and be made good by refunds
	SELECT a.account_id,
		   format('balance %s is not backed by awaiting batches (%s)', a.balance, coalesce(w.total, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT b.account_id, sum(b.cost) AS total FROM credits.send_batches b
				  WHERE b.status = 'awaiting_credits' GROUP BY b.account_id) w USING (account_id)
	 WHERE a.balance < 0 AND a.balance + coalesce(w.total, 0) < 0
	UNION ALL
	-- 14. each debit names its batch's account
	SELECT l.account_id,
		   format('ledger entry %s debits batch %s of account %s', l.entry_id, b.batch_id, b.account_id)
	  FROM credits.ledger l
	  JOIN credits.send_batches b ON b.batch_id = l.batch_id
	 WHERE l.kind IN ('debit', 'refund', 'repay') AND l.account_id <> b.account_id
	UNION ALL
	-- 15. only a processing recharge holds a claim; a claimed one has a token
	SELECT r.account_id,
		   format('recharge %s is %s with claim token %s and lease %s',
				  r.recharge_id, r.status, coalesce(r.claim_token::text, 'null'),
				  coalesce(r.lease_expires_at::text, 'null'))
	  FROM credits.recharges r
	 WHERE (r.status = 'pending' AND (r.claim_token IS NOT NULL OR r.lease_expires_at IS NOT NULL))
		OR (r.status = 'processing' AND r.lease_expires_at IS NOT NULL AND r.claim_token IS NULL)
	UNION ALL
	-- 16. balance = sum(remaining) - owed, and an account owes only while
	-- all its grants are empty
	SELECT a.account_id,
		   format('balance %s <> grants'' remaining %s - owed %s', a.balance,
				  coalesce(g.remaining, 0), coalesce(o.owed, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT g.account_id, sum(g.remaining) AS remaining FROM credits.grants g
				  GROUP BY g.account_id) g USING (account_id)
	  LEFT JOIN (SELECT b.account_id, sum(b.owed) AS owed FROM credits.send_batches b
				  WHERE b.owed > 0 GROUP BY b.account_id) o USING (account_id)
	 WHERE a.balance <> coalesce(g.remaining, 0) - coalesce(o.owed, 0)
		OR (coalesce(g.remaining, 0) > 0 AND coalesce(o.owed, 0) > 0)
	UNION ALL
	-- 17. per grant: granted - drawn + refunded - expired = remaining, i.e.
	-- remaining = carried_over + the sum of its ledger rows; closed grants
	-- are empty; a grant past its expiry after an expiry pass is empty
	SELECT g.account_id,
		   format('grant %s: remaining %s <> carried over %s + ledger rows %s%s', g.grant_id,
				  g.remaining, g.carried_over, coalesce(l.total, 0),
				  CASE WHEN g.closed_at IS NOT NULL AND g.remaining <> 0 THEN ' (closed)' ELSE '' END)
	  FROM credits.grants g
	  LEFT JOIN (SELECT l.grant_id, sum(l.delta) AS total FROM credits.ledger l
				  WHERE l.grant_id IS NOT NULL GROUP BY l.grant_id) l USING (grant_id)
	 WHERE g.remaining <> g.carried_over + coalesce(l.total, 0)
		OR (g.closed_at IS NOT NULL AND g.remaining <> 0)
	UNION ALL
	-- 20. each grant is well formed (the constraints grants does not carry,
	-- for speed: see its CREATE TABLE)
	SELECT g.account_id,
		   format('grant %s (%s) is malformed: credits %s, remaining %s, carried over %s, priority %s, recharge %s, period %s, closed %s',
				  g.grant_id, g.source, g.credits, g.remaining, g.carried_over, g.priority,
				  coalesce(g.recharge_id::text, 'none'), coalesce(g.period_start::text, 'none'),
				  coalesce(g.closed_at::text, 'no'))
	  FROM credits.grants g
	 WHERE g.source NOT IN ('signup', 'plan', 'purchase', 'recharge', 'promo')
		OR g.credits <= 0 OR g.remaining > g.credits
		OR g.carried_over < 0 OR g.carried_over > g.credits
		OR g.priority NOT BETWEEN 0 AND 100
		OR (g.source = 'recharge') <> (g.recharge_id IS NOT NULL)
		OR (g.source = 'plan') <> (g.period_start IS NOT NULL)
		OR (g.recharge_id IS NOT NULL
			AND (SELECT count(*) FROM credits.grants o WHERE o.recharge_id = g.recharge_id) > 1)
	UNION ALL
	-- 18. what a batch owes is its grantless debits net of repayments, and
	-- only an awaiting or ready batch owes
	SELECT b.account_id,
		   format('batch %s (%s) owes %s but its grantless rows total %s', b.batch_id, b.status,
				  b.owed, coalesce(-l.total, 0))
	  FROM credits.send_batches b
	  LEFT JOIN (SELECT l.batch_id, sum(l.delta) AS total FROM credits.ledger l
				  WHERE l.grant_id IS NULL AND l.kind IN ('debit', 'repay', 'refund')
				  GROUP BY l.batch_id) l USING (batch_id)
	 WHERE b.owed > 0 AND (b.status = 'failed' OR b.owed > coalesce(-l.total, 0) OR b.owed > b.cost)
	UNION ALL
	-- 19. plan periods: an account's plan grants never overlap (one per
	-- period; periods a plan missed are gaps), and a plan's current period
	-- is a whole period of its anchor, not older than its newest grant
	SELECT g.account_id,
		   format('plan grants %s and %s overlap', g.grant_id, o.grant_id)
	  FROM credits.grants g
	  JOIN credits.grants o ON o.account_id = g.account_id AND o.source = 'plan'
		   AND o.grant_id > g.grant_id
		   AND o.period_start < g.expires_at AND g.period_start < o.expires_at
	 WHERE g.source = 'plan'
	UNION ALL
	SELECT p.account_id,
		   format('plan period from %s to %s is not a period anchored at %s, or is older than its newest plan grant',
				  p.period_start, p.period_end, p.anchored_at)
	  FROM credits.plans p
	 WHERE (credits._plan_period(p.anchored_at, p.period_start)).period_start <> p.period_start
		OR (credits._plan_period(p.anchored_at, p.period_start)).period_end <> p.period_end
		OR EXISTS (SELECT FROM credits.grants g
					WHERE g.account_id = p.account_id AND g.source = 'plan'
					  AND g.period_start > p.period_start)
	UNION ALL
	-- 12. every account with ledger rows exists
	SELECT l.account_id, 'ledger rows for an account that does not exist'
	  FROM credits.ledger l
	 WHERE NOT EXISTS (SELECT FROM credits.accounts a WHERE a.account_id = l.account_id)
	 GROUP BY l.account_id
	ORDER BY 1, 2
$$;
COMMENT ON FUNCTION credits.verify() IS
	'Checks every invariant of the extension, grants and plans included; returns one row per problem, none on a healthy database.';

--------------------------------------------------------------------------------
-- Reports
--------------------------------------------------------------------------------

CREATE VIEW credits.balance_by_grant WITH (security_barrier = true) AS
SELECT g.grant_id,
	   g.account_id,
	   g.source,
	   g.priority,
	   g.credits AS granted,
	   g.credits + coalesce(e.refunded, 0) - coalesce(e.expired, 0) - g.remaining AS drawn,
	   coalesce(e.refunded, 0) AS refunded,
	   coalesce(e.expired, 0) AS expired,
	   g.remaining,
	   g.expires_at,
	   CASE WHEN g.remaining > 0 AND g.expires_at <= pg_catalog.now() THEN 'due'
			WHEN g.remaining > 0 THEN 'open'
			WHEN coalesce(e.expired, 0) > 0 THEN 'expired'
			ELSE 'spent' END AS state,
	   g.created_at,
	   g.closed_at,
	   g.period_start,
	   g.recharge_id,
	   g.note
  FROM credits.grants g
  LEFT JOIN LATERAL (
	SELECT sum(l.delta) FILTER (WHERE l.kind = 'refund') AS refunded,
		   -sum(l.delta) FILTER (WHERE l.kind = 'expire') AS expired
	  FROM credits.ledger l
	 WHERE l.grant_id = g.grant_id AND l.kind IN ('refund', 'expire')
  ) e ON true;
COMMENT ON VIEW credits.balance_by_grant IS
	'One row per grant: what it granted, what debits drew from it (repayments of debts included), what refunds put back, what lapsed, what is left (granted - drawn + refunded - expired), and its state (open, due: past its expiry but not expired yet, expired, spent).';

CREATE OR REPLACE VIEW credits.account_overview WITH (security_barrier = true) AS
SELECT a.account_id,
	   a.balance,
	   a.in_flight,
	   a.balance::numeric + a.in_flight AS available,
	   CASE WHEN p.account_id IS NULL THEN 'never set'
			WHEN p.enabled THEN 'on'
			ELSE 'off (' || p.disabled_reason || ')' END AS auto_recharge,
	   p.min_balance,
	   p.max_credits,
	   p.target_balance,
	   p.monthly_limit,
	   coalesce(m.bought, 0) AS bought_this_month,
	   coalesce(m.committed, 0) AS committed_this_month,
	   CASE WHEN p.monthly_limit IS NOT NULL
			THEN greatest(p.monthly_limit - coalesce(m.committed, 0), 0) END AS monthly_room,
	   p.payment_failures,
	   p.disabled_at,
	   p.disabled_reason,
	   coalesce(g.plan, 0) AS plan_credits,
	   coalesce(g.free, 0) AS free_credits,
	   coalesce(g.promo, 0) AS promo_credits,
	   coalesce(g.bought, 0) AS bought_credits,
	   coalesce(o.owed, 0) AS owed,
	   g.next_expiry,
	   coalesce(x.credits, 0) AS next_expiry_credits
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge p ON p.account_id = a.account_id
  LEFT JOIN LATERAL (
	SELECT sum(r.credits) FILTER (WHERE r.status = 'succeeded') AS bought,
		   sum(r.credits) AS committed
	  FROM credits.recharges r
	 WHERE r.account_id = a.account_id
	   AND r.status IN ('pending', 'processing', 'succeeded')
	   AND r.created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  ) m ON true
  LEFT JOIN LATERAL (
	SELECT sum(gr.remaining) FILTER (WHERE gr.source = 'plan') AS plan,
		   sum(gr.remaining) FILTER (WHERE gr.source = 'signup') AS free,
		   sum(gr.remaining) FILTER (WHERE gr.source = 'promo') AS promo,
		   sum(gr.remaining) FILTER (WHERE gr.source IN ('purchase', 'recharge')) AS bought,
		   min(gr.expires_at) AS next_expiry
	  FROM credits.grants gr
	 WHERE gr.account_id = a.account_id AND gr.closed_at IS NULL
  ) g ON true
  LEFT JOIN LATERAL (
	SELECT sum(gr.remaining) AS credits
	  FROM credits.grants gr
	 WHERE gr.account_id = a.account_id AND gr.closed_at IS NULL
	   AND gr.expires_at = g.next_expiry
  ) x ON true
  LEFT JOIN LATERAL (
	SELECT sum(b.owed) AS owed FROM credits.send_batches b
	 WHERE b.account_id = a.account_id AND b.owed > 0
  ) o ON true;
COMMENT ON VIEW credits.account_overview IS
	'One row per account: balance, in-flight recharges, auto-recharge settings and state (and why it is off), this month''s (UTC) recharges against the monthly limit, and where the balance lives: plan credits left this period, free (signup), promo and bought (purchase and recharge) credits, what is owed, and the next expiry with the credits it takes.';

--------------------------------------------------------------------------------
-- Privileges: nothing new is open to PUBLIC.
--------------------------------------------------------------------------------

REVOKE ALL ON credits.grants, credits.plans, credits.balance_by_grant FROM PUBLIC;
REVOKE ALL ON SEQUENCE credits.grants_grant_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION credits._now(),
	credits._add_grant(bigint, text, bigint, integer, timestamptz, text, timestamptz),
	credits._expire_due(bigint, timestamptz),
	credits._open_account(bigint, bigint, timestamptz),
	credits._plan_period(timestamptz, timestamptz),
	credits._renew_plan(bigint, timestamptz, bigint, bigint),
	credits.open_account(bigint, bigint, timestamptz),
	credits.grant_credits(bigint, bigint, text, timestamptz, integer, text),
	credits.set_plan(bigint, bigint, timestamptz),
	credits.cancel_plan(bigint),
	credits.renew_plans(timestamptz),
	credits.expire_grants(timestamptz),
	credits.expiring_credits(interval),
	credits.batch_funding(bigint),
	credits.carry_over_balances(),
	credits._repay_owed(bigint), credits._add_owed(bigint, bigint) FROM PUBLIC;

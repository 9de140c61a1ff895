/* credits--0.1.0--0.1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION credits UPDATE TO '0.1.1'" to load this file. \quit

/*
 * 0.1.1: operable and unbreakable.  CREATE EXTENSION credits runs
 * credits--0.1.0.sql and then this script, so fresh installs and upgraded
 * databases get exactly the same objects.
 *
 *  - SQLSTATEs move from class CR (reserved by the SQL standard) to MC:
 *    every function is replaced with the new codes, and the C functions are
 *    bound to entry points that raise MC (0.1.0's stay in the library for
 *    databases not updated yet: src/legacy.c).
 *  - Claims are leases: claim_recharges gives each claim a token and a lease
 *    (credits.claim_lease); complete/fail take the token; a processing
 *    recharge whose lease expired is claimed again; release_recharge.
 *  - Payment references: 1 to 255 bytes, no surrounding white space (MC021).
 *  - enable_auto_recharge refuses min_balance > max_credits.
 *  - verify() checks each debit's account, and claim tokens.
 *  - Report views are security_barrier; a recharge_queue view for operators.
 *
 * Privileges: objects created here are revoked from PUBLIC like the rest.
 * Privileges granted on 0.1.0 objects are kept (replaced functions keep
 * their ACLs).  The new 3-argument complete_recharge/fail_recharge and
 * release_recharge must be granted to the payment worker (README, Upgrading);
 * granting them from here would record them as the extension's initial
 * privileges, which pg_dump leaves out.
 */

--------------------------------------------------------------------------------
-- C functions: the 0.1.1 entry points (MC SQLSTATEs)
--------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION credits.debit_batch() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_debit_batch_0_1_1';
CREATE OR REPLACE FUNCTION credits.guard_batch() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_guard_batch_0_1_1';
CREATE OR REPLACE FUNCTION credits.guard_ledger() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_guard_ledger_0_1_1';
CREATE OR REPLACE FUNCTION credits.flush_debits() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_flush_debits_0_1_1';
COMMENT ON FUNCTION credits.flush_debits() IS
	'AFTER INSERT statement trigger on send_batches: checks what later BEFORE triggers did to debited rows (MC022), then writes the account rows and ledger rows of the statement''s debits in bulk.';
-- Settlement is wholly in C from 0.1.1 (src/settle.c), and every balance
-- write goes through one C module (src/ledger.c): the PL/pgSQL helpers that
-- wrote balances, the ledger and in_flight (_post, and the inline UPDATEs of
-- _cancel_recharge, complete_recharge, fail_recharge) are replaced below,
-- and _settle_batches, _lock_recharge are no longer needed.
DROP FUNCTION credits._settle_batches(bigint, text);
DROP FUNCTION credits._post(credits.accounts, bigint, text, bigint, bigint, text, bigint);
DROP FUNCTION credits._lock_recharge(bigint);
-- The writes the PL/pgSQL functions still ask for; the caller holds the
-- account lock.
CREATE FUNCTION credits._open_account(account_id bigint, initial_credits bigint)
	RETURNS boolean
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'credits_open_account';
COMMENT ON FUNCTION credits._open_account(bigint, bigint) IS
	'Internal: inserts the account and its "open" ledger row (src/ledger.c); false when it exists.';
CREATE FUNCTION credits._credit(account_id bigint, credits bigint, note text)
	RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'credits_credit';
COMMENT ON FUNCTION credits._credit(bigint, bigint, text) IS
	'Internal: adds credits to a locked account with a "grant" ledger row (src/ledger.c); returns the new balance.';
CREATE OR REPLACE FUNCTION credits._flush_debits(account_id bigint) RETURNS void
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'credits_flush_pending_0_1_1';
CREATE FUNCTION credits._claim_lease_seconds() RETURNS integer
	LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'credits_claim_lease_seconds';

--------------------------------------------------------------------------------
-- Leases on claims
--------------------------------------------------------------------------------

ALTER TABLE credits.recharges
	ADD COLUMN claim_token uuid,
	ADD COLUMN lease_expires_at timestamptz,
	ADD COLUMN claim_count integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN credits.recharges.claim_token IS
	'The current claim of a processing recharge (new at every claim); complete_recharge and fail_recharge with a token refuse any other (MC020). Kept after settlement; cleared by release_recharge.';
COMMENT ON COLUMN credits.recharges.lease_expires_at IS
	'When the current claim''s lease (credits.claim_lease) ends; after it, claim_recharges may claim the recharge again. NULL for processing recharges claimed before 0.1.1: they never expire.';
COMMENT ON COLUMN credits.recharges.claim_count IS
	'How many times the recharge was claimed (for operators). A recharge claimed once (claimed_credits set) never grows and is never cancelled automatically.';
-- Recharges claimed under 0.1.0 count as claimed once.  Their processing
-- ones get no lease: a 0.1.0 worker may still be charging them, and 0.1.0 did
-- not ask charge commands to be idempotent.  An operator settles or releases
-- them.
UPDATE credits.recharges SET claim_count = 1 WHERE claimed_at IS NOT NULL;
-- claim_recharges looks for expired leases.
CREATE INDEX recharges_lease_idx ON credits.recharges (lease_expires_at)
	WHERE status = 'processing';

--------------------------------------------------------------------------------
-- SQL functions (MC SQLSTATEs; leases; payment references)
--------------------------------------------------------------------------------

-- Locks the account row (the first lock every writer takes) and returns it.
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
	SELECT * INTO acct FROM credits.accounts
		WHERE account_id = p_account_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'account % does not exist', p_account_id
			USING ERRCODE = 'MC003',
				  HINT = 'Open it first with credits.open_account().';
	END IF;
	RETURN acct;
END
$$;

--------------------------------------------------------------------------------
-- Accounts and credits
--------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION credits.open_account(account_id bigint, initial_credits bigint DEFAULT 0)
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
	IF NOT credits._open_account(open_account.account_id, initial_credits) THEN
		RAISE EXCEPTION 'account % already exists', open_account.account_id
			USING ERRCODE = 'MC010',
				  HINT = 'Use credits.add_credits() to add credits to an existing account.';
	END IF;
	SELECT * INTO acct FROM credits.accounts a WHERE a.account_id = open_account.account_id;
	RETURN acct;
END
$$;
COMMENT ON FUNCTION credits.open_account(bigint, bigint) IS
	'Opens an account with an initial balance (an "open" ledger row). Fails with MC010 if it exists.';

CREATE OR REPLACE FUNCTION credits.add_credits(account_id bigint, credits bigint, note text DEFAULT NULL)
	RETURNS bigint
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	acct credits.accounts;
BEGIN
	IF add_credits.credits IS NULL THEN
		RAISE EXCEPTION 'credits must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF add_credits.credits <= 0 THEN
		RAISE EXCEPTION 'credits to add must be positive'
			USING ERRCODE = 'MC014',
				  DETAIL = format('credits is %s.', add_credits.credits);
	END IF;
	PERFORM credits._lock_account(add_credits.account_id);
	RETURN credits._credit(add_credits.account_id, add_credits.credits, note);
END
$$;
COMMENT ON FUNCTION credits.add_credits(bigint, bigint, text) IS
	'A manual purchase or grant: adds credits (a "grant" ledger row with the note) and returns the new balance.';

--------------------------------------------------------------------------------
-- Auto-recharge policy
--------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION credits.enable_auto_recharge(account_id bigint, min_balance bigint, max_credits bigint,
											 target_balance bigint DEFAULT NULL,
											 monthly_limit bigint DEFAULT NULL)
	RETURNS credits.auto_recharge
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	policy credits.auto_recharge;
BEGIN
	IF min_balance IS NULL OR max_credits IS NULL THEN
		RAISE EXCEPTION 'min_balance and max_credits must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF min_balance < 0 OR max_credits <= 0 OR min_balance > max_credits
	   OR target_balance < min_balance OR monthly_limit <= 0 THEN
		RAISE EXCEPTION 'invalid auto-recharge policy'
			USING ERRCODE = 'MC013',
				  DETAIL = format('min_balance is %s, max_credits %s, target_balance %s, monthly_limit %s.',
								  min_balance, max_credits,
								  coalesce(target_balance::text, 'null'), coalesce(monthly_limit::text, 'null')),
				  HINT = 'min_balance must be zero or more and at most max_credits (a recharge must be able to refill an empty account), max_credits more than zero, target_balance (if set) at least min_balance, monthly_limit (if set) more than zero.';
	END IF;
	PERFORM credits._lock_account(enable_auto_recharge.account_id);
	INSERT INTO credits.auto_recharge AS p
		(account_id, enabled, min_balance, max_credits, target_balance, monthly_limit)
		VALUES (enable_auto_recharge.account_id, true, min_balance, max_credits,
				target_balance, monthly_limit)
		ON CONFLICT ON CONSTRAINT auto_recharge_pkey DO UPDATE
			SET enabled = true,
				min_balance = excluded.min_balance,
				max_credits = excluded.max_credits,
				target_balance = excluded.target_balance,
				monthly_limit = excluded.monthly_limit,
				payment_failures = 0,
				updated_at = pg_catalog.now(),
				disabled_at = NULL,
				disabled_reason = NULL
		RETURNING p.* INTO policy;
	RETURN policy;
END
$$;
COMMENT ON FUNCTION credits.enable_auto_recharge(bigint, bigint, bigint, bigint, bigint) IS
	'Creates or updates the account''s auto-recharge policy and turns it on (also after an automatic turn-off). Never opens a recharge by itself.';

-- Cancels one pending recharge and fails its batches; the caller holds the
-- account lock and has locked the recharge row.  A recharge that was ever
-- claimed (and then released) is never cancelled: its card may have been
-- charged, and only a worker's retry with the same recharge_id can tell.
CREATE OR REPLACE FUNCTION credits._cancel_recharge(p_recharge_id bigint, p_reason text)
	RETURNS void
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'credits_cancel_recharge';

-- Turns auto-recharge off for a reason and cancels what no worker has
-- claimed; the caller holds the account lock.  Processing recharges finish.
CREATE OR REPLACE FUNCTION credits._turn_off(p_account_id bigint, p_reason text)
	RETURNS credits.auto_recharge
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'credits_turn_off';

CREATE OR REPLACE FUNCTION credits.disable_auto_recharge(account_id bigint)
	RETURNS credits.auto_recharge
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM credits._lock_account(disable_auto_recharge.account_id);
	RETURN credits._turn_off(disable_auto_recharge.account_id, 'disabled_by_user');
END
$$;
COMMENT ON FUNCTION credits.disable_auto_recharge(bigint) IS
	'Turns auto-recharge off, cancels the account''s pending recharges (not one claimed before and released) and fails their awaiting batches with refunds. Processing recharges are left to finish.';

CREATE OR REPLACE FUNCTION credits.expire_recharges()
	RETURNS integer
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	expiry_secs integer := credits._recharge_expiry_seconds();
	expiry interval := pg_catalog.make_interval(secs => expiry_secs);
	c record;
	expired integer := 0;
BEGIN
	IF expiry = '0'::interval THEN
		RETURN 0;				-- credits.recharge_expiry = 0: never expire
	END IF;
	FOR c IN
		SELECT rc.recharge_id, rc.account_id FROM credits.recharges rc
		 WHERE rc.status = 'pending' AND rc.claimed_credits IS NULL
		   AND rc.created_at < pg_catalog.now() - expiry
		 ORDER BY rc.account_id, rc.recharge_id
	LOOP
		-- Lock in the global order, then look again: a worker may have
		-- claimed it meanwhile.
		PERFORM credits._lock_account(c.account_id);
		PERFORM FROM credits.recharges rc
		  WHERE rc.recharge_id = c.recharge_id AND rc.status = 'pending'
			AND rc.claimed_credits IS NULL
			AND rc.created_at < pg_catalog.now() - expiry
		  FOR UPDATE;
		IF FOUND THEN
			PERFORM credits._cancel_recharge(c.recharge_id,
				format('expired: pending longer than credits.recharge_expiry (%s s)', expiry_secs));
			expired := expired + 1;
		END IF;
	END LOOP;
	RETURN expired;
END
$$;
COMMENT ON FUNCTION credits.expire_recharges() IS
	'Cancels pending recharges older than credits.recharge_expiry (never one that was claimed before and released) and fails their batches with refunds; returns how many. Run it periodically (cron, pg_cron).';

--------------------------------------------------------------------------------
-- Payment workers
--------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION credits.claim_recharges(max_rows integer DEFAULT 1)
	RETURNS SETOF credits.recharges
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	ROWS 10
AS $$
DECLARE
	lease interval := pg_catalog.make_interval(secs => credits._claim_lease_seconds());
BEGIN
	IF max_rows IS NULL THEN
		RAISE EXCEPTION 'max_rows must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF max_rows < 1 THEN
		RAISE EXCEPTION 'max_rows must be at least 1'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('max_rows is %s.', max_rows);
	END IF;
	-- Pending recharges, and processing ones whose lease has expired (their
	-- worker died or hung: the same recharge_id is handed out again, so an
	-- idempotent charge command cannot charge twice), oldest first.
	-- SKIP LOCKED: two workers never get the same row, and a recharge that a
	-- batch is growing or a worker is settling right now (row locked) is
	-- simply left for later.  The picked ids are MATERIALIZED: as a plain
	-- IN (subquery) the planner may re-run the LIMIT ... SKIP LOCKED subquery
	-- per outer row and so claim more than max_rows.
	RETURN QUERY
		WITH picked AS MATERIALIZED (
			SELECT p.recharge_id FROM credits.recharges p
			 WHERE p.status = 'pending'
				OR (p.status = 'processing' AND p.lease_expires_at < pg_catalog.now())
			 ORDER BY p.recharge_id
			 LIMIT max_rows
			 FOR UPDATE SKIP LOCKED)
		UPDATE credits.recharges AS r
		   SET status = 'processing',
			   claimed_at = pg_catalog.now(),
			   claimed_credits = coalesce(r.claimed_credits, r.credits),
			   claim_token = pg_catalog.gen_random_uuid(),
			   lease_expires_at = pg_catalog.now() + lease,
			   claim_count = r.claim_count + 1
		  FROM picked
		 WHERE r.recharge_id = picked.recharge_id
		RETURNING r.*;
END
$$;
COMMENT ON FUNCTION credits.claim_recharges(integer) IS
	'Moves up to max_rows recharges, oldest first, to processing and returns them, each with a new claim_token and a lease of credits.claim_lease: pending ones, and processing ones whose lease has expired. Concurrent workers get disjoint rows. A claimed recharge''s amount never changes.';

-- The payment reference rules: what a worker may record as a charge's id.
-- White space is an explicit list (ASCII and Unicode spaces, zero-width
-- space, BOM) so that the rule does not depend on the database's collation;
-- control characters are refused anywhere.
CREATE FUNCTION credits._check_payment_ref(p_payment_ref text)
	RETURNS void
	LANGUAGE plpgsql STABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	blank constant text :=
		'[ \t\n\v\f\r\u0085\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]';
BEGIN
	IF p_payment_ref IS NULL THEN
		RAISE EXCEPTION 'payment_ref must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF pg_catalog.octet_length(p_payment_ref) > 255
	   OR p_payment_ref OPERATOR(pg_catalog.~) ('^' || blank || '*$')
	   OR p_payment_ref OPERATOR(pg_catalog.~) ('^' || blank || '|' || blank || '$')
	   OR p_payment_ref OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f]' THEN
		RAISE EXCEPTION 'invalid payment reference'
			USING ERRCODE = 'MC021',
				  DETAIL = format('The reference is %s bytes long (%L); a payment reference is 1 to 255 bytes, with no control characters and no leading or trailing white space.',
								  pg_catalog.octet_length(p_payment_ref),
								  CASE WHEN pg_catalog.octet_length(p_payment_ref) > 64
									   THEN pg_catalog.left(p_payment_ref, 64) || '...'
									   ELSE p_payment_ref END),
				  HINT = 'Record the provider''s charge id exactly as it gave it.';
	END IF;
END
$$;

-- Settlement, in C (src/settle.c).  The 2-argument forms check no claim
-- token: for operators.  The token forms are the workers'.
CREATE OR REPLACE FUNCTION credits.complete_recharge(recharge_id bigint, payment_ref text)
	RETURNS credits.recharges
	LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'credits_complete_recharge';
COMMENT ON FUNCTION credits.complete_recharge(bigint, text) IS
	'The card was charged: credits the account (a "recharge" ledger row), marks the recharge succeeded and its awaiting batches ready. Idempotent for the same payment_ref. Checks no claim token: for operators (it also settles a recharge that was released); workers use the 3-argument form.';

CREATE FUNCTION credits.complete_recharge(recharge_id bigint, payment_ref text, claim_token uuid)
	RETURNS credits.recharges
	LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'credits_complete_recharge_token';
COMMENT ON FUNCTION credits.complete_recharge(bigint, text, uuid) IS
	'As complete_recharge(bigint, text), for the worker holding the claim: refused (MC020, nothing changed) when claim_token is not the recharge''s current claim. Idempotent for the same payment_ref whatever the token.';

CREATE OR REPLACE FUNCTION credits.fail_recharge(recharge_id bigint, reason text)
	RETURNS credits.recharges
	LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'credits_fail_recharge';
COMMENT ON FUNCTION credits.fail_recharge(bigint, text) IS
	'The charge failed: marks the recharge failed, fails its awaiting batches and refunds each one''s cost; counts a payment failure. Idempotent for the same reason. Checks no claim token: for operators (it also settles a recharge that was released); workers use the 3-argument form.';

CREATE FUNCTION credits.fail_recharge(recharge_id bigint, reason text, claim_token uuid)
	RETURNS credits.recharges
	LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'credits_fail_recharge_token';
COMMENT ON FUNCTION credits.fail_recharge(bigint, text, uuid) IS
	'As fail_recharge(bigint, text), for the worker holding the claim: refused (MC020, nothing changed) when claim_token is not the recharge''s current claim.';

CREATE FUNCTION credits.release_recharge(recharge_id bigint)
	RETURNS credits.recharges
	LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'credits_release_recharge';
COMMENT ON FUNCTION credits.release_recharge(bigint) IS
	'For operators: hands a processing recharge back to pending, whoever holds it, without counting a payment failure. Its amount never changes again, and it is never cancelled automatically: its card may have been charged, so the next worker retries with the same recharge_id. A pending recharge is returned unchanged.';

CREATE FUNCTION credits.release_recharge(recharge_id bigint, claim_token uuid)
	RETURNS credits.recharges
	LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'credits_release_recharge_token';
COMMENT ON FUNCTION credits.release_recharge(bigint, uuid) IS
	'For the worker holding the claim (its charge command could not run): as release_recharge(bigint), refused (MC020, nothing changed) when claim_token is not the current claim.';

--------------------------------------------------------------------------------
-- Audit
--------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION credits.verify()
	RETURNS TABLE (account_id bigint, problem text)
	LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
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
	-- 5. every batch has exactly one debit of its cost
	SELECT b.account_id,
		   format('batch %s has %s debit rows totalling %s for cost %s',
				  b.batch_id, count(l.entry_id), coalesce(-sum(l.delta), 0), b.cost)
	  FROM credits.send_batches b
	  LEFT JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	 GROUP BY b.batch_id, b.account_id, b.cost
	HAVING count(l.entry_id) <> 1 OR -sum(l.delta) <> b.cost
	UNION ALL
	-- 6. a refund of the cost exactly when the batch failed
	SELECT b.account_id,
		   format('batch %s is %s with %s refund rows totalling %s',
				  b.batch_id, b.status, count(l.entry_id), coalesce(sum(l.delta), 0))
	  FROM credits.send_batches b
	  LEFT JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'refund'
	 GROUP BY b.batch_id, b.account_id, b.cost, b.status
	HAVING (b.status = 'failed') <> (count(l.entry_id) = 1) OR count(l.entry_id) > 1
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
	-- 11. every ledger row names a batch or recharge that exists (a partial
	-- restore, or rows removed behind the extension's back)
	SELECT l.account_id,
		   format('ledger entry %s (%s) names %s that does not exist', l.entry_id, l.kind,
				  CASE WHEN l.kind IN ('debit', 'refund') THEN 'batch ' || l.batch_id
					   ELSE 'recharge ' || l.recharge_id END)
	  FROM credits.ledger l
	 WHERE (l.kind IN ('debit', 'refund')
			AND NOT EXISTS (SELECT FROM credits.send_batches b WHERE b.batch_id = l.batch_id))
		OR (l.kind = 'recharge'
			AND NOT EXISTS (SELECT FROM credits.recharges r WHERE r.recharge_id = l.recharge_id))
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
	 WHERE l.kind IN ('debit', 'refund') AND l.account_id <> b.account_id
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
	-- 12. every account with ledger rows exists
	SELECT l.account_id, 'ledger rows for an account that does not exist'
	  FROM credits.ledger l
	 WHERE NOT EXISTS (SELECT FROM credits.accounts a WHERE a.account_id = l.account_id)
	 GROUP BY l.account_id
	ORDER BY 1, 2
$$;
COMMENT ON FUNCTION credits.verify() IS
	'Checks every invariant of the extension; returns one row per problem, none on a healthy database.';


--------------------------------------------------------------------------------
-- Reports: security barriers, and the operators' queue view
--------------------------------------------------------------------------------

-- A reporting role's function in a WHERE clause must not see rows the view
-- filters out (a "leaky" function pushed below the view's own conditions).
ALTER VIEW credits.account_overview SET (security_barrier = true);
ALTER VIEW credits.recharge_history SET (security_barrier = true);
ALTER VIEW credits.usage_daily SET (security_barrier = true);
ALTER VIEW credits.usage_monthly SET (security_barrier = true);

CREATE VIEW credits.recharge_queue WITH (security_barrier = true) AS
SELECT count(*) FILTER (WHERE r.status = 'pending') AS pending,
	   pg_catalog.now() - min(r.created_at) FILTER (WHERE r.status = 'pending') AS oldest_pending_age,
	   count(*) FILTER (WHERE r.status = 'processing') AS processing,
	   pg_catalog.now() - min(r.claimed_at) FILTER (WHERE r.status = 'processing') AS oldest_processing_age,
	   min(r.lease_expires_at) FILTER (WHERE r.status = 'processing'
										AND r.lease_expires_at >= pg_catalog.now()) AS next_lease_expiry,
	   count(*) FILTER (WHERE r.status = 'processing'
						  AND r.lease_expires_at < pg_catalog.now()) AS expired_leases,
	   count(*) FILTER (WHERE r.status = 'processing' AND r.lease_expires_at IS NULL) AS processing_without_lease,
	   (SELECT count(*) FROM credits.recharges f
		 WHERE f.status = 'failed' AND f.settled_at >= pg_catalog.now() - interval '1 hour') AS failed_last_hour,
	   (SELECT count(*) FROM credits.recharges s
		 WHERE s.status = 'succeeded' AND s.settled_at >= pg_catalog.now() - interval '1 hour') AS succeeded_last_hour,
	   (SELECT count(*) FROM credits.auto_recharge p
		 WHERE NOT p.enabled AND p.disabled_reason = 'payment_failed'
		   AND p.disabled_at >= date_trunc('day', pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
		 AS switched_off_today
  FROM credits.recharges r
 WHERE r.status IN ('pending', 'processing');
COMMENT ON VIEW credits.recharge_queue IS
	'What an operator looks at first, in one row: pending recharges and the oldest one''s age, processing ones and the oldest claim''s age, the next lease to expire, expired leases (claimable again), processing ones claimed before 0.1.1 (no lease), failures and successes in the last hour, and accounts whose auto-recharge turned itself off after payment failures since midnight UTC.';

--------------------------------------------------------------------------------
-- Privileges: nothing new is open to PUBLIC.
--------------------------------------------------------------------------------

REVOKE ALL ON credits.recharge_queue FROM PUBLIC;
REVOKE ALL ON FUNCTION credits._claim_lease_seconds(), credits._check_payment_ref(text),
	credits._open_account(bigint, bigint), credits._credit(bigint, bigint, text),
	credits.complete_recharge(bigint, text, uuid), credits.fail_recharge(bigint, text, uuid),
	credits.release_recharge(bigint), credits.release_recharge(bigint, uuid) FROM PUBLIC;

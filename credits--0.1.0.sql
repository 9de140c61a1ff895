/* credits--0.1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION credits" to load this file. \quit

/*
 * Design in one paragraph.  Every row that reaches credits.send_batches is
 * priced and debited by a C BEFORE INSERT trigger (credits_debit_batch), which
 * locks the account row, applies the auto-recharge rule and writes the ledger
 * and recharge rows in the same transaction.  Balances are therefore only ever
 * changed by that trigger and by the SECURITY DEFINER functions below, each of
 * which takes the account row lock first (then recharge rows), so all writers
 * of one account are serialized in one order and cannot deadlock one another.
 * accounts.in_flight is the sum of the account's pending and processing
 * recharges, kept under the same lock so the trigger need not add them up.
 *
 * Nothing here is granted to PUBLIC: see the README's Privileges section for
 * the GRANTs an application, a payment worker, a policy admin and reporting
 * need.
 */

--------------------------------------------------------------------------------
-- Tables
--------------------------------------------------------------------------------

CREATE TABLE credits.accounts (
	account_id	bigint PRIMARY KEY,
	balance		bigint NOT NULL DEFAULT 0,
	in_flight	bigint NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE credits.accounts IS
	'One row per customer account. Changed only by the extension: every balance change writes one credits.ledger row.';
COMMENT ON COLUMN credits.accounts.balance IS
	'Credits on hand; negative only while batches await a recharge that covers them.';
COMMENT ON COLUMN credits.accounts.in_flight IS
	'Sum of the credits of this account''s pending and processing recharges (kept by the extension).';

CREATE TABLE credits.prices (
	channel		text PRIMARY KEY,
	credits_per_message integer NOT NULL CHECK (credits_per_message > 0)
);
COMMENT ON TABLE credits.prices IS
	'Price list: credits debited per message, by channel. Managed by DBAs; read by the debit trigger at insert time.';
INSERT INTO credits.prices (channel, credits_per_message) VALUES ('email', 1);

CREATE TABLE credits.send_batches (
	batch_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	account_id	bigint NOT NULL,
	messages	integer NOT NULL,
	channel		text NOT NULL DEFAULT 'email',
	idempotency_key text,
	cost		bigint NOT NULL,
	status		text NOT NULL
		CHECK (status IN ('ready', 'awaiting_credits', 'failed')),
	recharge_id	bigint,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	UNIQUE (account_id, idempotency_key)
);
COMMENT ON TABLE credits.send_batches IS
	'Send batches. Every inserted row is priced and debited by the C trigger credits_debit; rows cannot be deleted and what was debited cannot be changed.';
COMMENT ON COLUMN credits.send_batches.cost IS
	'messages x credits_per_message of the channel, set by the extension (an application may not set it).';
COMMENT ON COLUMN credits.send_batches.status IS
	'ready: paid; awaiting_credits: debit took the balance below zero and recharge_id covers it; failed: that recharge failed or was cancelled and the cost was refunded.';
COMMENT ON COLUMN credits.send_batches.recharge_id IS
	'For a batch that took the balance below zero: the recharge that covers it.';
COMMENT ON COLUMN credits.send_batches.idempotency_key IS
	'Optional client key; INSERT ... ON CONFLICT (account_id, idempotency_key) DO NOTHING never debits twice.';
-- Settlement finds a recharge's awaiting batches, and an account's newest
-- awaiting batch; ready batches stay out of both indexes.
CREATE INDEX send_batches_awaiting_idx ON credits.send_batches (recharge_id)
	WHERE status = 'awaiting_credits';
CREATE INDEX send_batches_awaiting_account_idx ON credits.send_batches (account_id, batch_id)
	WHERE status = 'awaiting_credits';

CREATE TABLE credits.auto_recharge (
	account_id	bigint PRIMARY KEY REFERENCES credits.accounts,
	enabled		boolean NOT NULL,
	min_balance	bigint NOT NULL CHECK (min_balance >= 0),
	max_credits	bigint NOT NULL CHECK (max_credits > 0),
	target_balance bigint CHECK (target_balance >= min_balance),
	monthly_limit bigint CHECK (monthly_limit > 0),
	payment_failures integer NOT NULL DEFAULT 0,
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	disabled_at	timestamptz,
	disabled_reason text CHECK (disabled_reason IN ('disabled_by_user', 'payment_failed'))
);
COMMENT ON TABLE credits.auto_recharge IS
	'Automatic recharge policy per account. Changed only through credits.enable_auto_recharge and credits.disable_auto_recharge (and the payment-failure rule).';
COMMENT ON COLUMN credits.auto_recharge.min_balance IS
	'After a debit, balance + in-flight recharges is topped up to at least this.';
COMMENT ON COLUMN credits.auto_recharge.max_credits IS
	'The most credits one recharge may buy.';
COMMENT ON COLUMN credits.auto_recharge.target_balance IS
	'When a recharge is needed, buy enough to bring balance + in-flight up to this (within max_credits and the monthly limit), not just to min_balance. NULL: buy the need only.';
COMMENT ON COLUMN credits.auto_recharge.monthly_limit IS
	'Hard cap: pending + processing + succeeded recharges opened in one calendar month (UTC) never exceed it. NULL: no cap.';
COMMENT ON COLUMN credits.auto_recharge.payment_failures IS
	'Consecutive failed recharges; reset by a success. At credits.max_payment_failures auto-recharge turns itself off.';
COMMENT ON COLUMN credits.auto_recharge.disabled_reason IS
	'Why auto-recharge is off: disabled_by_user, or payment_failed (turned off by the payment-failure rule).';

CREATE TABLE credits.recharges (
	recharge_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	account_id	bigint NOT NULL REFERENCES credits.accounts,
	credits		bigint NOT NULL CHECK (credits > 0),
	status		text NOT NULL DEFAULT 'pending'
		CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'cancelled')),
	reason		text NOT NULL CHECK (reason IN ('shortfall', 'threshold')),
	batch_id	bigint,
	balance_seen bigint,
	need		bigint NOT NULL CHECK (need > 0),
	max_credits	bigint NOT NULL,
	claimed_credits bigint,
	payment_ref	text UNIQUE,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	claimed_at	timestamptz,
	settled_at	timestamptz,
	failure_reason text,
	CHECK (credits <= max_credits)
);
COMMENT ON TABLE credits.recharges IS
	'Recharges opened by auto-recharge: pending until a payment worker claims it (processing), then succeeded, failed or cancelled.';
COMMENT ON COLUMN credits.recharges.batch_id IS 'The batch that opened this recharge.';
COMMENT ON COLUMN credits.recharges.balance_seen IS
	'The balance that batch found before its debit.';
COMMENT ON COLUMN credits.recharges.need IS
	'What that batch needed (min_balance - available); credits can be more (a target top-up, or needs added by later batches).';
COMMENT ON COLUMN credits.recharges.max_credits IS
	'The policy''s max_credits when the recharge was opened or last grown: credits never exceed it.';
COMMENT ON COLUMN credits.recharges.claimed_credits IS
	'credits as the worker read them when it claimed the recharge; verify() checks they never changed since.';
COMMENT ON COLUMN credits.recharges.payment_ref IS
	'The payment reference given to credits.complete_recharge; unique.';
-- The trigger's "pending or newest in-flight recharge of this account" look-ups.
CREATE INDEX recharges_in_flight_idx ON credits.recharges (account_id, recharge_id)
	WHERE status IN ('pending', 'processing');
-- The monthly limit sums an account's recharges of the month.
CREATE INDEX recharges_account_month_idx ON credits.recharges (account_id, created_at);
-- claim_recharges takes the oldest pending recharges first.
CREATE INDEX recharges_pending_idx ON credits.recharges (recharge_id)
	WHERE status = 'pending';

CREATE TABLE credits.ledger (
	entry_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	account_id	bigint NOT NULL,
	delta		bigint NOT NULL,
	balance_after bigint NOT NULL,
	kind		text NOT NULL
		CHECK (kind IN ('open', 'grant', 'debit', 'recharge', 'refund')),
	batch_id	bigint,
	recharge_id	bigint,
	note		text,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE credits.ledger IS
	'Append-only journal: one row per balance change. For every account, balance = sum(delta).';
CREATE INDEX ledger_account_idx ON credits.ledger (account_id, entry_id);
-- A batch is refunded at most once; a recharge credits once.  (One debit per
-- batch is not an index: it would cost a btree insert on every debit, the
-- hottest path there is; the trigger writes exactly one, and verify() check 5
-- proves it.)
CREATE UNIQUE INDEX ledger_one_refund_per_batch ON credits.ledger (batch_id)
	WHERE kind = 'refund';
CREATE UNIQUE INDEX ledger_one_credit_per_recharge ON credits.ledger (recharge_id)
	WHERE kind = 'recharge';

-- pg_dump keeps the data of extension tables only when told to.
SELECT pg_catalog.pg_extension_config_dump('credits.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('credits.prices', 'WHERE channel <> ''email''');
SELECT pg_catalog.pg_extension_config_dump('credits.send_batches', '');
SELECT pg_catalog.pg_extension_config_dump('credits.auto_recharge', '');
SELECT pg_catalog.pg_extension_config_dump('credits.recharges', '');
SELECT pg_catalog.pg_extension_config_dump('credits.ledger', '');
SELECT pg_catalog.pg_extension_config_dump('credits.send_batches_batch_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.recharges_recharge_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.ledger_entry_id_seq', '');

--------------------------------------------------------------------------------
-- Triggers (C)
--------------------------------------------------------------------------------

CREATE FUNCTION credits.debit_batch() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_debit_batch';
COMMENT ON FUNCTION credits.debit_batch() IS
	'BEFORE INSERT row trigger on send_batches: prices and debits the batch, opens or grows a pending recharge.';

CREATE FUNCTION credits.guard_batch() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_guard_batch';
COMMENT ON FUNCTION credits.guard_batch() IS
	'Refuses UPDATE of debited columns, status changes outside the extension, DELETE and TRUNCATE on send_batches.';

CREATE FUNCTION credits.guard_ledger() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_guard_ledger';
COMMENT ON FUNCTION credits.guard_ledger() IS
	'Keeps credits.ledger append-only: refuses UPDATE, DELETE and TRUNCATE for every role.';

CREATE FUNCTION credits.flush_debits() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_flush_debits';
COMMENT ON FUNCTION credits.flush_debits() IS
	'AFTER INSERT statement trigger on send_batches: writes the account rows and ledger rows of the statement''s debits in bulk.';

CREATE TRIGGER credits_debit BEFORE INSERT ON credits.send_batches
	FOR EACH ROW EXECUTE FUNCTION credits.debit_batch();
CREATE TRIGGER credits_flush AFTER INSERT ON credits.send_batches
	FOR EACH STATEMENT EXECUTE FUNCTION credits.flush_debits();
CREATE TRIGGER credits_guard BEFORE UPDATE OR DELETE ON credits.send_batches
	FOR EACH ROW EXECUTE FUNCTION credits.guard_batch();
CREATE TRIGGER credits_guard_truncate BEFORE TRUNCATE ON credits.send_batches
	FOR EACH STATEMENT EXECUTE FUNCTION credits.guard_batch();
CREATE TRIGGER credits_guard BEFORE UPDATE OR DELETE ON credits.ledger
	FOR EACH ROW EXECUTE FUNCTION credits.guard_ledger();
CREATE TRIGGER credits_guard_truncate BEFORE TRUNCATE ON credits.ledger
	FOR EACH STATEMENT EXECUTE FUNCTION credits.guard_ledger();

--------------------------------------------------------------------------------
-- Internal helpers (not for direct use; EXECUTE revoked from PUBLIC)
--------------------------------------------------------------------------------

CREATE FUNCTION credits._settle_batches(recharge_id bigint, outcome text)
	RETURNS integer
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'credits_settle_batches';
COMMENT ON FUNCTION credits._settle_batches(bigint, text) IS
	'Internal: moves the awaiting batches of a settled recharge to ready, or to failed with one refund ledger row each. The caller holds the account lock.';

-- The extension's settings, read through C so that reading them loads the
-- library (and so defines the GUCs) first.
CREATE FUNCTION credits._max_payment_failures() RETURNS integer
	LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'credits_max_payment_failures';
CREATE FUNCTION credits._recharge_expiry_seconds() RETURNS integer
	LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'credits_recharge_expiry_seconds';

-- Writes the current statement's pending debits (debit_state.c) so that the
-- account row is up to date before a function locks it.
CREATE FUNCTION credits._flush_debits(account_id bigint) RETURNS void
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'credits_flush_pending';

-- Locks the account row (the first lock every writer takes) and returns it.
CREATE FUNCTION credits._lock_account(p_account_id bigint)
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
			USING ERRCODE = 'CR003',
				  HINT = 'Open it first with credits.open_account().';
	END IF;
	RETURN acct;
END
$$;

-- Writes one ledger row and the new balance; the caller holds the account lock.
CREATE FUNCTION credits._post(p_acct credits.accounts, p_delta bigint, p_kind text,
							  p_batch_id bigint, p_recharge_id bigint, p_note text,
							  p_in_flight_delta bigint DEFAULT 0)
	RETURNS bigint
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	new_balance bigint;
BEGIN
	BEGIN
		new_balance := p_acct.balance + p_delta;
	EXCEPTION WHEN numeric_value_out_of_range THEN
		RAISE EXCEPTION 'balance of account % would overflow', p_acct.account_id
			USING ERRCODE = 'CR012',
				  DETAIL = format('The balance is %s and the change is %s; a balance must fit in a bigint.',
								  p_acct.balance, p_delta);
	END;
	UPDATE credits.accounts
		SET balance = new_balance, in_flight = in_flight + p_in_flight_delta
		WHERE account_id = p_acct.account_id;
	INSERT INTO credits.ledger (account_id, delta, balance_after, kind, batch_id, recharge_id, note)
		VALUES (p_acct.account_id, p_delta, new_balance, p_kind, p_batch_id, p_recharge_id, p_note);
	RETURN new_balance;
END
$$;

-- Locks a recharge (after its account) for settlement and returns it.
CREATE FUNCTION credits._lock_recharge(p_recharge_id bigint)
	RETURNS credits.recharges
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	acct_id bigint;
	r credits.recharges;
BEGIN
	IF p_recharge_id IS NULL THEN
		RAISE EXCEPTION 'recharge_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- account_id never changes, so reading it unlocked is safe; then lock in
	-- the global order: account first, recharge second.
	SELECT account_id INTO acct_id FROM credits.recharges WHERE recharge_id = p_recharge_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'recharge % does not exist', p_recharge_id
			USING ERRCODE = 'CR005';
	END IF;
	PERFORM credits._lock_account(acct_id);
	SELECT * INTO r FROM credits.recharges WHERE recharge_id = p_recharge_id FOR UPDATE;
	RETURN r;
END
$$;

--------------------------------------------------------------------------------
-- Accounts and credits
--------------------------------------------------------------------------------

CREATE FUNCTION credits.open_account(account_id bigint, initial_credits bigint DEFAULT 0)
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
			USING ERRCODE = 'CR014',
				  DETAIL = format('initial_credits is %s.', initial_credits);
	END IF;
	INSERT INTO credits.accounts AS a (account_id, balance)
		VALUES (open_account.account_id, initial_credits)
		ON CONFLICT DO NOTHING
		RETURNING a.* INTO acct;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'account % already exists', open_account.account_id
			USING ERRCODE = 'CR010',
				  HINT = 'Use credits.add_credits() to add credits to an existing account.';
	END IF;
	INSERT INTO credits.ledger (account_id, delta, balance_after, kind)
		VALUES (acct.account_id, initial_credits, initial_credits, 'open');
	RETURN acct;
END
$$;
COMMENT ON FUNCTION credits.open_account(bigint, bigint) IS
	'Opens an account with an initial balance (an "open" ledger row). Fails with CR010 if it exists.';

CREATE FUNCTION credits.add_credits(account_id bigint, credits bigint, note text DEFAULT NULL)
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
			USING ERRCODE = 'CR014',
				  DETAIL = format('credits is %s.', add_credits.credits);
	END IF;
	acct := credits._lock_account(add_credits.account_id);
	RETURN credits._post(acct, add_credits.credits, 'grant', NULL, NULL, note);
END
$$;
COMMENT ON FUNCTION credits.add_credits(bigint, bigint, text) IS
	'A manual purchase or grant: adds credits (a "grant" ledger row with the note) and returns the new balance.';

--------------------------------------------------------------------------------
-- Auto-recharge policy
--------------------------------------------------------------------------------

CREATE FUNCTION credits.enable_auto_recharge(account_id bigint, min_balance bigint, max_credits bigint,
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
	IF min_balance < 0 OR max_credits <= 0
	   OR target_balance < min_balance OR monthly_limit <= 0 THEN
		RAISE EXCEPTION 'invalid auto-recharge policy'
			USING ERRCODE = 'CR013',
				  DETAIL = format('min_balance is %s, max_credits %s, target_balance %s, monthly_limit %s.',
								  min_balance, max_credits,
								  coalesce(target_balance::text, 'null'), coalesce(monthly_limit::text, 'null')),
				  HINT = 'min_balance must be zero or more, max_credits more than zero, target_balance (if set) at least min_balance, monthly_limit (if set) more than zero.';
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
-- account lock and has locked the recharge row.
CREATE FUNCTION credits._cancel_recharge(p_recharge_id bigint, p_reason text)
	RETURNS void
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r credits.recharges;
BEGIN
	UPDATE credits.recharges AS rc
		SET status = 'cancelled',
			settled_at = pg_catalog.now(),
			failure_reason = p_reason
		WHERE rc.recharge_id = p_recharge_id AND rc.status = 'pending'
		RETURNING rc.* INTO r;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	UPDATE credits.accounts SET in_flight = in_flight - r.credits
		WHERE account_id = r.account_id;
	PERFORM credits._settle_batches(r.recharge_id, 'failed');
END
$$;

-- Turns auto-recharge off for a reason and cancels what no worker has
-- claimed; the caller holds the account lock.  Processing recharges finish.
CREATE FUNCTION credits._turn_off(p_account_id bigint, p_reason text)
	RETURNS credits.auto_recharge
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	policy credits.auto_recharge;
	rid bigint;
BEGIN
	UPDATE credits.auto_recharge AS p
		SET enabled = false,
			updated_at = pg_catalog.now(),
			disabled_at = pg_catalog.now(),
			disabled_reason = p_reason
		WHERE p.account_id = p_account_id AND p.enabled
		RETURNING p.* INTO policy;
	IF NOT FOUND THEN
		-- Already off (or never set): nothing to cancel.
		SELECT * INTO policy FROM credits.auto_recharge p WHERE p.account_id = p_account_id;
		RETURN policy;
	END IF;
	FOR rid IN
		SELECT rc.recharge_id FROM credits.recharges rc
		 WHERE rc.account_id = p_account_id AND rc.status = 'pending'
		 ORDER BY rc.recharge_id
		   FOR UPDATE
	LOOP
		PERFORM credits._cancel_recharge(rid,
			CASE p_reason WHEN 'payment_failed' THEN 'auto-recharge turned off after payment failures'
						  ELSE 'auto-recharge disabled' END);
	END LOOP;
	RETURN policy;
END
$$;

CREATE FUNCTION credits.disable_auto_recharge(account_id bigint)
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
	'Turns auto-recharge off, cancels the account''s pending recharges and fails their awaiting batches with refunds. Processing recharges are left to finish.';

CREATE FUNCTION credits.expire_recharges()
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
		 WHERE rc.status = 'pending' AND rc.created_at < pg_catalog.now() - expiry
		 ORDER BY rc.account_id, rc.recharge_id
	LOOP
		-- Lock in the global order, then look again: a worker may have
		-- claimed it meanwhile.
		PERFORM credits._lock_account(c.account_id);
		PERFORM FROM credits.recharges rc
		  WHERE rc.recharge_id = c.recharge_id AND rc.status = 'pending'
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
	'Cancels pending recharges older than credits.recharge_expiry and fails their batches with refunds; returns how many. Run it periodically (cron, pg_cron).';

--------------------------------------------------------------------------------
-- Payment workers
--------------------------------------------------------------------------------

CREATE FUNCTION credits.claim_recharges(max_rows integer DEFAULT 1)
	RETURNS SETOF credits.recharges
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	ROWS 10
AS $$
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
	-- SKIP LOCKED: two workers never get the same row, and a recharge that a
	-- batch is growing right now (row locked) is simply left for later.
	-- The picked ids are MATERIALIZED: as a plain IN (subquery) the planner
	-- may re-run the LIMIT ... SKIP LOCKED subquery per outer row and so
	-- claim more than max_rows.
	RETURN QUERY
		WITH picked AS MATERIALIZED (
			SELECT p.recharge_id FROM credits.recharges p
			 WHERE p.status = 'pending'
			 ORDER BY p.recharge_id
			 LIMIT max_rows
			 FOR UPDATE SKIP LOCKED)
		UPDATE credits.recharges AS r
		   SET status = 'processing', claimed_at = pg_catalog.now(), claimed_credits = r.credits
		  FROM picked
		 WHERE r.recharge_id = picked.recharge_id
		RETURNING r.*;
END
$$;
COMMENT ON FUNCTION credits.claim_recharges(integer) IS
	'Moves up to max_rows pending recharges, oldest first, to processing and returns them. Concurrent workers get disjoint rows. A claimed recharge''s amount never changes.';

CREATE FUNCTION credits.complete_recharge(recharge_id bigint, payment_ref text)
	RETURNS credits.recharges
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r credits.recharges;
	acct credits.accounts;
	other bigint;
BEGIN
	IF payment_ref IS NULL THEN
		RAISE EXCEPTION 'payment_ref must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF payment_ref = '' THEN
		RAISE EXCEPTION 'payment_ref must not be empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	r := credits._lock_recharge(complete_recharge.recharge_id);
	IF r.status = 'succeeded' AND r.payment_ref = complete_recharge.payment_ref THEN
		RETURN r;				-- a retry of the same completion: nothing to do
	ELSIF r.status IN ('succeeded', 'failed', 'cancelled') THEN
		RAISE EXCEPTION 'recharge % is already settled', r.recharge_id
			USING ERRCODE = 'CR006',
				  DETAIL = format('Its status is %s%s.', r.status,
								  CASE WHEN r.payment_ref IS NOT NULL
									   THEN format(' with payment_ref %L', r.payment_ref) ELSE '' END);
	ELSIF r.status = 'pending' THEN
		RAISE EXCEPTION 'recharge % has not been claimed', r.recharge_id
			USING ERRCODE = 'CR015',
				  HINT = 'A payment worker claims it with credits.claim_recharges() before charging.';
	END IF;
	SELECT rc.recharge_id INTO other FROM credits.recharges rc
		WHERE rc.payment_ref = complete_recharge.payment_ref;
	IF FOUND THEN
		RAISE EXCEPTION 'payment_ref % is already used by recharge %', complete_recharge.payment_ref, other
			USING ERRCODE = 'CR017';
	END IF;
	SELECT * INTO acct FROM credits.accounts a WHERE a.account_id = r.account_id;
	UPDATE credits.recharges AS rc
		SET status = 'succeeded',
			payment_ref = complete_recharge.payment_ref,
			settled_at = pg_catalog.now()
		WHERE rc.recharge_id = r.recharge_id
		RETURNING rc.* INTO r;
	PERFORM credits._post(acct, r.credits, 'recharge', NULL, r.recharge_id, NULL, -r.credits);
	PERFORM credits._settle_batches(r.recharge_id, 'ready');
	-- A success ends a run of payment failures.
	UPDATE credits.auto_recharge AS p SET payment_failures = 0
		WHERE p.account_id = r.account_id AND p.payment_failures <> 0;
	RETURN r;
END
$$;
COMMENT ON FUNCTION credits.complete_recharge(bigint, text) IS
	'The card was charged: credits the account (a "recharge" ledger row), marks the recharge succeeded and its awaiting batches ready. Idempotent for the same payment_ref.';

CREATE FUNCTION credits.fail_recharge(recharge_id bigint, reason text)
	RETURNS credits.recharges
	LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r credits.recharges;
	failures integer;
BEGIN
	IF reason IS NULL THEN
		RAISE EXCEPTION 'reason must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	r := credits._lock_recharge(fail_recharge.recharge_id);
	IF r.status = 'failed' AND r.failure_reason = fail_recharge.reason THEN
		RETURN r;				-- a retry of the same failure: nothing to do
	ELSIF r.status IN ('succeeded', 'failed', 'cancelled') THEN
		RAISE EXCEPTION 'recharge % is already settled', r.recharge_id
			USING ERRCODE = 'CR006',
				  DETAIL = format('Its status is %s.', r.status);
	ELSIF r.status = 'pending' THEN
		RAISE EXCEPTION 'recharge % has not been claimed', r.recharge_id
			USING ERRCODE = 'CR015',
				  HINT = 'A payment worker claims it with credits.claim_recharges() before charging.';
	END IF;
	UPDATE credits.recharges AS rc
		SET status = 'failed',
			failure_reason = fail_recharge.reason,
			settled_at = pg_catalog.now()
		WHERE rc.recharge_id = r.recharge_id
		RETURNING rc.* INTO r;
	UPDATE credits.accounts SET in_flight = in_flight - r.credits
		WHERE account_id = r.account_id;
	PERFORM credits._settle_batches(r.recharge_id, 'failed');
	-- After credits.max_payment_failures failures in a row, auto-recharge
	-- turns itself off (and stays off until enable_auto_recharge is called):
	-- no retry storms on a dead card.
	UPDATE credits.auto_recharge AS p SET payment_failures = p.payment_failures + 1
		WHERE p.account_id = r.account_id
		RETURNING p.payment_failures INTO failures;
	IF failures >= credits._max_payment_failures()
	   AND (SELECT p.enabled FROM credits.auto_recharge p WHERE p.account_id = r.account_id) THEN
		PERFORM credits._turn_off(r.account_id, 'payment_failed');
		PERFORM pg_catalog.pg_notify('credits_auto_recharge_disabled', r.account_id::text);
	END IF;
	RETURN r;
END
$$;
COMMENT ON FUNCTION credits.fail_recharge(bigint, text) IS
	'The charge failed: marks the recharge failed, fails its awaiting batches and refunds each one''s cost. Idempotent for the same reason.';

--------------------------------------------------------------------------------
-- Audit
--------------------------------------------------------------------------------

CREATE FUNCTION credits.verify()
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
-- Reports: plain views; a reporting role needs SELECT on them and nothing
-- else (views run with their owner's rights).  Days and months are UTC.
--------------------------------------------------------------------------------

CREATE VIEW credits.account_overview AS
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
	   p.disabled_reason
  FROM credits.accounts a
  LEFT JOIN credits.auto_recharge p ON p.account_id = a.account_id
  LEFT JOIN LATERAL (
	SELECT sum(r.credits) FILTER (WHERE r.status = 'succeeded') AS bought,
		   sum(r.credits) AS committed
	  FROM credits.recharges r
	 WHERE r.account_id = a.account_id
	   AND r.status IN ('pending', 'processing', 'succeeded')
	   AND r.created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  ) m ON true;
COMMENT ON VIEW credits.account_overview IS
	'One row per account: balance, in-flight recharges, auto-recharge settings and state (and why it is off), and this month''s (UTC) recharges against the monthly limit. committed_this_month counts pending + processing + succeeded, as the limit does; bought_this_month only succeeded.';

CREATE VIEW credits.recharge_history AS
SELECT r.recharge_id,
	   r.account_id,
	   r.status,
	   r.reason,
	   r.batch_id,
	   b.messages AS batch_messages,
	   b.channel AS batch_channel,
	   b.cost AS batch_cost,
	   r.balance_seen,
	   r.need,
	   r.credits,
	   r.credits - r.need AS beyond_need,
	   r.max_credits,
	   (SELECT count(*) FROM credits.send_batches ab WHERE ab.recharge_id = r.recharge_id) AS batches_covered,
	   r.payment_ref,
	   r.failure_reason,
	   r.created_at,
	   r.claimed_at,
	   r.settled_at,
	   r.claimed_at - r.created_at AS wait_for_worker,
	   r.settled_at - coalesce(r.claimed_at, r.created_at) AS time_to_settle
  FROM credits.recharges r
  LEFT JOIN credits.send_batches b ON b.batch_id = r.batch_id;
COMMENT ON VIEW credits.recharge_history IS
	'Every recharge explained: the batch that opened it (size, channel, cost), the balance it saw, its need, what was bought (beyond_need: target top-up and later batches'' needs), the cap, how many batches it covered, its outcome and timings.';

CREATE VIEW credits.usage_daily AS
WITH batches AS (
	SELECT b.account_id, b.channel,
		   (b.created_at AT TIME ZONE 'UTC')::date AS day,
		   count(*) AS batches,
		   count(*) FILTER (WHERE b.status = 'failed') AS failed_batches,
		   coalesce(sum(b.messages) FILTER (WHERE b.status <> 'failed'), 0) AS messages,
		   sum(b.cost) AS credits_debited,
		   coalesce(sum(b.cost) FILTER (WHERE b.status = 'failed'), 0) AS credits_refunded
	  FROM credits.send_batches b
	 GROUP BY 1, 2, 3),
bought AS (
	SELECT r.account_id, coalesce(b.channel, 'email') AS channel,
		   (r.settled_at AT TIME ZONE 'UTC')::date AS day,
		   sum(r.credits) AS credits_bought,
		   count(*) AS recharges
	  FROM credits.recharges r
	  LEFT JOIN credits.send_batches b ON b.batch_id = r.batch_id
	 WHERE r.status = 'succeeded'
	 GROUP BY 1, 2, 3)
SELECT day, account_id, channel,
	   coalesce(batches.batches, 0) AS batches,
	   coalesce(batches.failed_batches, 0) AS failed_batches,
	   coalesce(batches.messages, 0) AS messages,
	   coalesce(batches.credits_debited, 0) AS credits_debited,
	   coalesce(batches.credits_refunded, 0) AS credits_refunded,
	   coalesce(bought.recharges, 0) AS recharges,
	   coalesce(bought.credits_bought, 0) AS credits_bought
  FROM batches FULL JOIN bought USING (account_id, channel, day);
COMMENT ON VIEW credits.usage_daily IS
	'Per UTC day, account and channel: batches, messages sent (failed batches excluded), credits debited and refunded, and credits bought by auto-recharge (succeeded recharges on the day they settled, under the channel of the batch that opened them).';

CREATE VIEW credits.usage_monthly AS
SELECT date_trunc('month', day)::date AS month, account_id, channel,
	   sum(batches)::bigint AS batches,
	   sum(failed_batches)::bigint AS failed_batches,
	   sum(messages)::bigint AS messages,
	   sum(credits_debited)::bigint AS credits_debited,
	   sum(credits_refunded)::bigint AS credits_refunded,
	   sum(recharges)::bigint AS recharges,
	   sum(credits_bought)::bigint AS credits_bought
  FROM credits.usage_daily
 GROUP BY 1, 2, 3;
COMMENT ON VIEW credits.usage_monthly IS
	'credits.usage_daily summed per UTC calendar month.';

--------------------------------------------------------------------------------
-- Privileges: nothing that moves credits or changes policy is open to PUBLIC.
--------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA credits FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credits FROM PUBLIC;
-- Trigger functions are invoked by the trigger mechanism, not through EXECUTE
-- privilege; revoking it only stops direct calls.

/*-------------------------------------------------------------------------
 *
 * settle.c
 *	  Settling a recharge, wholly in C: complete, fail, cancel and release
 *	  it, and what happens to its batches (ready, or failed with one refund
 *	  each).
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/settle.c
 *
 * The SQL functions complete_recharge, fail_recharge and release_recharge
 * (2-argument forms for operators, claim-token forms for workers) and the
 * internal _cancel_recharge and _turn_off are these C functions; balance,
 * in_flight and ledger writes go through ledger.c, the one writer of
 * balances.  0.1.0's SQL still calls _settle_batches (batch statuses only)
 * from its PL/pgSQL functions; that entry point is kept for it.
 *
 * Locking, in the global order: the account row first (FOR NO KEY UPDATE,
 * after writing the current statement's pending debits of that account, as
 * every writer does), then the recharge row (FOR UPDATE).  A recharge's
 * account_id never changes, so reading it unlocked first is safe.
 * _cancel_recharge and _turn_off run under locks their caller holds.
 *
 * Batches that relied on a failed recharge.  Auto-recharge pools credits:
 * a batch that goes below zero is accepted when balance + in-flight
 * recharges stays at least min_balance, and it names one covering recharge,
 * but it may in truth be living on the spare credits of another in-flight
 * recharge (a threshold top-up, say).  So after refunding the failed
 * recharge's own batches, if balance + in_flight is still negative, the
 * account's newest awaiting batches are failed and refunded too, one by one,
 * until it is not.  That keeps "balance + in-flight recharges >= 0" true
 * whatever fails, so a batch that later turns ready was always paid for.
 *
 * This is the only code that changes a stored batch, so it raises
 * credits_settling_batches around its UPDATEs: the guard trigger
 * (batch_guard.c) refuses any status change made while the flag is down.
 * PG_FINALLY lowers it on error too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/async.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "credits.h"
#include "debit_state.h"
#include "direct_access.h"
#include "ledger.h"
#include "plan_cache.h"

bool		credits_settling_batches = false;

typedef struct SettledBatch
{
	int64		batch_id;
	int64		cost;
} SettledBatch;

/* A recharge as settlement reads it, under its row lock. */
typedef struct LockedRecharge
{
	int64		recharge_id;
	int64		account_id;
	int64		credits;
	char	   *status;
	char	   *payment_ref;	/* NULL when null */
	char	   *failure_reason; /* NULL when null */
	bool		has_token;
	pg_uuid_t	token;
	int32		claim_count;
	bool		claimed_before; /* claimed_credits is set */
} LockedRecharge;

static void LockRecharge(FunctionCallInfo fcinfo, LockedRecharge *r);
static void CheckClaim(const LockedRecharge *r, const pg_uuid_t *token);
static void RefuseSettled(const LockedRecharge *r, bool with_ref);
static void RefuseUnclaimed(const LockedRecharge *r);
static void CheckSettleable(const LockedRecharge *r, const pg_uuid_t *token, bool with_ref);
static Datum RechargeRow(int64 recharge_id);
static bool StatusIs(const LockedRecharge *r, const char *status);
static bool IsSettled(const LockedRecharge *r);
static int64 CancelRecharge(int64 recharge_id, const char *reason);
static void RepayAfterRefunds(int64 account_id);
static void TurnOff(int64 account_id, const char *reason);
static int	SettleBatches(int64 account_id, int64 recharge_id, bool refund);
static int64 FirstInt8(int col);
static void RefundBatch(int64 account_id, int64 recharge_id, const SettledBatch *batch);
static int	FailDependentBatches(int64 account_id, int64 recharge_id);
static int	ReadyBatches(int64 account_id, int64 recharge_id);
static int	CompareBatchIds(const void *a, const void *b);
static void Connect(void);
static pg_uuid_t *TokenArg(FunctionCallInfo fcinfo, int n, bool with_token);
static char *RequiredText(FunctionCallInfo fcinfo, int n, const char *name);
static Datum ReturnRecharge(int64 recharge_id);

/*
 * complete_recharge(recharge_id bigint, payment_ref text
 *					 [, claim_token uuid]) RETURNS credits.recharges
 *		The card was charged: credits the account (a "recharge" ledger row),
 *		marks the recharge succeeded and its awaiting batches ready as far as
 *		the balance pays for them; ends a run of payment failures.
 *		Idempotent for the same payment_ref, whatever the token.
 */
static Datum
CompleteRecharge(FunctionCallInfo fcinfo, bool with_token)
{
	LockedRecharge r;
	pg_uuid_t  *token;
	char	   *ref;
	Datum		values[2];

	credits_serving_0_1_0 = false;
	token = TokenArg(fcinfo, 2, with_token);
	ref = RequiredText(fcinfo, 1, "payment_ref");

	Connect();
	LockRecharge(fcinfo, &r);
	if (StatusIs(&r, "succeeded") && r.payment_ref != NULL && strcmp(r.payment_ref, ref) == 0)
		return ReturnRecharge(r.recharge_id);	/* a retry: nothing to do */
	values[0] = CStringGetTextDatum(ref);
	CreditsExecPlan(PLAN_CHECK_REF, values, NULL, 1);	/* MC021 */
	CheckSettleable(&r, token, true);

	CreditsExecPlan(PLAN_REF_USED, values, NULL, -1);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_PAYMENT_REF_IN_USE),
				 errmsg("payment_ref %s is already used by recharge %lld", ref,
						(long long) FirstInt8(1))));

	values[0] = Int64GetDatum(r.recharge_id);
	values[1] = CStringGetTextDatum(ref);
	CreditsExecPlan(PLAN_MARK_SUCCEEDED, values, NULL, 1);
	if (CreditsHasGrants())
	{
		/* the credits bought: a recharge grant, which pays what is owed first */
		NewGrant	g;

		memset(&g, 0, sizeof(g));
		g.account_id = r.account_id;
		g.source = "recharge";
		g.kind = "recharge";
		g.credits = r.credits;
		g.priority = 50;
		g.expires = CreditsRechargeCreditLifetime > 0;
		if (g.expires)
			g.expires_at = CreditsNow() +
				(TimestampTz) CreditsRechargeCreditLifetime * USECS_PER_SEC;
		g.recharge_id = r.recharge_id;
		g.in_flight_delta = -r.credits;
		LedgerAddGrant(&g);
	}
	else
		LedgerPost(r.account_id, r.credits, "recharge", 0, r.recharge_id, NULL, -r.credits);
	SettleBatches(r.account_id, r.recharge_id, false);
	values[0] = Int64GetDatum(r.account_id);
	CreditsExecPlan(PLAN_RESET_FAILURES, values, NULL, -1);

	return ReturnRecharge(r.recharge_id);
}

PG_FUNCTION_INFO_V1(credits_complete_recharge);

Datum
credits_complete_recharge(PG_FUNCTION_ARGS)
{
	return CompleteRecharge(fcinfo, false);
}

PG_FUNCTION_INFO_V1(credits_complete_recharge_token);

Datum
credits_complete_recharge_token(PG_FUNCTION_ARGS)
{
	return CompleteRecharge(fcinfo, true);
}

/*
 * fail_recharge(recharge_id bigint, reason text [, claim_token uuid])
 *		RETURNS credits.recharges
 *		The charge failed: marks the recharge failed, fails its awaiting
 *		batches (and those that lived on its credits) with one refund each,
 *		counts a payment failure, and at credits.max_payment_failures in a
 *		row turns auto-recharge off (NOTIFY credits_auto_recharge_disabled).
 *		Idempotent for the same reason.
 */
static Datum
FailRecharge(FunctionCallInfo fcinfo, bool with_token)
{
	LockedRecharge r;
	pg_uuid_t  *token;
	char	   *reason;
	Datum		values[2];

	credits_serving_0_1_0 = false;
	token = TokenArg(fcinfo, 2, with_token);
	reason = RequiredText(fcinfo, 1, "reason");

	Connect();
	LockRecharge(fcinfo, &r);
	if (StatusIs(&r, "failed") && r.failure_reason != NULL && strcmp(r.failure_reason, reason) == 0)
		return ReturnRecharge(r.recharge_id);	/* a retry: nothing to do */
	CheckSettleable(&r, token, false);

	values[0] = Int64GetDatum(r.recharge_id);
	values[1] = CStringGetTextDatum(reason);
	CreditsExecPlan(PLAN_MARK_FAILED, values, NULL, 1);
	LedgerAddInFlight(r.account_id, -r.credits);
	SettleBatches(r.account_id, r.recharge_id, true);

	/*
	 * After credits.max_payment_failures failures in a row, auto-recharge
	 * turns itself off (and stays off until enable_auto_recharge is called):
	 * no retry storms on a dead card.
	 */
	values[0] = Int64GetDatum(r.account_id);
	CreditsExecPlan(PLAN_COUNT_FAILURE, values, NULL, -1);
	if (SPI_processed == 1)
	{
		bool		isnull;
		int32		failures = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull));
		bool		enabled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 2, &isnull));

		if (failures >= CreditsMaxPaymentFailures && enabled)
		{
			TurnOff(r.account_id, "payment_failed");
			Async_Notify("credits_auto_recharge_disabled",
						 psprintf(INT64_FORMAT, r.account_id));
		}
	}
	RepayAfterRefunds(r.account_id);

	return ReturnRecharge(r.recharge_id);
}

PG_FUNCTION_INFO_V1(credits_fail_recharge);

Datum
credits_fail_recharge(PG_FUNCTION_ARGS)
{
	return FailRecharge(fcinfo, false);
}

PG_FUNCTION_INFO_V1(credits_fail_recharge_token);

Datum
credits_fail_recharge_token(PG_FUNCTION_ARGS)
{
	return FailRecharge(fcinfo, true);
}

/*
 * release_recharge(recharge_id bigint [, claim_token uuid])
 *		RETURNS credits.recharges
 *		Hands a processing recharge back to pending without counting a
 *		payment failure; its amount stays (claimed_credits keeps it from
 *		growing), so a retry charges the same amount under the same id.  A
 *		pending recharge is returned unchanged.
 */
static Datum
ReleaseRecharge(FunctionCallInfo fcinfo, bool with_token)
{
	LockedRecharge r;
	pg_uuid_t  *token;
	Datum		values[1];

	credits_serving_0_1_0 = false;
	token = TokenArg(fcinfo, 1, with_token);

	Connect();
	LockRecharge(fcinfo, &r);
	if (!StatusIs(&r, "pending"))
	{
		if (IsSettled(&r))
			RefuseSettled(&r, false);
		CheckClaim(&r, token);
		values[0] = Int64GetDatum(r.recharge_id);
		CreditsExecPlan(PLAN_MARK_RELEASED, values, NULL, 1);
	}
	return ReturnRecharge(r.recharge_id);
}

PG_FUNCTION_INFO_V1(credits_release_recharge);

Datum
credits_release_recharge(PG_FUNCTION_ARGS)
{
	return ReleaseRecharge(fcinfo, false);
}

PG_FUNCTION_INFO_V1(credits_release_recharge_token);

Datum
credits_release_recharge_token(PG_FUNCTION_ARGS)
{
	return ReleaseRecharge(fcinfo, true);
}

/*
 * credits_cancel_recharge
 *		credits._cancel_recharge(recharge_id bigint, reason text) RETURNS void:
 *		cancels a pending recharge that was never claimed (else does
 *		nothing) and fails its batches with refunds.  The caller holds the
 *		account lock and has locked the recharge row.
 */
PG_FUNCTION_INFO_V1(credits_cancel_recharge);

Datum
credits_cancel_recharge(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	Connect();
	RepayAfterRefunds(CancelRecharge(PG_GETARG_INT64(0), text_to_cstring(PG_GETARG_TEXT_PP(1))));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * credits_turn_off
 *		credits._turn_off(account_id bigint, reason text)
 *		RETURNS credits.auto_recharge: turns auto-recharge off for a reason
 *		and cancels what no worker has ever claimed (processing recharges
 *		finish).  The caller holds the account lock.  Returns the policy, or
 *		NULL without one.
 */
PG_FUNCTION_INFO_V1(credits_turn_off);

Datum
credits_turn_off(PG_FUNCTION_ARGS)
{
	int64		account_id = PG_GETARG_INT64(0);
	Datum		values[1];
	Datum		result;
	bool		isnull = true;

	credits_serving_0_1_0 = false;
	Connect();
	TurnOff(account_id, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	RepayAfterRefunds(account_id);
	values[0] = Int64GetDatum(account_id);
	CreditsExecPlan(PLAN_POLICY_ROW, values, NULL, -1);
	result = (Datum) 0;
	if (SPI_processed == 1)
		result = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												 1, &isnull), false, -1);
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * CreditsSettleBatchesFunction
 *		credits._settle_batches(recharge_id bigint, outcome text) RETURNS int
 *		of 0.1.0 (legacy.c): moves the recharge's awaiting batches to
 *		"outcome" ('ready' or 'failed', refunding each failed one) and returns
 *		how many batches changed, dependents included.  0.1.0's PL/pgSQL
 *		settlement calls it; from 0.1.1 settlement is all here.
 */
Datum
CreditsSettleBatchesFunction(FunctionCallInfo fcinfo)
{
	int64		recharge_id = PG_GETARG_INT64(0);
	char	   *outcome = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		refund = false;
	Datum		values[1];
	int			changed;

	if (strcmp(outcome, "ready") == 0)
		refund = false;
	else if (strcmp(outcome, "failed") == 0)
		refund = true;
	else
		elog(ERROR, "credits._settle_batches: unknown outcome \"%s\"", outcome);

	Connect();
	values[0] = Int64GetDatum(recharge_id);
	CreditsExecPlan(PLAN_RECHARGE_ACCOUNT, values, NULL, 1);
	changed = SettleBatches(FirstInt8(1), recharge_id, refund);
	SPI_finish();
	PG_RETURN_INT32(changed);
}

/*
 * LockRecharge
 *		Locks the recharge named by the function's first argument for
 *		settlement, in the global order (its account's pending debits
 *		written, the account row, then the recharge row), and reads it.
 */
static void
LockRecharge(FunctionCallInfo fcinfo, LockedRecharge *r)
{
	int64		recharge_id;
	Datum		values[1];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("recharge_id must not be null")));
	recharge_id = PG_GETARG_INT64(0);
	values[0] = Int64GetDatum(recharge_id);
	CreditsExecPlan(PLAN_RECHARGE_ACCOUNT, values, NULL, -1);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_UNKNOWN_RECHARGE),
				 errmsg("recharge %lld does not exist", (long long) recharge_id)));
	r->recharge_id = recharge_id;
	r->account_id = FirstInt8(1);

	CreditsFlushAccount(r->account_id);
	values[0] = Int64GetDatum(r->account_id);
	CreditsExecPlan(PLAN_LOCK_ACCOUNT, values, NULL, 1);
	if (CreditsHasGrants())
	{
		/* no decision on a balance that still holds expired credits */
		int64		lapsed;

		LedgerExpireDue(r->account_id, CreditsNow(), &lapsed);
	}
	values[0] = Int64GetDatum(recharge_id);

	CreditsExecPlan(PLAN_LOCK_RECHARGE, values, NULL, 1);
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	r->status = SPI_getvalue(row, desc, 1);
	r->credits = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
	r->payment_ref = SPI_getvalue(row, desc, 3);
	r->failure_reason = SPI_getvalue(row, desc, 4);
	d = SPI_getbinval(row, desc, 5, &isnull);
	r->has_token = !isnull;
	if (!isnull)
		r->token = *DatumGetUUIDP(d);
	r->claim_count = DatumGetInt32(SPI_getbinval(row, desc, 6, &isnull));
	r->claimed_before = DatumGetBool(SPI_getbinval(row, desc, 7, &isnull));
}

/*
 * CheckClaim
 *		A settling call with a claim token must hold the recharge's current
 *		claim (MC020 otherwise, nothing changed).  No token (the operators'
 *		forms): nothing to check.
 */
static void
CheckClaim(const LockedRecharge *r, const pg_uuid_t *token)
{
	if (token == NULL)
		return;
	if (StatusIs(r, "processing") && r->has_token &&
		memcmp(r->token.data, token->data, UUID_LEN) == 0)
		return;
	if (StatusIs(r, "pending"))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_CLAIM_NOT_HELD),
				 errmsg("claim on recharge %lld is no longer held", (long long) r->recharge_id),
				 errdetail("It was released and is pending again."),
				 errhint("Nothing was changed. Drop it: it is claimed again, and settled, by the next worker to hold it.")));
	if (!r->has_token)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_CLAIM_NOT_HELD),
				 errmsg("claim on recharge %lld is no longer held", (long long) r->recharge_id),
				 errdetail("It was claimed before version 0.1.1 and holds no claim token."),
				 errhint("An operator settles it with the 2-argument form, or releases it.")));
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_CLAIM_NOT_HELD),
			 errmsg("claim on recharge %lld is no longer held", (long long) r->recharge_id),
			 r->claim_count > 1 ?
			 errdetail("Its lease expired or it was released, and it was claimed again (claim %d).",
					   r->claim_count) :
			 errdetail("The token is not the one its current claim was given."),
			 errhint("Nothing was changed. Drop it: it is claimed again, and settled, by the next worker to hold it.")));
}

static void
RefuseSettled(const LockedRecharge *r, bool with_ref)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_RECHARGE_SETTLED),
			 errmsg("recharge %lld is already settled", (long long) r->recharge_id),
			 (with_ref && r->payment_ref != NULL) ?
			 errdetail("Its status is %s with payment_ref %s.", r->status,
					   quote_literal_cstr(r->payment_ref)) :
			 errdetail("Its status is %s.", r->status)));
}

/*
 * CheckSettleable
 *		What complete and fail both require of a recharge they are about to
 *		settle: not settled already (MC006), held by the caller's claim when a
 *		token is given (MC020), and claimed (MC015); an operator (no token)
 *		may also settle one that was claimed before and released.
 */
static void
CheckSettleable(const LockedRecharge *r, const pg_uuid_t *token, bool with_ref)
{
	if (IsSettled(r))
		RefuseSettled(r, with_ref);
	CheckClaim(r, token);
	if (StatusIs(r, "pending") && (token != NULL || !r->claimed_before))
		RefuseUnclaimed(r);
}

static void
RefuseUnclaimed(const LockedRecharge *r)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_RECHARGE_NOT_CLAIMED),
			 errmsg("recharge %lld has not been claimed", (long long) r->recharge_id),
			 errhint("A payment worker claims it with credits.claim_recharges() before charging.")));
}

/* The recharge's row as a credits.recharges datum, for the caller. */
static Datum
RechargeRow(int64 recharge_id)
{
	Datum		values[1];
	bool		isnull;

	values[0] = Int64GetDatum(recharge_id);
	CreditsExecPlan(PLAN_RECHARGE_ROW, values, NULL, 1);
	return SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										   1, &isnull), false, -1);
}

static bool
StatusIs(const LockedRecharge *r, const char *status)
{
	return strcmp(r->status, status) == 0;
}

static bool
IsSettled(const LockedRecharge *r)
{
	return StatusIs(r, "succeeded") || StatusIs(r, "failed") || StatusIs(r, "cancelled");
}

/*
 * Cancels a pending, never-claimed recharge and fails its batches.  Returns
 * its account, or 0 when it was not cancellable.
 */
static int64
CancelRecharge(int64 recharge_id, const char *reason)
{
	Datum		values[2];
	int64		account_id;
	int64		credits;

	values[0] = Int64GetDatum(recharge_id);
	values[1] = CStringGetTextDatum(reason);
	CreditsExecPlan(PLAN_MARK_CANCELLED, values, NULL, -1);
	if (SPI_processed == 0)
		return 0;
	account_id = FirstInt8(1);
	credits = FirstInt8(2);
	LedgerAddInFlight(account_id, -credits);
	SettleBatches(account_id, recharge_id, true);
	return account_id;
}

/*
 * RepayAfterRefunds
 *		Once a settlement call has refunded every batch it fails (those of
 *		several recharges, when auto-recharge turns off), what came back
 *		pays the debts of the batches still awaiting (0.2.0 schemas).  Not
 *		earlier: a debt paid just before its batch is refunded would only
 *		add a repay pair to the ledger.
 */
static void
RepayAfterRefunds(int64 account_id)
{
	if (account_id != 0 && CreditsHasGrants())
		LedgerRepayOwed(account_id);
}

/* Turns auto-recharge off and cancels the never-claimed pending recharges. */
static void
TurnOff(int64 account_id, const char *reason)
{
	Datum		values[2];
	uint64		n;
	int64	   *ids;
	const char *why = strcmp(reason, "payment_failed") == 0 ?
		"auto-recharge turned off after payment failures" : "auto-recharge disabled";

	values[0] = Int64GetDatum(account_id);
	values[1] = CStringGetTextDatum(reason);
	CreditsExecPlan(PLAN_TURN_OFF, values, NULL, -1);
	if (SPI_processed == 0)
		return;					/* already off (or never set) */

	CreditsExecPlan(PLAN_CANCELLABLE, values, NULL, -1);
	n = SPI_processed;
	ids = palloc(sizeof(int64) * (n > 0 ? n : 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
											 1, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
		CancelRecharge(ids[i], why);
}

/*
 * SettleBatches
 *		A recharge settled: its awaiting batches turn ready (as far as the
 *		balance pays), or fail with a refund each, dependents included.
 *		Returns how many batches changed.
 */
static int
SettleBatches(int64 account_id, int64 recharge_id, bool refund)
{
	Datum		values[2];
	uint64		n;
	SettledBatch *batches;
	int			changed;

	if (!refund)
		return ReadyBatches(account_id, recharge_id);

	values[0] = Int64GetDatum(recharge_id);
	values[1] = CStringGetTextDatum("failed");
	CreditsExecPlanSettling(PLAN_SETTLE_BATCHES, values, -1);
	n = SPI_processed;
	changed = (int) n;

	/* Refund in batch order, so the ledger reads the same on every run. */
	batches = palloc(sizeof(SettledBatch) * (n > 0 ? n : 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		batches[i].batch_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		if (DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull)) != account_id)
			elog(ERROR, "credits: recharge " INT64_FORMAT " covers a batch of another account",
				 recharge_id);
		batches[i].cost = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	}
	qsort(batches, n, sizeof(SettledBatch), CompareBatchIds);
	for (uint64 i = 0; i < n; i++)
		RefundBatch(account_id, recharge_id, &batches[i]);
	changed += FailDependentBatches(account_id, recharge_id);
	return changed;
}

/*
 * ReadyBatches
 *		A recharge succeeded: its awaiting batches turn ready, oldest first,
 *		as far as the balance pays for them.  The invariant kept is that a
 *		negative balance is always backed by awaiting batches (balance + the
 *		cost of awaiting batches >= 0), so that any recharge still in flight
 *		can fail later and the batches living on it can still be refunded.
 *		A batch that cannot turn ready yet (it lives on the credits of another
 *		recharge still in flight) awaits that recharge instead.  Returns how
 *		many batches turned ready.
 */
static int
ReadyBatches(int64 account_id, int64 recharge_id)
{
	Datum		values[2];
	int64		balance;
	int64		awaiting;
	uint64		n;
	SettledBatch *batches;
	int			ready = 0;
	bool		isnull;

	values[0] = Int64GetDatum(account_id);
	CreditsExecPlan(PLAN_READ_ACCOUNT, values, NULL, 1);
	balance = FirstInt8(1);
	CreditsExecPlan(PLAN_AWAITING_TOTAL, values, NULL, 1);
	awaiting = FirstInt8(1);

	values[0] = Int64GetDatum(recharge_id);
	CreditsExecPlan(PLAN_AWAITING_OF_RECHARGE, values, NULL, -1);
	n = SPI_processed;
	batches = palloc(sizeof(SettledBatch) * (n > 0 ? n : 1));
	for (uint64 i = 0; i < n; i++)
	{
		batches[i].batch_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1, &isnull));
		batches[i].cost = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													  SPI_tuptable->tupdesc, 2, &isnull));
	}

	for (uint64 i = 0; i < n; i++)
	{
		/* awaiting >= cost >= 0 and balance < 0 here: neither overflows */
		int64		left = awaiting - batches[i].cost;

		values[0] = Int64GetDatum(batches[i].batch_id);
		if (balance >= 0 || left + balance >= 0)
		{
			CreditsExecPlanSettling(PLAN_READY_BATCH, values, 1);
			awaiting = left;
			ready++;
			continue;
		}

		/* Still living on another recharge's credits: await that one. */
		values[0] = Int64GetDatum(account_id);
		CreditsExecPlan(PLAN_NEWEST_IN_FLIGHT, values, NULL, -1);
		if (SPI_processed == 0)
			elog(ERROR, "credits: account " INT64_FORMAT " is short with no recharge in flight",
				 account_id);
		values[1] = Int64GetDatum(FirstInt8(1));
		values[0] = Int64GetDatum(batches[i].batch_id);
		CreditsExecPlanSettling(PLAN_REPOINT_BATCH, values, 1);
	}
	return ready;
}

/*
 * FailDependentBatches
 *		While balance + in_flight is negative, fail and refund the account's
 *		newest awaiting batch (see the header comment).  Returns how many
 *		batches it failed.
 */
static int
FailDependentBatches(int64 account_id, int64 recharge_id)
{
	Datum		values[1];
	int			failed = 0;

	for (;;)
	{
		SettledBatch batch;
		int64		balance;
		int64		in_flight;
		int64		sum;
		bool		isnull;

		values[0] = Int64GetDatum(account_id);
		CreditsExecPlan(PLAN_READ_ACCOUNT, values, NULL, 1);
		balance = FirstInt8(1);
		in_flight = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												2, &isnull));
		/* in_flight >= 0: only a sum of two large positives can overflow */
		if (pg_add_s64_overflow(balance, in_flight, &sum) || sum >= 0)
			break;

		CreditsExecPlan(PLAN_NEWEST_AWAITING, values, NULL, -1);
		if (SPI_processed == 0)
			break;				/* nothing left to fail; verify() will say */
		batch.batch_id = FirstInt8(1);
		batch.cost = FirstInt8(2);

		values[0] = Int64GetDatum(batch.batch_id);
		CreditsExecPlanSettling(PLAN_FAIL_BATCH, values, 1);
		RefundBatch(account_id, recharge_id, &batch);
		failed++;
	}
	return failed;
}

/* One refund: the batch's cost back, by the one writer of balances. */
static void
RefundBatch(int64 account_id, int64 recharge_id, const SettledBatch *batch)
{
	if (CreditsHasGrants())
		LedgerRefundBatch(account_id, batch->batch_id, recharge_id, batch->cost);
	else
		LedgerPost(account_id, batch->cost, "refund", batch->batch_id, recharge_id, NULL, 0);
}

/* A bigint column of the first row of the last SPI result. */
static int64
FirstInt8(int col)
{
	bool		isnull;
	Datum		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  col, &isnull);

	if (isnull)
		elog(ERROR, "credits: unexpected null in column %d", col);
	return DatumGetInt64(v);
}

static int
CompareBatchIds(const void *a, const void *b)
{
	int64		x = ((const SettledBatch *) a)->batch_id;
	int64		y = ((const SettledBatch *) b)->batch_id;

	return (x > y) - (x < y);
}

static void
Connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
}

/*
 * TokenArg
 *		The claim token of a worker's form (argument n), which must not be
 *		null; NULL for the operators' forms, which take none.
 */
static pg_uuid_t *
TokenArg(FunctionCallInfo fcinfo, int n, bool with_token)
{
	if (!with_token)
		return NULL;
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("claim_token must not be null"),
				 errhint("Pass the claim_token that credits.claim_recharges() returned.")));
	return PG_GETARG_UUID_P(n);
}

/* A text argument that must not be null, as a C string. */
static char *
RequiredText(FunctionCallInfo fcinfo, int n, const char *name)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/* The end of a settlement function: the recharge's row, SPI closed. */
static Datum
ReturnRecharge(int64 recharge_id)
{
	Datum		row = RechargeRow(recharge_id);

	SPI_finish();
	return row;
}

/*-------------------------------------------------------------------------
 *
 * settle.c
 *	  What happens to batches when a recharge settles: its awaiting batches
 *	  become ready when it succeeded, or failed with one refund each when it
 *	  failed or was cancelled.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/settle.c
 *
 * Called only from the extension's SECURITY DEFINER functions
 * (complete_recharge, fail_recharge, disable_auto_recharge, ...), which hold
 * the account row lock and have already taken the recharge out of
 * accounts.in_flight; EXECUTE is revoked from PUBLIC.
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

#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "credits.h"
#include "plan_cache.h"

bool		credits_settling_batches = false;

typedef struct SettledBatch
{
	int64		batch_id;
	int64		cost;
} SettledBatch;

static void ExecAsSettler(CreditsPlanId id, Datum *values, int expected);
static int64 FirstInt8(int col);
static void RefundBatch(int64 account_id, int64 recharge_id,
						const SettledBatch *batch, int64 *balance);
static int	FailDependentBatches(int64 account_id, int64 recharge_id,
								 int64 *balance);
static int	ReadyBatches(int64 account_id, int64 recharge_id);
static int	CompareBatchIds(const void *a, const void *b);

/*
 * credits_settle_batches_0_1_1
 *		credits._settle_batches(recharge_id bigint, outcome text) RETURNS int:
 *		moves the recharge's awaiting batches to "outcome" ('ready' or
 *		'failed', refunding each failed one) and returns how many batches
 *		changed, dependents included.
 */
PG_FUNCTION_INFO_V1(credits_settle_batches_0_1_1);

Datum
credits_settle_batches_0_1_1(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	return CreditsSettleBatchesFunction(fcinfo);
}

Datum
CreditsSettleBatchesFunction(FunctionCallInfo fcinfo)
{
	int64		recharge_id = PG_GETARG_INT64(0);
	char	   *outcome = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		refund = false;
	Datum		values[2];
	uint64		n;
	int64		account_id;
	int64		balance;
	SettledBatch *batches;
	int			changed;

	if (strcmp(outcome, "ready") == 0)
		refund = false;
	else if (strcmp(outcome, "failed") == 0)
		refund = true;
	else
		elog(ERROR, "credits._settle_batches: unknown outcome \"%s\"", outcome);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");

	values[0] = Int64GetDatum(recharge_id);
	CreditsExecPlan(PLAN_RECHARGE_ACCOUNT, values, NULL, 1);
	account_id = FirstInt8(1);

	if (!refund)
	{
		changed = ReadyBatches(account_id, recharge_id);
		SPI_finish();
		PG_RETURN_INT32(changed);
	}

	values[1] = CStringGetTextDatum(outcome);
	ExecAsSettler(PLAN_SETTLE_BATCHES, values, -1);
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

	values[0] = Int64GetDatum(account_id);
	CreditsExecPlan(PLAN_READ_ACCOUNT, values, NULL, 1);
	balance = FirstInt8(1);
	for (uint64 i = 0; i < n; i++)
		RefundBatch(account_id, recharge_id, &batches[i], &balance);

	changed += FailDependentBatches(account_id, recharge_id, &balance);

	SPI_finish();
	PG_RETURN_INT32(changed);
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
			ExecAsSettler(PLAN_READY_BATCH, values, 1);
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
		ExecAsSettler(PLAN_REPOINT_BATCH, values, 1);
	}
	return ready;
}

/*
 * FailDependentBatches
 *		While balance + in_flight is negative, fail and refund the account's
 *		newest awaiting batch (see the header comment).  Writes the final
 *		balance.  Returns how many batches it failed.
 */
static int
FailDependentBatches(int64 account_id, int64 recharge_id, int64 *balance)
{
	Datum		values[2];
	int64		in_flight;
	int			failed = 0;

	values[0] = Int64GetDatum(account_id);
	values[1] = Int64GetDatum(*balance);
	CreditsExecPlan(PLAN_SET_BALANCE, values, NULL, 1);
	CreditsExecPlan(PLAN_READ_ACCOUNT, values, NULL, 1);
	in_flight = FirstInt8(2);

	while (*balance + in_flight < 0)
	{
		SettledBatch batch;

		values[0] = Int64GetDatum(account_id);
		CreditsExecPlan(PLAN_NEWEST_AWAITING, values, NULL, -1);
		if (SPI_processed == 0)
			break;				/* nothing left to fail; verify() will say */
		batch.batch_id = FirstInt8(1);
		batch.cost = FirstInt8(2);

		values[0] = Int64GetDatum(batch.batch_id);
		ExecAsSettler(PLAN_FAIL_BATCH, values, 1);
		RefundBatch(account_id, recharge_id, &batch, balance);
		failed++;

		values[0] = Int64GetDatum(account_id);
		values[1] = Int64GetDatum(*balance);
		CreditsExecPlan(PLAN_SET_BALANCE, values, NULL, 1);
	}
	return failed;
}

/* Writes one refund ledger row and advances the running balance. */
static void
RefundBatch(int64 account_id, int64 recharge_id, const SettledBatch *batch,
			int64 *balance)
{
	Datum		values[5];

	if (pg_add_s64_overflow(*balance, batch->cost, balance))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE),
				 errmsg("balance of account %lld would overflow", (long long) account_id),
				 errdetail("Refunding batch %lld of %lld credits does not fit in a bigint.",
						   (long long) batch->batch_id, (long long) batch->cost)));
	values[0] = Int64GetDatum(account_id);
	values[1] = Int64GetDatum(batch->cost);
	values[2] = Int64GetDatum(*balance);
	values[3] = Int64GetDatum(batch->batch_id);
	values[4] = Int64GetDatum(recharge_id);
	CreditsExecPlan(PLAN_POST_REFUND, values, NULL, 1);
}

/* Runs a statement that changes batch statuses, with the guard's flag up. */
static void
ExecAsSettler(CreditsPlanId id, Datum *values, int expected)
{
	credits_settling_batches = true;
	PG_TRY();
	{
		CreditsExecPlan(id, values, NULL, expected);
	}
	PG_FINALLY();
	{
		credits_settling_batches = false;
	}
	PG_END_TRY();
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

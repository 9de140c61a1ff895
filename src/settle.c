/*-------------------------------------------------------------------------
 *
 * settle.c
 *	  What happens to a recharge's awaiting batches when it settles: ready
 *	  when it succeeded, failed with one refund each when it failed or was
 *	  cancelled.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/settle.c
 *
 * Called only from the extension's SECURITY DEFINER functions
 * (complete_recharge, fail_recharge, disable_auto_recharge), which hold the
 * account row lock already; EXECUTE is revoked from PUBLIC.
 *
 * It is the only code that changes a stored batch, so it raises
 * credits_settling_batches for the length of its UPDATE: the guard trigger
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
	int64		account_id;
	int64		cost;
} SettledBatch;

static int	CompareBatchIds(const void *a, const void *b);

/*
 * credits_settle_batches
 *		credits._settle_batches(recharge_id bigint, outcome text) RETURNS int:
 *		moves the recharge's awaiting batches to "outcome" ('ready' or
 *		'failed'), refunding each failed one, and returns how many moved.
 */
PG_FUNCTION_INFO_V1(credits_settle_batches);

Datum
credits_settle_batches(PG_FUNCTION_ARGS)
{
	int64		recharge_id = PG_GETARG_INT64(0);
	char	   *outcome = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		refund = false;
	Datum		values[5];
	bool		isnull;
	uint64		n;
	SettledBatch *batches;

	if (strcmp(outcome, "ready") == 0)
		refund = false;
	else if (strcmp(outcome, "failed") == 0)
		refund = true;
	else
		elog(ERROR, "credits._settle_batches: unknown outcome \"%s\"", outcome);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");

	values[0] = Int64GetDatum(recharge_id);
	values[1] = CStringGetTextDatum(outcome);
	credits_settling_batches = true;
	PG_TRY();
	{
		CreditsExecPlan(PLAN_SETTLE_BATCHES, values, NULL, -1);
	}
	PG_FINALLY();
	{
		credits_settling_batches = false;
	}
	PG_END_TRY();

	n = SPI_processed;
	if (n == 0 || !refund)
	{
		SPI_finish();
		PG_RETURN_INT32((int32) n);
	}

	/* Refund in batch order, so the ledger reads the same on every run. */
	batches = palloc(sizeof(SettledBatch) * n);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		batches[i].batch_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		batches[i].account_id = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		batches[i].cost = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	}
	qsort(batches, n, sizeof(SettledBatch), CompareBatchIds);

	/* A recharge belongs to one account, so all its batches do too. */
	values[0] = Int64GetDatum(batches[0].account_id);
	CreditsExecPlan(PLAN_READ_BALANCE, values, NULL, 1);
	{
		int64		balance = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc,
														  1, &isnull));

		for (uint64 i = 0; i < n; i++)
		{
			if (batches[i].account_id != batches[0].account_id)
				elog(ERROR, "credits: recharge " INT64_FORMAT " covers batches of two accounts",
					 recharge_id);
			if (pg_add_s64_overflow(balance, batches[i].cost, &balance))
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE),
						 errmsg("balance of account %lld would overflow",
								(long long) batches[i].account_id),
						 errdetail("Refunding batch %lld of %lld credits does not fit in a bigint.",
								   (long long) batches[i].batch_id,
								   (long long) batches[i].cost)));
			values[0] = Int64GetDatum(batches[i].account_id);
			values[1] = Int64GetDatum(batches[i].cost);
			values[2] = Int64GetDatum(balance);
			values[3] = Int64GetDatum(batches[i].batch_id);
			values[4] = Int64GetDatum(recharge_id);
			CreditsExecPlan(PLAN_POST_REFUND, values, NULL, 1);
		}
		values[0] = Int64GetDatum(batches[0].account_id);
		values[1] = Int64GetDatum(balance);
		CreditsExecPlan(PLAN_SET_BALANCE, values, NULL, 1);
	}

	SPI_finish();
	PG_RETURN_INT32((int32) n);
}

static int
CompareBatchIds(const void *a, const void *b)
{
	int64		x = ((const SettledBatch *) a)->batch_id;
	int64		y = ((const SettledBatch *) b)->batch_id;

	return (x > y) - (x < y);
}

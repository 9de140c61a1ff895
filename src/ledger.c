/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  The one writer of balances: every write of accounts.balance,
 *	  accounts.in_flight and credits.ledger, whoever asks for it (the
 *	  statement-end flush of debits, settlement, the SQL functions).
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/ledger.c
 *
 * The invariant kept here: every change of an account's balance writes one
 * ledger row whose balance_after is the new balance, so balance =
 * sum(ledger.delta) and each balance_after continues the running sum.  A
 * change of in_flight alone (a recharge opened, grown, failed or
 * cancelled) writes no ledger row.  Sums are checked for bigint overflow
 * (MC012) before anything is written.
 *
 * Locking: the caller holds the account row lock (FOR NO KEY UPDATE), taken
 * as every writer takes it (debit_trigger.c, settle.c, _lock_account), and
 * is connected to SPI.  Nothing here takes a lock of its own beyond the
 * row locks its UPDATEs take on rows already locked.
 *
 * The statements are prepared once per backend (plan_cache.c) and run as
 * the caller's current user: the trigger and the SECURITY DEFINER functions
 * that call in here run as the extension owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "credits.h"
#include "ledger.h"
#include "plan_cache.h"

static Datum Int8ArrayDatum(const int64 *values, int n);
static Datum Int8OrNull(int64 id, char *null);

/*
 * LedgerOpenAccount
 *		Inserts an account with its initial balance and the "open" ledger
 *		row (written even for 0).  Returns false, writing nothing, when the
 *		account exists already.
 */
bool
LedgerOpenAccount(int64 account_id, int64 initial_credits)
{
	Datum		values[2];

	values[0] = Int64GetDatum(account_id);
	values[1] = Int64GetDatum(initial_credits);
	CreditsExecPlan(PLAN_OPEN_ACCOUNT, values, NULL, -1);
	return SPI_processed == 1;
}

/*
 * LedgerPost
 *		Changes an account's balance by delta (and in_flight by
 *		in_flight_delta) and writes its ledger row; returns the new balance.
 *		batch_id and recharge_id of 0 are written as NULL; note may be NULL.
 */
int64
LedgerPost(int64 account_id, int64 delta, const char *kind, int64 batch_id,
		   int64 recharge_id, const char *note, int64 in_flight_delta)
{
	Datum		values[8];
	char		nulls[8];
	bool		isnull;
	int64		balance;
	int64		new_balance;

	values[0] = Int64GetDatum(account_id);
	CreditsExecPlan(PLAN_READ_ACCOUNT, values, NULL, 1);
	balance = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  1, &isnull));
	if (pg_add_s64_overflow(balance, delta, &new_balance))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE),
				 errmsg("balance of account %lld would overflow", (long long) account_id),
				 errdetail("The balance is %lld and the change is %lld; a balance must fit in a bigint.",
						   (long long) balance, (long long) delta)));

	memset(nulls, ' ', sizeof(nulls));
	values[1] = Int64GetDatum(delta);
	values[2] = Int64GetDatum(new_balance);
	values[3] = CStringGetTextDatum(kind);
	values[4] = Int8OrNull(batch_id, &nulls[4]);
	values[5] = Int8OrNull(recharge_id, &nulls[5]);
	values[6] = Int64GetDatum(in_flight_delta);
	if (note != NULL)
		values[7] = CStringGetTextDatum(note);
	else
	{
		values[7] = (Datum) 0;
		nulls[7] = 'n';
	}
	CreditsExecPlan(PLAN_POST, values, nulls, 1);
	return new_balance;
}

/*
 * LedgerAddInFlight
 *		Adds delta (negative to take a recharge out) to in_flight.
 */
void
LedgerAddInFlight(int64 account_id, int64 delta)
{
	Datum		values[2];

	values[0] = Int64GetDatum(account_id);
	values[1] = Int64GetDatum(delta);
	CreditsExecPlan(PLAN_ADD_IN_FLIGHT, values, NULL, 1);
}

/*
 * LedgerWriteDebits
 *		Writes a statement's queued debit ledger rows (in queue order, so
 *		entry_id order is debit order) and its account rows, whose balance
 *		and in_flight the caller computed as running totals.  The common
 *		single-row statement is one SQL statement.
 */
void
LedgerWriteDebits(const LedgerDebits *debits, const LedgerAccountRows *accounts)
{
	Datum		values[5];
	int			first_account = 0;

	if (debits->n == 1 && accounts->n == 1 && accounts->account[0] == debits->account[0])
	{
		Assert(accounts->balance[0] == debits->balance_after[0]);
		values[0] = Int64GetDatum(accounts->account[0]);
		values[1] = Int64GetDatum(debits->delta[0]);
		values[2] = Int64GetDatum(debits->balance_after[0]);
		values[3] = Int64GetDatum(debits->batch[0]);
		values[4] = Int64GetDatum(accounts->in_flight[0]);
		CreditsExecPlan(PLAN_WRITE_ONE, values, NULL, 1);
		first_account = 1;
	}
	else if (debits->n > 0)
	{
		values[0] = Int8ArrayDatum(debits->account, debits->n);
		values[1] = Int8ArrayDatum(debits->delta, debits->n);
		values[2] = Int8ArrayDatum(debits->balance_after, debits->n);
		values[3] = Int8ArrayDatum(debits->batch, debits->n);
		CreditsExecPlan(PLAN_WRITE_DEBITS, values, NULL, debits->n);
	}
	for (int i = first_account; i < accounts->n; i++)
	{
		values[0] = Int64GetDatum(accounts->account[i]);
		values[1] = Int64GetDatum(accounts->balance[i]);
		values[2] = Int64GetDatum(accounts->in_flight[i]);
		CreditsExecPlan(PLAN_WRITE_ACCOUNT, values, NULL, 1);
	}
}

/* An int8[] of n values (n may be 0), in the current memory context. */
static Datum
Int8ArrayDatum(const int64 *values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(values[i]);
	return PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* An id parameter: 0 means NULL. */
static Datum
Int8OrNull(int64 id, char *null)
{
	*null = id == 0 ? 'n' : ' ';
	return Int64GetDatum(id);
}

/*
 * credits_open_account
 *		credits._open_account(account_id bigint, initial_credits bigint)
 *		RETURNS boolean, for credits.open_account() (which validates).
 */
PG_FUNCTION_INFO_V1(credits_open_account);

Datum
credits_open_account(PG_FUNCTION_ARGS)
{
	bool		opened;

	credits_serving_0_1_0 = false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	opened = LedgerOpenAccount(PG_GETARG_INT64(0), PG_GETARG_INT64(1));
	SPI_finish();
	PG_RETURN_BOOL(opened);
}

/*
 * credits_credit
 *		credits._credit(account_id bigint, credits bigint, note text)
 *		RETURNS bigint, for credits.add_credits() (which validates and holds
 *		the account lock): a "grant" ledger row; returns the new balance.
 */
PG_FUNCTION_INFO_V1(credits_credit);

Datum
credits_credit(PG_FUNCTION_ARGS)
{
	char	   *note = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	int64		balance;

	credits_serving_0_1_0 = false;
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		elog(ERROR, "credits._credit: account_id and credits must not be null");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	balance = LedgerPost(PG_GETARG_INT64(0), PG_GETARG_INT64(1), "grant", 0, 0, note, 0);
	SPI_finish();
	PG_RETURN_INT64(balance);
}

/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  The one writer of balances: every write of accounts.balance,
 *	  accounts.in_flight, credits.ledger, credits.grants (remaining,
 *	  closed_at) and send_batches.owed, whoever asks for it (the
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
 * With grants (0.2.0 schemas; doc/grants.md), a row with a grant_id also
 * moves that grant's remaining by delta, and a row without one moves what
 * is owed, so that for every account balance = sum(remaining) - owed, and
 * for every grant remaining = carried_over + the sum of its rows.  Credits
 * that arrive (a grant, a refund) first pay what is owed, oldest batch
 * first (LedgerRepayOwed); a refund puts each part of a batch's cost back
 * where it came from (LedgerRefundBatch).
 *
 * Locking: the caller holds the account row lock (FOR NO KEY UPDATE), taken
 * as every writer takes it (debit_trigger.c, settle.c, _lock_account), and
 * is connected to SPI (but for LedgerWriteDebits, see there).  Nothing here
 * takes a lock of its own beyond the row locks its UPDATEs take on rows
 * already locked.
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
#include "utils/timestamp.h"

#include "credits.h"
#include "direct_access.h"
#include "ledger.h"
#include "plan_cache.h"
#include "row_write.h"

static Datum Int8ArrayDatum(const int64 *values, int n);
static Datum Int8OrNull(int64 id, char *null);
static int64 PostRow(int64 account_id, int64 delta, const char *kind, int64 batch_id,
					 int64 recharge_id, const char *note, int64 in_flight_delta,
					 int64 grant_id);
static int64 MoveGrant(int64 grant_id, int64 delta, TimestampTz *expires_at,
					   bool *expires);
static void MoveOwed(int64 batch_id, int64 delta);
static int64 RepayOwed(int64 account_id, int64 from_grant, int64 available);
static int64 InsertGrant(const NewGrant *g, int64 carried_over);
static int64 ResultInt8(int row, int col);
static void WriteDebitsSql(const LedgerDebits *debits, const LedgerAccountRows *accounts,
						   const LedgerGrantRows *grants);
static void WriteDebitsDirect(RowWriter *w, const LedgerDebits *debits,
							  const LedgerAccountRows *accounts,
							  const LedgerGrantRows *grants);

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
	return PostRow(account_id, delta, kind, batch_id, recharge_id, note,
				   in_flight_delta, 0);
}

/*
 * PostRow
 *		LedgerPost with the row's grant (0: none; a 0.1 schema has none).
 */
static int64
PostRow(int64 account_id, int64 delta, const char *kind, int64 batch_id,
		int64 recharge_id, const char *note, int64 in_flight_delta, int64 grant_id)
{
	Datum		values[9];
	char		nulls[9];
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
	values[8] = Int8OrNull(grant_id, &nulls[8]);
	if (CreditsHasGrants())
		CreditsExecPlan(PLAN_POST_GRANT, values, nulls, 1);
	else
	{
		Assert(grant_id == 0);
		CreditsExecPlan(PLAN_POST, values, nulls, 1);
	}
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
 *		and in_flight the caller computed as running totals.  Directly
 *		(row_write.c) where it can, else through SQL, where the common
 *		single-row statement is one SQL statement.  Unlike the rest of this
 *		file it needs no SPI connection from the caller: it makes one only
 *		for the SQL path.
 */
void
LedgerWriteDebits(const LedgerDebits *debits, const LedgerAccountRows *accounts,
				  const LedgerGrantRows *grants)
{
	RowWriter  *writer;

	if (debits->with_grants && (writer = RowWriterBegin()) != NULL)
	{
		WriteDebitsDirect(writer, debits, accounts, grants);
		RowWriterEnd(writer);
		return;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	WriteDebitsSql(debits, accounts, grants);
	SPI_finish();
}

/*
 * WriteDebitsSql
 *		LedgerWriteDebits through SQL: 0.1 schemas, tables a DBA changed,
 *		credits.direct_writes = off.
 */
static void
WriteDebitsSql(const LedgerDebits *debits, const LedgerAccountRows *accounts,
			   const LedgerGrantRows *grants)
{
	Datum		values[8];
	int			first_account = 0;
	int			first_grant = 0;

	if (debits->with_grants)
	{
		bool		entry_ids = debits->n > 0 && debits->entry_id[0] != 0;

		if (!entry_ids && debits->n == 1 && accounts->n == 1 && grants->n == 1 &&
			accounts->account[0] == debits->account[0] &&
			debits->kind[0] == LEDGER_DEBIT && debits->grant[0] == grants->grant[0])
		{
			/* the common single-row statement, drawn from one grant */
			values[0] = Int64GetDatum(accounts->account[0]);
			values[1] = Int64GetDatum(debits->delta[0]);
			values[2] = Int64GetDatum(debits->balance_after[0]);
			values[3] = Int64GetDatum(debits->batch[0]);
			values[4] = Int64GetDatum(accounts->in_flight[0]);
			values[5] = Int64GetDatum(grants->grant[0]);
			values[6] = Int64GetDatum(grants->remaining[0]);
			CreditsExecPlan(PLAN_WRITE_ONE_GRANT, values, NULL, 1);
			first_account = 1;
			first_grant = 1;
		}
		else if (debits->n > 0)
		{
			Datum	   *kinds = palloc(sizeof(Datum) * debits->n);

			for (int i = 0; i < debits->n; i++)
				kinds[i] = CStringGetTextDatum(debits->kind[i] == LEDGER_EXPIRE ? "expire" : "debit");
			values[0] = Int8ArrayDatum(debits->account, debits->n);
			values[1] = Int8ArrayDatum(debits->delta, debits->n);
			values[2] = Int8ArrayDatum(debits->balance_after, debits->n);
			values[3] = Int8ArrayDatum(debits->batch, debits->n);
			values[4] = PointerGetDatum(construct_array(kinds, debits->n, TEXTOID, -1,
														false, TYPALIGN_INT));
			values[5] = Int8ArrayDatum(debits->grant, debits->n);
			values[6] = Int8ArrayDatum(debits->recharge, debits->n);
			if (entry_ids)
			{
				/* 0.3.0: the rows' entry ids were taken when they were queued */
				values[7] = Int8ArrayDatum(debits->entry_id, debits->n);
				CreditsExecPlan(PLAN_WRITE_LEDGER_ENTRIES, values, NULL, debits->n);
			}
			else
				CreditsExecPlan(PLAN_WRITE_LEDGER_ROWS, values, NULL, debits->n);
		}
		for (int i = first_grant; i < grants->n; i++)
		{
			values[0] = Int64GetDatum(grants->grant[i]);
			values[1] = Int64GetDatum(grants->remaining[i]);
			CreditsExecPlan(PLAN_WRITE_GRANT, values, NULL, 1);
		}
	}
	else if (debits->n == 1 && accounts->n == 1 && accounts->account[0] == debits->account[0])
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
		/* a 0.1 schema: debits only, no grants */
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

/*
 * WriteDebitsDirect
 *		LedgerWriteDebits without SPI (row_write.c): the same rows, in the
 *		same order.
 */
static void
WriteDebitsDirect(RowWriter *w, const LedgerDebits *debits,
				  const LedgerAccountRows *accounts, const LedgerGrantRows *grants)
{
	if (debits->n > 0)
		RowWriterInsertLedger(w, debits);
	for (int i = 0; i < grants->n; i++)
		RowWriterUpdateGrant(w, grants->grant[i], &grants->tid[i], grants->remaining[i]);
	for (int i = 0; i < accounts->n; i++)
		RowWriterUpdateAccount(w, accounts->account[i], &accounts->tid[i],
							   accounts->balance[i], accounts->in_flight[i]);
}

/*
 * LedgerAddGrant
 *		Opens a grant, writes its ledger row (+credits, of the grant's kind)
 *		and pays what the account owes from it.  Returns the grant_id.
 */
int64
LedgerAddGrant(const NewGrant *g)
{
	int64		grant_id = InsertGrant(g, 0);

	PostRow(g->account_id, g->credits, g->kind, 0, g->recharge_id, g->note,
			g->in_flight_delta, grant_id);
	LedgerRepayOwed(g->account_id);
	return grant_id;
}

/*
 * InsertGrant
 *		The grant's row (remaining = credits), without a ledger row; returns
 *		its grant_id.  carried_over: credits no ledger row names.
 */
static int64
InsertGrant(const NewGrant *g, int64 carried_over)
{
	Datum		values[9];
	char		nulls[9];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(g->account_id);
	values[1] = CStringGetTextDatum(g->source);
	values[2] = Int64GetDatum(g->credits);
	values[3] = Int32GetDatum(g->priority);
	values[4] = TimestampTzGetDatum(g->expires_at);
	nulls[4] = g->expires ? ' ' : 'n';
	values[5] = Int8OrNull(g->recharge_id, &nulls[5]);
	values[6] = TimestampTzGetDatum(g->period_start);
	nulls[6] = g->has_period ? ' ' : 'n';
	values[7] = g->note ? CStringGetTextDatum(g->note) : (Datum) 0;
	nulls[7] = g->note ? ' ' : 'n';
	values[8] = Int64GetDatum(carried_over);
	CreditsExecPlan(PLAN_INSERT_GRANT, values, nulls, 1);
	return ResultInt8(0, 1);
}

/*
 * LedgerExpireDue
 *		Expires the account's grants whose expires_at is at or before "at"
 *		and that still have credits: an "expire" row each, remaining 0.
 *		Returns how many; *credits gets the credits that lapsed.
 */
int64
LedgerExpireDue(int64 account_id, TimestampTz at, int64 *credits)
{
	Datum		values[2];
	uint64		n;
	int64	   *ids;
	int64	   *left;

	*credits = 0;
	values[0] = Int64GetDatum(account_id);
	values[1] = TimestampTzGetDatum(at);
	CreditsExecPlan(PLAN_DUE_GRANTS, values, NULL, -1);
	n = SPI_processed;
	if (n == 0)
		return 0;
	ids = palloc(sizeof(int64) * n);
	left = palloc(sizeof(int64) * n);
	for (uint64 i = 0; i < n; i++)
	{
		ids[i] = ResultInt8(i, 1);
		left[i] = ResultInt8(i, 2);
	}
	for (uint64 i = 0; i < n; i++)
	{
		PostRow(account_id, -left[i], "expire", 0, 0, NULL, 0, ids[i]);
		MoveGrant(ids[i], -left[i], NULL, NULL);
		*credits += left[i];
	}
	return (int64) n;
}

/*
 * LedgerRepayOwed
 *		Pays what the account's batches owe from its open grants, oldest
 *		batch first, grants in draw-down order: a "repay" pair per part (-x
 *		on the grant, +x without a grant, both naming the batch).  The
 *		caller has expired the account's due grants.
 */
void
LedgerRepayOwed(int64 account_id)
{
	RepayOwed(account_id, 0, 0);
}

/*
 * RepayOwed
 *		LedgerRepayOwed from the account's open grants, or, with from_grant,
 *		from that one grant only and at most "available" of it (a refund's
 *		part that went back to an expired grant).  Returns what it paid.
 */
static int64
RepayOwed(int64 account_id, int64 from_grant, int64 available)
{
	Datum		values[1];
	int64		paid = 0;
	uint64		nbatches;
	uint64		ngrants;
	int64	   *batch;
	int64	   *owed;
	int64	   *grant;
	int64	   *left;
	uint64		i = 0;
	uint64		j = 0;

	values[0] = Int64GetDatum(account_id);
	CreditsExecPlan(PLAN_OWED_BATCHES, values, NULL, -1);
	nbatches = SPI_processed;
	if (nbatches == 0)
		return 0;
	batch = palloc(sizeof(int64) * nbatches);
	owed = palloc(sizeof(int64) * nbatches);
	for (uint64 k = 0; k < nbatches; k++)
	{
		batch[k] = ResultInt8(k, 1);
		owed[k] = ResultInt8(k, 2);
	}
	if (from_grant != 0)
	{
		ngrants = 1;
		grant = palloc(sizeof(int64));
		left = palloc(sizeof(int64));
		grant[0] = from_grant;
		left[0] = available;
	}
	else
	{
		CreditsExecPlan(PLAN_OPEN_GRANTS, values, NULL, -1);
		ngrants = SPI_processed;
		if (ngrants == 0)
			return 0;
		grant = palloc(sizeof(int64) * ngrants);
		left = palloc(sizeof(int64) * ngrants);
		for (uint64 k = 0; k < ngrants; k++)
		{
			grant[k] = ResultInt8(k, 1);
			left[k] = ResultInt8(k, 2);
		}
	}

	while (i < nbatches && j < ngrants)
	{
		int64		take = Min(owed[i], left[j]);

		PostRow(account_id, -take, "repay", batch[i], 0, NULL, 0, grant[j]);
		MoveGrant(grant[j], -take, NULL, NULL);
		PostRow(account_id, take, "repay", batch[i], 0, NULL, 0, 0);
		MoveOwed(batch[i], -take);
		owed[i] -= take;
		left[j] -= take;
		paid += take;
		if (owed[i] == 0)
			i++;
		if (left[j] == 0)
			j++;
	}
	return paid;
}

/*
 * LedgerRefundBatch
 *		A failed batch's cost goes back where it came from: what it still
 *		owes is forgiven (a row without a grant), each grant's part goes
 *		back to that grant (and expires at once if the grant has expired
 *		meanwhile: a "refund" row, then an "expire" row).  The caller then
 *		pays the account's debts from what came back (LedgerRepayOwed),
 *		once all the batches it refunds are refunded.  A batch debited
 *		before 0.2.0 has one grantless debit row: the part of it not owed
 *		was bought credits, and goes into a new "purchase" grant.
 */
void
LedgerRefundBatch(int64 account_id, int64 batch_id, int64 recharge_id, int64 cost)
{
	Datum		values[1];
	uint64		n;
	int64	   *grant;
	int64	   *amount;
	int64		grantless = 0;
	int64		debit_rows = 0;
	int64		owed;
	int64		refunded = 0;
	TimestampTz now = CreditsNow();

	values[0] = Int64GetDatum(batch_id);
	CreditsExecPlan(PLAN_BATCH_OWED, values, NULL, 1);
	owed = ResultInt8(0, 1);
	CreditsExecPlan(CreditsEntriesInBatches() ? PLAN_BATCH_FUNDING_ENTRIES : PLAN_BATCH_FUNDING,
					values, NULL, -1);
	n = SPI_processed;
	grant = palloc(sizeof(int64) * (n > 0 ? n : 1));
	amount = palloc(sizeof(int64) * (n > 0 ? n : 1));
	for (uint64 i = 0; i < n; i++)
	{
		grant[i] = ResultInt8(i, 1);
		amount[i] = ResultInt8(i, 2);
		debit_rows += ResultInt8(i, 3);
		if (grant[i] == 0)
			grantless = amount[i];
	}

	/*
	 * A batch debited before 0.2.0 has one debit row, without a grant or a
	 * recharge_id (so not in ledger_batch_idx): its whole cost.  (On a 0.3.0
	 * schema that row is the batch's own entry, read with the others.)
	 */
	if (debit_rows == 0)
		grantless += cost;
	if (grantless < owed)
		elog(ERROR, "credits: batch " INT64_FORMAT " owes " INT64_FORMAT " but its grantless debits total " INT64_FORMAT,
			 batch_id, owed, grantless);

	/*
	 * What the batch still owes is forgiven, and (a batch debited before
	 * 0.2.0) the part of its one grantless debit row that was not owed comes
	 * back: both in one refund row without a grant (one refund row per batch
	 * and grant).  That second part was bought credits, from the 0.1
	 * balance: it becomes a purchase grant carried over as the update
	 * carries 0.1 balances (carried_over, no row naming it).
	 */
	if (grantless > 0)
	{
		int64		legacy = grantless - owed;

		PostRow(account_id, grantless, "refund", batch_id, recharge_id, NULL, 0, 0);
		if (owed > 0)
			MoveOwed(batch_id, -owed);
		if (legacy > 0)
		{
			NewGrant	g;

			memset(&g, 0, sizeof(g));
			g.account_id = account_id;
			g.source = "purchase";
			g.credits = legacy;
			g.priority = 50;
			g.note = psprintf("refund of batch " INT64_FORMAT ", debited before version 0.2.0",
							  batch_id);
			InsertGrant(&g, legacy);
		}
		refunded += grantless;
	}
	for (uint64 i = 0; i < n; i++)
	{
		TimestampTz expires_at;
		bool		expires;

		if (grant[i] == 0 || amount[i] <= 0)
			continue;
		PostRow(account_id, amount[i], "refund", batch_id, recharge_id, NULL, 0, grant[i]);
		MoveGrant(grant[i], amount[i], &expires_at, &expires);
		if (expires && expires_at <= now)
		{
			/*
			 * The grant has expired since these credits were drawn: they were
			 * in use then, not idle.  They first pay debts the account ran up
			 * meanwhile (batches that were let through against them), and
			 * only what is left lapses.
			 */
			int64		lapsed = amount[i] - RepayOwed(account_id, grant[i], amount[i]);

			if (lapsed > 0)
			{
				PostRow(account_id, -lapsed, "expire", batch_id, 0, NULL, 0, grant[i]);
				MoveGrant(grant[i], -lapsed, NULL, NULL);
			}
		}
		refunded += amount[i];
	}
	if (refunded != cost)
		elog(ERROR, "credits: batch " INT64_FORMAT " cost " INT64_FORMAT " but its debits total " INT64_FORMAT,
			 batch_id, cost, refunded);
}

/*
 * LedgerRestoreEntry
 *		Stores a restored ledger row (the columns of the credits.ledger view,
 *		in its order) in credits.ledger_entries as it was: its entry_id (a
 *		new one if null) and created_at (now if null).  Nothing else moves:
 *		the accounts and grants of the dump are restored as they were too.
 */
void
LedgerRestoreEntry(const Datum *values, const bool *nulls)
{
	char		n[LEDGER_RESTORED_COLUMNS];

	for (int i = 0; i < LEDGER_RESTORED_COLUMNS; i++)
		n[i] = nulls[i] ? 'n' : ' ';
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	CreditsExecPlan(PLAN_RESTORE_ENTRY, (Datum *) values, n, 1);
	SPI_finish();
}

/*
 * MoveGrant
 *		remaining += delta (closed_at set when it reaches 0, cleared when it
 *		leaves 0); returns the new remaining and, if asked, the expiry.
 */
static int64
MoveGrant(int64 grant_id, int64 delta, TimestampTz *expires_at, bool *expires)
{
	Datum		values[2];
	bool		isnull;
	Datum		v;
	int64		remaining;

	values[0] = Int64GetDatum(grant_id);
	values[1] = Int64GetDatum(delta);
	CreditsExecPlan(PLAN_MOVE_GRANT, values, NULL, 1);
	remaining = ResultInt8(0, 1);
	v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (expires != NULL)
		*expires = !isnull;
	if (expires_at != NULL)
		*expires_at = isnull ? 0 : DatumGetTimestampTz(v);
	return remaining;
}

/* owed += delta on a batch, with the guard trigger's flag up. */
static void
MoveOwed(int64 batch_id, int64 delta)
{
	Datum		values[2];

	values[0] = Int64GetDatum(batch_id);
	values[1] = Int64GetDatum(delta);
	CreditsExecPlanSettling(PLAN_MOVE_OWED, values, 1);
}

/* A bigint column of the last SPI result; 0 when null. */
static int64
ResultInt8(int row, int col)
{
	bool		isnull;
	Datum		v = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? 0 : DatumGetInt64(v);
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
	int64		account_id = PG_GETARG_INT64(0);
	int64		initial = PG_GETARG_INT64(1);

	credits_serving_0_1_0 = false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	if (!CreditsHasGrants())
		opened = LedgerOpenAccount(account_id, initial);
	else
	{
		/*
		 * 0.2.0: _open_account(account_id, initial_credits, expires_at).  The
		 * initial credits are a signup grant whose ledger row is the "open"
		 * row; with none, the "open" row is written for 0.
		 */
		Datum		values[1];

		values[0] = Int64GetDatum(account_id);
		CreditsExecPlan(PLAN_INSERT_ACCOUNT, values, NULL, -1);
		opened = SPI_processed == 1;
		if (opened && initial > 0)
		{
			NewGrant	g;

			memset(&g, 0, sizeof(g));
			g.account_id = account_id;
			g.source = "signup";
			g.kind = "open";
			g.credits = initial;
			g.priority = 20;
			g.expires = PG_NARGS() > 2 && !PG_ARGISNULL(2);
			if (g.expires)
				g.expires_at = PG_GETARG_TIMESTAMPTZ(2);
			LedgerAddGrant(&g);
		}
		else if (opened)
			PostRow(account_id, 0, "open", 0, 0, NULL, 0, 0);
	}
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
	if (!CreditsHasGrants())
		balance = LedgerPost(PG_GETARG_INT64(0), PG_GETARG_INT64(1), "grant", 0, 0, note, 0);
	else
	{
		/* 0.2.0: a purchase grant that never expires */
		NewGrant	g;
		Datum		values[1];

		memset(&g, 0, sizeof(g));
		g.account_id = PG_GETARG_INT64(0);
		g.source = "purchase";
		g.kind = "grant";
		g.credits = PG_GETARG_INT64(1);
		g.priority = 50;
		g.note = note;
		LedgerAddGrant(&g);
		values[0] = Int64GetDatum(g.account_id);
		CreditsExecPlan(PLAN_READ_ACCOUNT, values, NULL, 1);
		balance = ResultInt8(0, 1);
	}
	SPI_finish();
	PG_RETURN_INT64(balance);
}

/*
 * credits_add_grant
 *		credits._add_grant(account_id bigint, source text, credits bigint,
 *		priority integer, expires_at timestamptz, note text,
 *		period_start timestamptz) RETURNS bigint, for grant_credits() and the
 *		plan functions (which validate and hold the account lock): opens a
 *		grant ("plan" ledger row for a plan period, else "grant") and pays
 *		what the account owes from it.  Returns the grant_id.
 */
PG_FUNCTION_INFO_V1(credits_add_grant);

Datum
credits_add_grant(PG_FUNCTION_ARGS)
{
	NewGrant	g;
	int64		grant_id;

	credits_serving_0_1_0 = false;
	for (int i = 0; i < 4; i++)
		if (PG_ARGISNULL(i))
			elog(ERROR, "credits._add_grant: argument %d must not be null", i + 1);
	memset(&g, 0, sizeof(g));
	g.account_id = PG_GETARG_INT64(0);
	g.source = text_to_cstring(PG_GETARG_TEXT_PP(1));
	g.kind = strcmp(g.source, "plan") == 0 ? "plan" : "grant";
	g.credits = PG_GETARG_INT64(2);
	g.priority = PG_GETARG_INT32(3);
	g.expires = !PG_ARGISNULL(4);
	if (g.expires)
		g.expires_at = PG_GETARG_TIMESTAMPTZ(4);
	g.note = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	g.has_period = !PG_ARGISNULL(6);
	if (g.has_period)
		g.period_start = PG_GETARG_TIMESTAMPTZ(6);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	grant_id = LedgerAddGrant(&g);
	SPI_finish();
	PG_RETURN_INT64(grant_id);
}

/*
 * credits_expire_due
 *		credits._expire_due(account_id bigint, at timestamptz) RETURNS
 *		bigint[]: expires the account's grants due at "at" (the caller holds
 *		the account lock); returns {grants expired, credits lapsed}.
 */
PG_FUNCTION_INFO_V1(credits_expire_due);

Datum
credits_expire_due(PG_FUNCTION_ARGS)
{
	int64		result[2];

	credits_serving_0_1_0 = false;
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		elog(ERROR, "credits._expire_due: arguments must not be null");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	result[0] = LedgerExpireDue(PG_GETARG_INT64(0), PG_GETARG_TIMESTAMPTZ(1), &result[1]);
	SPI_finish();
	PG_RETURN_DATUM(Int8ArrayDatum(result, 2));
}

/*
 * credits_repay_owed
 *		credits._repay_owed(account_id bigint) RETURNS void: LedgerRepayOwed
 *		for carry_over_balances() (which holds the account lock).
 */
PG_FUNCTION_INFO_V1(credits_repay_owed);

Datum
credits_repay_owed(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	LedgerRepayOwed(PG_GETARG_INT64(0));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * credits_add_owed
 *		credits._add_owed(batch_id bigint, credits bigint) RETURNS void: adds
 *		to what a batch owes, for carry_over_balances() (which holds the
 *		account lock).
 */
PG_FUNCTION_INFO_V1(credits_add_owed);

Datum
credits_add_owed(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	MoveOwed(PG_GETARG_INT64(0), PG_GETARG_INT64(1));
	SPI_finish();
	PG_RETURN_VOID();
}

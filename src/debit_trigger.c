/*-------------------------------------------------------------------------
 *
 * debit_trigger.c
 *	  BEFORE INSERT row trigger on credits.send_batches: prices the batch,
 *	  debits it, and opens or grows a pending recharge when auto-recharge
 *	  says so.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/debit_trigger.c
 *
 * Why BEFORE and not AFTER: the batch's cost, status and recharge_id are
 * decided under the account lock and must be in the stored row and in
 * RETURNING, which only a BEFORE trigger can arrange.
 *
 * What it writes: recharges at once (workers must see them); the debit
 * itself is queued in debit_state.c against the account's running balance,
 * and the account row and ledger rows are written by the AFTER STATEMENT
 * trigger credits_flush_debits.  The account is locked and read once per
 * statement, without SPI (direct_access.c).
 *
 * The ON CONFLICT trap: a BEFORE ROW trigger also fires for rows that
 * INSERT ... ON CONFLICT DO NOTHING then skips.  So, once the account lock
 * is held, the trigger looks for a batch with the same (account_id,
 * idempotency_key) in a fresh snapshot; if there is one, the row is about
 * to conflict and is returned priced but undebited (the executor then skips
 * it, or raises unique_violation for a plain INSERT).  Two sessions sending
 * the same key cannot both miss each other: both need the same account row
 * lock, so the second looks only after the first has committed or aborted.
 * Under REPEATABLE READ the second session never gets that far: the first
 * updated the account row, so locking it raises a serialization failure
 * (test/specs/idempotency_race.spec), and no debit survives either way.
 *
 * Locking, always in this order, the same order as every function in
 * credits--*.sql, so writers of one account cannot deadlock each other:
 *	  1. the account row, FOR NO KEY UPDATE, held to the end of the
 *		 transaction: every writer of an account's balance, in_flight,
 *		 policy or recharges takes it first;
 *	  2. a pending recharge row, by the UPDATE that grows it.  Workers claim
 *		 recharges without the account lock, SKIP LOCKED; see
 *		 PLAN_GROW_PENDING for the race with a claim.
 * A multi-row INSERT touching several accounts locks them in row order; two
 * such statements in opposite orders can deadlock, and PostgreSQL then
 * aborts one of them (README, Troubleshooting).
 *
 * The SQL runs as the owner of send_batches (the extension owner), as
 * ri_triggers.c does for foreign keys: an application needs INSERT on
 * send_batches only, never rights on accounts, ledger or recharges.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "compat.h"
#include "credits.h"
#include "debit_state.h"
#include "direct_access.h"
#include "draw_down.h"
#include "plan_cache.h"
#include "recharge_decision.h"

/* Attribute numbers of the send_batches columns the trigger reads or sets. */
typedef struct BatchColumns
{
	int			batch_id;
	int			account_id;
	int			messages;
	int			channel;
	int			idempotency_key;
	int			cost;
	int			status;
	int			recharge_id;
	int			owed;			/* 0.2.0 schemas; else 0 */
	int			entry[NUM_BATCH_ENTRY_COLUMNS];	/* 0.3.0 schemas; else 0 */
} BatchColumns;

/* What the trigger decided, to be written into the new row. */
typedef struct BatchOutcome
{
	int64		cost;
	const char *status;
	bool		has_recharge;
	int64		recharge_id;
	int64		owed;			/* what its grants could not pay */
	BatchEntry	entry;			/* its debit entry (0.3.0 schemas) */
} BatchOutcome;

static void LookUpColumns(TupleDesc tupdesc, BatchColumns *cols);
static BatchOutcome DebitBatch(int64 batch_id, int64 account_id, int32 messages,
							   const char *channel, text *idempotency_key,
							   bool check_later);
static void ConnectSPI(bool *connected);
static CachedAccount *LockAccount(int64 account_id);
static bool IsDuplicate(int64 account_id, text *idempotency_key);
pg_noreturn static void UnknownChannel(const char *channel) CREDITS_NORETURN;
static bool IsRestoredRow(Relation rel, HeapTuple tuple, TupleDesc tupdesc,
						  const BatchColumns *cols);
static bool LaterRowTriggers(TriggerData *trigdata);
static int64 MonthlyRoom(int64 account_id, const DebitDecision *d,
						 const RechargePolicy *policy);
static int64 CoveringRecharge(int64 account_id, int64 batch_id,
							  int64 balance_seen, const DebitDecision *d,
							  int64 amount, const RechargePolicy *policy,
							  int64 *bought);
static int64 GetInt8(int row, int col, bool *isnull);

/*
 * credits_debit_batch_0_1_1
 *		BEFORE INSERT FOR EACH ROW trigger on credits.send_batches
 *		(credits.debit_batch() from 0.1.1; legacy.c serves 0.1.0's name).
 */
PG_FUNCTION_INFO_V1(credits_debit_batch_0_1_1);

Datum
credits_debit_batch_0_1_1(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	return CreditsDebitBatchTrigger(fcinfo);
}

/*
 * CreditsDebitBatchTrigger
 *		The debit trigger itself, behind both generations' entry points.
 */
Datum
CreditsDebitBatchTrigger(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	BatchColumns cols;
	bool		isnull;
	Datum		d;
	int64		batch_id;
	int64		account_id;
	int32		messages;
	char	   *channel;
	text	   *idempotency_key;
	BatchOutcome out = {0};		/* set in PG_TRY (cppcheck 2.17 cannot tell) */
	Oid			save_userid;
	int			save_sec_context;
	int			replace_cols[4 + NUM_BATCH_ENTRY_COLUMNS];
	Datum		replace_values[4 + NUM_BATCH_ENTRY_COLUMNS];
	bool		replace_nulls[4 + NUM_BATCH_ENTRY_COLUMNS] = {0};
	int			nreplace;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_debit_batch: not called by trigger manager")));
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_debit_batch: must be fired BEFORE INSERT FOR EACH ROW")));

	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	tuple = trigdata->tg_trigtuple;
	LookUpColumns(tupdesc, &cols);
	/* the entry columns are the extension's only in a 0.3.0 schema */
	if (!CreditsEntriesInBatches())
		memset(cols.entry, 0, sizeof(cols.entry));
	else if (cols.entry[BATCH_ENTRY_ID] <= 0)
		elog(ERROR, "credits: send_batches lacks the columns of its debit entry");

	/*
	 * A row that already carries its cost and status, written by the table
	 * owner or a superuser, is a restored row (pg_restore, psql -f of a
	 * dump): it was debited when it was first inserted, and its ledger rows
	 * are restored beside it.  Stored as is.
	 */
	if (!credits_serving_0_1_0 && IsRestoredRow(rel, tuple, tupdesc, &cols))
		return PointerGetDatum(tuple);

	/* What only the extension may set. */
	{
		static const char *const managed[] = {"cost", "status", "recharge_id"};
		const int	managed_att[] = {cols.cost, cols.status, cols.recharge_id};

		for (int i = 0; i < 3; i++)
		{
			if (!heap_attisnull(tuple, managed_att[i], tupdesc))
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_MANAGED_COLUMN),
						 errmsg("column \"%s\" of send_batches is set by the extension", managed[i]),
						 errdetail("An application inserts account_id, messages, channel and idempotency_key only."),
						 errhint("Leave \"%s\" out of the INSERT. Restoring a dump? Restore as the table owner or a superuser: rows that carry both cost and status are then taken as restored.",
								 managed[i])));
		}
		for (int i = 0; i < NUM_BATCH_ENTRY_COLUMNS; i++)
		{
			if (cols.entry[i] > 0 && !heap_attisnull(tuple, cols.entry[i], tupdesc))
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_MANAGED_COLUMN),
						 errmsg("column \"%s\" of send_batches is set by the extension",
								NameStr(TupleDescAttr(tupdesc, cols.entry[i] - 1)->attname)),
						 errdetail("An application inserts account_id, messages, channel and idempotency_key only."),
						 errhint("Leave \"%s\" out of the INSERT.",
								 NameStr(TupleDescAttr(tupdesc, cols.entry[i] - 1)->attname))));
		}
		if (cols.owed > 0)
		{
			d = heap_getattr(tuple, cols.owed, tupdesc, &isnull);
			if (isnull || DatumGetInt64(d) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_MANAGED_COLUMN),
						 errmsg("column \"owed\" of send_batches is set by the extension"),
						 errdetail("An application inserts account_id, messages, channel and idempotency_key only."),
						 errhint("Leave \"owed\" out of the INSERT.")));
		}
	}

	d = heap_getattr(tuple, cols.account_id, tupdesc, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("account_id of a send batch must not be null")));
	account_id = DatumGetInt64(d);

	d = heap_getattr(tuple, cols.messages, tupdesc, &isnull);
	if (isnull || DatumGetInt32(d) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_INVALID_MESSAGES),
				 errmsg("messages must be a positive number"),
				 isnull ? errdetail("messages is null.")
				 : errdetail("messages is %d.", DatumGetInt32(d))));
	messages = DatumGetInt32(d);

	d = heap_getattr(tuple, cols.channel, tupdesc, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("channel of a send batch must not be null"),
				 errhint("Leave it out to send by email.")));
	channel = TextDatumGetCString(d);

	d = heap_getattr(tuple, cols.idempotency_key, tupdesc, &isnull);
	idempotency_key = isnull ? NULL : DatumGetTextPP(d);

	d = heap_getattr(tuple, cols.batch_id, tupdesc, &isnull);
	if (isnull)
		elog(ERROR, "credits_debit_batch: batch_id was not assigned");
	batch_id = DatumGetInt64(d);

	/* Act as the table owner for the SQL below; see the header comment. */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);

	CreditsBeginDebit();
	PG_TRY();
	{
		out = DebitBatch(batch_id, account_id, messages, channel, idempotency_key,
						 LaterRowTriggers(trigdata) || CreditsBatchesHaveOtherArbiters());
	}
	PG_FINALLY();
	{
		CreditsEndDebit();
	}
	PG_END_TRY();

	SetUserIdAndSecContext(save_userid, save_sec_context);

	replace_cols[0] = cols.cost;
	replace_values[0] = Int64GetDatum(out.cost);
	replace_cols[1] = cols.status;
	replace_values[1] = CStringGetTextDatum(out.status);
	nreplace = 2;
	if (out.has_recharge)
	{
		replace_cols[nreplace] = cols.recharge_id;
		replace_values[nreplace] = Int64GetDatum(out.recharge_id);
		nreplace++;
	}
	if (cols.owed > 0 && out.owed != 0)
	{
		replace_cols[nreplace] = cols.owed;
		replace_values[nreplace] = Int64GetDatum(out.owed);
		nreplace++;
	}
	if (cols.entry[BATCH_ENTRY_ID] > 0)
	{
		/*
		 * The batch's debit entry; none for a duplicate (never stored).
		 * Nulls for no grant or recharge.
		 */
		const int64 entry[NUM_BATCH_ENTRY_COLUMNS] = {
			[BATCH_ENTRY_ID] = out.entry.entry_id,
			[BATCH_ENTRY_DELTA] = out.entry.delta,
			[BATCH_ENTRY_BALANCE_AFTER] = out.entry.balance_after,
			[BATCH_ENTRY_GRANT_ID] = out.entry.grant_id,
			[BATCH_ENTRY_RECHARGE_ID] = out.entry.recharge_id,
		};

		for (int i = 0; i < NUM_BATCH_ENTRY_COLUMNS; i++)
		{
			if (cols.entry[i] <= 0)
				elog(ERROR, "credits: send_batches lacks a column of its debit entry");
			replace_cols[nreplace] = cols.entry[i];
			replace_values[nreplace] = Int64GetDatum(entry[i]);
			replace_nulls[nreplace] = out.entry.entry_id == 0 ||
				(entry[i] == 0 && (i == BATCH_ENTRY_GRANT_ID || i == BATCH_ENTRY_RECHARGE_ID));
			nreplace++;
		}
	}
	tuple = heap_modify_tuple_by_cols(tuple, tupdesc, nreplace,
									  replace_cols, replace_values, replace_nulls);
	return PointerGetDatum(tuple);
}

/*
 * LookUpColumns
 *		Attribute numbers of send_batches' columns, by name, so that columns a
 *		DBA adds or drops do not matter.  The last answer is kept and reused
 *		while every name is still at its number (one comparison per column,
 *		not a search of the descriptor per column and row).
 */
static void
LookUpColumns(TupleDesc tupdesc, BatchColumns *cols)
{
	static const char *const names[] = {
		"batch_id", "account_id", "messages", "channel",
		"idempotency_key", "cost", "status", "recharge_id",
		/* optional from here: FIRST_OPTIONAL */
		"owed",
		"entry_id", "entry_delta", "entry_balance_after", "entry_grant_id",
		"entry_recharge_id"
	};
#define FIRST_OPTIONAL 8
	static BatchColumns last;
	static int	last_natts = -1;
	int		   *slots[] = {
		&cols->batch_id, &cols->account_id, &cols->messages, &cols->channel,
		&cols->idempotency_key, &cols->cost, &cols->status, &cols->recharge_id,
		&cols->owed,
		&cols->entry[BATCH_ENTRY_ID], &cols->entry[BATCH_ENTRY_DELTA],
		&cols->entry[BATCH_ENTRY_BALANCE_AFTER], &cols->entry[BATCH_ENTRY_GRANT_ID],
		&cols->entry[BATCH_ENTRY_RECHARGE_ID]
	};
	int			n = (int) lengthof(names);

	StaticAssertStmt(lengthof(names) == lengthof(slots), "one slot per column");

	/*
	 * An optional column found absent stays absent while the number of
	 * attributes is the same (adding one, as the 0.2.0 and 0.3.0 updates
	 * do, changes it); every column found is checked where it was.
	 */
	*cols = last;
	if (last_natts == tupdesc->natts)
	{
		bool		same = true;

		for (int i = 0; i < n && same; i++)
		{
			Form_pg_attribute attr;

			if (*slots[i] == 0 && i >= FIRST_OPTIONAL)
				continue;
			if (*slots[i] <= 0 || *slots[i] > tupdesc->natts)
			{
				same = false;
				break;
			}
			attr = TupleDescAttr(tupdesc, *slots[i] - 1);
			same = !attr->attisdropped && strcmp(NameStr(attr->attname), names[i]) == 0;
		}
		if (same)
			return;
	}
	for (int i = 0; i < n; i++)
	{
		*slots[i] = SPI_fnumber(tupdesc, names[i]);
		/* owed is 0.2.0's, the entry columns 0.3.0's; older schemas lack them */
		if (i < FIRST_OPTIONAL && *slots[i] <= 0)
			elog(ERROR, "credits: send_batches has no column \"%s\"", names[i]);
		if (*slots[i] <= 0)
			*slots[i] = 0;
	}
	last = *cols;
	last_natts = tupdesc->natts;
}

/*
 * DebitBatch
 *		Prices the batch, applies the recharge rule against the account's
 *		running balance and queues the debit (debit_state.c writes it at the
 *		end of the statement).  SQL runs only for what this statement has not
 *		seen yet: the account (locked and read once), a channel's price, a
 *		duplicate key, and recharges.
 */
static BatchOutcome
DebitBatch(int64 batch_id, int64 account_id, int32 messages,
		   const char *channel, text *idempotency_key, bool check_later)
{
	BatchOutcome out = {0, "ready", false, 0, 0, {0}};
	bool		connected = false;
	CachedAccount *account;
	int32		price;
	bool		duplicate = false;
	int64		balance;
	DebitDecision decision;

	account = CreditsFindAccount(account_id);
	if (account == NULL)
		account = LockAccount(account_id);
	if (!CreditsCachedPrice(channel, &price))
	{
		if (!CreditsReadPriceDirect(channel, &price))
			UnknownChannel(channel);
		CreditsCachePrice(channel, price);
	}
	if (idempotency_key != NULL)
	{
		/* after the account lock: see the header comment */
		ConnectSPI(&connected);
		duplicate = IsDuplicate(account_id, idempotency_key);
	}

	if (pg_mul_s64_overflow((int64) messages, (int64) price, &out.cost))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE),
				 errmsg("cost of batch is out of range"),
				 errdetail("%d messages at %d credits each do not fit in a bigint.",
						   messages, price)));

	if (duplicate)
	{
		/*
		 * This row conflicts with a stored batch: the executor will skip it
		 * (ON CONFLICT DO NOTHING) or reject it (unique_violation).  Debit
		 * nothing.  It is priced only to pass the NOT NULL checks, which run
		 * before the conflict check.  A later trigger could change its key
		 * or account so that it no longer conflicts and is stored: then it
		 * must be found absent at statement end.
		 */
		if (check_later)
			CreditsQueueBatchAbsent(batch_id);
		if (connected)
			SPI_finish();
		return out;
	}

	/* The rule, against the running balance. */
	balance = account->balance;
	decision = CreditsDecideDebit(balance, account->in_flight, out.cost, &account->policy);
	switch (decision.verdict)
	{
		case DEBIT_INSUFFICIENT:
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_INSUFFICIENT_CREDITS),
					 errmsg("insufficient credits in account %lld", (long long) account_id),
					 errdetail("The balance is %lld and the batch costs %lld (%d messages x %d credits).",
							   (long long) balance, (long long) out.cost,
							   messages, price),
					 errhint("Add credits with credits.add_credits(), or turn on credits.enable_auto_recharge().")));
			break;
		case DEBIT_OVER_LIMIT:
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_RECHARGE_LIMIT_EXCEEDED),
					 errmsg("recharge limit exceeded for account %lld", (long long) account_id),
					 errdetail("The batch costs %lld and needs a recharge of %lld credits, but max_credits is %lld (balance %lld, in-flight recharges %lld, min_balance %lld).",
							   (long long) out.cost, (long long) decision.need,
							   (long long) account->policy.max_credits, (long long) balance,
							   (long long) account->in_flight,
							   (long long) account->policy.min_balance),
					 errhint("Send a smaller batch, add credits, or raise max_credits with credits.enable_auto_recharge().")));
			break;
		case DEBIT_OUT_OF_RANGE:
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE),
					 errmsg("balance of account %lld is out of range", (long long) account_id),
					 errdetail("The balance is %lld, in-flight recharges %lld and the batch costs %lld.",
							   (long long) balance, (long long) account->in_flight,
							   (long long) out.cost)));
			break;
		case DEBIT_PAID:
		case DEBIT_NEEDS_RECHARGE:
			break;
	}

	/* Recharge first (it may add to in_flight), then the debit. */
	if (decision.verdict == DEBIT_NEEDS_RECHARGE || decision.shortfall)
	{
		int64		amount = 0;

		ConnectSPI(&connected);
		if (decision.verdict == DEBIT_NEEDS_RECHARGE)
		{
			int64		in_flight_after;

			amount = CreditsRechargeAmount(&decision, account->in_flight, &account->policy);
			if (account->policy.has_monthly_limit)
				amount = Min(amount, MonthlyRoom(account_id, &decision, &account->policy));
			if (pg_add_s64_overflow(account->in_flight, amount, &in_flight_after))
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE),
						 errmsg("in-flight recharges of account %lld are out of range",
								(long long) account_id),
						 errdetail("In-flight recharges are %lld and the batch needs a recharge of %lld more; the sum must fit in a bigint.",
								   (long long) account->in_flight, (long long) amount)));
		}
		out.recharge_id = CoveringRecharge(account_id, batch_id, balance,
										   &decision, amount, &account->policy, &amount);
		out.has_recharge = decision.shortfall;
		account->in_flight += amount;
	}
	if (decision.shortfall)
		out.status = "awaiting_credits";

	out.owed = CreditsQueueDebit(account, out.cost, batch_id,
								 out.has_recharge ? out.recharge_id : 0, &out.entry);
	if (check_later)
		CreditsQueueBatchCheck(batch_id, account_id, messages, channel,
							   idempotency_key, out.cost, out.status,
							   out.has_recharge, out.recharge_id, out.owed,
							   account->entries_in_batch ? &out.entry : NULL);

	if (connected)
		SPI_finish();
	return out;
}

/*
 * IsRestoredRow
 *		Whether the new row is a restored one: cost and status both given,
 *		by a role that owns send_batches (or a superuser), acting as itself.
 *		Not inside a SECURITY DEFINER function or any other code that runs
 *		as another role (SECURITY_LOCAL_USERID_CHANGE), nor in a
 *		security-restricted operation: a superuser-owned function must not
 *		become a way for its callers to store batches without a debit.  A
 *		restore runs as the restoring role itself.  Anyone else who sets
 *		cost or status gets MC007 below.
 */
static bool
IsRestoredRow(Relation rel, HeapTuple tuple, TupleDesc tupdesc,
			  const BatchColumns *cols)
{
	if (heap_attisnull(tuple, cols->cost, tupdesc) ||
		heap_attisnull(tuple, cols->status, tupdesc))
		return false;
	return CreditsMayRestore(RelationGetRelid(rel));
}

/*
 * LaterRowTriggers
 *		Whether another BEFORE INSERT row trigger on send_batches fires after
 *		this one (trigger names sort later).  Such a trigger could change
 *		the row, or drop it, after it was debited; then each debited row is
 *		read back when the statement ends (credits_flush_debits).  The
 *		relation's triggers are listed in firing order.
 */
static bool
LaterRowTriggers(TriggerData *trigdata)
{
	TriggerDesc *trigdesc = trigdata->tg_relation->trigdesc;
	bool		after_mine = false;

	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (t->tgoid == trigdata->tg_trigger->tgoid)
			after_mine = true;
		else if (after_mine && t->tgenabled != TRIGGER_DISABLED &&
				 TRIGGER_TYPE_MATCHES(t->tgtype, TRIGGER_TYPE_ROW, TRIGGER_TYPE_BEFORE,
									  TRIGGER_TYPE_INSERT))
			return true;
	}
	return false;
}

/* Connects to SPI once per trigger call, when first needed. */
static void
ConnectSPI(bool *connected)
{
	if (*connected)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	*connected = true;
}

/*
 * LockAccount
 *		Locks and reads an account the statement has not seen yet, with its
 *		policy (read after the lock), and caches it for the statement.
 */
static CachedAccount *
LockAccount(int64 account_id)
{
	CachedAccount account;
	CachedAccount *entry;

	memset(&account, 0, sizeof(account));
	account.account_id = account_id;
	account.has_grants = CreditsHasGrants();
	account.entries_in_batch = CreditsEntriesInBatches();
	if (!CreditsLockAccountDirect(account_id, &account.balance, &account.in_flight,
								  &account.tid))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_UNKNOWN_ACCOUNT),
				 errmsg("account %lld does not exist", (long long) account_id),
				 errhint("Open it first with credits.open_account().")));
	CreditsReadPolicyDirect(account_id, &account.policy);
	if (account.has_grants)
	{
		int64		in_grants = 0;

		account.ngrants = CreditsReadOpenGrantsDirect(account_id, &account.grants,
													  CurrentMemoryContext);
		CreditsSortGrants(account.grants, account.ngrants);

		/*
		 * balance = sum(remaining) - owed, so the grants hold at least the
		 * balance.  Not so only for 0.1 rows restored into 0.2.0 and not
		 * carried over yet: a debit would then owe credits the account has.
		 */
		for (int i = 0; i < account.ngrants; i++)
			if (pg_add_s64_overflow(in_grants, account.grants[i].remaining, &in_grants))
				in_grants = PG_INT64_MAX;
		if (in_grants < account.balance)
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_NOT_CARRIED_OVER),
					 errmsg("the balance of account %lld is not in its grants", (long long) account_id),
					 errdetail("The balance is %lld and its grants hold %lld: the account holds credits from before version 0.2.0 that were never carried over.",
							   (long long) account.balance, (long long) in_grants),
					 errhint("After restoring a dump taken before 0.2.0, run SELECT credits.carry_over_balances();")));
	}
	entry = CreditsRememberAccount(&account);

	/* No expired credit is spent: what lapsed goes before anything else. */
	if (entry->has_grants)
		CreditsQueueExpiries(entry, CreditsNow());
	return entry;
}

/* Whether a batch with this key is stored (or inserted earlier here). */
static bool
IsDuplicate(int64 account_id, text *idempotency_key)
{
	Datum		values[2];
	bool		isnull;

	values[0] = Int64GetDatum(account_id);
	values[1] = PointerGetDatum(idempotency_key);
	CreditsExecPlan(PLAN_DUPLICATE, values, NULL, 1);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull));
}

static void
UnknownChannel(const char *channel)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_UNKNOWN_CHANNEL),
			 errmsg("channel \"%s\" has no price", channel),
			 errhint("A DBA adds it with INSERT INTO credits.prices (channel, credits_per_message).")));
}

/*
 * MonthlyRoom
 *		What auto-recharge may still buy this calendar month (UTC); refuses
 *		the batch when even its need does not fit.  The account lock makes
 *		the count exact: every recharge is opened or grown under it.
 */
static int64
MonthlyRoom(int64 account_id, const DebitDecision *d, const RechargePolicy *policy)
{
	Datum		values[1];
	bool		isnull;
	int64		used;
	int64		room;

	values[0] = Int64GetDatum(account_id);
	CreditsExecPlan(PLAN_MONTH_USED, values, NULL, 1);
	used = GetInt8(0, 1, &isnull);
	room = CreditsMonthlyRoom(policy->monthly_limit, used);
	if (d->need > room)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_MONTHLY_LIMIT_EXCEEDED),
				 errmsg("monthly recharge limit exceeded for account %lld", (long long) account_id),
				 errdetail("The batch needs a recharge of %lld credits, but auto-recharge has bought or is buying %lld of the monthly limit of %lld this month (UTC), leaving %lld.",
						   (long long) d->need, (long long) used,
						   (long long) policy->monthly_limit, (long long) room),
				 errhint("Add credits with credits.add_credits(), or raise monthly_limit with credits.enable_auto_recharge().")));
	return room;
}

/*
 * CoveringRecharge
 *		Buys up to "amount" credits for this debit, sets *bought to what it
 *		really bought (growing a pending recharge may buy less, never less
 *		than the need), and returns the recharge that covers the debit: the
 *		pending recharge it grew, or the one it opened; with no need
 *		(in-flight recharges already cover the shortfall), the newest
 *		in-flight one.
 */
static int64
CoveringRecharge(int64 account_id, int64 batch_id, int64 balance_seen,
				 const DebitDecision *d, int64 amount, const RechargePolicy *policy,
				 int64 *bought)
{
	int64		recharge_id;
	Datum		values[7];
	char		nulls[7];
	bool		isnull;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(account_id);

	*bought = 0;
	if (d->verdict != DEBIT_NEEDS_RECHARGE)
	{
		CreditsExecPlan(PLAN_NEWEST_IN_FLIGHT, values, NULL, -1);
		if (SPI_processed != 1)
			elog(ERROR, "credits: account %lld is short but has no recharge in flight",
				 (long long) account_id);
		return GetInt8(0, 1, &isnull);
	}

	CreditsExecPlan(PLAN_FIND_PENDING, values, NULL, -1);

	/*
	 * Grow the newest pending recharge if the need fits under max_credits;
	 * with a monthly limit, only one opened this month, so that every
	 * recharge counts against the month it was opened in.
	 */
	if (SPI_processed == 1 &&
		(!policy->has_monthly_limit ||
		 DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull))))
	{
		int64		growth = CreditsPendingGrowth(GetInt8(0, 2, &isnull), d->need,
												  amount, policy->max_credits);

		if (growth > 0)
		{
			values[0] = Int64GetDatum(GetInt8(0, 1, &isnull));
			values[1] = Int64GetDatum(growth);
			values[2] = Int64GetDatum(policy->max_credits);
			values[3] = BoolGetDatum(d->shortfall);
			CreditsExecPlan(PLAN_GROW_PENDING, values, NULL, -1);
			if (SPI_processed == 1)
			{
				*bought = growth;
				return GetInt8(0, 1, &isnull);
			}
			/* claimed by a worker meanwhile: open a new one below */
		}
	}

	values[0] = Int64GetDatum(account_id);
	values[1] = Int64GetDatum(amount);
	values[2] = CStringGetTextDatum(d->shortfall ? "shortfall" : "threshold");
	values[3] = Int64GetDatum(batch_id);
	values[4] = Int64GetDatum(balance_seen);
	values[5] = Int64GetDatum(policy->max_credits);
	values[6] = Int64GetDatum(d->need);
	CreditsExecPlan(PLAN_OPEN_RECHARGE, values, nulls, 1);
	recharge_id = GetInt8(0, 1, &isnull);
	*bought = amount;

	/*
	 * Wake the payment workers: once per opened recharge, never per debit,
	 * since NOTIFY takes a database-wide lock at commit.  Delivered only if
	 * the transaction commits.
	 */
	Async_Notify("credits_recharge", psprintf(INT64_FORMAT, recharge_id));
	return recharge_id;
}

/* A bigint column of the last SPI result; 0 when null. */
static int64
GetInt8(int row, int col, bool *isnull)
{
	Datum		v = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, isnull);

	return *isnull ? 0 : DatumGetInt64(v);
}

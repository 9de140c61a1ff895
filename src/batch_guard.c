/*-------------------------------------------------------------------------
 *
 * batch_guard.c
 *	  Triggers that keep what was debited unchangeable: send_batches rows
 *	  cannot be deleted, truncated or have their debited columns changed,
 *	  and the ledger is append-only.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/batch_guard.c
 *
 * These refuse for every role, the table owner and superusers included:
 * changing what was debited would break balance = sum(ledger.delta).  A
 * superuser can still disable the triggers; credits.verify() then shows
 * what was broken.
 *
 * A batch's status and recharge_id move only while settle.c holds
 * credits_settling_batches up.  An UPDATE that changes nothing (say
 * ON CONFLICT DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key, to
 * return the stored row) is let through.
 *
 * Locking: none of its own; the UPDATE or DELETE holds the row lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/rel.h"

#include "credits.h"
#include "direct_access.h"
#include "ledger.h"

static bool ColumnChanged(HeapTuple oldtup, HeapTuple newtup, TupleDesc desc,
						  const char *name);

/*
 * credits_guard_batch_0_1_1
 *		BEFORE UPDATE OR DELETE row and BEFORE TRUNCATE statement trigger on
 *		credits.send_batches (legacy.c serves 0.1.0's name).
 */
PG_FUNCTION_INFO_V1(credits_guard_batch_0_1_1);

Datum
credits_guard_batch_0_1_1(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	return CreditsGuardBatchTrigger(fcinfo);
}

Datum
CreditsGuardBatchTrigger(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	oldtup;
	HeapTuple	newtup;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_guard_batch: must be fired BEFORE")));

	if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_BATCH_IMMUTABLE),
				 errmsg("send batches cannot be truncated"),
				 errdetail("Every batch was debited; removing batches would break the ledger.")));

	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_guard_batch: must be fired FOR EACH ROW for UPDATE or DELETE")));

	desc = RelationGetDescr(trigdata->tg_relation);
	oldtup = trigdata->tg_trigtuple;

	if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		bool		isnull;
		Datum		id = heap_getattr(oldtup, SPI_fnumber(desc, "batch_id"), desc, &isnull);

		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_BATCH_IMMUTABLE),
				 errmsg("send batches cannot be deleted"),
				 errdetail("Batch %lld was debited; removing it would break the ledger.",
						   isnull ? 0LL : (long long) DatumGetInt64(id))));
	}

	if (!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_guard_batch: unexpected event")));

	newtup = trigdata->tg_newtuple;
	{
		static const char *const debited[] = {
			"batch_id", "account_id", "messages", "channel", "cost",
			"idempotency_key", "created_at"
		};

		/* 0.3.0: the batch's own debit entry, a ledger entry like any */
		const char *const *entry = CreditsBatchEntryNames;
		bool		has_entry = CreditsEntriesInBatches();

		for (int i = 0; i < (int) lengthof(debited); i++)
			if (ColumnChanged(oldtup, newtup, desc, debited[i]))
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_BATCH_IMMUTABLE),
						 errmsg("column \"%s\" of a send batch cannot be changed", debited[i]),
						 errdetail("The batch was priced and debited when it was inserted.")));
		for (int i = 0; i < NUM_BATCH_ENTRY_COLUMNS && has_entry; i++)
			if (ColumnChanged(oldtup, newtup, desc, entry[i]))
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_BATCH_IMMUTABLE),
						 errmsg("column \"%s\" of a send batch cannot be changed", entry[i]),
						 errdetail("It is the batch's debit entry in credits.ledger, which is append-only.")));
	}
	if (!credits_settling_batches && SPI_fnumber(desc, "owed") > 0)
	{
		/* 0.2.0 and later: owed too */
		if (ColumnChanged(oldtup, newtup, desc, "status") ||
			ColumnChanged(oldtup, newtup, desc, "recharge_id") ||
			ColumnChanged(oldtup, newtup, desc, "owed"))
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_BATCH_IMMUTABLE),
					 errmsg("status, recharge_id and owed of a send batch are managed by the extension"),
					 errhint("They change when a recharge settles (credits.complete_recharge(), credits.fail_recharge(), credits.disable_auto_recharge()) and when credits arrive to pay what a batch owes.")));
	}
	else if (!credits_settling_batches &&
			 (ColumnChanged(oldtup, newtup, desc, "status") ||
			  ColumnChanged(oldtup, newtup, desc, "recharge_id")))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_BATCH_IMMUTABLE),
				 errmsg("status and recharge_id of a send batch are managed by the extension"),
				 errhint("They change when a recharge settles: credits.complete_recharge(), credits.fail_recharge(), credits.disable_auto_recharge().")));

	return PointerGetDatum(newtup);
}

/*
 * credits_guard_ledger_0_1_1
 *		BEFORE UPDATE OR DELETE row and BEFORE TRUNCATE statement trigger on
 *		credits.ledger (legacy.c serves 0.1.0's name).
 */
PG_FUNCTION_INFO_V1(credits_guard_ledger_0_1_1);

Datum
credits_guard_ledger_0_1_1(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	return CreditsGuardLedgerTrigger(fcinfo);
}

Datum
CreditsGuardLedgerTrigger(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!(TRIGGER_FIRED_BEFORE(trigdata->tg_event) || TRIGGER_FIRED_INSTEAD(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_guard_ledger: must be fired BEFORE or INSTEAD OF")));

	/*
	 * From 0.3.0 credits.ledger is a view (INSTEAD OF, INSERT included: the
	 * extension writes the tables behind it) and the table behind it is
	 * credits.ledger_entries.
	 */
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_LEDGER_APPEND_ONLY),
			 errmsg("the credits ledger is append-only"),
			 errdetail("%s on %s is refused for every role.",
					   TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event) ? "TRUNCATE" :
					   TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ? "DELETE" :
					   TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ? "INSERT" : "UPDATE",
					   quote_qualified_identifier("credits",
												  RelationGetRelationName(trigdata->tg_relation))),
			 TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ?
			 errhint("The extension writes the ledger: add credits with credits.add_credits() or credits.grant_credits().") :
			 errhint("Correct a balance with a new entry, e.g. credits.add_credits().")));
	PG_RETURN_NULL();			/* not reached */
}

/*
 * credits_restore_ledger_entry
 *		INSTEAD OF INSERT row trigger on the credits.ledger view (0.3.0).  A
 *		dump taken before 0.3.0 holds the ledger as a table: restoring it
 *		inserts into the view.  A role that may restore (CreditsMayRestore)
 *		gets each row stored in credits.ledger_entries as it was (ledger.c
 *		writes it); anyone else gets MC009, as for any other write.
 */
PG_FUNCTION_INFO_V1(credits_restore_ledger_entry);

Datum
credits_restore_ledger_entry(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	static const char *const names[LEDGER_RESTORED_COLUMNS] = {
		"entry_id", "account_id", "delta", "balance_after", "kind", "batch_id",
		"recharge_id", "note", "created_at", "grant_id"
	};
	Datum		values[LEDGER_RESTORED_COLUMNS];
	bool		nulls[LEDGER_RESTORED_COLUMNS];
	TupleDesc	desc;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_INSTEAD(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_restore_ledger_entry: must be fired INSTEAD OF INSERT FOR EACH ROW")));
	if (!CreditsMayRestore(RelationGetRelid(trigdata->tg_relation)))
		return CreditsGuardLedgerTrigger(fcinfo);

	desc = RelationGetDescr(trigdata->tg_relation);
	for (int i = 0; i < LEDGER_RESTORED_COLUMNS; i++)
	{
		int			attnum = SPI_fnumber(desc, names[i]);

		if (attnum <= 0)
			elog(ERROR, "credits: the ledger view has no column \"%s\"", names[i]);
		values[i] = heap_getattr(trigdata->tg_trigtuple, attnum, desc, &nulls[i]);
	}
	LedgerRestoreEntry(values, nulls);
	return PointerGetDatum(trigdata->tg_trigtuple);
}

/* Whether column "name" differs between the two row versions. */
static bool
ColumnChanged(HeapTuple oldtup, HeapTuple newtup, TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);
	Form_pg_attribute att;
	bool		oldnull;
	bool		newnull;
	Datum		oldval;
	Datum		newval;

	if (attnum <= 0)
		elog(ERROR, "credits: send_batches has no column \"%s\"", name);
	att = TupleDescAttr(desc, attnum - 1);
	oldval = heap_getattr(oldtup, attnum, desc, &oldnull);
	newval = heap_getattr(newtup, attnum, desc, &newnull);
	if (oldnull || newnull)
		return oldnull != newnull;
	return !datum_image_eq(oldval, newval, att->attbyval, att->attlen);
}

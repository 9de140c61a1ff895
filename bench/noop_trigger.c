/*
 * bench/noop_trigger.c: the cheapest C trigger there is, for bench/copy_floor.
 * As a BEFORE ROW trigger it returns the row unchanged; as an AFTER STATEMENT
 * trigger it does nothing.  What a table pays for having a trigger at all.
 */
#include "postgres.h"
#include "commands/trigger.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_noop_trigger);

Datum
bench_noop_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "bench_noop_trigger: not called as a trigger");
	if (TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);
	return PointerGetDatum(NULL);
}

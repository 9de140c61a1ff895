/*-------------------------------------------------------------------------
 *
 * legacy.c
 *	  The C entry points that credits--0.1.0.sql binds, kept so that this
 *	  library goes on serving databases that have not run
 *	  ALTER EXTENSION credits UPDATE yet.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/legacy.c
 *
 * A released install script is never edited, so the symbol names it binds
 * must stay.  Each one here selects what a 0.1.0 database was promised (the
 * "CR" SQLSTATE class; see credits.h) and calls the same implementation as
 * the current entry point.  The update script rebinds the SQL functions to
 * the credits_*_0_1_1 symbols.  The settings readers
 * (credits_max_payment_failures, credits_recharge_expiry_seconds) did not
 * change and are bound by both versions (credits.c).
 *
 * Nothing else differs: a 0.1.0 database gets this version's fixes too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "credits.h"

/* credits.debit_batch() of 0.1.0 */
PG_FUNCTION_INFO_V1(credits_debit_batch);

Datum
credits_debit_batch(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = true;
	return CreditsDebitBatchTrigger(fcinfo);
}

/* credits.flush_debits() of 0.1.0 */
PG_FUNCTION_INFO_V1(credits_flush_debits);

Datum
credits_flush_debits(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = true;
	return CreditsFlushDebitsTrigger(fcinfo);
}

/* credits._flush_debits(bigint) of 0.1.0 */
PG_FUNCTION_INFO_V1(credits_flush_pending);

Datum
credits_flush_pending(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = true;
	return CreditsFlushPendingFunction(fcinfo);
}

/* credits.guard_batch() of 0.1.0 */
PG_FUNCTION_INFO_V1(credits_guard_batch);

Datum
credits_guard_batch(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = true;
	return CreditsGuardBatchTrigger(fcinfo);
}

/* credits.guard_ledger() of 0.1.0 */
PG_FUNCTION_INFO_V1(credits_guard_ledger);

Datum
credits_guard_ledger(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = true;
	return CreditsGuardLedgerTrigger(fcinfo);
}

/* credits._settle_batches(bigint, text) of 0.1.0 */
PG_FUNCTION_INFO_V1(credits_settle_batches);

Datum
credits_settle_batches(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = true;
	return CreditsSettleBatchesFunction(fcinfo);
}

/*-------------------------------------------------------------------------
 *
 * credits.h
 *	  Declarations shared by the credits extension's C files: the SQLSTATEs
 *	  it raises and the few pieces of backend-local state.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/credits.h
 *
 * Every error a user can cause has its own SQLSTATE; the README's Errors
 * table lists them.  Keep the two in step.
 *
 * The class.  0.1.0 used class "CR", which lies in the range the SQL
 * standard reserves for itself (first character A-H or 0-4).  From 0.1.1 the
 * class is "MC" (implementation-defined, unused by PostgreSQL), same
 * numbers.  A database whose extension is still at 0.1.0 keeps getting "CR"
 * from this library: the SQL of 0.1.0 binds the entry points in legacy.c,
 * which set credits_serving_0_1_0 before doing the work.  The codes new in
 * 0.1.1 are then CR-class too (only CR022 can arise there: the later-trigger
 * check protects 0.1.0 databases as well).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_H
#define CREDITS_H

#include "utils/elog.h"

/*
 * True while serving a 0.1.0 schema (set by every entry point: legacy.c sets
 * it, the current entry points clear it).  Selects the SQLSTATE class, and
 * keeps 0.1.0's refusal of rows that carry cost and status (no restored-row
 * recognition there).
 */
extern bool credits_serving_0_1_0;

#define CREDITS_SQLSTATE(a, b, c) \
	(credits_serving_0_1_0 ? MAKE_SQLSTATE('C', 'R', a, b, c) \
	 : MAKE_SQLSTATE('M', 'C', a, b, c))

#define ERRCODE_CREDITS_INSUFFICIENT_CREDITS		CREDITS_SQLSTATE('0','0','1')
#define ERRCODE_CREDITS_RECHARGE_LIMIT_EXCEEDED	CREDITS_SQLSTATE('0','0','2')
#define ERRCODE_CREDITS_UNKNOWN_ACCOUNT			CREDITS_SQLSTATE('0','0','3')
#define ERRCODE_CREDITS_UNKNOWN_CHANNEL			CREDITS_SQLSTATE('0','0','4')
#define ERRCODE_CREDITS_UNKNOWN_RECHARGE			CREDITS_SQLSTATE('0','0','5')
#define ERRCODE_CREDITS_RECHARGE_SETTLED			CREDITS_SQLSTATE('0','0','6')
#define ERRCODE_CREDITS_MANAGED_COLUMN			CREDITS_SQLSTATE('0','0','7')
#define ERRCODE_CREDITS_BATCH_IMMUTABLE			CREDITS_SQLSTATE('0','0','8')
#define ERRCODE_CREDITS_LEDGER_APPEND_ONLY		CREDITS_SQLSTATE('0','0','9')
#define ERRCODE_CREDITS_ACCOUNT_EXISTS			CREDITS_SQLSTATE('0','1','0')
#define ERRCODE_CREDITS_INVALID_MESSAGES			CREDITS_SQLSTATE('0','1','1')
#define ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE		CREDITS_SQLSTATE('0','1','2')
/* Raised by the SQL functions only; listed so that this is the one list. */
#define ERRCODE_CREDITS_INVALID_POLICY			CREDITS_SQLSTATE('0','1','3')
#define ERRCODE_CREDITS_INVALID_AMOUNT			CREDITS_SQLSTATE('0','1','4')
#define ERRCODE_CREDITS_RECHARGE_NOT_CLAIMED		CREDITS_SQLSTATE('0','1','5')
#define ERRCODE_CREDITS_PAYMENT_REF_IN_USE		CREDITS_SQLSTATE('0','1','7')
#define ERRCODE_CREDITS_MONTHLY_LIMIT_EXCEEDED	CREDITS_SQLSTATE('0','1','8')
#define ERRCODE_CREDITS_NESTED_DEBIT				CREDITS_SQLSTATE('0','1','9')
/* New in 0.1.1. */
#define ERRCODE_CREDITS_CLAIM_NOT_HELD			CREDITS_SQLSTATE('0','2','0')
#define ERRCODE_CREDITS_INVALID_PAYMENT_REF		CREDITS_SQLSTATE('0','2','1')
#define ERRCODE_CREDITS_BATCH_CHANGED_AFTER_DEBIT	CREDITS_SQLSTATE('0','2','2')
/* 0.2.0: grants and plans (raised from the SQL functions; listed for the README) */
#define ERRCODE_CREDITS_INVALID_GRANT			CREDITS_SQLSTATE('0','2','3')
#define ERRCODE_CREDITS_NOT_CARRIED_OVER		CREDITS_SQLSTATE('0','2','7')
#define ERRCODE_CREDITS_WRITE_SKIPPED			CREDITS_SQLSTATE('0','2','8')

/* GUCs (credits.c) */
extern int	CreditsMaxPaymentFailures;
extern int	CreditsRechargeExpiry;
extern int	CreditsClaimLease;
extern int	CreditsRechargeCreditLifetime;
extern int	CreditsClockOffset;

#include "datatype/timestamp.h"
extern TimestampTz CreditsNow(void);
extern bool CreditsMayRestore(Oid relid);

/*
 * The implementations behind the SQL entry points.  Each file's current
 * entry point (credits_*_0_1_1) and legacy.c's 0.1.0 one call these after
 * choosing the SQLSTATE class.
 */
#include "fmgr.h"
extern Datum CreditsDebitBatchTrigger(FunctionCallInfo fcinfo);
extern Datum CreditsFlushDebitsTrigger(FunctionCallInfo fcinfo);
extern Datum CreditsFlushPendingFunction(FunctionCallInfo fcinfo);
extern Datum CreditsGuardBatchTrigger(FunctionCallInfo fcinfo);
extern Datum CreditsGuardLedgerTrigger(FunctionCallInfo fcinfo);
extern Datum CreditsSettleBatchesFunction(FunctionCallInfo fcinfo);

/*
 * True only while credits._settle_batches() rewrites batch statuses; the
 * send_batches guard trigger lets status and recharge_id change then and
 * never otherwise.
 */
extern bool credits_settling_batches;

#endif							/* CREDITS_H */

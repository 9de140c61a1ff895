/*-------------------------------------------------------------------------
 *
 * credits.c
 *	  Module entry point of the credits extension: its settings (GUCs) and
 *	  the SQL functions that read them.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/credits.c
 *
 * The extension keeps no shared memory and starts no background process.
 * It is loaded on first use, or at server start from
 * shared_preload_libraries (recommended: the settings are then defined in
 * every session from the start, so a misspelt credits.* setting is an error
 * everywhere instead of a silently kept placeholder).  _PG_init only defines
 * settings and registers callbacks, which is right in both cases.
 * The work is done by the trigger and function files:
 *
 *	  debit_trigger.c		BEFORE INSERT on send_batches: price, lock, debit
 *	  debit_state.c			statement-level debits, written at statement end
 *	  direct_access.c		row reads and the account lock without SPI
 *	  recharge_decision.c	the auto-recharge rule, pure arithmetic
 *	  settle.c				batch statuses and refunds when a recharge settles
 *	  batch_guard.c			what may never change in send_batches and ledger
 *	  plan_cache.c			SPI plans prepared once per backend
 *	  legacy.c				the entry points credits--0.1.0.sql binds
 *
 * Settings are PGC_SUSET: they decide when a customer's card stops being
 * charged and when batches are failed, so only a superuser (or ALTER
 * DATABASE/ROLE ... SET by one) may change them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_class.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "credits.h"
#include "debit_state.h"
#include "row_write.h"

CREDITS_MODULE_MAGIC;

/* GUC variables */
int			CreditsMaxPaymentFailures = 3;
int			CreditsRechargeExpiry = 3600;	/* seconds; 0 = never */
int			CreditsClaimLease = 900;	/* seconds */
int			CreditsRechargeCreditLifetime = 0;	/* seconds; 0 = never */
int			CreditsClockOffset = 0; /* seconds; tests only */

/* Which SQLSTATE class this backend raises; see credits.h and legacy.c. */
bool		credits_serving_0_1_0 = false;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("credits.max_payment_failures",
							"Consecutive failed recharges after which auto-recharge turns itself off.",
							"A successful recharge resets the count. Only credits.enable_auto_recharge() turns it on again.",
							&CreditsMaxPaymentFailures,
							3,
							1,
							1000,
							PGC_SUSET,
							0,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("credits.recharge_expiry",
							"Age after which credits.expire_recharges() cancels a pending recharge.",
							"Zero means pending recharges never expire.",
							&CreditsRechargeExpiry,
							3600,
							0,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("credits.claim_lease",
							"How long a payment worker's claim on a recharge lasts.",
							"A processing recharge whose lease has expired can be claimed again by credits.claim_recharges(), with the same recharge_id and a new claim token.",
							&CreditsClaimLease,
							900,
							1,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("credits.recharge_credit_lifetime",
							"How long the credits a succeeded recharge bought last.",
							"Zero means they never expire. Applies to recharges completed after it is set.",
							&CreditsRechargeCreditLifetime,
							0,
							0,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("credits.clock_offset",
							"Moves the extension's clock (expiry, plan periods) forward by this much. For tests only.",
							"Tests and rehearsals use it to live through months in seconds. Keep it 0 in production: a positive offset makes credits lapse early.",
							&CreditsClockOffset,
							0,
							0,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomBoolVariable("credits.direct_writes",
							 "Writes debits' account, grant and ledger rows straight into the tables, without SQL.",
							 "Off sends them through SQL statements instead: the same rows, slower. The SQL path is also taken, whatever this says, when a DBA has added triggers, rules or ledger columns to the extension's tables.",
							 &CreditsDirectWrites,
							 true,
							 PGC_SUSET,
							 0,
							 NULL,
							 NULL,
							 NULL);

	MarkGUCPrefixReserved("credits");

	CreditsDebitStateInit();
}

/*
 * credits_max_payment_failures
 *		credits._max_payment_failures() RETURNS integer
 */
PG_FUNCTION_INFO_V1(credits_max_payment_failures);

Datum
credits_max_payment_failures(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(CreditsMaxPaymentFailures);
}

/*
 * credits_recharge_expiry_seconds
 *		credits._recharge_expiry_seconds() RETURNS integer
 */
PG_FUNCTION_INFO_V1(credits_recharge_expiry_seconds);

Datum
credits_recharge_expiry_seconds(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(CreditsRechargeExpiry);
}

/*
 * credits_claim_lease_seconds
 *		credits._claim_lease_seconds() RETURNS integer
 */
PG_FUNCTION_INFO_V1(credits_claim_lease_seconds);

Datum
credits_claim_lease_seconds(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(CreditsClaimLease);
}

/*
 * CreditsNow
 *		The extension's clock for expiry and plan periods: the wall clock
 *		(not the transaction start: a long transaction must not spend a
 *		credit that has expired meanwhile), moved by credits.clock_offset.
 */
TimestampTz
CreditsNow(void)
{
	return GetCurrentTimestamp() + (TimestampTz) CreditsClockOffset * USECS_PER_SEC;
}

/*
 * credits_now
 *		credits._now() RETURNS timestamptz: CreditsNow() for the SQL functions.
 */
PG_FUNCTION_INFO_V1(credits_now);

Datum
credits_now(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(CreditsNow());
}

/*
 * CreditsMayRestore
 *		Whether the current role may write rows as a restore does (pg_restore,
 *		psql -f of a dump): a role that owns the relation, or a superuser,
 *		acting as itself.  Not inside a SECURITY DEFINER function or any other
 *		code that runs as another role (SECURITY_LOCAL_USERID_CHANGE), nor in
 *		a security-restricted operation: a superuser-owned function must not
 *		become a way for its callers to write rows without the checks.  A
 *		restore runs as the restoring role itself.
 */
bool
CreditsMayRestore(Oid relid)
{
	if (InLocalUserIdChange() || InSecurityRestrictedOperation())
		return false;
	return superuser() || credits_owns_relation(relid, GetUserId());
}


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
 * The extension keeps no shared memory and starts no background process;
 * it is loaded on first use and needs no shared_preload_libraries entry.
 * The work is done by the trigger and function files:
 *
 *	  debit_trigger.c		BEFORE INSERT on send_batches: price, lock, debit
 *	  recharge_decision.c	the auto-recharge rule, pure arithmetic
 *	  settle.c				batch statuses and refunds when a recharge settles
 *	  batch_guard.c			what may never change in send_batches and ledger
 *	  plan_cache.c			SPI plans prepared once per backend
 *
 * Settings are PGC_SUSET: they decide when a customer's card stops being
 * charged and when batches are failed, so only a superuser (or ALTER
 * DATABASE/ROLE ... SET by one) may change them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/guc.h"

#include "compat.h"
#include "credits.h"
#include "debit_state.h"

CREDITS_MODULE_MAGIC;

/* GUC variables */
int			CreditsMaxPaymentFailures = 3;
int			CreditsRechargeExpiry = 3600;	/* seconds; 0 = never */

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

	MarkGUCPrefixReserved("credits");

	CreditsDebitStateInit();
}

/*
 * CreditsMaxPaymentFailures
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

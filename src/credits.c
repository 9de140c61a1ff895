/*-------------------------------------------------------------------------
 *
 * credits.c
 *	  Module entry point of the credits extension.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/credits.c
 *
 * The extension keeps no shared memory and starts no background process, so
 * loading it only reserves the "credits." GUC prefix.  The work is done by
 * the trigger and function files:
 *
 *	  debit_trigger.c		BEFORE INSERT on send_batches: price, lock, debit
 *	  recharge_decision.c	the auto-recharge rule, pure arithmetic
 *	  settle.c				batch statuses and refunds when a recharge settles
 *	  batch_guard.c			what may never change in send_batches and ledger
 *	  plan_cache.c			SPI plans prepared once per backend
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "compat.h"

CREDITS_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	MarkGUCPrefixReserved("credits");
}

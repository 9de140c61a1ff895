/*-------------------------------------------------------------------------
 *
 * plan_cache.h
 *	  SPI plans of the credits extension, prepared once per backend.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/plan_cache.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_PLAN_CACHE_H
#define CREDITS_PLAN_CACHE_H

#include "executor/spi.h"

typedef enum CreditsPlanId
{
	PLAN_DUPLICATE,				/* $1 account, $2 key: a stored batch? */
	PLAN_WRITE_DEBITS,			/* queued ledger rows, in bulk */
	PLAN_WRITE_ACCOUNT,			/* one account's balance and in_flight */
	PLAN_WRITE_ONE,				/* one ledger row and its account */
	PLAN_FIND_PENDING,			/* $1 account: newest pending recharge, and
								 * whether it was opened this month */
	PLAN_GROW_PENDING,			/* add a need to a pending recharge */
	PLAN_OPEN_RECHARGE,			/* insert a new pending recharge */
	PLAN_MONTH_USED,			/* $1 account: recharges counted this month */
	PLAN_NEWEST_IN_FLIGHT,		/* $1 account: newest in-flight recharge */
	PLAN_SETTLE_BATCHES,		/* awaiting batches of a recharge -> status */
	PLAN_READ_ACCOUNT,			/* $1 account: balance, in_flight (caller
								 * holds the lock) */
	PLAN_RECHARGE_ACCOUNT,		/* $1 recharge: its account */
	PLAN_NEWEST_AWAITING,		/* $1 account: newest awaiting batch */
	PLAN_FAIL_BATCH,			/* $1 batch: awaiting -> failed */
	PLAN_AWAITING_OF_RECHARGE,	/* $1 recharge: its awaiting batches */
	PLAN_AWAITING_TOTAL,		/* $1 account: cost of its awaiting batches */
	PLAN_READY_BATCH,			/* $1 batch: awaiting -> ready */
	PLAN_REPOINT_BATCH,			/* $1 batch awaits recharge $2 instead */
	/* ledger.c: the one writer of balances */
	PLAN_OPEN_ACCOUNT,			/* a new account and its "open" row */
	PLAN_POST,					/* a balance change and its ledger row */
	PLAN_ADD_IN_FLIGHT,			/* in_flight += $2 */
	/* settle.c */
	PLAN_LOCK_ACCOUNT,			/* $1 account, FOR NO KEY UPDATE */
	PLAN_LOCK_RECHARGE,			/* $1 recharge, FOR UPDATE */
	PLAN_RECHARGE_ROW,			/* $1 recharge as a credits.recharges datum */
	PLAN_REF_USED,				/* $1 payment_ref: the recharge that has it */
	PLAN_CHECK_REF,				/* credits._check_payment_ref($1) */
	PLAN_MARK_SUCCEEDED,		/* processing/pending -> succeeded */
	PLAN_MARK_FAILED,			/* processing/pending -> failed */
	PLAN_MARK_CANCELLED,		/* pending, never claimed -> cancelled */
	PLAN_MARK_RELEASED,			/* processing -> pending */
	PLAN_RESET_FAILURES,		/* a success ends a run of failures */
	PLAN_COUNT_FAILURE,			/* payment_failures + 1 */
	PLAN_TURN_OFF,				/* auto-recharge off, for a reason */
	PLAN_CANCELLABLE,			/* $1 account: pending, never-claimed recharges */
	PLAN_POLICY_ROW,			/* $1 account's policy as a datum */
	/* ledger.c, 0.2.0 schemas: grants and debts */
	PLAN_POST_GRANT,			/* PLAN_POST with the row's grant ($9) */
	PLAN_WRITE_ONE_GRANT,		/* one debit row, its account and its grant */
	PLAN_WRITE_LEDGER_ROWS,		/* queued debit and expire rows, in bulk */
	PLAN_WRITE_GRANT,			/* one grant's remaining */
	PLAN_INSERT_ACCOUNT,		/* a new account at 0 */
	PLAN_INSERT_GRANT,			/* a new grant, remaining = credits */
	PLAN_DUE_GRANTS,			/* $1 account, $2 at: grants to expire */
	PLAN_OPEN_GRANTS,			/* $1 account: grants with credits, in
								 * draw-down order */
	PLAN_OWED_BATCHES,			/* $1 account: batches that owe, oldest first */
	PLAN_MOVE_GRANT,			/* remaining += $2 */
	PLAN_MOVE_OWED,				/* owed += $2 */
	PLAN_BATCH_OWED,			/* $1 batch: what it owes */
	PLAN_BATCH_FUNDING,			/* $1 batch: net credits per grant (0: none) */
	/* ledger.c, 0.3.0 schemas */
	PLAN_WRITE_LEDGER_ENTRIES,	/* queued rows with their entry ids */
	PLAN_BATCH_FUNDING_ENTRIES, /* PLAN_BATCH_FUNDING with the batch's entry */
	PLAN_RESTORE_ENTRY,			/* a restored row of the ledger view */
	NUM_CREDITS_PLANS
} CreditsPlanId;

extern SPIPlanPtr CreditsGetPlan(CreditsPlanId id);
extern void CreditsExecPlan(CreditsPlanId id, Datum *values, const char *nulls,
							int expected);
extern void CreditsExecPlanSettling(CreditsPlanId id, Datum *values, int expected);

#endif							/* CREDITS_PLAN_CACHE_H */

/*-------------------------------------------------------------------------
 *
 * ledger.h
 *	  The one writer of balances: every write of accounts.balance,
 *	  accounts.in_flight, credits.ledger, credits.grants' remaining and
 *	  send_batches.owed goes through here.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/ledger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_LEDGER_H
#define CREDITS_LEDGER_H

#include "datatype/timestamp.h"
#include "storage/itemptr.h"

/* Kinds of the rows the debit trigger queues. */
#define LEDGER_DEBIT	'd'
#define LEDGER_EXPIRE	'e'

/* Queued ledger rows, as debit_state.c keeps them. */
typedef struct LedgerDebits
{
	int			n;				/* ledger rows */
	int64	   *account;
	int64	   *delta;
	int64	   *balance_after;
	int64	   *batch;			/* 0: none */
	char	   *kind;			/* LEDGER_DEBIT or LEDGER_EXPIRE */
	int64	   *grant;			/* 0: none */
	int64	   *recharge;		/* 0: none */
	int64	   *entry_id;		/* taken when queued (0.3.0); 0: at write */
	bool		with_grants;	/* a 0.2.0 schema (ledger.grant_id exists) */
} LedgerDebits;

/* An account row to write at the end of a statement. */
typedef struct LedgerAccountRows
{
	int			n;
	int64	   *account;
	int64	   *balance;
	int64	   *in_flight;
	ItemPointerData *tid;		/* where each row was read: a hint */
} LedgerAccountRows;

/* Grant rows to write at the end of a statement. */
typedef struct LedgerGrantRows
{
	int			n;
	int64	   *grant;
	int64	   *remaining;
	ItemPointerData *tid;		/* where each row was read: a hint */
} LedgerGrantRows;

/* A new grant (0.2.0 schemas). */
typedef struct NewGrant
{
	int64		account_id;
	const char *source;			/* signup, plan, purchase, recharge, promo */
	const char *kind;			/* its ledger row: open, grant, plan, recharge */
	int64		credits;
	int32		priority;
	bool		expires;
	TimestampTz expires_at;
	int64		recharge_id;	/* 0: none */
	bool		has_period;
	TimestampTz period_start;	/* plan grants */
	const char *note;			/* NULL: none */
	int64		in_flight_delta;	/* a recharge leaves in_flight */
} NewGrant;

extern bool LedgerOpenAccount(int64 account_id, int64 initial_credits);
extern int64 LedgerPost(int64 account_id, int64 delta, const char *kind,
						int64 batch_id, int64 recharge_id, const char *note,
						int64 in_flight_delta);
extern void LedgerAddInFlight(int64 account_id, int64 delta);
extern void LedgerWriteDebits(const LedgerDebits *debits,
							  const LedgerAccountRows *accounts,
							  const LedgerGrantRows *grants);

/* 0.2.0 schemas: grants, expiry, debts; the caller holds the account lock */
extern int64 LedgerAddGrant(const NewGrant *grant);
extern int64 LedgerExpireDue(int64 account_id, TimestampTz at, int64 *credits);
extern void LedgerRefundBatch(int64 account_id, int64 batch_id, int64 recharge_id,
							  int64 cost);
extern void LedgerRepayOwed(int64 account_id);

/* 0.3.0 schemas: a ledger row of a dump taken before 0.3.0 */
#define LEDGER_RESTORED_COLUMNS 10
extern void LedgerRestoreEntry(const Datum *values, const bool *nulls);

#endif							/* CREDITS_LEDGER_H */

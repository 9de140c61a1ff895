/*-------------------------------------------------------------------------
 *
 * debit_state.h
 *	  What one statement has debited but not yet written: running account
 *	  balances in memory and the ledger rows to insert in bulk.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/debit_state.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_DEBIT_STATE_H
#define CREDITS_DEBIT_STATE_H

#include "datatype/timestamp.h"
#include "storage/itemptr.h"
#include "recharge_decision.h"

/* An open grant of a cached account (0.2.0 schemas), with its running total. */
typedef struct CachedGrant
{
	int64		grant_id;
	int64		remaining;		/* running, including pending debits */
	int32		priority;
	bool		expires;		/* expires_at is not null */
	TimestampTz expires_at;
	bool		dirty;			/* remaining differs from the row */
	ItemPointerData tid;		/* where the row was read (a hint for the
								 * write; row_write.c checks it) */
} CachedGrant;

/* An account as this statement sees it: locked, with its running totals. */
typedef struct CachedAccount
{
	int64		account_id;		/* hash key; must be first */
	int64		balance;		/* running, including pending debits */
	int64		in_flight;		/* running, including recharges bought */
	RechargePolicy policy;
	bool		dirty;			/* balance or in_flight differ from the row */
	bool		has_grants;		/* a 0.2.0 schema: debits draw from grants */
	bool		entries_in_batch;	/* a 0.3.0 schema: a batch row carries its
									 * debit entry; entry ids are taken when
									 * a row is queued */
	int			ngrants;		/* open grants, in draw-down order */
	CachedGrant *grants;		/* in the layer's memory context */
	ItemPointerData tid;		/* where the locked row was (a hint, as for
								 * grants) */
} CachedAccount;

/*
 * A batch's own debit entry (0.3.0 schemas), for the debit trigger to write
 * into the batch row: the first ledger row of its debit.
 */
typedef struct BatchEntry
{
	int64		entry_id;
	int64		delta;
	int64		balance_after;
	int64		grant_id;		/* 0: none (what the batch owed) */
	int64		recharge_id;	/* 0: none */
} BatchEntry;

extern void CreditsDebitStateInit(void);
extern CachedAccount *CreditsFindAccount(int64 account_id);
extern CachedAccount *CreditsRememberAccount(const CachedAccount *account);
extern void CreditsQueueExpiries(CachedAccount *account, TimestampTz now);
extern bool CreditsCachedPrice(const char *channel, int32 *price);
extern void CreditsCachePrice(const char *channel, int32 price);
extern int64 CreditsQueueDebit(CachedAccount *account, int64 cost, int64 batch_id,
							   int64 recharge_id, BatchEntry *entry);
extern void CreditsQueueBatchCheck(int64 batch_id, int64 account_id, int32 messages,
								   const char *channel, text *idempotency_key,
								   int64 cost, const char *status,
								   bool has_recharge, int64 recharge_id, int64 owed,
								   const BatchEntry *entry);
extern void CreditsQueueBatchAbsent(int64 batch_id);
extern void CreditsFlushDebits(bool final);
extern void CreditsFlushAccount(int64 account_id);
extern void CreditsBeginDebit(void);
extern void CreditsEndDebit(void);

#endif							/* CREDITS_DEBIT_STATE_H */

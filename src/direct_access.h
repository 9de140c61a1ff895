/*-------------------------------------------------------------------------
 *
 * direct_access.h
 *	  Row access without SPI for the debit trigger's first row of an
 *	  account: lock the account, read its policy and a channel's price; and
 *	  reading a stored batch back.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/direct_access.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_DIRECT_ACCESS_H
#define CREDITS_DIRECT_ACCESS_H

#include "debit_state.h"
#include "recharge_decision.h"

/* A stored send batch, as read back by CreditsReadBatchDirect. */
typedef struct StoredBatch
{
	int64		account_id;
	int32		messages;
	char	   *channel;
	char	   *idempotency_key;	/* NULL when null */
	int64		cost;
	char	   *status;
	bool		has_recharge;
	int64		recharge_id;
	int64		owed;			/* 0 before 0.2.0 */
} StoredBatch;

extern bool CreditsLockAccountDirect(int64 account_id, int64 *balance, int64 *in_flight);
extern void CreditsReadPolicyDirect(int64 account_id, RechargePolicy *policy);
extern bool CreditsReadPriceDirect(const char *channel, int32 *price);
extern bool CreditsReadBatchDirect(int64 batch_id, StoredBatch *batch);
extern bool CreditsHasGrants(void);
extern int	CreditsReadOpenGrantsDirect(int64 account_id, CachedGrant **grants,
										MemoryContext cxt);

#endif							/* CREDITS_DIRECT_ACCESS_H */

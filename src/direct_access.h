/*-------------------------------------------------------------------------
 *
 * direct_access.h
 *	  Row access without SPI for the debit trigger's first row of an
 *	  account: lock the account, read its policy and a channel's price; and
 *	  reading a stored batch back.  Also the one place that finds the
 *	  extension's relations by name, for row_write.c too.
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
#include "storage/lockdefs.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* The extension's tables, each with the index it is read by. */
typedef enum CreditsTable
{
	TABLE_ACCOUNTS,
	TABLE_POLICIES,
	TABLE_PRICES,
	TABLE_BATCHES,
	TABLE_LEDGER,
	TABLE_GRANTS,				/* 0.2.0 schemas only, from here on; read by
								 * account */
	TABLE_GRANTS_BY_ID,			/* the same table, by grant_id */
	NUM_CREDITS_TABLES
} CreditsTable;

/* The columns of a batch's debit entry (0.3.0 schemas), in this order. */
typedef enum BatchEntryColumn
{
	BATCH_ENTRY_ID,
	BATCH_ENTRY_DELTA,
	BATCH_ENTRY_BALANCE_AFTER,
	BATCH_ENTRY_GRANT_ID,		/* null: what the batch owed */
	BATCH_ENTRY_RECHARGE_ID,	/* null: it awaited none */
	NUM_BATCH_ENTRY_COLUMNS
} BatchEntryColumn;

extern const char *const CreditsBatchEntryNames[NUM_BATCH_ENTRY_COLUMNS];

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
	bool		has_entry;		/* 0.3.0: the entry columns below exist */
	int64		entry[NUM_BATCH_ENTRY_COLUMNS];
	bool		entry_isnull[NUM_BATCH_ENTRY_COLUMNS];
} StoredBatch;

extern bool CreditsLockAccountDirect(int64 account_id, int64 *balance, int64 *in_flight,
									 ItemPointer tid);
extern void CreditsReadPolicyDirect(int64 account_id, RechargePolicy *policy);
extern bool CreditsReadPriceDirect(const char *channel, int32 *price);
extern bool CreditsReadBatchDirect(int64 batch_id, StoredBatch *batch);
extern bool CreditsHasGrants(void);
extern bool CreditsEntriesInBatches(void);
extern bool CreditsBatchesHaveOtherArbiters(void);
extern int64 CreditsNextEntryId(void);

/* for row_write.c */
struct TupleTableSlot;
extern void CreditsOpenPair(CreditsTable which, LOCKMODE lockmode, Relation *rel,
							Relation *index);
extern bool CreditsFetchByInt8Key(Relation rel, Relation index, int64 key,
								  Snapshot snapshot, struct TupleTableSlot *slot);
extern uint64 CreditsRelationsGeneration(void);
extern int	CreditsReadOpenGrantsDirect(int64 account_id, CachedGrant **grants,
										MemoryContext cxt);

#endif							/* CREDITS_DIRECT_ACCESS_H */

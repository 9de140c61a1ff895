/*-------------------------------------------------------------------------
 *
 * direct_access.c
 *	  Reading and locking the rows the debit trigger needs without SPI: an
 *	  account (locked), its policy, a channel's price, and a stored batch
 *	  (to check what later triggers did to it).
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/direct_access.c
 *
 * The first batch of an account in a statement must lock the account row,
 * and read its policy and the channel's price.  Through SPI that is two
 * planned queries per statement; here it is three index probes, done the way
 * execReplication.c's RelationFindReplTupleByIndex and nodeLockRows.c do
 * them:
 *
 *	- the account: found through accounts_pkey with the transaction snapshot
 *	  (after CommandCounterIncrement(), so this transaction's own earlier
 *	  changes are seen, as SPI would), then locked FOR NO KEY UPDATE with
 *	  table_tuple_lock().  Under READ COMMITTED the lock follows the update
 *	  chain to the latest version (waiting for a concurrent writer); under
 *	  REPEATABLE READ or SERIALIZABLE a concurrent update is a serialization
 *	  failure, exactly as SELECT ... FOR NO KEY UPDATE behaves.
 *	- the policy and the price: read with a fresh snapshot taken after the
 *	  lock, so a policy change committed by a transaction we waited for is
 *	  seen (every policy change holds the same account lock).
 *
 * Catalog lookups: the OIDs of the tables, indexes and columns are found by
 * name in schema credits once and kept until a relcache invalidation touches
 * any of them (DROP EXTENSION, ALTER TABLE, REINDEX CONCURRENTLY, ...).  As
 * RangeVarGetRelidExtended() does, a name is trusted only once its relation
 * is locked: CreditsOpenPair() takes the locks on the cached OIDs, which processes
 * pending invalidations, and if one of them touched our relations it
 * resolves the names again (now under the locks) and retries.  So DDL that
 * commits between the statement's start and our first read can neither make
 * us open a dropped OID nor read a dropped column's number.
 *
 * Locking: RowShareLock on accounts (as SELECT FOR UPDATE), AccessShareLock
 * on the others and on the indexes, all kept to the end of the transaction.
 * Names are trusted only under those locks (OpenPair).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "commands/sequence.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "direct_access.h"

typedef struct TableAndIndex
{
	Oid			table;
	Oid			index;
} TableAndIndex;

typedef struct CreditsRelations
{
	bool		valid;
	TableAndIndex oids[NUM_CREDITS_TABLES];
	AttrNumber	accounts_balance;
	AttrNumber	accounts_in_flight;
	AttrNumber	policy_enabled;
	AttrNumber	policy_min_balance;
	AttrNumber	policy_max_credits;
	AttrNumber	policy_target_balance;
	AttrNumber	policy_monthly_limit;
	AttrNumber	price_credits;
	AttrNumber	batch_account_id;
	AttrNumber	batch_messages;
	AttrNumber	batch_channel;
	AttrNumber	batch_idempotency_key;
	AttrNumber	batch_cost;
	AttrNumber	batch_status;
	AttrNumber	batch_recharge_id;
	AttrNumber	batch_owed;		/* 0.2.0; else InvalidAttrNumber */
	bool		entries_in_batches; /* 0.3.0: send_batches carries the debit
									 * entry, TABLE_LEDGER is ledger_entries */
	AttrNumber	batch_entry[NUM_BATCH_ENTRY_COLUMNS];	/* 0.3.0 */
	Oid			ledger_sequence;	/* entry_id's, found on first use */
	bool		batch_other_arbiters;	/* see CreditsBatchesHaveOtherArbiters */
	bool		has_grants;		/* a 0.2.0 schema: grants exist */
	AttrNumber	grant_id;
	AttrNumber	grant_remaining;
	AttrNumber	grant_priority;
	AttrNumber	grant_expires_at;
	AttrNumber	grant_closed_at;
} CreditsRelations;

/* Names of the tables and indexes, in CreditsTable order. */
static const char *const table_names[NUM_CREDITS_TABLES][2] = {
	[TABLE_ACCOUNTS] = {"accounts", "accounts_pkey"},
	[TABLE_POLICIES] = {"auto_recharge", "auto_recharge_pkey"},
	[TABLE_PRICES] = {"prices", "prices_pkey"},
	[TABLE_BATCHES] = {"send_batches", "send_batches_pkey"},
	[TABLE_LEDGER] = {"ledger", NULL},	/* written only (row_write.c);
										 * "ledger_entries" from 0.3.0 */
	[TABLE_GRANTS] = {"grants", "grants_open_idx"},
	[TABLE_GRANTS_BY_ID] = {"grants", "grants_pkey"},
};

static CreditsRelations rels;

/* The names of a batch's entry columns, in BatchEntryColumn order. */
const char *const CreditsBatchEntryNames[NUM_BATCH_ENTRY_COLUMNS] = {
	[BATCH_ENTRY_ID] = "entry_id",
	[BATCH_ENTRY_DELTA] = "entry_delta",
	[BATCH_ENTRY_BALANCE_AFTER] = "entry_balance_after",
	[BATCH_ENTRY_GRANT_ID] = "entry_grant_id",
	[BATCH_ENTRY_RECHARGE_ID] = "entry_recharge_id",
};

/* A row read by key, and what must be released after. */
typedef struct KeyedRow
{
	Relation	rel;
	Relation	index;
	TupleTableSlot *slot;
	Snapshot	snapshot;
} KeyedRow;
static bool callback_registered = false;

/* Relcache invalidations seen so far (any relation); see ResolveRelations. */
static uint64 invalidations = 0;

/* How many times the names were resolved; see CreditsRelationsGeneration. */
static uint64 generation = 0;

static void ResolveRelations(void);
static Oid	RelationOid(Oid nsp, const char *name);
static AttrNumber ColumnNumber(Oid relid, const char *name);
static bool FetchByKey(Relation rel, Relation index, Datum key, RegProcedure eqproc,
					   Snapshot snapshot, TupleTableSlot *slot);
static int64 SlotInt8(TupleTableSlot *slot, AttrNumber attnum, bool *isnull);
static bool BeginKeyedRow(KeyedRow *row, CreditsTable which, Datum key,
						  RegProcedure eqproc, Snapshot snapshot);
static void EndKeyedRow(KeyedRow *row);
static void InvalidateRelations(Datum arg, Oid relid);
static bool OtherArbiters(Oid relid, AttrNumber account_id, AttrNumber idempotency_key);
static bool ExtensionRelation(Oid nsp, const char *name, Oid extension);

/*
 * CreditsLockAccountDirect
 *		Locks the account row FOR NO KEY UPDATE and reads its balance and
 *		in_flight; *tid gets where the locked version is.  Returns false when
 *		there is no such account.
 */
bool
CreditsLockAccountDirect(int64 account_id, int64 *balance, int64 *in_flight,
						 ItemPointer tid)
{
	Relation	rel;
	Relation	index;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	TM_FailureData tmfd;
	TM_Result	result;
	bool		found;
	bool		isnull;

	CreditsOpenPair(TABLE_ACCOUNTS, RowShareLock, &rel, &index);
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	slot = table_slot_create(rel, NULL);

	found = FetchByKey(rel, index, Int64GetDatum(account_id), F_INT8EQ,
					   snapshot, slot);
	if (found)
	{
		result = table_tuple_lock(rel, &slot->tts_tid, snapshot, slot,
								  GetCurrentCommandId(false),
								  LockTupleNoKeyExclusive, LockWaitBlock,
								  IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
								  &tmfd);
		switch (result)
		{
			case TM_Ok:
				break;
			case TM_Updated:
			case TM_Deleted:
				if (IsolationUsesXactSnapshot())
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("could not serialize access due to concurrent update")));
				if (result == TM_Deleted)
				{
					found = false;
					break;
				}
				elog(ERROR, "credits: account %lld was updated concurrently while being locked",
					 (long long) account_id);
				break;
			default:
				elog(ERROR, "credits: unexpected result %d locking account %lld",
					 (int) result, (long long) account_id);
		}
	}
	if (found)
	{
		*balance = SlotInt8(slot, rels.accounts_balance, &isnull);
		*in_flight = SlotInt8(slot, rels.accounts_in_flight, &isnull);
		*tid = slot->tts_tid;
	}

	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	UnregisterSnapshot(snapshot);
	return found;
}

/*
 * CreditsReadPolicyDirect
 *		The account's auto-recharge policy, as committed now (the caller holds
 *		the account lock).  No row: auto-recharge off.
 */
void
CreditsReadPolicyDirect(int64 account_id, RechargePolicy *policy)
{
	KeyedRow	row;
	bool		isnull;

	memset(policy, 0, sizeof(RechargePolicy));
	if (BeginKeyedRow(&row, TABLE_POLICIES, Int64GetDatum(account_id), F_INT8EQ,
					  GetLatestSnapshot()))
	{
		Datum		enabled = slot_getattr(row.slot, rels.policy_enabled, &isnull);

		policy->enabled = !isnull && DatumGetBool(enabled);
		policy->min_balance = SlotInt8(row.slot, rels.policy_min_balance, &isnull);
		policy->max_credits = SlotInt8(row.slot, rels.policy_max_credits, &isnull);
		policy->target_balance = SlotInt8(row.slot, rels.policy_target_balance, &isnull);
		policy->has_target = !isnull;
		policy->monthly_limit = SlotInt8(row.slot, rels.policy_monthly_limit, &isnull);
		policy->has_monthly_limit = !isnull;
	}
	EndKeyedRow(&row);
}

/*
 * CreditsReadPriceDirect
 *		The channel's credits_per_message; false when it has no price.
 */
bool
CreditsReadPriceDirect(const char *channel, int32 *price)
{
	KeyedRow	row;
	bool		found;
	bool		isnull;

	found = BeginKeyedRow(&row, TABLE_PRICES, CStringGetTextDatum(channel), F_TEXTEQ,
						  GetLatestSnapshot());
	if (found)
	{
		Datum		v = slot_getattr(row.slot, rels.price_credits, &isnull);

		/* a NULL price (possible only after DDL on prices) is no price */
		found = !isnull;
		if (found)
			*price = DatumGetInt32(v);
	}
	EndKeyedRow(&row);
	return found;
}

/*
 * CreditsReadBatchDirect
 *		The stored send batch with this batch_id, as this transaction sees it
 *		now (its own earlier commands included); false when there is none.
 *		channel is palloc'd in the caller's memory context.
 */
bool
CreditsReadBatchDirect(int64 batch_id, StoredBatch *batch)
{
	KeyedRow	row;
	bool		found;
	bool		isnull;

	CommandCounterIncrement();
	found = BeginKeyedRow(&row, TABLE_BATCHES, Int64GetDatum(batch_id), F_INT8EQ,
						  GetTransactionSnapshot());
	if (found)
	{
		Datum		v;

		batch->account_id = SlotInt8(row.slot, rels.batch_account_id, &isnull);
		v = slot_getattr(row.slot, rels.batch_messages, &isnull);
		batch->messages = isnull ? 0 : DatumGetInt32(v);
		v = slot_getattr(row.slot, rels.batch_channel, &isnull);
		batch->channel = isnull ? NULL : TextDatumGetCString(v);
		v = slot_getattr(row.slot, rels.batch_idempotency_key, &isnull);
		batch->idempotency_key = isnull ? NULL : TextDatumGetCString(v);
		batch->cost = SlotInt8(row.slot, rels.batch_cost, &isnull);
		v = slot_getattr(row.slot, rels.batch_status, &isnull);
		batch->status = isnull ? NULL : TextDatumGetCString(v);
		batch->recharge_id = SlotInt8(row.slot, rels.batch_recharge_id, &isnull);
		batch->has_recharge = !isnull;
		batch->owed = rels.batch_owed == InvalidAttrNumber ? 0 :
			SlotInt8(row.slot, rels.batch_owed, &isnull);
		batch->has_entry = rels.entries_in_batches;
		for (int i = 0; i < NUM_BATCH_ENTRY_COLUMNS && batch->has_entry; i++)
		{
			batch->entry[i] = SlotInt8(row.slot, rels.batch_entry[i], &isnull);
			batch->entry_isnull[i] = isnull;
		}
	}
	EndKeyedRow(&row);
	return found;
}

/*
 * CreditsHasGrants
 *		Whether the schema is 0.2.0 or later (credits.grants exists): then
 *		debits draw from grants and settlement writes through them.
 */
bool
CreditsHasGrants(void)
{
	ResolveRelations();
	return rels.has_grants;
}

/*
 * CreditsEntriesInBatches
 *		Whether the schema is 0.3.0 or later: a batch row carries its debit
 *		entry, the ledger's other entries are in credits.ledger_entries and
 *		credits.ledger is a view over both.
 */
bool
CreditsEntriesInBatches(void)
{
	ResolveRelations();
	return rels.entries_in_batches;
}

/*
 * CreditsBatchesHaveOtherArbiters
 *		Whether send_batches has a unique index or exclusion constraint of a
 *		DBA's besides its primary key and (account_id, idempotency_key).  The
 *		trigger checks only the idempotency key before it debits; a row that
 *		conflicts on another one is debited and then skipped by ON CONFLICT
 *		DO NOTHING.  With such an index every debited row is read back at
 *		the end of the statement (debit_state.c), so that is refused (MC022)
 *		instead of losing the debit.
 */
bool
CreditsBatchesHaveOtherArbiters(void)
{
	ResolveRelations();
	return rels.batch_other_arbiters;
}

/* Whether credits.<name> exists and belongs to the extension. */
static bool
ExtensionRelation(Oid nsp, const char *name, Oid extension)
{
	Oid			relid = get_relname_relid(name, nsp);

	return OidIsValid(relid) && OidIsValid(extension) &&
		getExtensionOfObject(RelationRelationId, relid) == extension;
}

/* See CreditsBatchesHaveOtherArbiters; read when the names are resolved. */
static bool
OtherArbiters(Oid relid, AttrNumber account_id, AttrNumber idempotency_key)
{
	Relation	rel = table_open(relid, AccessShareLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		other = false;

	foreach(lc, indexes)
	{
		HeapTuple	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index index;

		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "credits: cache lookup failed for index %u", lfirst_oid(lc));
		index = (Form_pg_index) GETSTRUCT(tuple);
		if ((index->indisunique || index->indisexclusion) && !index->indisprimary &&
			!(index->indisunique && !index->indisexclusion && index->indnkeyatts == 2 &&
			  index->indkey.values[0] == account_id &&
			  index->indkey.values[1] == idempotency_key &&
			  heap_attisnull(tuple, Anum_pg_index_indexprs, NULL) &&
			  heap_attisnull(tuple, Anum_pg_index_indpred, NULL)))
			other = true;
		ReleaseSysCache(tuple);
	}
	list_free(indexes);
	table_close(rel, AccessShareLock);
	return other;
}

/*
 * CreditsNextEntryId
 *		A new entry_id from the ledger table's identity sequence (0.3.0
 *		schemas: a debit takes its entry ids when it is decided, under the
 *		account lock, so that they follow the account's balance changes).
 */
int64
CreditsNextEntryId(void)
{
	ResolveRelations();
	if (!OidIsValid(rels.ledger_sequence))
	{
		Relation	rel = table_open(rels.oids[TABLE_LEDGER].table, AccessShareLock);
		AttrNumber	attnum = get_attnum(RelationGetRelid(rel), "entry_id");
		Oid			seq = attnum == InvalidAttrNumber ? InvalidOid :
			credits_identity_sequence_if_any(rel, attnum);

		table_close(rel, NoLock);
		if (!OidIsValid(seq))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("credits.ledger_entries.entry_id is not an identity column"),
					 errdetail("Debits number their ledger entries from its identity sequence."),
					 errhint("Restore it: ALTER TABLE credits.ledger_entries ALTER COLUMN entry_id ADD GENERATED ALWAYS AS IDENTITY, then set the sequence past max(entry_id) of credits.ledger.")));
		/* kept until the names are resolved again (relcache invalidation) */
		rels.ledger_sequence = seq;
	}
	return nextval_internal(rels.ledger_sequence, false);
}

/*
 * CreditsReadOpenGrantsDirect
 *		The account's open grants (closed_at null, credits left), as
 *		committed now (the caller holds the account lock), through the
 *		partial index grants_open_idx.  Returns how many; *grants is
 *		allocated in cxt (unsorted).
 */
int
CreditsReadOpenGrantsDirect(int64 account_id, CachedGrant **grants, MemoryContext cxt)
{
	Relation	rel;
	Relation	index;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	ScanKeyData skey;
	IndexScanDesc scan;
	int			n = 0;
	int			capacity = 4;
	CachedGrant *out;

	out = MemoryContextAlloc(cxt, sizeof(CachedGrant) * capacity);
	CreditsOpenPair(TABLE_GRANTS, AccessShareLock, &rel, &index);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	slot = table_slot_create(rel, NULL);
	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_INT8EQ, Int64GetDatum(account_id));
	scan = credits_index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		v;
		CachedGrant g;

		(void) slot_getattr(slot, rels.grant_closed_at, &isnull);
		if (!isnull)
			continue;			/* a version closed since the index entry */
		g.remaining = SlotInt8(slot, rels.grant_remaining, &isnull);
		if (g.remaining <= 0)
			continue;
		g.grant_id = SlotInt8(slot, rels.grant_id, &isnull);
		v = slot_getattr(slot, rels.grant_priority, &isnull);
		g.priority = isnull ? 0 : DatumGetInt32(v);
		v = slot_getattr(slot, rels.grant_expires_at, &isnull);
		g.expires = !isnull;
		g.expires_at = isnull ? 0 : DatumGetTimestampTz(v);
		g.dirty = false;
		g.tid = slot->tts_tid;
		if (n >= capacity)
		{
			capacity *= 2;
			out = repalloc(out, sizeof(CachedGrant) * capacity);
		}
		out[n++] = g;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	UnregisterSnapshot(snapshot);
	*grants = out;
	return n;
}

/*
 * BeginKeyedRow
 *		Opens the table and fetches the row with this key as the snapshot
 *		sees it, into row->slot; false when there is none.  Every call is
 *		paired with EndKeyedRow.
 */
static bool
BeginKeyedRow(KeyedRow *row, CreditsTable which, Datum key, RegProcedure eqproc,
			  Snapshot snapshot)
{
	CreditsOpenPair(which, AccessShareLock, &row->rel, &row->index);
	row->snapshot = RegisterSnapshot(snapshot);
	row->slot = table_slot_create(row->rel, NULL);
	return FetchByKey(row->rel, row->index, key, eqproc, row->snapshot, row->slot);
}

static void
EndKeyedRow(KeyedRow *row)
{
	ExecDropSingleTupleTableSlot(row->slot);
	index_close(row->index, NoLock);
	table_close(row->rel, NoLock);
	UnregisterSnapshot(row->snapshot);
}

/*
 * OpenPair
 *		Opens and locks one of our tables and its key index by the cached
 *		OIDs.  Taking a lock processes pending invalidations; if one touched
 *		our relations (or an OID no longer exists), the names are resolved
 *		again, under the locks already held, and the open is retried.  Locks
 *		taken on a stale OID are harmless and kept to the end of the
 *		transaction, as every lock here is.
 */
void
CreditsOpenPair(CreditsTable which, LOCKMODE lockmode, Relation *rel, Relation *index)
{
	for (;;)
	{
		Relation	idx = NULL;

		ResolveRelations();
		if (index != NULL && table_names[which][1] == NULL)
			elog(ERROR, "credits: credits.%s is opened without an index",
				 table_names[which][0]);
		*rel = try_relation_open(rels.oids[which].table, lockmode);
		if (*rel != NULL && index != NULL)
			idx = try_relation_open(rels.oids[which].index, AccessShareLock);
		if (*rel != NULL && (index == NULL || idx != NULL) && rels.valid)
		{
			if (index != NULL)
				*index = idx;
			return;
		}
		if (idx != NULL)
			relation_close(idx, NoLock);
		if (*rel != NULL)
			relation_close(*rel, NoLock);
		rels.valid = false;
	}
}

/*
 * CreditsFetchByInt8Key
 *		One row by a single bigint column's unique index (a table and index
 *		from CreditsOpenPair), visible to the snapshot, into slot.
 */
bool
CreditsFetchByInt8Key(Relation rel, Relation index, int64 key, Snapshot snapshot,
					  TupleTableSlot *slot)
{
	return FetchByKey(rel, index, Int64GetDatum(key), F_INT8EQ, snapshot, slot);
}

/*
 * CreditsRelationsGeneration
 *		Changes whenever the names are resolved again (after DDL on one of
 *		our relations): what a caller derived from them must be derived
 *		again.
 */
uint64
CreditsRelationsGeneration(void)
{
	return generation;
}

/* One row by a single-column unique index, visible to the snapshot. */
static bool
FetchByKey(Relation rel, Relation index, Datum key, RegProcedure eqproc,
		   Snapshot snapshot, TupleTableSlot *slot)
{
	ScanKeyData skey;
	IndexScanDesc scan;
	bool		found;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], eqproc, key);
	scan = credits_index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}

static int64
SlotInt8(TupleTableSlot *slot, AttrNumber attnum, bool *isnull)
{
	Datum		v = slot_getattr(slot, attnum, isnull);

	return *isnull ? 0 : DatumGetInt64(v);
}

/*
 * ResolveRelations
 *		Finds the extension's tables, indexes and columns by name, unless
 *		they are known already.  rels becomes valid only if no invalidation
 *		arrived while looking (the lookups themselves may process some);
 *		CreditsOpenPair() checks again once it holds its locks.
 */
static void
ResolveRelations(void)
{
	CreditsRelations found = {0};
	uint64		invalidations_before = invalidations;
	Oid			nsp;
	Oid			accounts;
	Oid			policies;
	Oid			batches;
	Oid			extension;

	if (rels.valid)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(InvalidateRelations, (Datum) 0);
		callback_registered = true;
	}
	nsp = get_namespace_oid("credits", false);
	extension = getExtensionOfObject(RelationRelationId, RelationOid(nsp, "send_batches"));
	/*
	 * 0.3.0 renamed the ledger table; credits.ledger is a view then.  Only
	 * the extension's own relations count: a DBA's table that happens to be
	 * called credits.ledger_entries (or credits.grants, below) in an older
	 * schema changes nothing.
	 */
	found.entries_in_batches = ExtensionRelation(nsp, "ledger_entries", extension);
	for (int i = 0; i < TABLE_GRANTS; i++)
	{
		found.oids[i].table = RelationOid(nsp, i == TABLE_LEDGER && found.entries_in_batches ?
										  "ledger_entries" : table_names[i][0]);
		found.oids[i].index = table_names[i][1] == NULL ? InvalidOid :
			RelationOid(nsp, table_names[i][1]);
	}
	/*
	 * grants exist from 0.2.0 on; an older schema has none.  The table
	 * alone tells which: a 0.2.0 schema whose grants index was renamed must
	 * not be debited as a 0.1 one (grants ignored), so then it is an error.
	 */
	found.has_grants = ExtensionRelation(nsp, table_names[TABLE_GRANTS][0], extension);
	for (int i = TABLE_GRANTS; i < NUM_CREDITS_TABLES && found.has_grants; i++)
	{
		found.oids[i].table = RelationOid(nsp, table_names[i][0]);
		found.oids[i].index = RelationOid(nsp, table_names[i][1]);
	}
	if (found.has_grants)
	{
		Oid			grants = found.oids[TABLE_GRANTS].table;

		found.grant_id = ColumnNumber(grants, "grant_id");
		found.grant_remaining = ColumnNumber(grants, "remaining");
		found.grant_priority = ColumnNumber(grants, "priority");
		found.grant_expires_at = ColumnNumber(grants, "expires_at");
		found.grant_closed_at = ColumnNumber(grants, "closed_at");
	}
	accounts = found.oids[TABLE_ACCOUNTS].table;
	policies = found.oids[TABLE_POLICIES].table;
	batches = found.oids[TABLE_BATCHES].table;
	found.accounts_balance = ColumnNumber(accounts, "balance");
	found.accounts_in_flight = ColumnNumber(accounts, "in_flight");
	found.policy_enabled = ColumnNumber(policies, "enabled");
	found.policy_min_balance = ColumnNumber(policies, "min_balance");
	found.policy_max_credits = ColumnNumber(policies, "max_credits");
	found.policy_target_balance = ColumnNumber(policies, "target_balance");
	found.policy_monthly_limit = ColumnNumber(policies, "monthly_limit");
	found.price_credits = ColumnNumber(found.oids[TABLE_PRICES].table, "credits_per_message");
	found.batch_account_id = ColumnNumber(batches, "account_id");
	found.batch_messages = ColumnNumber(batches, "messages");
	found.batch_channel = ColumnNumber(batches, "channel");
	found.batch_idempotency_key = ColumnNumber(batches, "idempotency_key");
	found.batch_cost = ColumnNumber(batches, "cost");
	found.batch_status = ColumnNumber(batches, "status");
	found.batch_recharge_id = ColumnNumber(batches, "recharge_id");
	found.batch_owed = get_attnum(batches, "owed");
	if (found.entries_in_batches)
	{
		for (int i = 0; i < NUM_BATCH_ENTRY_COLUMNS; i++)
			found.batch_entry[i] = ColumnNumber(batches, CreditsBatchEntryNames[i]);
	}
	found.batch_other_arbiters = OtherArbiters(batches, found.batch_account_id,
											   found.batch_idempotency_key);
	found.valid = (invalidations == invalidations_before);
	rels = found;
	generation++;
}

static Oid
RelationOid(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		elog(ERROR, "credits: relation credits.%s does not exist", name);
	return relid;
}

static AttrNumber
ColumnNumber(Oid relid, const char *name)
{
	AttrNumber	attnum = get_attnum(relid, name);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "credits: column \"%s\" of %s does not exist", name, get_rel_name(relid));
	return attnum;
}

/* Relcache callback: forget the OIDs when any of them is invalidated. */
static void
InvalidateRelations(Datum arg, Oid relid)
{
	invalidations++;
	if (!rels.valid)
		return;
	/*
	 * Without grants, any invalidation may be the 0.2.0 update creating
	 * them: look again.  (Only until the update; then only ours count.)
	 */
	if (relid == InvalidOid || !rels.has_grants)
	{
		rels.valid = false;
		return;
	}
	for (int i = 0; i < NUM_CREDITS_TABLES; i++)
		if (relid == rels.oids[i].table || relid == rels.oids[i].index)
			rels.valid = false;
}

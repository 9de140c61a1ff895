/*-------------------------------------------------------------------------
 *
 * direct_access.c
 *	  Reading and locking the rows the debit trigger needs without SPI: an
 *	  account (locked), its policy, a channel's price.
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
 * Catalog lookups: the OIDs of the tables and indexes are found by name in
 * schema credits once and kept until a relcache invalidation touches any of
 * them (DROP EXTENSION, ALTER TABLE, ...).
 *
 * Locking: RowShareLock on accounts (as SELECT FOR UPDATE), AccessShareLock
 * on the others and on the indexes, all kept to the end of the transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "direct_access.h"

typedef struct CreditsRelations
{
	bool		valid;
	Oid			accounts;
	Oid			accounts_pkey;
	AttrNumber	accounts_balance;
	AttrNumber	accounts_in_flight;
	Oid			policies;
	Oid			policies_pkey;
	AttrNumber	policy_enabled;
	AttrNumber	policy_min_balance;
	AttrNumber	policy_max_credits;
	AttrNumber	policy_target_balance;
	AttrNumber	policy_monthly_limit;
	Oid			prices;
	Oid			prices_pkey;
	AttrNumber	price_credits;
} CreditsRelations;

static CreditsRelations rels;

/* A row read by key as committed now, and what must be released after. */
typedef struct LatestRow
{
	Relation	rel;
	TupleTableSlot *slot;
	Snapshot	snapshot;
} LatestRow;
static bool callback_registered = false;

static void ResolveRelations(void);
static Oid	RelationOid(Oid nsp, const char *name);
static AttrNumber ColumnNumber(Oid relid, const char *name);
static bool FetchByKey(Relation rel, Oid indexoid, Datum key, RegProcedure eqproc,
					   Snapshot snapshot, TupleTableSlot *slot);
static int64 SlotInt8(TupleTableSlot *slot, AttrNumber attnum, bool *isnull);
static bool BeginLatestRow(LatestRow *row, Oid relid, Oid indexoid, Datum key,
						   RegProcedure eqproc);
static void EndLatestRow(LatestRow *row);
static void InvalidateRelations(Datum arg, Oid relid);

/*
 * CreditsLockAccountDirect
 *		Locks the account row FOR NO KEY UPDATE and reads its balance and
 *		in_flight.  Returns false when there is no such account.
 */
bool
CreditsLockAccountDirect(int64 account_id, int64 *balance, int64 *in_flight)
{
	Relation	rel;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	TM_FailureData tmfd;
	TM_Result	result;
	bool		found;
	bool		isnull;

	ResolveRelations();
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	rel = table_open(rels.accounts, RowShareLock);
	slot = table_slot_create(rel, NULL);

	found = FetchByKey(rel, rels.accounts_pkey, Int64GetDatum(account_id), F_INT8EQ,
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
	}

	ExecDropSingleTupleTableSlot(slot);
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
	LatestRow	row;
	bool		isnull;

	ResolveRelations();
	memset(policy, 0, sizeof(RechargePolicy));
	if (BeginLatestRow(&row, rels.policies, rels.policies_pkey,
					   Int64GetDatum(account_id), F_INT8EQ))
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
	EndLatestRow(&row);
}

/*
 * CreditsReadPriceDirect
 *		The channel's credits_per_message; false when it has no price.
 */
bool
CreditsReadPriceDirect(const char *channel, int32 *price)
{
	LatestRow	row;
	bool		found;
	bool		isnull;

	ResolveRelations();
	found = BeginLatestRow(&row, rels.prices, rels.prices_pkey,
						   CStringGetTextDatum(channel), F_TEXTEQ);
	if (found)
		*price = DatumGetInt32(slot_getattr(row.slot, rels.price_credits, &isnull));
	EndLatestRow(&row);
	return found;
}

/*
 * BeginLatestRow
 *		Opens the table and fetches the row with this key as committed now
 *		(a fresh snapshot), into row->slot; false when there is none.  Every
 *		call is paired with EndLatestRow.
 */
static bool
BeginLatestRow(LatestRow *row, Oid relid, Oid indexoid, Datum key, RegProcedure eqproc)
{
	row->snapshot = RegisterSnapshot(GetLatestSnapshot());
	row->rel = table_open(relid, AccessShareLock);
	row->slot = table_slot_create(row->rel, NULL);
	return FetchByKey(row->rel, indexoid, key, eqproc, row->snapshot, row->slot);
}

static void
EndLatestRow(LatestRow *row)
{
	ExecDropSingleTupleTableSlot(row->slot);
	table_close(row->rel, NoLock);
	UnregisterSnapshot(row->snapshot);
}

/* One row by a single-column unique index, visible to the snapshot. */
static bool
FetchByKey(Relation rel, Oid indexoid, Datum key, RegProcedure eqproc,
		   Snapshot snapshot, TupleTableSlot *slot)
{
	Relation	index = index_open(indexoid, AccessShareLock);
	ScanKeyData skey;
	IndexScanDesc scan;
	bool		found;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], eqproc, key);
	scan = index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	index_close(index, NoLock);
	return found;
}

static int64
SlotInt8(TupleTableSlot *slot, AttrNumber attnum, bool *isnull)
{
	Datum		v = slot_getattr(slot, attnum, isnull);

	return *isnull ? 0 : DatumGetInt64(v);
}

/* Finds the extension's tables, indexes and columns by name, once. */
static void
ResolveRelations(void)
{
	Oid			nsp;

	if (rels.valid)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(InvalidateRelations, (Datum) 0);
		callback_registered = true;
	}
	nsp = get_namespace_oid("credits", false);
	rels.accounts = RelationOid(nsp, "accounts");
	rels.accounts_pkey = RelationOid(nsp, "accounts_pkey");
	rels.accounts_balance = ColumnNumber(rels.accounts, "balance");
	rels.accounts_in_flight = ColumnNumber(rels.accounts, "in_flight");
	rels.policies = RelationOid(nsp, "auto_recharge");
	rels.policies_pkey = RelationOid(nsp, "auto_recharge_pkey");
	rels.policy_enabled = ColumnNumber(rels.policies, "enabled");
	rels.policy_min_balance = ColumnNumber(rels.policies, "min_balance");
	rels.policy_max_credits = ColumnNumber(rels.policies, "max_credits");
	rels.policy_target_balance = ColumnNumber(rels.policies, "target_balance");
	rels.policy_monthly_limit = ColumnNumber(rels.policies, "monthly_limit");
	rels.prices = RelationOid(nsp, "prices");
	rels.prices_pkey = RelationOid(nsp, "prices_pkey");
	rels.price_credits = ColumnNumber(rels.prices, "credits_per_message");
	rels.valid = true;
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
	if (!rels.valid)
		return;
	if (relid == InvalidOid ||
		relid == rels.accounts || relid == rels.accounts_pkey ||
		relid == rels.policies || relid == rels.policies_pkey ||
		relid == rels.prices || relid == rels.prices_pkey)
		rels.valid = false;
}

/*-------------------------------------------------------------------------
 *
 * row_write.c
 *	  Writing a statement's debits without SPI: the account rows, the
 *	  grant rows and the ledger rows go straight into the heap and its
 *	  indexes, as execReplication.c and COPY FROM write them.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/row_write.c
 *
 * Why: through SPI, each statement-end write of a single-row INSERT is a
 * cached plan run by a new executor: ExecutorStart, a ModifyTable per table,
 * every index of every table opened, and the CHECK constraints rebuilt
 * from their stored trees.  That was most of a debit's cost (bench/
 * PROFILE.md).  Here the same rows are written with table_tuple_update(),
 * table_tuple_insert() / table_multi_insert() and ExecInsertIndexTuples(),
 * and the tables' CHECK and NOT NULL constraints are still checked
 * (ExecConstraints), so what is stored is exactly what the SQL would have
 * stored.  ledger.c (the one writer of balances) decides what to write;
 * this file only knows how.
 *
 * What the SQL path does that this one would not, and when it is used
 * instead (RowWriterBegin returns NULL and ledger.c runs the SQL):
 *	- triggers: any trigger on INSERT into credits.ledger, or any trigger
 *	  on UPDATE of credits.accounts or credits.grants other than the
 *	  internal ones of foreign keys (the columns written here, balance,
 *	  in_flight, remaining and closed_at, are in no key);
 *	- rules, stored generated columns, or a relation that is not a plain
 *	  table;
 *	- a column of credits.ledger that the extension did not make (its
 *	  default would not be applied here);
 *	- a written column whose type is not the extension's (bigint, text,
 *	  timestamptz, without a typmod: values are stored here as Datums of
 *	  those types, where SQL would coerce them and check a domain), or
 *	  ledger.entry_id no longer an identity column;
 *	- credits.direct_writes = off.
 * A DBA who adds an audit trigger or a column therefore gets it honoured,
 * at the SQL path's speed.
 *
 * Defaults filled here as the column defaults would: ledger.entry_id from
 * its identity sequence, ledger.created_at and grants.closed_at as now()
 * (the transaction's start).
 *
 * Locking: RowExclusiveLock on the three tables, as INSERT and UPDATE take
 * it, kept to the end of the transaction.  The caller holds every account
 * row lock (FOR NO KEY UPDATE); grants are changed only under their
 * account's lock, so the rows found here with the latest snapshot are the
 * latest versions.  A row changed meanwhile anyway (a DBA's UPDATE of a
 * grant's note) is handled as UPDATE handles it: under READ COMMITTED the
 * columns are written onto the newest version, under REPEATABLE READ it is
 * a serialization failure.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "direct_access.h"
#include "row_write.h"

bool		CreditsDirectWrites = true;

/* Ledger rows written by one table_multi_insert() call, as COPY buffers. */
#define LEDGER_ROWS_PER_INSERT 1000

/* The columns of credits.ledger, all filled here. */
typedef enum LedgerColumn
{
	COL_ENTRY_ID,
	COL_ACCOUNT_ID,
	COL_DELTA,
	COL_BALANCE_AFTER,
	COL_KIND,
	COL_BATCH_ID,
	COL_RECHARGE_ID,
	COL_NOTE,
	COL_CREATED_AT,
	COL_GRANT_ID,
	NUM_LEDGER_COLUMNS
} LedgerColumn;

static const char *const ledger_column_names[NUM_LEDGER_COLUMNS] = {
	[COL_ENTRY_ID] = "entry_id",
	[COL_ACCOUNT_ID] = "account_id",
	[COL_DELTA] = "delta",
	[COL_BALANCE_AFTER] = "balance_after",
	[COL_KIND] = "kind",
	[COL_BATCH_ID] = "batch_id",
	[COL_RECHARGE_ID] = "recharge_id",
	[COL_NOTE] = "note",
	[COL_CREATED_AT] = "created_at",
	[COL_GRANT_ID] = "grant_id",
};

/*
 * Their types: a value is stored here as a Datum of this type, so a column
 * whose type a DBA changed (numeric, int4, a domain, ...) must go through
 * SQL, which coerces it (and checks a domain's constraints).
 */
static const Oid ledger_column_types[NUM_LEDGER_COLUMNS] = {
	[COL_ENTRY_ID] = INT8OID,
	[COL_ACCOUNT_ID] = INT8OID,
	[COL_DELTA] = INT8OID,
	[COL_BALANCE_AFTER] = INT8OID,
	[COL_KIND] = TEXTOID,
	[COL_BATCH_ID] = INT8OID,
	[COL_RECHARGE_ID] = INT8OID,
	[COL_NOTE] = TEXTOID,
	[COL_CREATED_AT] = TIMESTAMPTZOID,
	[COL_GRANT_ID] = INT8OID,
};

/*
 * A table's CHECK constraints, read back from their stored text and planned
 * once per backend (and again after DDL): PostgreSQL does both for every
 * executor run, which for a single-row INSERT cost more than the writes.
 */
typedef struct CheckTrees
{
	Oid			relid;
	uint64		generation;		/* CreditsRelationsGeneration() then */
	uint64		functions;		/* function_changes then */
	MemoryContext cxt;
	int			n;
	char	  **names;			/* in the relcache's order */
	Expr	  **trees;			/* planned */
} CheckTrees;

/* One table being written. */
typedef struct TableWriter
{
	Relation	rel;
	CreditsTable which;
	Relation	key;			/* the index rows are found by, opened when
								 * first needed */
	ResultRelInfo *rri;
	CheckTrees *checks;
	bool		indexes_open;
	TupleTableSlot *found;		/* the row as it is (updates) */
	TupleTableSlot *next;		/* its new version (updates) */
} TableWriter;

struct RowWriter
{
	EState	   *estate;
	Snapshot	snapshot;
	Snapshot	xact_snapshot;	/* REPEATABLE READ and SERIALIZABLE: the
								 * transaction's, with the current command */
	CommandId	cid;
	TimestampTz now;
	TableWriter accounts;
	TableWriter grants;
	TableWriter ledger;
	AttrNumber	account_id;
	AttrNumber	account_balance;
	AttrNumber	account_in_flight;
	AttrNumber	grant_id;
	AttrNumber	grant_remaining;
	AttrNumber	grant_closed_at;
	AttrNumber	ledger_column[NUM_LEDGER_COLUMNS];
	Oid			ledger_sequence;
	TupleTableSlot **ledger_slots;	/* LEDGER_ROWS_PER_INSERT, made as needed */
	int			nledger_slots;
};

static CheckTrees account_checks;
static CheckTrees grant_checks;
static CheckTrees ledger_checks;

/*
 * The predicates of the ledger's partial indexes, planned once (the
 * executor plans them again for every ExecOpenIndices).
 */
#define MAX_CACHED_PREDICATES 16
static struct
{
	uint64		generation;
	MemoryContext cxt;
	int			n;
	Oid			index[MAX_CACHED_PREDICATES];
	List	   *predicate[MAX_CACHED_PREDICATES];
}			ledger_predicates;

/*
 * Changes to pg_proc seen (any function): a planned CHECK tree may hold a
 * SQL function's body inlined, or an immutable function's result folded,
 * and a relcache invalidation of the table does not follow
 * CREATE OR REPLACE FUNCTION.
 */
static uint64 function_changes = 0;
static bool function_callback_registered = false;

/* ledger.entry_id's sequence, found once per resolution of the names */
static Oid	entry_id_sequence = InvalidOid;
static uint64 entry_id_sequence_generation = 0;

static void OpenTable(TableWriter *t, CreditsTable which);
static void CloseTable(TableWriter *t);
static Relation KeyIndex(TableWriter *t);
static void InitTarget(TableWriter *t);
static bool PlainTable(Relation rel);
static bool NoTriggersFor(Relation rel, int16 event, bool allow_foreign_keys);
static AttrNumber ColumnByName(Relation rel, const char *name, Oid type);
static void FunctionChanged(Datum arg, int cacheid, uint32 hashvalue);
static bool MapLedgerColumns(RowWriter *w);
static void OpenIndexes(TableWriter *t);
static void PreparePredicates(RowWriter *w, TableWriter *t);
static void CheckConstraints(RowWriter *w, TableWriter *t, TupleTableSlot *slot);
static void PrepareChecks(RowWriter *w, TableWriter *t);
static bool ChecksCurrent(const CheckTrees *c, Relation rel);
static void UpdateRow(RowWriter *w, TableWriter *t, AttrNumber key_column, int64 key,
					  ItemPointer tid, int ncolumns, const AttrNumber *columns,
					  const Datum *values, const bool *nulls);
static bool FetchAt(RowWriter *w, TableWriter *t, AttrNumber key_column, int64 key,
					ItemPointer tid);

/*
 * RowWriterBegin
 *		Opens the three tables for writing; NULL when they must be written
 *		through SQL instead (see the file header).
 */
RowWriter *
RowWriterBegin(void)
{
	RowWriter  *w;

	if (!CreditsDirectWrites || !CreditsHasGrants())
		return NULL;
	if (!function_callback_registered)
	{
		CacheRegisterSyscacheCallback(PROCOID, FunctionChanged, (Datum) 0);
		function_callback_registered = true;
	}
	w = palloc0(sizeof(RowWriter));
	OpenTable(&w->accounts, TABLE_ACCOUNTS);
	OpenTable(&w->grants, TABLE_GRANTS_BY_ID);
	OpenTable(&w->ledger, TABLE_LEDGER);
	w->accounts.checks = &account_checks;
	w->grants.checks = &grant_checks;
	w->ledger.checks = &ledger_checks;
	w->account_id = ColumnByName(w->accounts.rel, "account_id", INT8OID);
	w->account_balance = ColumnByName(w->accounts.rel, "balance", INT8OID);
	w->account_in_flight = ColumnByName(w->accounts.rel, "in_flight", INT8OID);
	w->grant_id = ColumnByName(w->grants.rel, "grant_id", INT8OID);
	w->grant_remaining = ColumnByName(w->grants.rel, "remaining", INT8OID);
	w->grant_closed_at = ColumnByName(w->grants.rel, "closed_at", TIMESTAMPTZOID);
	if (!PlainTable(w->accounts.rel) || !PlainTable(w->grants.rel) ||
		!PlainTable(w->ledger.rel) ||
		!NoTriggersFor(w->ledger.rel, TRIGGER_TYPE_INSERT, false) ||
		!NoTriggersFor(w->accounts.rel, TRIGGER_TYPE_UPDATE, true) ||
		!NoTriggersFor(w->grants.rel, TRIGGER_TYPE_UPDATE, true) ||
		w->account_id == InvalidAttrNumber ||
		w->grant_id == InvalidAttrNumber ||
		w->account_balance == InvalidAttrNumber ||
		w->account_in_flight == InvalidAttrNumber ||
		w->grant_remaining == InvalidAttrNumber ||
		w->grant_closed_at == InvalidAttrNumber ||
		!MapLedgerColumns(w))
	{
		CloseTable(&w->accounts);
		CloseTable(&w->grants);
		CloseTable(&w->ledger);
		pfree(w);
		return NULL;
	}

	if (entry_id_sequence_generation != CreditsRelationsGeneration() ||
		!OidIsValid(entry_id_sequence))
	{
		entry_id_sequence = credits_identity_sequence(w->ledger.rel,
													  w->ledger_column[COL_ENTRY_ID]);
		entry_id_sequence_generation = CreditsRelationsGeneration();
	}
	w->ledger_sequence = entry_id_sequence;

	/* as SPI does before each statement: see our own earlier writes */
	CommandCounterIncrement();
	w->snapshot = RegisterSnapshot(GetLatestSnapshot());
	if (IsolationUsesXactSnapshot())
	{
		PushCopiedSnapshot(GetTransactionSnapshot());
		UpdateActiveSnapshotCommandId();
		w->xact_snapshot = RegisterSnapshot(GetActiveSnapshot());
		PopActiveSnapshot();
	}
	w->cid = GetCurrentCommandId(true);
	w->now = GetCurrentTransactionStartTimestamp();
	w->estate = CreateExecutorState();
	w->estate->es_output_cid = w->cid;
	w->estate->es_snapshot = w->snapshot;
	InitTarget(&w->accounts);
	InitTarget(&w->grants);
	InitTarget(&w->ledger);
	return w;
}

/*
 * RowWriterUpdateAccount
 *		Sets the account row's balance and in_flight.
 */
void
RowWriterUpdateAccount(RowWriter *w, int64 account_id, ItemPointer tid, int64 balance,
					   int64 in_flight)
{
	AttrNumber	columns[2] = {w->account_balance, w->account_in_flight};
	Datum		values[2] = {Int64GetDatum(balance), Int64GetDatum(in_flight)};
	bool		nulls[2] = {false, false};

	UpdateRow(w, &w->accounts, w->account_id, account_id, tid, 2, columns, values, nulls);
}

/*
 * RowWriterUpdateGrant
 *		Sets the grant's remaining; a grant a debit empties is closed.
 */
void
RowWriterUpdateGrant(RowWriter *w, int64 grant_id, ItemPointer tid, int64 remaining)
{
	AttrNumber	columns[2] = {w->grant_remaining, w->grant_closed_at};
	Datum		values[2] = {Int64GetDatum(remaining), TimestampTzGetDatum(w->now)};
	bool		nulls[2] = {false, remaining != 0};

	UpdateRow(w, &w->grants, w->grant_id, grant_id, tid, 2, columns, values, nulls);
}

/*
 * RowWriterInsertLedger
 *		Inserts the queued debit and expire rows, in queue order (so
 *		entry_id order is debit order), a thousand per heap call.
 */
void
RowWriterInsertLedger(RowWriter *w, const LedgerDebits *rows)
{
	TableWriter *t = &w->ledger;
	Datum		debit = CStringGetTextDatum("debit");
	Datum		expire = CStringGetTextDatum("expire");
	BulkInsertState bistate = rows->n > 1 ? GetBulkInsertState() : NULL;
	const AttrNumber *col = w->ledger_column;

	OpenIndexes(t);
	PreparePredicates(w, t);
	if (w->ledger_slots == NULL)
		w->ledger_slots = palloc(sizeof(TupleTableSlot *) * LEDGER_ROWS_PER_INSERT);
	for (int first = 0; first < rows->n; first += LEDGER_ROWS_PER_INSERT)
	{
		int			n = Min(rows->n - first, LEDGER_ROWS_PER_INSERT);

		for (int j = 0; j < n; j++)
		{
			int			i = first + j;
			TupleTableSlot *slot;
			Datum	   *values;
			bool	   *nulls;

			if (j == w->nledger_slots)
				w->ledger_slots[w->nledger_slots++] = table_slot_create(t->rel, NULL);
			slot = w->ledger_slots[j];
			ExecClearTuple(slot);
			values = slot->tts_values;
			nulls = slot->tts_isnull;
			memset(nulls, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
#define SET(c, v) (values[col[c] - 1] = (v), nulls[col[c] - 1] = false)
			/* 0.3.0: taken when the row was queued (debit_state.c) */
			SET(COL_ENTRY_ID, Int64GetDatum(rows->entry_id[i] != 0 ? rows->entry_id[i] :
											nextval_internal(w->ledger_sequence, false)));
			SET(COL_ACCOUNT_ID, Int64GetDatum(rows->account[i]));
			SET(COL_DELTA, Int64GetDatum(rows->delta[i]));
			SET(COL_BALANCE_AFTER, Int64GetDatum(rows->balance_after[i]));
			SET(COL_KIND, rows->kind[i] == LEDGER_EXPIRE ? expire : debit);
			if (rows->batch[i] != 0)
				SET(COL_BATCH_ID, Int64GetDatum(rows->batch[i]));
			if (rows->recharge[i] != 0)
				SET(COL_RECHARGE_ID, Int64GetDatum(rows->recharge[i]));
			SET(COL_CREATED_AT, TimestampTzGetDatum(w->now));
			if (rows->grant[i] != 0)
				SET(COL_GRANT_ID, Int64GetDatum(rows->grant[i]));
#undef SET
			ExecStoreVirtualTuple(slot);
			CheckConstraints(w, t, slot);
		}
		if (n == 1)
			table_tuple_insert(t->rel, w->ledger_slots[0], w->cid, 0, bistate);
		else
			table_multi_insert(t->rel, w->ledger_slots, n, w->cid, 0, bistate);
		for (int j = 0; j < n; j++)
		{
			if (t->rri->ri_NumIndices > 0)
				list_free(credits_insert_index_tuples(t->rri, w->ledger_slots[j], w->estate,
													  false, CREDITS_NO_INDEX_UPDATE));
			ResetPerTupleExprContext(w->estate);
		}
	}
	if (bistate != NULL)
		FreeBulkInsertState(bistate);
}

/*
 * RowWriterEnd
 *		Closes what RowWriterBegin opened (the locks stay to the end of the
 *		transaction).
 */
void
RowWriterEnd(RowWriter *w)
{
	for (int i = 0; i < w->nledger_slots; i++)
		ExecDropSingleTupleTableSlot(w->ledger_slots[i]);
	CloseTable(&w->accounts);
	CloseTable(&w->grants);
	CloseTable(&w->ledger);
	FreeExecutorState(w->estate);
	UnregisterSnapshot(w->snapshot);
	if (w->xact_snapshot != NULL)
		UnregisterSnapshot(w->xact_snapshot);
	pfree(w);
}

/*
 * UpdateRow
 *		Finds the row (at tid if that is still its visible version, else by
 *		its key) with the writer's snapshot and writes a new version with
 *		these columns changed, checking the table's constraints and adding
 *		index entries unless the update is HOT.
 */
static void
UpdateRow(RowWriter *w, TableWriter *t, AttrNumber key_column, int64 key, ItemPointer tid,
		  int ncolumns, const AttrNumber *columns, const Datum *values, const bool *nulls)
{
	TupleDesc	desc = RelationGetDescr(t->rel);
	TM_FailureData tmfd;
	TM_Result	result;
	LockTupleMode lockmode;
	credits_update_indexes update_indexes;
	Snapshot	snapshot = w->snapshot;

	if (t->found == NULL)
	{
		t->found = table_slot_create(t->rel, NULL);
		t->next = table_slot_create(t->rel, NULL);
	}
	for (;;)
	{
		bool		found;

		found = (snapshot == w->snapshot && FetchAt(w, t, key_column, key, tid)) ||
			CreditsFetchByInt8Key(t->rel, KeyIndex(t), key, snapshot, t->found);
		if (snapshot != w->snapshot)
			UnregisterSnapshot(snapshot);
		if (!found)
			elog(ERROR, "credits: row %lld of %s to update is gone",
				 (long long) key, RelationGetRelationName(t->rel));

		/*
		 * Under REPEATABLE READ an UPDATE reads with the transaction's
		 * snapshot: a version committed since (a DBA's edit of a grant
		 * before this statement began) is a serialization failure there,
		 * not a row to write onto.
		 */
		if (w->xact_snapshot != NULL &&
			!table_tuple_satisfies_snapshot(t->rel, t->found, w->xact_snapshot))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent update")));
		slot_getallattrs(t->found);
		ExecClearTuple(t->next);
		memcpy(t->next->tts_values, t->found->tts_values, sizeof(Datum) * desc->natts);
		memcpy(t->next->tts_isnull, t->found->tts_isnull, sizeof(bool) * desc->natts);
		for (int i = 0; i < ncolumns; i++)
		{
			t->next->tts_values[columns[i] - 1] = values[i];
			t->next->tts_isnull[columns[i] - 1] = nulls[i];
		}
		ExecStoreVirtualTuple(t->next);
		CheckConstraints(w, t, t->next);
		CheckCmdReplicaIdentity(t->rel, CMD_UPDATE);

		result = table_tuple_update(t->rel, &t->found->tts_tid, t->next, w->cid,
									w->snapshot, InvalidSnapshot, true, &tmfd,
									&lockmode, &update_indexes);
		if (result == TM_Ok)
			break;
		/*
		 * Somebody changed the row since we read it without holding its
		 * account's lock (a DBA's UPDATE of a grant's note, say).  Under READ
		 * COMMITTED, as UPDATE re-checks the newest version, write our
		 * columns onto the newest version; under REPEATABLE READ, as UPDATE
		 * does, fail.
		 */
		if (result == TM_Updated && !IsolationUsesXactSnapshot())
		{
			ExecClearTuple(t->found);
			snapshot = RegisterSnapshot(GetLatestSnapshot());
			continue;
		}
		if (result == TM_Updated || result == TM_Deleted)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent update")));
		elog(ERROR, "credits: unexpected result %d updating row %lld of %s",
			 (int) result, (long long) key, RelationGetRelationName(t->rel));
	}
	if (update_indexes != CREDITS_NO_INDEX_UPDATE)
	{
		OpenIndexes(t);
		if (t->rri->ri_NumIndices > 0)
			list_free(credits_insert_index_tuples(t->rri, t->next, w->estate, true,
												  update_indexes));
	}
	ExecClearTuple(t->found);
	ResetPerTupleExprContext(w->estate);
}

/*
 * CheckConstraints
 *		The table's NOT NULL and CHECK constraints on a row to write, by
 *		ExecConstraints, with the CHECK expressions from the cache.
 */
static void
CheckConstraints(RowWriter *w, TableWriter *t, TupleTableSlot *slot)
{
	/* a CHECK may read tableoid: set it, as ExecInsert and ExecUpdate do */
	slot->tts_tableOid = RelationGetRelid(t->rel);
	if (RelationGetDescr(t->rel)->constr == NULL)
		return;
	if (t->rri->ri_ConstraintExprs == NULL)
		PrepareChecks(w, t);
	ExecConstraints(t->rri, slot, w->estate);
}

/*
 * PrepareChecks
 *		Gives the ResultRelInfo its CHECK expressions, initialized for this
 *		writer's EState from the cached planned trees (which ExecRelCheck
 *		would otherwise rebuild from text).  PostgreSQL 18 skips constraints
 *		that are not enforced while building them: there it builds them.
 */
static void
PrepareChecks(RowWriter *w, TableWriter *t)
{
#if PG_VERSION_NUM < 180000
	TupleConstr *constr = RelationGetDescr(t->rel)->constr;
	CheckTrees *c = t->checks;
	MemoryContext old;

	if (constr->num_check == 0)
		return;
	if (!ChecksCurrent(c, t->rel))
	{
		if (c->cxt == NULL)
			c->cxt = AllocSetContextCreate(CacheMemoryContext, "credits CHECK trees",
										   ALLOCSET_SMALL_SIZES);
		else
			MemoryContextReset(c->cxt);
		c->n = 0;
		c->functions = function_changes;
		old = MemoryContextSwitchTo(c->cxt);
		c->names = palloc(sizeof(char *) * constr->num_check);
		c->trees = palloc(sizeof(Expr *) * constr->num_check);
		for (int i = 0; i < constr->num_check; i++)
		{
			c->names[i] = pstrdup(constr->check[i].ccname);
			c->trees[i] = expression_planner(stringToNode(constr->check[i].ccbin));
		}
		MemoryContextSwitchTo(old);
		c->relid = RelationGetRelid(t->rel);
		c->generation = CreditsRelationsGeneration();
		c->n = constr->num_check;
	}
	old = MemoryContextSwitchTo(w->estate->es_query_cxt);
	t->rri->ri_ConstraintExprs = palloc(sizeof(ExprState *) * c->n);
	for (int i = 0; i < c->n; i++)
		t->rri->ri_ConstraintExprs[i] = ExecInitExpr(c->trees[i], NULL);
	MemoryContextSwitchTo(old);
#endif
}

/* Whether the cached trees are this relation's constraints, as they are now. */
static bool
ChecksCurrent(const CheckTrees *c, Relation rel)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;

	if (c->relid != RelationGetRelid(rel) || c->generation != CreditsRelationsGeneration() ||
		c->functions != function_changes || c->n != constr->num_check)
		return false;
	for (int i = 0; i < c->n; i++)
		if (strcmp(c->names[i], constr->check[i].ccname) != 0)
			return false;
	return true;
}

/*
 * FetchAt
 *		The row at tid into t->found, if the writer's snapshot sees that
 *		version and it is the row with this key: where the debit read it,
 *		unless something wrote it since (then the key finds it).
 */
static bool
FetchAt(RowWriter *w, TableWriter *t, AttrNumber key_column, int64 key, ItemPointer tid)
{
	bool		isnull;
	Datum		found_key;

	if (tid == NULL || !ItemPointerIsValid(tid) ||
		!table_tuple_fetch_row_version(t->rel, tid, w->snapshot, t->found))
		return false;
	found_key = slot_getattr(t->found, key_column, &isnull);
	if (!isnull && DatumGetInt64(found_key) == key)
		return true;
	ExecClearTuple(t->found);
	return false;
}

static void
OpenTable(TableWriter *t, CreditsTable which)
{
	t->which = which;
	CreditsOpenPair(which, RowExclusiveLock, &t->rel, NULL);
}

/* The table's key index (a second reference to the table is dropped). */
static Relation
KeyIndex(TableWriter *t)
{
	if (t->key == NULL)
	{
		Relation	again;

		CreditsOpenPair(t->which, RowExclusiveLock, &again, &t->key);
		table_close(again, NoLock);
	}
	return t->key;
}

/* The ResultRelInfo the executor's routines work on (no range table). */
static void
InitTarget(TableWriter *t)
{
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, t->rel, 0, NULL, 0);
}

static void
CloseTable(TableWriter *t)
{
	if (t->found != NULL)
	{
		ExecDropSingleTupleTableSlot(t->found);
		ExecDropSingleTupleTableSlot(t->next);
	}
	if (t->indexes_open)
		ExecCloseIndices(t->rri);
	if (t->key != NULL)
		index_close(t->key, NoLock);
	table_close(t->rel, NoLock);
}

static void
OpenIndexes(TableWriter *t)
{
	if (!t->indexes_open)
	{
		ExecOpenIndices(t->rri, false);
		t->indexes_open = true;
	}
}

/*
 * PreparePredicates
 *		Gives the ledger's partial indexes their predicates, initialized from
 *		the cached planned trees, before ExecInsertIndexTuples would plan
 *		them.  An index not in the cache (new since) is left to it.
 */
static void
PreparePredicates(RowWriter *w, TableWriter *t)
{
	ResultRelInfo *rri = t->rri;

	if (ledger_predicates.generation != CreditsRelationsGeneration() ||
		ledger_predicates.cxt == NULL)
	{
		if (ledger_predicates.cxt == NULL)
			ledger_predicates.cxt = AllocSetContextCreate(CacheMemoryContext,
														  "credits index predicates",
														  ALLOCSET_SMALL_SIZES);
		else
			MemoryContextReset(ledger_predicates.cxt);
		ledger_predicates.n = 0;
		ledger_predicates.generation = CreditsRelationsGeneration();
	}
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];
		Oid			index = RelationGetRelid(rri->ri_IndexRelationDescs[i]);
		List	   *predicate = NIL;
		MemoryContext old;
		int			j;

		if (info->ii_Predicate == NIL || info->ii_PredicateState != NULL)
			continue;
		for (j = 0; j < ledger_predicates.n; j++)
			if (ledger_predicates.index[j] == index)
				predicate = ledger_predicates.predicate[j];
		if (predicate == NIL && ledger_predicates.n < MAX_CACHED_PREDICATES)
		{
			old = MemoryContextSwitchTo(ledger_predicates.cxt);
			predicate = (List *) expression_planner((Expr *) copyObject(info->ii_Predicate));
			MemoryContextSwitchTo(old);
			ledger_predicates.index[ledger_predicates.n] = index;
			ledger_predicates.predicate[ledger_predicates.n] = predicate;
			ledger_predicates.n++;
		}
		if (predicate == NIL)
			continue;
		old = MemoryContextSwitchTo(w->estate->es_query_cxt);
		info->ii_PredicateState = ExecInitQual(predicate, NULL);
		MemoryContextSwitchTo(old);
	}
}

/* A plain table without rules or stored generated columns. */
static bool
PlainTable(Relation rel)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;

	return rel->rd_rel->relkind == RELKIND_RELATION &&
		rel->rd_rules == NULL &&
		(constr == NULL || !constr->has_generated_stored);
}

/*
 * NoTriggersFor
 *		Whether no trigger fires on this event (TRIGGER_TYPE_INSERT or
 *		_UPDATE), ignoring, if allowed, the internal triggers of foreign
 *		keys (an UPDATE that changes no key column fires none of them).
 */
static bool
NoTriggersFor(Relation rel, int16 event, bool allow_foreign_keys)
{
	TriggerDesc *triggers = rel->trigdesc;

	if (triggers == NULL)
		return true;
	for (int i = 0; i < triggers->numtriggers; i++)
	{
		Trigger    *trigger = &triggers->triggers[i];

		if ((trigger->tgtype & event) == 0)
			continue;
		if (allow_foreign_keys && trigger->tgisinternal &&
			RI_FKey_trigger_type(trigger->tgfoid) != RI_TRIGGER_NONE)
			continue;
		return false;
	}
	return true;
}

/*
 * A column's number by name; InvalidAttrNumber when it has none, or when
 * its type is not the one the extension made (without a typmod).
 */
static AttrNumber
ColumnByName(Relation rel, const char *name, Oid type)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);

		if (!attr->attisdropped && strcmp(NameStr(attr->attname), name) == 0)
			return attr->atttypid == type && attr->atttypmod == -1 ?
				attr->attnum : InvalidAttrNumber;
	}
	return InvalidAttrNumber;
}

/* Syscache callback on pg_proc: see function_changes. */
static void
FunctionChanged(Datum arg, int cacheid, uint32 hashvalue)
{
	function_changes++;
}

/*
 * MapLedgerColumns
 *		Finds every column of credits.ledger; false when one is missing or
 *		the table has a column the extension did not make.
 */
static bool
MapLedgerColumns(RowWriter *w)
{
	TupleDesc	desc = RelationGetDescr(w->ledger.rel);
	int			live = 0;

	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live++;
	if (live != NUM_LEDGER_COLUMNS)
		return false;
	for (int c = 0; c < NUM_LEDGER_COLUMNS; c++)
	{
		w->ledger_column[c] = ColumnByName(w->ledger.rel, ledger_column_names[c],
										   ledger_column_types[c]);
		if (w->ledger_column[c] == InvalidAttrNumber)
			return false;
	}
	/* entry_id is filled from its identity sequence: it must have one */
	return TupleDescAttr(desc, w->ledger_column[COL_ENTRY_ID] - 1)->attidentity != '\0';
}

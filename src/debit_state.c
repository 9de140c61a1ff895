/*-------------------------------------------------------------------------
 *
 * debit_state.c
 *	  Statement-level batching of debits: each account is locked and read
 *	  once per statement, its running balance kept in memory, its row
 *	  written once when the statement ends, and the ledger rows inserted in
 *	  bulk.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/debit_state.c
 *
 * Why: a row-level trigger that updates the account for each of 200,000
 * inserted batches writes 200,000 row versions of a few account rows and
 * walks ever longer version chains.  Here the BEFORE ROW trigger
 * (debit_trigger.c) decides each row exactly as before, against the
 * running balance, and queues its ledger row; the AFTER STATEMENT trigger
 * credits_flush_debits writes the account rows and the ledger rows.  Ledger
 * rows are also written every FLUSH_CHUNK rows to bound memory; account rows
 * only at the end.
 *
 * Layers.  The state lives in "layers", one per subtransaction that has
 * debited in the current statement.  A statement's rows normally all run in
 * one subtransaction, so there is one layer.  A row whose evaluation enters
 * a subtransaction (a function with an EXCEPTION block, say) that itself
 * inserts batches gets a layer of its own: if that subtransaction aborts,
 * its layer is thrown away with it, and the enclosing statement's pending
 * debits are untouched.  An inner layer may not debit an account that an
 * enclosing layer holds pending debits for (CR019): ledger order and
 * balances would depend on which subtransaction survives.
 *
 * Anything else that reads or changes an account first calls
 * CreditsFlushDebits (credits._flush_debits(), from _lock_account), so it
 * sees the written row, and the cache is dropped so the trigger re-reads
 * the account after it.
 *
 * Safety nets: at subtransaction abort the layers of the aborted
 * subtransactions are dropped; at transaction abort everything is dropped;
 * at commit (or PREPARE) anything still pending is an error, so a debit can
 * never be lost silently.
 *
 * Locking: the account row lock (FOR NO KEY UPDATE) is taken when the
 * account enters a layer and held to the end of the transaction, so nobody
 * else can change what the layer caches.  Memory lives under
 * TopTransactionContext.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "lib/stringinfo.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "compat.h"
#include "credits.h"
#include "debit_state.h"
#include "direct_access.h"
#include "draw_down.h"
#include "ledger.h"
#include "plan_cache.h"

/* What LaterTriggerNames says when there is none. */
#define NO_LATER_TRIGGERS "none found"

/* Ledger rows queued before they are written mid-statement. */
#define FLUSH_CHUNK 8192

/* Channels longer than this are simply not cached. */
#define PRICE_KEY_LEN 64

typedef struct CachedPrice
{
	char		channel[PRICE_KEY_LEN]; /* hash key */
	int32		price;
} CachedPrice;

/*
 * A debited row to read back when the statement ends, because a BEFORE
 * INSERT row trigger firing after ours could change or drop it.
 */
typedef struct BatchCheck
{
	int64		batch_id;
	bool		absent;			/* not debited (a duplicate): must not be
								 * stored; the fields below are unset */
	int64		account_id;
	int32		messages;
	char	   *channel;		/* in the layer's context */
	char	   *idempotency_key;	/* in the layer's context, or NULL */
	int64		cost;
	const char *status;			/* a string constant */
	bool		has_recharge;
	int64		recharge_id;
	int64		owed;
	bool		has_entry;		/* 0.3.0: the batch's own debit entry */
	BatchEntry	entry;
} BatchCheck;

typedef struct DebitLayer
{
	SubTransactionId subxid;
	MemoryContext cxt;
	HTAB	   *accounts;		/* CachedAccount by account_id */
	HTAB	   *prices;			/* CachedPrice by channel */
	int			naccounts;
	bool		pending;		/* dirty accounts or queued rows */
	int			nledger;		/* queued ledger rows */
	int			capacity;
	int64	   *ledger_account;
	int64	   *ledger_delta;
	int64	   *ledger_balance;
	int64	   *ledger_batch;
	char	   *ledger_kind;	/* LEDGER_DEBIT or LEDGER_EXPIRE */
	int64	   *ledger_grant;	/* 0: none (the owed part of a debit) */
	int64	   *ledger_recharge;	/* a debit awaiting a recharge: it; else 0 */
	int64	   *ledger_entry_id;	/* taken when queued (0.3.0); else 0 */
	bool		has_grants;		/* some account draws from grants */
	int			nchecks;		/* rows to read back at statement end */
	int			checks_capacity;
	BatchCheck *checks;
	struct DebitLayer *parent;
} DebitLayer;

static DebitLayer *top_layer = NULL;

/*
 * Greater than zero while a batch is being debited or queued debits are
 * being written.  The SQL we run then (recharges, ledger rows) fires the
 * triggers of those tables; a trigger someone added there that changes an
 * account or inserts a batch would write or drop the very state in use, so
 * it is refused (CheckNotBusy).
 */
static int	debit_busy = 0;

static void CheckNotBusy(void);
static DebitLayer *CurrentLayer(void);
static DebitLayer *PushLayer(SubTransactionId subxid);
static void PopLayer(void);
static void ClearLayer(DebitLayer *layer);
static bool LayerIsEmpty(DebitLayer *layer);
static void WriteLayer(DebitLayer *layer, bool final);
static void WriteQueued(DebitLayer *layer, const LedgerAccountRows *accounts,
						const LedgerGrantRows *grants);
static void WriteQueuedGuarded(DebitLayer *layer, const LedgerAccountRows *accounts,
							   const LedgerGrantRows *grants);
static void QueueRow(DebitLayer *layer, CachedAccount *account, int64 delta,
					 int64 batch_id, char kind, int64 grant_id, int64 recharge_id);
static void DebitRow(DebitLayer *layer, CachedAccount *account, int64 delta,
					 int64 batch_id, int64 grant_id, int64 recharge_id,
					 BatchEntry *entry);
static CachedGrant *CopyGrants(const CachedGrant *grants, int n, MemoryContext cxt);
static void MergeIntoParent(DebitLayer *layer);
static void EnsureCapacity(DebitLayer *layer, int needed);
static void AddCheck(DebitLayer *layer, const BatchCheck *check);
static void VerifyChecks(DebitLayer *layer, Relation rel);
static void CheckEntry(Relation rel, const BatchCheck *c, const StoredBatch *b);
pg_noreturn static void BatchChanged(Relation rel, int64 batch_id, const char *column,
									 const char *stored, const char *debited) CREDITS_NORETURN;
static char *LaterTriggerNames(Relation rel);
static void DebitXactCallback(XactEvent event, void *arg);
static void DebitSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
								 SubTransactionId parentSubid, void *arg);

/*
 * CreditsDebitStateInit
 *		Registers the transaction callbacks; called once from _PG_init.
 */
void
CreditsDebitStateInit(void)
{
	RegisterXactCallback(DebitXactCallback, NULL);
	RegisterSubXactCallback(DebitSubXactCallback, NULL);
}

/*
 * CreditsFindAccount
 *		The current layer's entry for an account, or NULL when the statement
 *		has not locked and read it yet.  Refuses an account with debits
 *		pending in an enclosing layer.
 */
CachedAccount *
CreditsFindAccount(int64 account_id)
{
	DebitLayer *layer = CurrentLayer();
	CachedAccount *account;

	account = hash_search(layer->accounts, &account_id, HASH_FIND, NULL);
	if (account != NULL)
		return account;
	for (DebitLayer *outer = layer->parent; outer != NULL; outer = outer->parent)
	{
		if (hash_search(outer->accounts, &account_id, HASH_FIND, NULL) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_NESTED_DEBIT),
					 errmsg("account %lld has debits pending in an enclosing statement",
							(long long) account_id),
					 errdetail("A batch for it is being inserted inside a subtransaction started while an enclosing INSERT on credits.send_batches was debiting the same account."),
					 errhint("Insert the batches of one account in one statement, or outside the enclosing statement.")));
	}
	return NULL;
}

/*
 * CreditsRememberAccount
 *		Adds an account the caller has just locked and read to the current
 *		layer, and returns the layer's copy.
 */
CachedAccount *
CreditsRememberAccount(const CachedAccount *account)
{
	DebitLayer *layer = CurrentLayer();
	CachedAccount *entry;
	bool		found;

	entry = hash_search(layer->accounts, &account->account_id, HASH_ENTER, &found);
	Assert(!found);
	*entry = *account;
	entry->dirty = false;
	entry->grants = CopyGrants(account->grants, account->ngrants, layer->cxt);
	if (account->has_grants)
		layer->has_grants = true;
	layer->naccounts++;
	return entry;
}

/*
 * CreditsQueueExpiries
 *		Expires the grants of a just-locked account whose expires_at has
 *		passed at "now" (an "expire" ledger row each, queued before any
 *		debit of the statement), so that no expired credit is spent.
 */
void
CreditsQueueExpiries(CachedAccount *account, TimestampTz now)
{
	DebitLayer *layer = CurrentLayer();

	for (int i = 0; i < account->ngrants; i++)
	{
		CachedGrant *g = &account->grants[i];

		if (g->remaining > 0 && CreditsGrantExpired(g, now))
		{
			int64		lapsed = g->remaining;

			g->remaining = 0;
			g->dirty = true;
			QueueRow(layer, account, -lapsed, 0, LEDGER_EXPIRE, g->grant_id, 0);
		}
	}
}

/*
 * CreditsCachedPrice
 *		The channel's price if this statement has read it already.
 */
bool
CreditsCachedPrice(const char *channel, int32 *price)
{
	DebitLayer *layer = CurrentLayer();
	CachedPrice *entry;

	if (strlen(channel) >= PRICE_KEY_LEN)
		return false;
	entry = hash_search(layer->prices, channel, HASH_FIND, NULL);
	if (entry == NULL)
		return false;
	*price = entry->price;
	return true;
}

void
CreditsCachePrice(const char *channel, int32 price)
{
	DebitLayer *layer = CurrentLayer();
	CachedPrice *entry;

	if (strlen(channel) >= PRICE_KEY_LEN)
		return;
	entry = hash_search(layer->prices, channel, HASH_ENTER, NULL);
	entry->price = price;
}

/*
 * CreditsQueueDebit
 *		Debits "cost" from the account's running balance and queues its
 *		ledger rows; writes the queue when it is full.  With grants, the
 *		cost is drawn from the open grants in draw-down order, one ledger row
 *		per grant drawn, and what they cannot pay is owed (a row without a
 *		grant).  Returns what the batch owes.  The caller has checked the
 *		arithmetic and the rule.  A debit awaiting a recharge names it
 *		(recharge_id, else 0) in its rows: refunds find them by it.
 *
 *		On a 0.3.0 schema the first of those rows is not queued: it goes
 *		into *entry, for the caller to store in the batch row itself (the
 *		batch is its own debit entry); the rest, rarely any, are queued.
 */
int64
CreditsQueueDebit(CachedAccount *account, int64 cost, int64 batch_id, int64 recharge_id,
				  BatchEntry *entry)
{
	DebitLayer *layer = CurrentLayer();
	int64		left = cost;

	if (!account->entries_in_batch)
		entry = NULL;
	if (account->has_grants)
	{
		for (int i = 0; i < account->ngrants && left > 0; i++)
		{
			CachedGrant *g = &account->grants[i];
			int64		take = Min(g->remaining, left);

			if (take <= 0)
				continue;
			g->remaining -= take;
			g->dirty = true;
			left -= take;
			DebitRow(layer, account, -take, batch_id, g->grant_id, recharge_id, entry);
			entry = NULL;
		}
		/* the owed part; a batch of cost 0 still gets its one debit row */
		if (left > 0 || cost == 0)
			DebitRow(layer, account, -left, batch_id, 0, recharge_id, entry);
	}
	else
	{
		QueueRow(layer, account, -cost, batch_id, LEDGER_DEBIT, 0, 0);
		left = 0;
	}

	if (layer->nledger >= FLUSH_CHUNK)
		WriteLayer(layer, false);
	return left;
}

/*
 * DebitRow
 *		One debit row: into *entry (the batch row carries it) when there is
 *		one, else queued.
 */
static void
DebitRow(DebitLayer *layer, CachedAccount *account, int64 delta, int64 batch_id,
		 int64 grant_id, int64 recharge_id, BatchEntry *entry)
{
	if (entry == NULL)
	{
		QueueRow(layer, account, delta, batch_id, LEDGER_DEBIT, grant_id, recharge_id);
		return;
	}
	account->balance += delta;
	account->dirty = true;
	layer->pending = true;
	entry->entry_id = CreditsNextEntryId();
	entry->delta = delta;
	entry->balance_after = account->balance;
	entry->grant_id = grant_id;
	entry->recharge_id = recharge_id;
}

/*
 * QueueRow
 *		Queues one ledger row and moves the account's running balance by
 *		delta.  On a 0.3.0 schema the row takes its entry_id now, under the
 *		account lock, so that entry ids follow the account's balance changes
 *		whether a row is written in the batch or at the end of the statement.
 */
static void
QueueRow(DebitLayer *layer, CachedAccount *account, int64 delta, int64 batch_id,
		 char kind, int64 grant_id, int64 recharge_id)
{
	int			i;

	EnsureCapacity(layer, layer->nledger + 1);
	account->balance += delta;
	account->dirty = true;
	layer->pending = true;
	i = layer->nledger++;
	layer->ledger_account[i] = account->account_id;
	layer->ledger_delta[i] = delta;
	layer->ledger_balance[i] = account->balance;
	layer->ledger_batch[i] = batch_id;
	layer->ledger_kind[i] = kind;
	layer->ledger_grant[i] = grant_id;
	layer->ledger_recharge[i] = recharge_id;
	layer->ledger_entry_id[i] = account->entries_in_batch ? CreditsNextEntryId() : 0;
}

/* A copy of a grants array in cxt (NULL for none). */
static CachedGrant *
CopyGrants(const CachedGrant *grants, int n, MemoryContext cxt)
{
	CachedGrant *copy;

	if (n == 0)
		return NULL;
	copy = MemoryContextAlloc(cxt, sizeof(CachedGrant) * n);
	memcpy(copy, grants, sizeof(CachedGrant) * n);
	return copy;
}

/*
 * CreditsQueueBatchCheck
 *		Remembers what was debited for a row, to compare with the stored row
 *		when the statement ends (the caller found a later BEFORE row trigger).
 */
void
CreditsQueueBatchCheck(int64 batch_id, int64 account_id, int32 messages,
					   const char *channel, text *idempotency_key, int64 cost,
					   const char *status, bool has_recharge, int64 recharge_id,
					   int64 owed, const BatchEntry *entry)
{
	BatchCheck	check;

	memset(&check, 0, sizeof(check));
	check.batch_id = batch_id;
	check.absent = false;
	check.account_id = account_id;
	check.messages = messages;
	check.channel = (char *) channel;
	check.idempotency_key = idempotency_key ? text_to_cstring(idempotency_key) : NULL;
	check.cost = cost;
	check.status = status;
	check.has_recharge = has_recharge;
	check.recharge_id = recharge_id;
	check.owed = owed;
	check.has_entry = entry != NULL;
	if (entry != NULL)
		check.entry = *entry;
	AddCheck(CurrentLayer(), &check);
}

/*
 * CreditsQueueBatchAbsent
 *		Remembers a row that was not debited (it conflicts with a stored
 *		batch), to make sure at statement end that it was not stored either.
 */
void
CreditsQueueBatchAbsent(int64 batch_id)
{
	BatchCheck	check;

	memset(&check, 0, sizeof(check));
	check.batch_id = batch_id;
	check.absent = true;
	AddCheck(CurrentLayer(), &check);
}

/*
 * CreditsFlushDebits
 *		Writes the current subtransaction's pending debits.  With final, also
 *		the account rows, and the layer is emptied (the next row re-reads its
 *		account).  Pending debits of an enclosing subtransaction cannot be
 *		written from here; they wait for their own statement's end.
 */
void
CreditsFlushDebits(bool final)
{
	DebitLayer *layer = top_layer;

	CheckNotBusy();
	if (layer == NULL || layer->subxid != GetCurrentSubTransactionId())
		return;
	WriteLayer(layer, final);
	if (final)
	{
		if (layer->parent != NULL)
		{
			/* rows still to read back belong to the enclosing statement now */
			for (int i = 0; i < layer->nchecks; i++)
				AddCheck(layer->parent, &layer->checks[i]);
			PopLayer();
		}
		else
			ClearLayer(layer);
	}
}

/*
 * credits_flush_debits_0_1_1
 *		AFTER STATEMENT trigger on credits.send_batches: checks what later
 *		triggers did to the debited rows, and writes what the statement
 *		debited (credits.flush_debits() from 0.1.1; legacy.c serves 0.1.0's
 *		name).
 */
PG_FUNCTION_INFO_V1(credits_flush_debits_0_1_1);

Datum
credits_flush_debits_0_1_1(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	return CreditsFlushDebitsTrigger(fcinfo);
}

Datum
CreditsFlushDebitsTrigger(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			save_userid;
	int			save_sec_context;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("credits_flush_debits: must be fired AFTER ... FOR EACH STATEMENT")));

	/* Write as the table owner, as the BEFORE ROW trigger reads. */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(trigdata->tg_relation->rd_rel->relowner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	if (top_layer != NULL && top_layer->subxid == GetCurrentSubTransactionId() &&
		top_layer->nchecks > 0)
		VerifyChecks(top_layer, trigdata->tg_relation);
	CreditsFlushDebits(true);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	return PointerGetDatum(NULL);
}

/*
 * credits_flush_pending_0_1_1
 *		credits._flush_debits(account_id bigint) RETURNS void: called by every
 *		function before it locks an account, so that it sees the account's
 *		written row.  Refuses when the account's debits are pending in an
 *		enclosing subtransaction, which cannot be written from here.
 */
PG_FUNCTION_INFO_V1(credits_flush_pending_0_1_1);

Datum
credits_flush_pending_0_1_1(PG_FUNCTION_ARGS)
{
	credits_serving_0_1_0 = false;
	return CreditsFlushPendingFunction(fcinfo);
}

Datum
CreditsFlushPendingFunction(FunctionCallInfo fcinfo)
{
	CreditsFlushAccount(PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}

/*
 * CreditsFlushAccount
 *		Writes the current statement's pending debits before something else
 *		reads or changes this account (and drops the statement's cache, so
 *		the trigger re-reads it after).  Refuses when the account's debits
 *		are pending in an enclosing subtransaction, which cannot be written
 *		from here.
 */
void
CreditsFlushAccount(int64 account_id)
{
	SubTransactionId current = GetCurrentSubTransactionId();

	CheckNotBusy();
	for (DebitLayer *layer = top_layer; layer != NULL; layer = layer->parent)
	{
		if (layer->subxid == current || layer->naccounts == 0)
			continue;
		if (hash_search(layer->accounts, &account_id, HASH_FIND, NULL) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_NESTED_DEBIT),
					 errmsg("account %lld has debits pending in an enclosing statement",
							(long long) account_id),
					 errdetail("It cannot be changed inside a subtransaction started while an INSERT on credits.send_batches is debiting it.")));
	}
	CreditsFlushDebits(true);
}

/* The layer of the current subtransaction, made if need be. */
static DebitLayer *
CurrentLayer(void)
{
	SubTransactionId current = GetCurrentSubTransactionId();

	if (top_layer != NULL && top_layer->subxid == current)
		return top_layer;

	/*
	 * A base layer left empty by an earlier statement is reused for the
	 * current subtransaction (tables and buffers included) when nothing of
	 * the old one is pending.
	 */
	if (top_layer != NULL && top_layer->parent == NULL && LayerIsEmpty(top_layer))
	{
		top_layer->subxid = current;
		return top_layer;
	}
	return PushLayer(current);
}

static DebitLayer *
PushLayer(SubTransactionId subxid)
{
	MemoryContext cxt;
	DebitLayer *layer;
	HASHCTL		ctl;

	cxt = AllocSetContextCreate(TopTransactionContext, "credits debits",
								ALLOCSET_DEFAULT_SIZES);
	layer = MemoryContextAllocZero(cxt, sizeof(DebitLayer));
	layer->subxid = subxid;
	layer->cxt = cxt;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(CachedAccount);
	ctl.hcxt = cxt;
	layer->accounts = hash_create("credits accounts", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = PRICE_KEY_LEN;
	ctl.entrysize = sizeof(CachedPrice);
	ctl.hcxt = cxt;
	layer->prices = hash_create("credits prices", 8, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	layer->parent = top_layer;
	top_layer = layer;
	return layer;
}

static void
PopLayer(void)
{
	DebitLayer *layer = top_layer;

	top_layer = layer->parent;
	MemoryContextDelete(layer->cxt);
}

/* Forgets the cached accounts and prices; the queue must be empty. */
static void
ClearLayer(DebitLayer *layer)
{
	HASH_SEQ_STATUS status;
	void	   *entry;

	Assert(layer->nledger == 0);
	if (layer->naccounts > 0)
	{
		hash_seq_init(&status, layer->accounts);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			CachedAccount *account = entry;

			/* a long transaction of many statements must not pile them up */
			if (account->grants != NULL)
				pfree(account->grants);
			hash_search(layer->accounts, entry, HASH_REMOVE, NULL);
		}
		layer->naccounts = 0;
	}
	hash_seq_init(&status, layer->prices);
	while ((entry = hash_seq_search(&status)) != NULL)
		hash_search(layer->prices, entry, HASH_REMOVE, NULL);
}

static bool
LayerIsEmpty(DebitLayer *layer)
{
	return !layer->pending && layer->nledger == 0 && layer->naccounts == 0 &&
		layer->nchecks == 0;
}

/*
 * WriteLayer
 *		Inserts the queued ledger rows in one statement and, with final,
 *		writes every dirty account row.
 */
static void
WriteLayer(DebitLayer *layer, bool final)
{
	LedgerAccountRows accounts = {0};
	LedgerGrantRows grants = {0};

	if (final && layer->naccounts > 0)
	{
		HASH_SEQ_STATUS status;
		CachedAccount *account;
		int			ngrants = 0;

		accounts.account = palloc(sizeof(int64) * layer->naccounts);
		accounts.balance = palloc(sizeof(int64) * layer->naccounts);
		accounts.in_flight = palloc(sizeof(int64) * layer->naccounts);
		accounts.tid = palloc(sizeof(ItemPointerData) * layer->naccounts);
		hash_seq_init(&status, layer->accounts);
		while ((account = hash_seq_search(&status)) != NULL)
		{
			if (!account->dirty)
				continue;
			accounts.account[accounts.n] = account->account_id;
			accounts.balance[accounts.n] = account->balance;
			accounts.in_flight[accounts.n] = account->in_flight;
			accounts.tid[accounts.n] = account->tid;
			accounts.n++;
			account->dirty = false;
			ngrants += account->ngrants;
		}
		if (ngrants > 0)
		{
			grants.grant = palloc(sizeof(int64) * ngrants);
			grants.remaining = palloc(sizeof(int64) * ngrants);
			grants.tid = palloc(sizeof(ItemPointerData) * ngrants);
			hash_seq_init(&status, layer->accounts);
			while ((account = hash_seq_search(&status)) != NULL)
			{
				for (int i = 0; i < account->ngrants; i++)
				{
					CachedGrant *g = &account->grants[i];

					if (!g->dirty)
						continue;
					grants.grant[grants.n] = g->grant_id;
					grants.remaining[grants.n] = g->remaining;
					grants.tid[grants.n] = g->tid;
					grants.n++;
					g->dirty = false;
				}
			}
		}
	}
	if (layer->nledger == 0 && accounts.n == 0 && grants.n == 0)
	{
		if (final)
			layer->pending = false;
		return;
	}

	WriteQueuedGuarded(layer, &accounts, &grants);

	layer->nledger = 0;
	if (final)
		layer->pending = false;
}

/* WriteQueued inside the busy bracket (a function of its own for setjmp). */
static void
WriteQueuedGuarded(DebitLayer *layer, const LedgerAccountRows *accounts,
				   const LedgerGrantRows *grants)
{
	CreditsBeginDebit();
	PG_TRY();
	{
		WriteQueued(layer, accounts, grants);
	}
	PG_FINALLY();
	{
		CreditsEndDebit();
	}
	PG_END_TRY();
}

/* The writes of WriteLayer, by the one writer of balances (ledger.c). */
static void
WriteQueued(DebitLayer *layer, const LedgerAccountRows *accounts,
			const LedgerGrantRows *grants)
{
	LedgerDebits debits;

	debits.n = layer->nledger;
	debits.account = layer->ledger_account;
	debits.delta = layer->ledger_delta;
	debits.balance_after = layer->ledger_balance;
	debits.batch = layer->ledger_batch;
	debits.kind = layer->ledger_kind;
	debits.grant = layer->ledger_grant;
	debits.recharge = layer->ledger_recharge;
	debits.entry_id = layer->ledger_entry_id;
	debits.with_grants = layer->has_grants;
	LedgerWriteDebits(&debits, accounts, grants);
}

/*
 * CreditsBeginDebit, CreditsEndDebit
 *		Bracket our own SQL in the middle of a debit (callers use PG_FINALLY
 *		so that an error unwinding through them ends the bracket).
 */
void
CreditsBeginDebit(void)
{
	debit_busy++;
}

void
CreditsEndDebit(void)
{
	debit_busy--;
}

static void
CheckNotBusy(void)
{
	if (debit_busy > 0)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_NESTED_DEBIT),
				 errmsg("accounts cannot be changed from inside a debit"),
				 CreditsEntriesInBatches() ?
				 errdetail("A trigger fired by the extension's own writes (to credits.recharges, credits.ledger_entries, credits.grants or credits.accounts) tried to change an account or insert a batch.") :
				 errdetail("A trigger fired by the extension's own writes (to credits.recharges or credits.ledger) tried to change an account or insert a batch."),
				 errhint("Do that work outside the triggers of the extension's tables, e.g. from a LISTEN credits_recharge client.")));
}

/* Grows the queue's arrays to hold at least "needed" rows. */
static void
EnsureCapacity(DebitLayer *layer, int needed)
{
	int			capacity;

	if (needed <= layer->capacity)
		return;
	capacity = Max(needed, layer->capacity == 0 ? 64 : layer->capacity * 2);
	if (layer->capacity == 0)
	{
		layer->ledger_account = MemoryContextAlloc(layer->cxt, sizeof(int64) * capacity);
		layer->ledger_delta = MemoryContextAlloc(layer->cxt, sizeof(int64) * capacity);
		layer->ledger_balance = MemoryContextAlloc(layer->cxt, sizeof(int64) * capacity);
		layer->ledger_batch = MemoryContextAlloc(layer->cxt, sizeof(int64) * capacity);
		layer->ledger_kind = MemoryContextAlloc(layer->cxt, sizeof(char) * capacity);
		layer->ledger_grant = MemoryContextAlloc(layer->cxt, sizeof(int64) * capacity);
		layer->ledger_recharge = MemoryContextAlloc(layer->cxt, sizeof(int64) * capacity);
		layer->ledger_entry_id = MemoryContextAlloc(layer->cxt, sizeof(int64) * capacity);
	}
	else
	{
		layer->ledger_account = repalloc(layer->ledger_account, sizeof(int64) * capacity);
		layer->ledger_delta = repalloc(layer->ledger_delta, sizeof(int64) * capacity);
		layer->ledger_balance = repalloc(layer->ledger_balance, sizeof(int64) * capacity);
		layer->ledger_batch = repalloc(layer->ledger_batch, sizeof(int64) * capacity);
		layer->ledger_kind = repalloc(layer->ledger_kind, sizeof(char) * capacity);
		layer->ledger_grant = repalloc(layer->ledger_grant, sizeof(int64) * capacity);
		layer->ledger_recharge = repalloc(layer->ledger_recharge, sizeof(int64) * capacity);
		layer->ledger_entry_id = repalloc(layer->ledger_entry_id, sizeof(int64) * capacity);
	}
	layer->capacity = capacity;
}

/*
 * MergeIntoParent
 *		At subtransaction commit, what the committed layer still holds
 *		becomes its parent's (its locks and rows did too).  The accounts are
 *		disjoint (CreditsCachedAccount refuses overlaps), and the child's
 *		ledger rows come after the parent's.
 */
static void
MergeIntoParent(DebitLayer *layer)
{
	DebitLayer *parent = layer->parent;
	HASH_SEQ_STATUS status;
	CachedAccount *account;

	hash_seq_init(&status, layer->accounts);
	while ((account = hash_seq_search(&status)) != NULL)
	{
		CachedAccount *copy = hash_search(parent->accounts, &account->account_id,
										  HASH_ENTER, NULL);

		*copy = *account;
		copy->grants = CopyGrants(account->grants, account->ngrants, parent->cxt);
		parent->naccounts++;
	}
	parent->has_grants = parent->has_grants || layer->has_grants;
	EnsureCapacity(parent, parent->nledger + layer->nledger);
	memcpy(parent->ledger_account + parent->nledger, layer->ledger_account,
		   sizeof(int64) * layer->nledger);
	memcpy(parent->ledger_delta + parent->nledger, layer->ledger_delta,
		   sizeof(int64) * layer->nledger);
	memcpy(parent->ledger_balance + parent->nledger, layer->ledger_balance,
		   sizeof(int64) * layer->nledger);
	memcpy(parent->ledger_batch + parent->nledger, layer->ledger_batch,
		   sizeof(int64) * layer->nledger);
	memcpy(parent->ledger_kind + parent->nledger, layer->ledger_kind,
		   sizeof(char) * layer->nledger);
	memcpy(parent->ledger_grant + parent->nledger, layer->ledger_grant,
		   sizeof(int64) * layer->nledger);
	memcpy(parent->ledger_recharge + parent->nledger, layer->ledger_recharge,
		   sizeof(int64) * layer->nledger);
	memcpy(parent->ledger_entry_id + parent->nledger, layer->ledger_entry_id,
		   sizeof(int64) * layer->nledger);
	parent->nledger += layer->nledger;
	parent->pending = parent->pending || layer->pending;
	for (int i = 0; i < layer->nchecks; i++)
		AddCheck(parent, &layer->checks[i]);
}

/* Appends a row to read back (its channel copied into the layer). */
static void
AddCheck(DebitLayer *layer, const BatchCheck *check)
{
	if (layer->nchecks >= layer->checks_capacity)
	{
		int			capacity = layer->checks_capacity == 0 ? 16 : layer->checks_capacity * 2;

		if (layer->checks == NULL)
			layer->checks = MemoryContextAlloc(layer->cxt, sizeof(BatchCheck) * capacity);
		else
			layer->checks = repalloc(layer->checks, sizeof(BatchCheck) * capacity);
		layer->checks_capacity = capacity;
	}
	layer->checks[layer->nchecks] = *check;
	if (check->channel != NULL)
		layer->checks[layer->nchecks].channel = MemoryContextStrdup(layer->cxt, check->channel);
	if (check->idempotency_key != NULL)
		layer->checks[layer->nchecks].idempotency_key =
			MemoryContextStrdup(layer->cxt, check->idempotency_key);
	layer->nchecks++;
}

/*
 * VerifyChecks
 *		Reads back every row debited while a BEFORE INSERT row trigger fires
 *		after credits_debit, and refuses the statement (MC022) if one is
 *		missing (that trigger returned NULL, or changed the row into one
 *		ON CONFLICT skipped) or differs from what was debited: the ledger
 *		would no longer match the batches.
 *
 *		Limitation: a later trigger that itself inserts into send_batches
 *		ends a nested statement before its own row is stored; that row is
 *		then reported missing.  The error is the safe side.
 */
static void
VerifyChecks(DebitLayer *layer, Relation rel)
{
	for (int i = 0; i < layer->nchecks; i++)
	{
		BatchCheck *c = &layer->checks[i];
		StoredBatch b;
		bool		stored = CreditsReadBatchDirect(c->batch_id, &b);

		if (c->absent)
		{
			if (stored)
				ereport(ERROR,
						(errcode(ERRCODE_CREDITS_BATCH_CHANGED_AFTER_DEBIT),
						 errmsg("send batch %lld was stored without a debit", (long long) c->batch_id),
						 errdetail("It repeated the idempotency key of a stored batch, so it was not debited, but a BEFORE INSERT trigger that fires after credits_debit (%s) changed it into a row that was stored.",
								   LaterTriggerNames(rel)),
						 errhint("Make that trigger fire before credits_debit (triggers fire in name order), or do its work in an AFTER trigger.")));
			continue;
		}
		if (!stored && strcmp(LaterTriggerNames(rel), NO_LATER_TRIGGERS) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_BATCH_CHANGED_AFTER_DEBIT),
					 errmsg("send batch %lld was debited but not stored", (long long) c->batch_id),
					 errdetail("ON CONFLICT DO NOTHING skipped it for a unique index or exclusion constraint other than (account_id, idempotency_key), which the debit cannot check first, after %lld credits were debited for it.",
							   (long long) c->cost),
					 errhint("Make duplicate batches conflict on (account_id, idempotency_key) (an idempotency key), or let the conflict raise an error instead of DO NOTHING.")));
		if (!stored)
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_BATCH_CHANGED_AFTER_DEBIT),
					 errmsg("send batch %lld was debited but not stored", (long long) c->batch_id),
					 errdetail("A BEFORE INSERT trigger that fires after credits_debit (%s) dropped the row or changed it into one that was not inserted, after %lld credits were debited for it.",
							   LaterTriggerNames(rel), (long long) c->cost),
					 errhint("Make that trigger fire before credits_debit (triggers fire in name order), or do its work in an AFTER trigger.")));
		if (b.account_id != c->account_id)
			BatchChanged(rel, c->batch_id, "account_id",
						 psprintf(INT64_FORMAT, b.account_id),
						 psprintf(INT64_FORMAT, c->account_id));
		if (b.messages != c->messages)
			BatchChanged(rel, c->batch_id, "messages",
						 psprintf("%d", b.messages), psprintf("%d", c->messages));
		if (b.channel == NULL || strcmp(b.channel, c->channel) != 0)
			BatchChanged(rel, c->batch_id, "channel",
						 b.channel ? b.channel : "null", c->channel);
		if (b.cost != c->cost)
			BatchChanged(rel, c->batch_id, "cost",
						 psprintf(INT64_FORMAT, b.cost), psprintf(INT64_FORMAT, c->cost));
		if (b.status == NULL || strcmp(b.status, c->status) != 0)
			BatchChanged(rel, c->batch_id, "status",
						 b.status ? b.status : "null", c->status);
		if ((b.idempotency_key == NULL) != (c->idempotency_key == NULL) ||
			(b.idempotency_key != NULL && strcmp(b.idempotency_key, c->idempotency_key) != 0))
			BatchChanged(rel, c->batch_id, "idempotency_key",
						 b.idempotency_key ? quote_literal_cstr(b.idempotency_key) : "null",
						 c->idempotency_key ? quote_literal_cstr(c->idempotency_key) : "null");
		if (b.has_recharge != c->has_recharge ||
			(b.has_recharge && b.recharge_id != c->recharge_id))
			BatchChanged(rel, c->batch_id, "recharge_id",
						 b.has_recharge ? psprintf(INT64_FORMAT, b.recharge_id) : "null",
						 c->has_recharge ? psprintf(INT64_FORMAT, c->recharge_id) : "null");
		if (b.owed != c->owed)
			BatchChanged(rel, c->batch_id, "owed",
						 psprintf(INT64_FORMAT, b.owed), psprintf(INT64_FORMAT, c->owed));
		if (c->has_entry)
			CheckEntry(rel, c, &b);
	}
	layer->nchecks = 0;
}

/* VerifyChecks for the batch's own debit entry (0.3.0 schemas). */
static void
CheckEntry(Relation rel, const BatchCheck *c, const StoredBatch *b)
{
	const char *const *names = CreditsBatchEntryNames;
	const int64 debited[NUM_BATCH_ENTRY_COLUMNS] = {
		[BATCH_ENTRY_ID] = c->entry.entry_id,
		[BATCH_ENTRY_DELTA] = c->entry.delta,
		[BATCH_ENTRY_BALANCE_AFTER] = c->entry.balance_after,
		[BATCH_ENTRY_GRANT_ID] = c->entry.grant_id,
		[BATCH_ENTRY_RECHARGE_ID] = c->entry.recharge_id,
	};

	for (int i = 0; i < NUM_BATCH_ENTRY_COLUMNS; i++)
	{
		/* grant and recharge: 0 is null */
		bool		null_debited = debited[i] == 0 &&
			(i == BATCH_ENTRY_GRANT_ID || i == BATCH_ENTRY_RECHARGE_ID);

		if (!b->has_entry)
			BatchChanged(rel, c->batch_id, names[i], "a dropped column",
						 psprintf(INT64_FORMAT, debited[i]));
		if (b->entry_isnull[i] != null_debited ||
			(!null_debited && b->entry[i] != debited[i]))
			BatchChanged(rel, c->batch_id, names[i],
						 b->entry_isnull[i] ? "null" : psprintf(INT64_FORMAT, b->entry[i]),
						 null_debited ? "null" : psprintf(INT64_FORMAT, debited[i]));
	}
}

static void
BatchChanged(Relation rel, int64 batch_id, const char *column, const char *stored,
			 const char *debited)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_BATCH_CHANGED_AFTER_DEBIT),
			 errmsg("send batch %lld was changed after it was debited", (long long) batch_id),
			 errdetail("A BEFORE INSERT trigger that fires after credits_debit (%s) set %s to %s; it was debited with %s.",
					   LaterTriggerNames(rel), column, stored, debited),
			 errhint("Make that trigger fire before credits_debit (triggers fire in name order), or do its work in an AFTER trigger.")));
}

/* The BEFORE INSERT row triggers of send_batches named after credits_debit. */
static char *
LaterTriggerNames(Relation rel)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	StringInfoData names;

	initStringInfo(&names);
	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (strcmp(t->tgname, "credits_debit") > 0 &&
			TRIGGER_TYPE_MATCHES(t->tgtype, TRIGGER_TYPE_ROW, TRIGGER_TYPE_BEFORE,
								 TRIGGER_TYPE_INSERT))
			appendStringInfo(&names, "%s\"%s\"", names.len > 0 ? ", " : "", t->tgname);
	}
	return names.len > 0 ? names.data : NO_LATER_TRIGGERS;
}

static void
DebitXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			for (DebitLayer *layer = top_layer; layer != NULL; layer = layer->parent)
			{
				if (layer->pending)
					ereport(ERROR,
							(errcode(ERRCODE_INTERNAL_ERROR),
							 errmsg("credits: debits of account rows were never written (%d ledger rows queued)",
									layer->nledger),
							 errdetail("The statement that debited them did not end normally; the transaction is rolled back so that no debit is lost.")));
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* TopTransactionContext, and our layers with it, are going away. */
			top_layer = NULL;
			break;
	}
}

static void
DebitSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	switch (event)
	{
		case SUBXACT_EVENT_ABORT_SUB:
			/* Its layer and any of its children's go, with their debits. */
			while (top_layer != NULL && top_layer->subxid >= mySubid)
			{
				if (top_layer->parent == NULL)
				{
					/* the reusable base layer: just empty it */
					top_layer->nledger = 0;
					top_layer->nchecks = 0;
					top_layer->pending = false;
					ClearLayer(top_layer);
					top_layer->subxid = parentSubid;
					break;
				}
				PopLayer();
			}
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			if (top_layer != NULL && top_layer->subxid == mySubid)
			{
				if (top_layer->parent != NULL &&
					top_layer->parent->subxid == parentSubid)
				{
					MergeIntoParent(top_layer);
					PopLayer();
				}
				else
					top_layer->subxid = parentSubid;
			}
			break;
		case SUBXACT_EVENT_START_SUB:
		case SUBXACT_EVENT_PRE_COMMIT_SUB:
			break;
	}
}

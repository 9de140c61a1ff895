/*-------------------------------------------------------------------------
 *
 * plan_cache.c
 *	  The SQL the extension runs through SPI, prepared once per backend.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/plan_cache.c
 *
 * As ri_triggers.c does, each statement is prepared on first use with
 * SPI_prepare_cursor() (generic plan) and kept with SPI_keepplan(); the plan cache replans it by
 * itself after DDL on the tables it reads.  Values always travel as
 * parameters, never as SQL text.
 *
 * Every table is schema-qualified and every operator and function is
 * spelled OPERATOR(pg_catalog.x) or pg_catalog.f(): the plans are parsed
 * under the search_path of whichever session first debits a batch, and a
 * hostile schema placed before pg_catalog must not be able to supply "=".
 *
 * One text serves every schema version where it can: on a 0.3.0 schema,
 * where credits.ledger is a view, "INSERT INTO credits.ledger" is prepared
 * as an insert into credits.ledger_entries (the table it was renamed to),
 * and a plan prepared for the other layout is prepared again (a session
 * that was connected when ALTER EXTENSION UPDATE ran).  Statements that
 * differ otherwise have plans of their own.
 *
 * Locking: none here.  Callers hold the locks the statements rely on (the
 * account row lock, see debit_trigger.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "credits.h"
#include "direct_access.h"
#include "plan_cache.h"

#define EQ " OPERATOR(pg_catalog.=) "

/* The first instant of the current calendar month, in UTC. */
#define MONTH_START \
	"(pg_catalog.date_trunc('month', pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"

typedef struct CreditsPlanSpec
{
	const char *sql;
	int			nargs;
	Oid			argtypes[10];
} CreditsPlanSpec;

static const CreditsPlanSpec plan_specs[NUM_CREDITS_PLANS] = {

	[PLAN_DUPLICATE] = {
		"SELECT EXISTS (SELECT FROM credits.send_batches b"
		"                WHERE b.account_id" EQ "$1 AND b.idempotency_key" EQ "$2)",
		2, {INT8OID, TEXTOID}
	},

	/*
	 * The ledger rows a statement queued, in the order the debits happened,
	 * so entry_id order is debit order.
	 */
	[PLAN_WRITE_DEBITS] = {
		"INSERT INTO credits.ledger (account_id, delta, balance_after, kind, batch_id)"
		" SELECT u.account_id, u.delta, u.balance_after, 'debit', u.batch_id"
		"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		"                   pg_catalog.unnest($3), pg_catalog.unnest($4))"
		"        AS u(account_id, delta, balance_after, batch_id)",
		4, {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID}
	},

	/*
	 * One account row at the end of a statement.  A statement per account,
	 * not one UPDATE ... FROM unnest(): a generic plan for the join would
	 * scan every account.
	 */
	/* The common single-row statement: its one debit in one statement. */
	[PLAN_WRITE_ONE] = {
		"WITH acct AS ("
		"  UPDATE credits.accounts SET balance = $3, in_flight = $5"
		"   WHERE account_id" EQ "$1 RETURNING account_id)"
		" INSERT INTO credits.ledger (account_id, delta, balance_after, kind, batch_id)"
		" SELECT acct.account_id, $2, $3, 'debit', $4 FROM acct",
		5, {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID}
	},
	[PLAN_WRITE_ACCOUNT] = {
		"UPDATE credits.accounts SET balance = $2, in_flight = $3"
		" WHERE account_id" EQ "$1",
		3, {INT8OID, INT8OID, INT8OID}
	},
	/* The newest pending recharge never claimed: the one a need may grow. */
	[PLAN_FIND_PENDING] = {
		"SELECT r.recharge_id, r.credits,"
		"       r.created_at OPERATOR(pg_catalog.>=) " MONTH_START
		"  FROM credits.recharges r"
		" WHERE r.account_id" EQ "$1 AND r.status" EQ "'pending'"
		"   AND r.claimed_credits IS NULL"
		" ORDER BY r.recharge_id DESC LIMIT 1",
		1, {INT8OID}
	},

	/*
	 * A recharge that was ever claimed (claimed_credits set; it may have
	 * been released back to pending) never grows: a retry charges the same
	 * amount under the same recharge_id.  The status test matters: a worker
	 * may have claimed the recharge since we looked.  Under READ COMMITTED the UPDATE then waits for the claim
	 * and re-checks the row, finds it processing, and changes nothing; the
	 * caller opens a new recharge instead.  "credits <= max - need" cannot
	 * overflow where "credits + need <= max" could.
	 */
	[PLAN_GROW_PENDING] = {
		"UPDATE credits.recharges"
		"   SET credits = credits OPERATOR(pg_catalog.+) $2, max_credits = $3,"
		"       reason = CASE WHEN $4 THEN 'shortfall' ELSE reason END"
		" WHERE recharge_id" EQ "$1 AND status" EQ "'pending'"
		"   AND claimed_credits IS NULL"
		"   AND credits OPERATOR(pg_catalog.<=) ($3 OPERATOR(pg_catalog.-) $2)"
		" RETURNING recharge_id",
		4, {INT8OID, INT8OID, INT8OID, BOOLOID}
	},
	[PLAN_OPEN_RECHARGE] = {
		"INSERT INTO credits.recharges"
		" (account_id, credits, reason, batch_id, balance_seen, max_credits, need)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING recharge_id",
		7, {INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID}
	},

	/*
	 * What counts against the monthly limit: pending, processing and
	 * succeeded recharges opened this month.  Read under the account lock,
	 * which every opener of a recharge holds, so it cannot be overtaken.
	 */
	[PLAN_MONTH_USED] = {
		"SELECT pg_catalog.sum(r.credits)::pg_catalog.int8 FROM credits.recharges r"
		" WHERE r.account_id" EQ "$1"
		"   AND r.status OPERATOR(pg_catalog.=) ANY ('{pending,processing,succeeded}'::pg_catalog.text[])"
		"   AND r.created_at OPERATOR(pg_catalog.>=) " MONTH_START,
		1, {INT8OID}
	},
	[PLAN_NEWEST_IN_FLIGHT] = {
		"SELECT r.recharge_id FROM credits.recharges r"
		" WHERE r.account_id" EQ "$1"
		"   AND r.status OPERATOR(pg_catalog.=) ANY ('{pending,processing}'::pg_catalog.text[])"
		" ORDER BY r.recharge_id DESC LIMIT 1",
		1, {INT8OID}
	},
	[PLAN_SETTLE_BATCHES] = {
		"UPDATE credits.send_batches SET status = $2"
		" WHERE recharge_id" EQ "$1 AND status" EQ "'awaiting_credits'"
		" RETURNING batch_id, account_id, cost",
		2, {INT8OID, TEXTOID}
	},
	[PLAN_READ_ACCOUNT] = {
		"SELECT a.balance, a.in_flight FROM credits.accounts a WHERE a.account_id" EQ "$1",
		1, {INT8OID}
	},
	[PLAN_RECHARGE_ACCOUNT] = {
		"SELECT r.account_id FROM credits.recharges r WHERE r.recharge_id" EQ "$1",
		1, {INT8OID}
	},
	[PLAN_NEWEST_AWAITING] = {
		"SELECT b.batch_id, b.cost FROM credits.send_batches b"
		" WHERE b.account_id" EQ "$1 AND b.status" EQ "'awaiting_credits'"
		" ORDER BY b.batch_id DESC LIMIT 1",
		1, {INT8OID}
	},
	[PLAN_FAIL_BATCH] = {
		"UPDATE credits.send_batches SET status = 'failed'"
		" WHERE batch_id" EQ "$1 AND status" EQ "'awaiting_credits'",
		1, {INT8OID}
	},
	[PLAN_AWAITING_OF_RECHARGE] = {
		"SELECT b.batch_id, b.cost FROM credits.send_batches b"
		" WHERE b.recharge_id" EQ "$1 AND b.status" EQ "'awaiting_credits'"
		" ORDER BY b.batch_id",
		1, {INT8OID}
	},
	[PLAN_AWAITING_TOTAL] = {
		"SELECT COALESCE(LEAST(pg_catalog.sum(b.cost), 9223372036854775807), 0)::pg_catalog.int8"
		"  FROM credits.send_batches b"
		" WHERE b.account_id" EQ "$1 AND b.status" EQ "'awaiting_credits'",
		1, {INT8OID}
	},
	[PLAN_READY_BATCH] = {
		"UPDATE credits.send_batches SET status = 'ready'"
		" WHERE batch_id" EQ "$1 AND status" EQ "'awaiting_credits'",
		1, {INT8OID}
	},
	[PLAN_REPOINT_BATCH] = {
		"UPDATE credits.send_batches SET recharge_id = $2"
		" WHERE batch_id" EQ "$1 AND status" EQ "'awaiting_credits'",
		2, {INT8OID, INT8OID}
	},

	/* ledger.c */
	[PLAN_OPEN_ACCOUNT] = {
		"WITH acct AS ("
		"  INSERT INTO credits.accounts (account_id, balance) VALUES ($1, $2)"
		"  ON CONFLICT DO NOTHING RETURNING account_id)"
		" INSERT INTO credits.ledger (account_id, delta, balance_after, kind)"
		" SELECT acct.account_id, $2, $2, 'open' FROM acct",
		2, {INT8OID, INT8OID}
	},
	[PLAN_POST] = {
		"WITH acct AS ("
		"  UPDATE credits.accounts SET balance = $3,"
		"         in_flight = in_flight OPERATOR(pg_catalog.+) $7"
		"   WHERE account_id" EQ "$1 RETURNING account_id)"
		" INSERT INTO credits.ledger"
		" (account_id, delta, balance_after, kind, batch_id, recharge_id, note)"
		" SELECT acct.account_id, $2, $3, $4, $5, $6, $8 FROM acct",
		8, {INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID}
	},
	[PLAN_ADD_IN_FLIGHT] = {
		"UPDATE credits.accounts SET in_flight = in_flight OPERATOR(pg_catalog.+) $2"
		" WHERE account_id" EQ "$1",
		2, {INT8OID, INT8OID}
	},

	/* settle.c; these name 0.1.1 columns and run only for 0.1.1 schemas */
	[PLAN_LOCK_ACCOUNT] = {
		"SELECT 1 FROM credits.accounts a WHERE a.account_id" EQ "$1 FOR NO KEY UPDATE",
		1, {INT8OID}
	},
	[PLAN_LOCK_RECHARGE] = {
		"SELECT r.status, r.credits, r.payment_ref, r.failure_reason, r.claim_token,"
		"       r.claim_count, r.claimed_credits IS NOT NULL, r.account_id"
		"  FROM credits.recharges r WHERE r.recharge_id" EQ "$1 FOR UPDATE",
		1, {INT8OID}
	},
	[PLAN_RECHARGE_ROW] = {
		"SELECT r FROM credits.recharges r WHERE r.recharge_id" EQ "$1",
		1, {INT8OID}
	},
	[PLAN_REF_USED] = {
		"SELECT r.recharge_id FROM credits.recharges r WHERE r.payment_ref" EQ "$1",
		1, {TEXTOID}
	},
	[PLAN_CHECK_REF] = {
		"SELECT credits._check_payment_ref($1)",
		1, {TEXTOID}
	},
	[PLAN_MARK_SUCCEEDED] = {
		"UPDATE credits.recharges SET status = 'succeeded', payment_ref = $2,"
		"       settled_at = pg_catalog.now(), lease_expires_at = NULL"
		" WHERE recharge_id" EQ "$1",
		2, {INT8OID, TEXTOID}
	},
	[PLAN_MARK_FAILED] = {
		"UPDATE credits.recharges SET status = 'failed', failure_reason = $2,"
		"       settled_at = pg_catalog.now(), lease_expires_at = NULL"
		" WHERE recharge_id" EQ "$1",
		2, {INT8OID, TEXTOID}
	},
	[PLAN_MARK_CANCELLED] = {
		"UPDATE credits.recharges SET status = 'cancelled', failure_reason = $2,"
		"       settled_at = pg_catalog.now()"
		" WHERE recharge_id" EQ "$1 AND status" EQ "'pending' AND claimed_credits IS NULL"
		" RETURNING account_id, credits",
		2, {INT8OID, TEXTOID}
	},
	[PLAN_MARK_RELEASED] = {
		"UPDATE credits.recharges SET status = 'pending', claim_token = NULL,"
		"       lease_expires_at = NULL"
		" WHERE recharge_id" EQ "$1",
		1, {INT8OID}
	},
	[PLAN_RESET_FAILURES] = {
		"UPDATE credits.auto_recharge SET payment_failures = 0"
		" WHERE account_id" EQ "$1 AND payment_failures OPERATOR(pg_catalog.<>) 0",
		1, {INT8OID}
	},
	[PLAN_COUNT_FAILURE] = {
		"UPDATE credits.auto_recharge"
		"   SET payment_failures = payment_failures OPERATOR(pg_catalog.+) 1"
		" WHERE account_id" EQ "$1 RETURNING payment_failures, enabled",
		1, {INT8OID}
	},
	[PLAN_TURN_OFF] = {
		"UPDATE credits.auto_recharge SET enabled = false, updated_at = pg_catalog.now(),"
		"       disabled_at = pg_catalog.now(), disabled_reason = $2"
		" WHERE account_id" EQ "$1 AND enabled",
		2, {INT8OID, TEXTOID}
	},
	[PLAN_CANCELLABLE] = {
		"SELECT r.recharge_id FROM credits.recharges r"
		" WHERE r.account_id" EQ "$1 AND r.status" EQ "'pending'"
		"   AND r.claimed_credits IS NULL"
		" ORDER BY r.recharge_id FOR UPDATE",
		1, {INT8OID}
	},
	[PLAN_POLICY_ROW] = {
		"SELECT p FROM credits.auto_recharge p WHERE p.account_id" EQ "$1",
		1, {INT8OID}
	},

	/* ledger.c, 0.2.0 schemas: grants and debts (doc/grants.md) */
	[PLAN_POST_GRANT] = {
		"WITH acct AS ("
		"  UPDATE credits.accounts SET balance = $3,"
		"         in_flight = in_flight OPERATOR(pg_catalog.+) $7"
		"   WHERE account_id" EQ "$1 RETURNING account_id)"
		" INSERT INTO credits.ledger"
		" (account_id, delta, balance_after, kind, batch_id, recharge_id, note, grant_id)"
		" SELECT acct.account_id, $2, $3, $4, $5, $6, $8, $9 FROM acct",
		9, {INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID}
	},
	/* The common single-row statement with grants: one SQL statement. */
	[PLAN_WRITE_ONE_GRANT] = {
		"WITH acct AS ("
		"  UPDATE credits.accounts SET balance = $3, in_flight = $5"
		"   WHERE account_id" EQ "$1 RETURNING account_id),"
		" g AS ("
		"  UPDATE credits.grants SET remaining = $7,"
		"         closed_at = CASE WHEN $7 OPERATOR(pg_catalog.=) 0"
		"                          THEN pg_catalog.now() END"
		"   WHERE grant_id" EQ "$6 RETURNING grant_id)"
		" INSERT INTO credits.ledger (account_id, delta, balance_after, kind, batch_id, grant_id)"
		" SELECT acct.account_id, $2, $3, 'debit', $4, g.grant_id FROM acct, g",
		7, {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID}
	},
	[PLAN_WRITE_LEDGER_ROWS] = {
		"INSERT INTO credits.ledger"
		" (account_id, delta, balance_after, kind, batch_id, grant_id, recharge_id)"
		" SELECT u.account_id, u.delta, u.balance_after, u.kind,"
		/* not NULLIF: it would look "=" up on the caller's search_path */
		"        CASE WHEN u.batch_id" EQ "0 THEN NULL ELSE u.batch_id END,"
		"        CASE WHEN u.grant_id" EQ "0 THEN NULL ELSE u.grant_id END,"
		"        CASE WHEN u.recharge_id" EQ "0 THEN NULL ELSE u.recharge_id END"
		"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		"                   pg_catalog.unnest($3), pg_catalog.unnest($4),"
		"                   pg_catalog.unnest($5), pg_catalog.unnest($6),"
		"                   pg_catalog.unnest($7))"
		"        AS u(account_id, delta, balance_after, batch_id, kind, grant_id, recharge_id)",
		7, {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
		INT8ARRAYOID}
	},
	/* A grant only loses credits in a debit: closed once it has none. */
	[PLAN_WRITE_GRANT] = {
		"UPDATE credits.grants SET remaining = $2,"
		"       closed_at = CASE WHEN $2 OPERATOR(pg_catalog.=) 0 THEN pg_catalog.now() END"
		" WHERE grant_id" EQ "$1",
		2, {INT8OID, INT8OID}
	},
	[PLAN_INSERT_ACCOUNT] = {
		"INSERT INTO credits.accounts (account_id, balance) VALUES ($1, 0)"
		" ON CONFLICT DO NOTHING RETURNING account_id",
		1, {INT8OID}
	},
	[PLAN_INSERT_GRANT] = {
		"INSERT INTO credits.grants (account_id, source, credits, remaining, priority,"
		"                            expires_at, recharge_id, period_start, note, carried_over)"
		" VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9) RETURNING grant_id",
		9, {INT8OID, TEXTOID, INT8OID, INT4OID, TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID, TEXTOID,
		INT8OID}
	},
	[PLAN_DUE_GRANTS] = {
		"SELECT g.grant_id, g.remaining FROM credits.grants g"
		" WHERE g.account_id" EQ "$1 AND g.closed_at IS NULL"
		"   AND g.expires_at OPERATOR(pg_catalog.<=) $2"
		"   AND g.remaining OPERATOR(pg_catalog.>) 0"
		" ORDER BY g.expires_at, g.grant_id",
		2, {INT8OID, TIMESTAMPTZOID}
	},
	/* The draw-down order of draw_down.c. */
	[PLAN_OPEN_GRANTS] = {
		"SELECT g.grant_id, g.remaining FROM credits.grants g"
		" WHERE g.account_id" EQ "$1 AND g.closed_at IS NULL"
		"   AND g.remaining OPERATOR(pg_catalog.>) 0"
		" ORDER BY g.priority, g.expires_at NULLS LAST, g.grant_id",
		1, {INT8OID}
	},
	[PLAN_OWED_BATCHES] = {
		"SELECT b.batch_id, b.owed FROM credits.send_batches b"
		" WHERE b.account_id" EQ "$1 AND b.owed OPERATOR(pg_catalog.>) 0"
		" ORDER BY b.batch_id",
		1, {INT8OID}
	},
	[PLAN_MOVE_GRANT] = {
		"UPDATE credits.grants SET remaining = remaining OPERATOR(pg_catalog.+) $2,"
		"       closed_at = CASE WHEN remaining OPERATOR(pg_catalog.+) $2 OPERATOR(pg_catalog.=) 0"
		"                        THEN COALESCE(closed_at, pg_catalog.now()) END"
		" WHERE grant_id" EQ "$1 RETURNING remaining, expires_at",
		2, {INT8OID, INT8OID}
	},
	[PLAN_MOVE_OWED] = {
		"UPDATE credits.send_batches SET owed = owed OPERATOR(pg_catalog.+) $2"
		" WHERE batch_id" EQ "$1",
		2, {INT8OID, INT8OID}
	},
	[PLAN_BATCH_OWED] = {
		"SELECT b.owed FROM credits.send_batches b WHERE b.batch_id" EQ "$1",
		1, {INT8OID}
	},
	[PLAN_BATCH_FUNDING] = {
		"SELECT COALESCE(l.grant_id, 0),"
		"       (OPERATOR(pg_catalog.-) pg_catalog.sum(l.delta))::pg_catalog.int8,"
		"       pg_catalog.count(*) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'debit')"
		"  FROM credits.ledger l"
		" WHERE l.batch_id" EQ "$1"
		"   AND l.kind OPERATOR(pg_catalog.=) ANY ('{debit,repay,refund}'::pg_catalog.text[])"
		/* the predicate of ledger_batch_idx, so that it is used */
		"   AND (l.kind OPERATOR(pg_catalog.<>) 'debit' OR l.recharge_id IS NOT NULL)"
		" GROUP BY l.grant_id ORDER BY 1",
		1, {INT8OID}
	},

	/* ledger.c, 0.3.0 schemas: the batch row is its own debit entry */
	[PLAN_WRITE_LEDGER_ENTRIES] = {
		"INSERT INTO credits.ledger_entries"
		" (entry_id, account_id, delta, balance_after, kind, batch_id, grant_id, recharge_id)"
		" OVERRIDING SYSTEM VALUE"
		" SELECT u.entry_id, u.account_id, u.delta, u.balance_after, u.kind,"
		"        CASE WHEN u.batch_id" EQ "0 THEN NULL ELSE u.batch_id END,"
		"        CASE WHEN u.grant_id" EQ "0 THEN NULL ELSE u.grant_id END,"
		"        CASE WHEN u.recharge_id" EQ "0 THEN NULL ELSE u.recharge_id END"
		"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		"                   pg_catalog.unnest($3), pg_catalog.unnest($4),"
		"                   pg_catalog.unnest($5), pg_catalog.unnest($6),"
		"                   pg_catalog.unnest($7), pg_catalog.unnest($8))"
		"        AS u(account_id, delta, balance_after, batch_id, kind, grant_id, recharge_id,"
		"             entry_id)",
		8, {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
			INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID}
	},
	/*
	 * PLAN_BATCH_FUNDING with the batch's own entry, by its primary key
	 * (a batch debited before 0.3.0 has none: its debit rows are in
	 * ledger_entries, read as before).
	 */
	[PLAN_BATCH_FUNDING_ENTRIES] = {
		"SELECT COALESCE(l.grant_id, 0),"
		"       (OPERATOR(pg_catalog.-) pg_catalog.sum(l.delta))::pg_catalog.int8,"
		"       pg_catalog.count(*) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'debit')"
		"  FROM (SELECT b.entry_grant_id AS grant_id, b.entry_delta AS delta,"
		"               'debit'::pg_catalog.text AS kind"
		"          FROM credits.send_batches b"
		"         WHERE b.batch_id" EQ "$1 AND b.entry_id IS NOT NULL"
		"        UNION ALL"
		"        SELECT e.grant_id, e.delta, e.kind FROM credits.ledger_entries e"
		"         WHERE e.batch_id" EQ "$1"
		"           AND e.kind OPERATOR(pg_catalog.=) ANY ('{debit,repay,refund}'::pg_catalog.text[])"
		"           AND (e.kind OPERATOR(pg_catalog.<>) 'debit' OR e.recharge_id IS NOT NULL)) l"
		" GROUP BY l.grant_id ORDER BY 1",
		1, {INT8OID}
	},
	/* A row of a dump taken before 0.3.0, as it was (batch_guard.c). */
	[PLAN_RESTORE_ENTRY] = {
		"INSERT INTO credits.ledger_entries"
		" (entry_id, account_id, delta, balance_after, kind, batch_id, recharge_id, note,"
		"  created_at, grant_id)"
		" OVERRIDING SYSTEM VALUE"
		" VALUES (COALESCE($1, pg_catalog.nextval('credits.ledger_entry_id_seq'::pg_catalog.regclass)),"
		"         $2, $3, $4, $5, $6, $7, $8, COALESCE($9, pg_catalog.now()), $10)",
		10, {INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID, TEXTOID,
			 TIMESTAMPTZOID, INT8OID}
	},
};

static SPIPlanPtr plans[NUM_CREDITS_PLANS];

/* Whether each kept plan was prepared for a 0.3.0 schema; see the header. */
static bool plan_for_entries[NUM_CREDITS_PLANS];

static char *SqlFor(const char *sql, bool entries_in_batches);

/*
 * CreditsGetPlan
 *		The kept plan for a statement, prepared on first use.  The caller
 *		must be connected to SPI.
 */
SPIPlanPtr
CreditsGetPlan(CreditsPlanId id)
{
	bool		entries_in_batches = CreditsEntriesInBatches();

	if (plans[id] != NULL && plan_for_entries[id] != entries_in_batches)
	{
		SPI_freeplan(plans[id]);
		plans[id] = NULL;
	}
	if (plans[id] == NULL)
	{
		const CreditsPlanSpec *spec = &plan_specs[id];
		char	   *sql = SqlFor(spec->sql, entries_in_batches);
		SPIPlanPtr	plan;

		/*
		 * Generic plans, always: custom plans would be re-planned on every
		 * execution (the parameters change each time), and planning these
		 * small statements costs more than running them.
		 */
		plan = SPI_prepare_cursor(sql, spec->nargs, (Oid *) spec->argtypes,
								  CURSOR_OPT_GENERIC_PLAN);
		if (plan == NULL)
			elog(ERROR, "credits: SPI_prepare failed for \"%s\": %s",
				 sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "credits: SPI_keepplan failed");
		plans[id] = plan;
		plan_for_entries[id] = entries_in_batches;
	}
	return plans[id];
}

/*
 * SqlFor
 *		A statement's text for the schema: on a 0.3.0 one, an insert into
 *		the ledger goes to credits.ledger_entries.
 */
static char *
SqlFor(const char *sql, bool entries_in_batches)
{
	static const char table[] = "INSERT INTO credits.ledger";
	const char *at = strstr(sql, table);
	char		next;

	if (!entries_in_batches || at == NULL)
		return (char *) sql;
	next = at[sizeof(table) - 1];
	if (next != ' ' && next != '\0')
		return (char *) sql;	/* credits.ledger_entries already */
	return psprintf("%.*s%s_entries%s", (int) (at - sql), sql, table,
					at + sizeof(table) - 1);
}

/*
 * CreditsExecPlan
 *		Runs a kept plan.  "expected" is the number of rows the statement
 *		must process, or -1 when any number is fine.  A write that wrote
 *		fewer rows than it must was skipped by a BEFORE ROW trigger that
 *		returned NULL (a DBA's, on one of our tables): MC028, and the
 *		transaction's writes roll back with it.  Any other mismatch is a bug
 *		or a broken invariant.
 */
void
CreditsExecPlan(CreditsPlanId id, Datum *values, const char *nulls, int expected)
{
	int			rc;

	rc = SPI_execute_plan(CreditsGetPlan(id), values, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "credits: SPI_execute_plan failed: %s",
			 SPI_result_code_string(rc));
	if (expected >= 0 && SPI_processed < (uint64) expected &&
		(rc == SPI_OK_INSERT || rc == SPI_OK_UPDATE ||
		 rc == SPI_OK_INSERT_RETURNING || rc == SPI_OK_UPDATE_RETURNING))
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_WRITE_SKIPPED),
				 errmsg("a trigger skipped a write of the credits extension"),
				 errdetail("A statement that must write %d row(s) wrote " UINT64_FORMAT ".",
						   expected, SPI_processed),
				 errhint("A BEFORE ROW trigger added to credits.ledger, credits.accounts, credits.grants or credits.recharges returned NULL. The extension's writes cannot be skipped: make the trigger return NEW, or drop it.")));
	if (expected >= 0 && SPI_processed != (uint64) expected)
		elog(ERROR, "credits: statement %d processed " UINT64_FORMAT " rows, expected %d",
			 (int) id, SPI_processed, expected);
}

/*
 * CreditsExecPlanSettling
 *		CreditsExecPlan for a statement that changes a stored batch (its
 *		status, recharge_id or owed), with credits_settling_batches up: the
 *		guard trigger (batch_guard.c) refuses those changes otherwise.
 *		PG_FINALLY lowers the flag on error too.
 */
void
CreditsExecPlanSettling(CreditsPlanId id, Datum *values, int expected)
{
	credits_settling_batches = true;
	PG_TRY();
	{
		CreditsExecPlan(id, values, NULL, expected);
	}
	PG_FINALLY();
	{
		credits_settling_batches = false;
	}
	PG_END_TRY();
}

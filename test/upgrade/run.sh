#!/usr/bin/env bash
# test/upgrade/run.sh: ALTER EXTENSION credits UPDATE on a database full of data.
#
# Builds and installs the current tree (the NEW library and every install and
# update script; 0.3.0 at the time of writing), then:
#
#   0. the released versions' own regression suites (test/upgrade/0.1.0/,
#      0.1.1/ and 0.2.0/, frozen) on databases created at 0.1.0, 0.1.1 and
#      0.2.0 and served by the new library.
#   1. old database, new library: CREATE EXTENSION credits VERSION '0.1.0' in
#      database "upg", grants the README's roles, and runs a mixed workload
#      through the 0.1.0 API (single-row, multi-row, INSERT ... SELECT and COPY
#      batches, idempotency keys, targets, monthly limits, claims, completions,
#      failures up to credits.max_payment_failures, disable, expiry, batches
#      wholly or partly owed, an awaiting batch on a positive balance) and its
#      error cases: a database that has not run the update must keep raising
#      the 0.1.0 SQLSTATEs (CR...), from the C triggers and the SQL functions.
#      1c: the same for a database "upg11" created at 0.1.1, with a workload
#      through the 0.1.1 API (tokens, a released claim, an expired lease, two
#      recharges in flight for one account, a threshold top-up); and three
#      databases, keep10, keep11 and keep20, that never run the update
#      (section 6).  1d: a database "upg20" created at 0.2.0, a workload
#      through the 0.2.0 API as the README's roles (reporting also reading
#      credits.ledger): grants of every source, one expiring and lapsed, a
#      plan renewed, every kind of insert, idempotency keys, batches drawn
#      from two grants and owing the rest, batches owed and repaid, recharges
#      in flight with awaiting batches, a failed recharge refunding a batch of
#      three debit rows, a repointed batch, batches whose created_at the
#      table owner set.
#   2. the update (0.1.0 -> 0.1.1 -> 0.2.0 -> 0.3.0 in one ALTER EXTENSION
#      UPDATE): a snapshot of every row of every extension table (only the
#      columns 0.1.0 had, in a canonical order; the ledger read through
#      credits.ledger after it), the sequences and the grants is taken before
#      and compared after it; no table rewritten (the ledger's file is
#      ledger_entries'); extversion is credits.control's default_version;
#      verify() stays empty; the new objects are the tables grants and plans
#      and the columns ledger.grant_id, send_batches.owed and send_batches'
#      five entry columns; each positive balance became one purchase grant
#      (remaining = credits = carried_over = balance, "carried over"), no
#      ledger row; none for balances at 0 or below; a negative balance is
#      owed by the awaiting batches, newest first, and balance = sum of the
#      grants' remaining - owed everywhere; credits.ledger is a view with the
#      table's columns in order, ledger_entries (the table renamed) holds
#      every row as it was, the batches' five entry columns are null
#      (entry_checks: nothing moves in 0.3.0's update).  A session
#      connected before the update, and the session that runs it, see the new
#      codes and draw the carried-over grants; the roles keep working with the
#      rights they had; settling the 0.1.0 recharges repays or refunds (the
#      part of a batch paid for before the update goes into a new purchase
#      grant); nothing new is open to PUBLIC.  2c: the same for the 0.1.1
#      database, settled with the tokens of claims made before the update.
#      2d: the 0.2.0 database updated to 0.3.0: every table and sequence
#      unchanged, the ledger view returns exactly the rows the table held
#      (every column), ledger_entries holds them, the batches' entry columns
#      are null, verify() empty, every grant kept (reporting's SELECT now on
#      the view; pg_init_privs as a fresh install's); a session open across
#      the update debits and refunds a batch debited before it.  2e: the
#      roles in it, new debits (every kind of insert, one of two grants, one
#      past zero, credits.direct_writes off, the owner's created_at), the
#      entry columns refused to the application (42501) and the owner
#      (MC007, MC008), the view append-only (MC009), settlement of batches
#      debited before the update (refunds of batches of several debit rows,
#      repayments, the repointed batch), nothing open to PUBLIC, verify()
#      empty.  2f: the refusals (MC029): a DBA's view, materialized view and
#      BEGIN ATOMIC function reading credits.ledger; nothing changes, the
#      database stays at 0.2.0; with them gone the update runs (a text-bodied
#      function then reads the view); verify()'s check 21; a batch without a
#      debit row is not refused, verify() still reports it.  2g: a DBA's
#      grants on the ledger (PUBLIC, grant option, columns) read the view
#      after the update; a DBA's foreign key to the ledger, trigger, CHECK
#      and column on it are refused (MC029), each named, nothing changed; a
#      dropped column left in ledger_entries; a DBA's publication of the
#      ledger table refused; row-level security on it refused (a tenant
#      still reads only its rows); a DBA's own column send_batches.entry_id
#      in a database at 0.2.0 left alone by the library.  2h: the update from 0.2.0
#      rolled back (the session writes the ledger table again), run between
#      debits of one transaction, and a debit waiting on its locks.
#   3. the new version in that database: MC codes (the entry columns' and
#      the ledger view's too), claim tokens and leases, a stale token refused with MC020 and nothing changed, release_recharge,
#      the recharge_queue view.  3b: grants in it: open_account with signup
#      credits (also expiring), grant_credits, set_plan, the draw-down order
#      (plan, signup, promo, purchase), batch_funding, account_overview,
#      expiring_credits, expiry under credits.clock_offset (a debit expires
#      first; an expired promo is never spent; expire_grants and its NOTIFY),
#      renew_plans, cancel_plan, the MC023-MC026 errors, a debit past zero
#      and its repayment, a refund to a grant that expired; verify() empty.
#   4. same objects either way: a fresh CREATE EXTENSION credits, 0.1.0 +
#      UPDATE, 0.1.1 + UPDATE and 0.2.0 + UPDATE give the same catalog (\dx+,
#      functions with their security, volatility and settings, tables,
#      constraints, indexes, triggers, views, comments, grants, pg_init_privs,
#      pg_dump configuration), and so do the three updated workload databases
#      (grants aside).
#   5. dumps: the 0.1.0 database's restored with a plain pg_restore into the
#      new version (same rows, verify() empty after carry_over_balances());
#      0.1.1's the same way; 0.2.0's the same way (its ledger rows go through
#      the view into ledger_entries; same rows, verify() empty, new debits
#      and a refund; an INSERT into the view by another role is MC009); the
#      0.1.0, 0.1.1 and 0.2.0 dumps restored into databases created at their
#      versions and then updated (the checks of section 2); the updated
#      databases dumped and restored (also in parallel): same rows, verify()
#      empty, the reporting role's grant on credits.ledger kept.
#   6. keep10, keep11 and keep20, never updated, after the library has served
#      0.3.0 databases: debits and settlement work, their SQLSTATE classes;
#      keep10 and keep11 without grant tables or columns, one ledger row per
#      debit, recharge and refund; keep20 writing its ledger table (debit
#      rows per grant, repay pairs, refunds), no entry columns; and
#      databases at 0.1.0, 0.1.1 and 0.2.0 with a DBA's view named
#      credits.ledger_entries still debit the way of their version.
#
# Prints "ok - ..." / "not ok - ..." per check, "# ..." notes, and
# "N passed, N failed"; exits non-zero on any failure.  Safe to run again:
# a leftover cluster is removed first, and this one at exit.
# Settings: CREDITS_PORT (54347), PG_BIN (lib.sh).
set -uo pipefail

CREDITS_PURPOSE=upgrade
CREDITS_PORT=${CREDITS_PORT:-54347}
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$REPO_ROOT"

source "$REPO_ROOT/test/lib.sh"
# same_files DESCRIPTION A B: ok when the two files are equal, else a diff.
same_files() {
	if diff -q "$2" "$3" >/dev/null 2>&1; then
		ok "$1"
	else
		not_ok "$1"
		diff "$2" "$3" 2>&1 | head -20 | sed 's/^/#   /'
	fi
}

OLD=0.1.0
MID=0.1.1
PREV=0.2.0
NEW=$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" credits.control)

WORK=$(mktemp -d /tmp/credits-upgrade-files.XXXXXX)
chmod 755 "$WORK"
SESSION_PID=
trap '[ -n "$SESSION_PID" ] && kill "$SESSION_PID" 2>/dev/null; stop_cluster; rm -rf "$WORK"' EXIT
started=$(date +%s)

build_and_install
built=$(date +%s)
start_cluster || { echo "not ok - cluster did not start"; exit 1; }
note "old version $OLD, new version (credits.control) $NEW"
# The released 0.1.0 install script is frozen: databases installed from it
# must be the ones this suite upgrades.
same "credits--$OLD.sql is the released $OLD script, unedited" \
	"$(md5sum <"credits--$OLD.sql" | cut -d' ' -f1)" "1b8de839d994bfb5347149cd8d762ab1"

# q DB SQL: the result, unaligned, errors included.
q() { pg -d "$1" -At -c "$2" 2>&1; }
# code DB SQL [INPUT]: the SQLSTATE the SQL fails with, or "ok"; INPUT is
# what a COPY ... FROM STDIN reads.
code() {
	local err
	err=$(printf '%s' "${3:-}" | "$PG_BIN/psql" -X -q -At -v VERBOSITY=sqlstate -d "$1" -c "$2" 2>&1 >/dev/null)
	if [ -z "$err" ]; then
		echo ok
	else
		sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\)$/\1/p' <<<"$err" | head -1 | grep . || echo "?? $err"
	fi
}
# fails_with DESCRIPTION DB SQLSTATE SQL
fails_with() { same "$1 ($3)" "$(code "$2" "$4" "${5:-}")" "$3"; }

APP='SET ROLE regress_upg_app;'
WORKER='SET ROLE regress_upg_worker;'
ADMIN='SET ROLE regress_upg_admin;'
REPORTING='SET ROLE regress_upg_reporting;'
NOBODY='SET ROLE regress_upg_nobody;'

# tables DB FILE: "table|col,col,..." for every table of the extension, with
# the columns it has now (taken before the update, used after it).
tables() {
	q "$1" "SELECT c.relname, string_agg(quote_ident(a.attname), ',' ORDER BY a.attnum)
	          FROM pg_depend d
	          JOIN pg_class c ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND c.relkind = 'r'
	          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'credits')
	         GROUP BY c.relname ORDER BY 1" >"$2"
}
# snapshot DB TABLES DIR: every row of every table in TABLES (those columns,
# ordered by all of them), the sequences, and the grants on the objects that
# exist in TABLES' version.
snapshot() {
	local db=$1 list=$2 dir=$3 rel cols order i n
	mkdir -p "$dir"
	while IFS='|' read -r rel cols; do
		n=$(tr ',' '\n' <<<"$cols" | wc -l)
		order=1; for ((i = 2; i <= n; i++)); do order="$order,$i"; done
		pg -d "$db" -c "COPY (SELECT $cols FROM credits.$rel ORDER BY $order) TO STDOUT" >"$dir/$rel" 2>&1
	done <"$list"
	q "$db" "SELECT 'batch', last_value, is_called FROM credits.send_batches_batch_id_seq
	         UNION ALL SELECT 'recharge', last_value, is_called FROM credits.recharges_recharge_id_seq
	         UNION ALL SELECT 'entry', last_value, is_called FROM credits.ledger_entry_id_seq" >"$dir/sequences"
}
# grants DB FILE: the ACL of every table, view, sequence, column and function
# of schema credits.
grants() {
	q "$1" "SELECT 'rel ' || c.relname || ' ' || coalesce(c.relacl::text, '-')
	          FROM pg_class c WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm', 'f', 'p')
	        UNION ALL
	        SELECT 'col ' || c.relname || '.' || a.attname || ' ' || a.attacl::text
	          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
	         WHERE c.relnamespace = 'credits'::regnamespace AND a.attacl IS NOT NULL
	        UNION ALL
	        SELECT 'fn ' || p.oid::regprocedure::text || ' ' || coalesce(p.proacl::text, '-')
	          FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace
	        ORDER BY 1" >"$2"
}
# table_dump DB FILE: every column of every table, for "nothing changed".
table_dump() {
	local t
	for t in accounts auto_recharge recharges send_batches ledger ledger_entries grants plans; do
		[ "$(q "$1" "SELECT to_regclass('credits.$t') IS NOT NULL")" = t ] || continue
		echo "== $t"
		pg -d "$1" -c "COPY (SELECT * FROM credits.$t ORDER BY 1) TO STDOUT"
	done >"$2" 2>&1
}

# columns FILE: "table.column" per line, from a tables() file.
columns() { awk -F'|' '{ n = split($2, c, ","); for (i = 1; i <= n; i++) print $1 "." c[i] }' "$1" | sort; }
# update_checks DB LABEL BEFORE_TABLES: what the update from 0.1.x to 0.2.0
# must have made of the balances (doc/grants.md, "Upgrade from 0.1"), checked
# right after ALTER EXTENSION credits UPDATE, before anything else runs.
#  - the new tables are grants and plans, the new columns of the old tables
#    ledger.grant_id and send_batches.owed;
#  - each positive balance is exactly one purchase grant (remaining = credits
#    = carried_over = balance, never expiring, open, priority 50, a note that
#    says it was carried over) and has no ledger row; no grant for a balance
#    at 0 or below;
#  - a negative balance is owed: its awaiting batches owe it, newest first
#    (each owes min(cost, what the newer ones left)), no other batch owes;
#  - balance = sum(remaining) - owed for every account; no plan exists.
update_checks() {
	local db=$1 v=$2 before=$3
	# The ledger table is ledger_entries from 0.3.0 on (credits.ledger, a
	# view over it and send_batches, is checked by entry_checks).
	tables "$db" "$WORK/tables_now_$db"
	sed -i 's/^ledger_entries|/ledger|/' "$WORK/tables_now_$db"
	same "$v, updated: the new tables are grants and plans (and the ledger table is now ledger_entries)" \
		"$(comm -13 <(cut -d'|' -f1 "$before") <(cut -d'|' -f1 "$WORK/tables_now_$db") | tr '\n' ' ')|$(comm -23 <(cut -d'|' -f1 "$before") <(cut -d'|' -f1 "$WORK/tables_now_$db") | tr '\n' ' ')" "grants plans |"
	local entry="send_batches.entry_balance_after send_batches.entry_delta send_batches.entry_grant_id send_batches.entry_id send_batches.entry_recharge_id"
	local cols="ledger.grant_id $entry send_batches.owed "
	case $v in "$OLD"*) cols="ledger.grant_id recharges.claim_count recharges.claim_token recharges.lease_expires_at $entry send_batches.owed " ;; esac
	same "$v, updated: the new columns of the $v tables are ledger.grant_id, send_batches.owed and send_batches' five entry columns (and $MID's claim columns)" \
		"$(comm -13 <(columns "$before") <(columns "$WORK/tables_now_$db" | grep -Ev '^(grants|plans)\.') | tr '\n' ' ')" "$cols"
	same "$v, updated: each positive balance is one purchase grant (remaining = credits = carried_over = balance, never expiring, priority 50, noted as carried over); none for a balance at 0 or below" \
		"$(q "$db" "SELECT a.account_id || ' balance ' || a.balance || ': ' || coalesce(string_agg(format('%s %s/%s carried %s prio %s expires %s closed %s recharge %s period %s note %s',
		                   g.source, g.remaining, g.credits, g.carried_over, g.priority, g.expires_at, g.closed_at, g.recharge_id, g.period_start, g.note), '; '), 'no grant')
		              FROM credits.accounts a LEFT JOIN credits.grants g USING (account_id)
		             GROUP BY a.account_id, a.balance
		            HAVING NOT CASE WHEN a.balance > 0
		                            THEN count(g.grant_id) = 1
		                                 AND bool_and(g.source = 'purchase' AND g.credits = a.balance AND g.remaining = a.balance
		                                              AND g.carried_over = a.balance AND g.priority = 50 AND g.expires_at IS NULL
		                                              AND g.closed_at IS NULL AND g.recharge_id IS NULL AND g.period_start IS NULL
		                                              AND g.note ILIKE '%carried over%')
		                            ELSE count(g.grant_id) = 0 END
		             ORDER BY a.account_id")" ""
	note "$v, updated: the carried-over grants' note: $(q "$db" "SELECT string_agg(DISTINCT note, ' | ') FROM credits.grants")"
	same "$v, updated: no ledger row names a grant (carried over without a ledger row), and there are no plans" \
		"$(q "$db" "SELECT count(*) FROM credits.ledger WHERE grant_id IS NOT NULL")|$(q "$db" "SELECT count(*) FROM credits.plans")" "0|0"
	same "$v, updated: a negative balance is owed by the account's awaiting batches, newest first; no other batch owes" \
		"$(q "$db" "SELECT format('batch %s of account %s (%s, cost %s, balance %s) owes %s, expected %s',
		                          b.batch_id, b.account_id, b.status, b.cost, b.balance, b.owed, b.expected)
		              FROM (SELECT b.*, a.balance,
		                           CASE WHEN b.status = 'awaiting_credits'
		                                THEN least(b.cost, greatest(0, -a.balance - coalesce(sum(b.cost) FILTER (WHERE b.status = 'awaiting_credits')
		                                     OVER (PARTITION BY b.account_id ORDER BY b.batch_id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)))
		                                ELSE 0 END AS expected
		                      FROM credits.send_batches b JOIN credits.accounts a USING (account_id)) b
		             WHERE b.owed IS DISTINCT FROM b.expected ORDER BY b.batch_id")" ""
	same "$v, updated: for every account, balance = sum(remaining) - owed and owed = greatest(-balance, 0)" \
		"$(q "$db" "SELECT format('account %s: balance %s, remaining %s, owed %s', a.account_id, a.balance, g.remaining, b.owed)
		              FROM credits.accounts a
		              LEFT JOIN LATERAL (SELECT coalesce(sum(remaining), 0) AS remaining FROM credits.grants g WHERE g.account_id = a.account_id) g ON true
		              LEFT JOIN LATERAL (SELECT coalesce(sum(owed), 0) AS owed FROM credits.send_batches b WHERE b.account_id = a.account_id) b ON true
		             WHERE a.balance <> g.remaining - b.owed OR b.owed <> greatest(-a.balance, 0) ORDER BY 1")" ""
	note "$v, updated: $(q "$db" "SELECT format('%s carried-over grants (%s credits), %s accounts at 0, %s accounts owing %s credits over %s batches',
		(SELECT count(*) FROM credits.grants), (SELECT sum(remaining) FROM credits.grants),
		(SELECT count(*) FROM credits.accounts WHERE balance = 0), (SELECT count(*) FROM credits.accounts WHERE balance < 0),
		(SELECT sum(owed) FROM credits.send_batches), (SELECT count(*) FROM credits.send_batches WHERE owed > 0))")"
	same "$v, updated: after the update: verify() returns no rows" "$(q "$db" "SELECT * FROM credits.verify()")" ""
}
# balances DB ACCOUNTS: per account "id:balance/sum(remaining)/owed", for
# the accounts given as a SQL list.
balances() {
	q "$1" "SELECT string_agg(format('%s:%s/%s/%s', a.account_id, a.balance,
	               (SELECT coalesce(sum(remaining), 0) FROM credits.grants g WHERE g.account_id = a.account_id),
	               (SELECT coalesce(sum(owed), 0) FROM credits.send_batches b WHERE b.account_id = a.account_id)), ' ' ORDER BY a.account_id)
	          FROM credits.accounts a WHERE a.account_id IN ($2)"
}

# ledger_before DB FILE: every ledger row (all ten columns of 0.2.0; NULL
# grant_id before it), taken before an update to 0.3.0, for entry_checks.
ledger_before() {
	local g=NULL::bigint
	[ "$(q "$1" "SELECT count(*) FROM pg_attribute WHERE attrelid = 'credits.ledger'::regclass AND attname = 'grant_id'")" = 1 ] && g=grant_id
	pg -d "$1" -c "COPY (SELECT entry_id, account_id, delta, balance_after, kind, batch_id, recharge_id, note, created_at, $g
	                     FROM credits.ledger ORDER BY entry_id) TO STDOUT" >"$2"
}
LEDGER_COLUMNS="entry_id:bigint,account_id:bigint,delta:bigint,balance_after:bigint,kind:text,batch_id:bigint,recharge_id:bigint,note:text,created_at:timestamp with time zone,grant_id:bigint"
# entry_checks DB LABEL FILE: what the update to 0.3.0 must have made of the
# ledger (FILE: ledger_before, taken right before it), checked right after it.
# Nothing moves (0.3.0 "without a migration"):
#  - credits.ledger is a view with the table's columns in the same order;
#    the table is credits.ledger_entries;
#  - the five entry columns of send_batches are nullable and null for every
#    batch debited before the update: its debit rows stay in ledger_entries;
#  - ledger_entries holds exactly the rows of before, and the view returns
#    exactly them, every column (created_at included) as it was.
entry_checks() {
	local db=$1 v=$2 f=$3
	same "$v, updated: credits.ledger is a view with the ledger's columns in the same order, credits.ledger_entries the table" \
		"$(q "$db" "SELECT (SELECT relkind::text FROM pg_class WHERE oid = 'credits.ledger'::regclass) || '|' ||
		                   (SELECT relkind::text FROM pg_class WHERE oid = 'credits.ledger_entries'::regclass) || '|' ||
		                   string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum)
		              FROM pg_attribute WHERE attrelid = 'credits.ledger'::regclass AND attnum > 0 AND NOT attisdropped")" \
		"v|r|$LEDGER_COLUMNS"
	same "$v, updated: send_batches' five entry columns, bigint, nullable, and null for each of the $(q "$db" "SELECT count(*) FROM credits.send_batches") batches debited before the update" \
		"$(q "$db" "SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod) || ':' || attnotnull, ',' ORDER BY attnum) FROM pg_attribute
		              WHERE attrelid = 'credits.send_batches'::regclass AND attname LIKE 'entry\_%'")|$(q "$db" "SELECT count(*) FROM credits.send_batches
		              WHERE num_nonnulls(entry_id, entry_delta, entry_balance_after, entry_grant_id, entry_recharge_id) > 0")" \
		"entry_id:bigint:false,entry_delta:bigint:false,entry_balance_after:bigint:false,entry_grant_id:bigint:false,entry_recharge_id:bigint:false|0"
	pg -d "$db" -c "COPY (SELECT * FROM credits.ledger_entries ORDER BY entry_id) TO STDOUT" >"$f.entries" 2>&1
	pg -d "$db" -c "COPY (SELECT * FROM credits.ledger ORDER BY entry_id) TO STDOUT" >"$f.view" 2>&1
	same_files "$v, updated: ledger_entries holds every ledger row of before, every column as it was ($(wc -l <"$f") rows, $(grep -c $'\tdebit\t' "$f") debit rows)" "$f" "$f.entries"
	same_files "$v, updated: credits.ledger returns exactly the rows it did, every column (created_at included) as it was" "$f" "$f.view"
}

################################################################################
say "0. the released versions' own regression suites, on databases at those versions served by the new library"
# test/upgrade/0.1.0/ holds sql/ and expected/ of the 0.1.0 release (all but
# bulk, which takes 20 s), with one deliberate change: the CR007 hint now
# mentions restores; test/upgrade/0.1.1/ those of 0.1.1 (all but bulk), as
# released.  Run with pg_regress against CREATE EXTENSION credits VERSION
# '0.1.x', they prove that every promise 0.1.x made still holds for a
# database that has not run the update.
PG_REGRESS=$("$PG_BIN/pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress
# old_suites VERSION DB TESTS...: the frozen suites of VERSION in a new database DB.
old_suites() {
	local v=$1 db=$2 name result n
	shift 2
	local dir=test/upgrade/$v expecteddir=()
	"$PG_BIN/createdb" "$db"
	q "$db" "CREATE EXTENSION credits VERSION '$v'" >/dev/null
	# PostgreSQL 16 and later read expected/ from --expecteddir (default:
	# the current directory), 15 from --inputdir.
	"$PG_REGRESS" --help 2>&1 | grep -q -- --expecteddir && expecteddir=(--expecteddir="$dir")
	"$PG_REGRESS" --bindir="$PG_BIN" --inputdir="$dir" "${expecteddir[@]}" --outputdir="$WORK/$db" \
		--use-existing --dbname="$db" "$@" >"$WORK/$db.log" 2>&1
	while read -r name result; do
		if [ "$result" == ok ]; then
			ok "$v's regression suite $name passes on a $v database"
		else
			not_ok "$v's regression suite $name passes on a $v database"
			sed -n "/^diff .*\/$name.out/,/^diff /p" "$WORK/$db/regression.diffs" 2>/dev/null | head -30 | sed 's/^/#   /'
		fi
	done < <(sed -nE 's/^(test|ok [0-9]+ *[-+]?|not ok [0-9]+ *[-+]?) +([a-z_]+) +\.\.\. +(ok|FAILED).*/\2 \3/p; s/^ok [0-9]+ +[-+]? +([a-z_]+) .*/\1 ok/p; s/^not ok [0-9]+ +[-+]? +([a-z_]+) .*/\1 FAILED/p' "$WORK/$db.log")
	n=$(grep -cE '^test |^(not )?ok ' "$WORK/$db.log")
	check "$v's regression suites all ran ($n of $#)" test "$n" -eq $#
}
old_suites "$OLD" old_regress install seed_example debit auto_recharge recharge_worker idempotency batch_guard \
	privileges policy_limits reports verify
old_suites "$MID" mid_regress install seed_example debit auto_recharge recharge_worker idempotency batch_guard \
	privileges policy_limits reports verify leases hardening
old_suites "$PREV" prev_regress install seed_example debit auto_recharge recharge_worker idempotency batch_guard \
	privileges policy_limits reports bulk verify leases hardening grants plans expiry table_changes direct_writes \
	direct_writes_ddl

################################################################################
say "1. a $OLD database served by the new library"
"$PG_BIN/createdb" upg || exit 1
same "CREATE EXTENSION credits VERSION '$OLD' installs $OLD" \
	"$(q upg "CREATE EXTENSION credits VERSION '$OLD'; SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$OLD"

pg -d upg >"$WORK/setup.log" 2>&1 <<'SQL' || { cat "$WORK/setup.log"; echo "not ok - setting up the $OLD database failed"; exit 1; }
-- The README's four kinds of users (Privileges), as of 0.1.0, and one with nothing.
CREATE ROLE regress_upg_app;
CREATE ROLE regress_upg_worker;
CREATE ROLE regress_upg_admin;
CREATE ROLE regress_upg_reporting;
CREATE ROLE regress_upg_nobody;
GRANT USAGE ON SCHEMA credits TO regress_upg_app;
GRANT SELECT, INSERT (account_id, messages, channel, idempotency_key) ON credits.send_batches TO regress_upg_app;
GRANT SELECT ON credits.accounts, credits.prices, credits.recharges TO regress_upg_app;
GRANT USAGE ON SCHEMA credits TO regress_upg_worker;
GRANT SELECT ON credits.recharges TO regress_upg_worker;
GRANT EXECUTE ON FUNCTION credits.claim_recharges(integer),
                          credits.complete_recharge(bigint, text),
                          credits.fail_recharge(bigint, text) TO regress_upg_worker;
GRANT USAGE ON SCHEMA credits TO regress_upg_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON credits.prices TO regress_upg_admin;
GRANT EXECUTE ON FUNCTION credits.open_account(bigint, bigint),
                          credits.add_credits(bigint, bigint, text),
                          credits.enable_auto_recharge(bigint, bigint, bigint, bigint, bigint),
                          credits.disable_auto_recharge(bigint),
                          credits.expire_recharges(),
                          credits.verify() TO regress_upg_admin;
GRANT USAGE ON SCHEMA credits TO regress_upg_reporting;
GRANT SELECT ON credits.account_overview, credits.recharge_history,
                credits.usage_daily, credits.usage_monthly TO regress_upg_reporting;
GRANT USAGE ON SCHEMA credits TO regress_upg_nobody;
SQL


# The workload, through the 0.1.0 API, each step as the role the README gives it.
pg -d upg >"$WORK/workload.log" 2>&1 <<'SQL'
LISTEN credits_auto_recharge_disabled;
SET ROLE regress_upg_admin;
INSERT INTO credits.prices (channel, credits_per_message) VALUES ('sms', 7), ('push', 2);
SELECT credits.open_account(1, 10000);   -- funded, no policy
SELECT credits.open_account(2, 0);       -- plain auto-recharge: a pending shortfall recharge
SELECT credits.open_account(3, 100);     -- target and monthly limit: a threshold top-up
SELECT credits.open_account(4, 0);       -- claimed under 0.1.0, still processing at the update
SELECT credits.open_account(5, 0);       -- completed under 0.1.0
SELECT credits.open_account(6, 0);       -- payment failures turn auto-recharge off
SELECT credits.open_account(7, 0);       -- disabled by the user
SELECT credits.open_account(8, 50);      -- an expired recharge
SELECT credits.open_account(9, 0);       -- no credits, no policy
SELECT credits.open_account(10, 0);      -- a small monthly limit
SELECT credits.open_account(13, 0);      -- claimed under 0.1.0 and never settled: no lease
SELECT credits.open_account(14, 1000);   -- a policy 0.1.0 allowed and 0.1.1 refuses: min_balance > max_credits
SELECT count(credits.open_account(a, 100000)) FROM generate_series(100, 149) a;
SELECT credits.add_credits(1, 500, E'a grant with ''quotes'' and ünïcödé');
SELECT credits.enable_auto_recharge(2, 0, 1000);
SELECT credits.enable_auto_recharge(3, 100, 5000, target_balance => 1000, monthly_limit => 20000);
SELECT credits.enable_auto_recharge(4, 0, 1000);
SELECT credits.enable_auto_recharge(5, 0, 1000, 300);
SELECT credits.enable_auto_recharge(6, 0, 1000);
SELECT credits.enable_auto_recharge(7, 0, 1000);
SELECT credits.enable_auto_recharge(8, 0, 1000);
SELECT credits.enable_auto_recharge(10, 0, 5000, monthly_limit => 1000);
SELECT credits.enable_auto_recharge(13, 0, 1000);
SELECT credits.enable_auto_recharge(14, 600, 500);

SET ROLE regress_upg_app;
-- single row, multi-row, INSERT ... SELECT and COPY
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 10);
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
VALUES (1, 20, 'sms', 'k-1'), (1, 30, 'push', 'k-2'), (100, 5, 'email', NULL);
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
SELECT 100 + g % 50, 1 + g % 7, (ARRAY['email', 'sms', 'push'])[1 + g % 3], 'bulk-' || g
  FROM generate_series(1, 5000) g;
COPY credits.send_batches (account_id, messages, channel, idempotency_key) FROM STDIN;
1	7	sms	copy-1
1	8	email	\N
100	9	push	copy-2
\.
-- idempotent resends (one row, and 100 rows of the bulk): nothing is debited again
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1, 20, 'k-1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
SELECT 100 + g % 50, 1 + g % 7, (ARRAY['email', 'sms', 'push'])[1 + g % 3], 'bulk-' || g
  FROM generate_series(1, 100) g
ON CONFLICT (account_id, idempotency_key) DO NOTHING;

-- 4, 5 and 13: claimed; 5 completed.
INSERT INTO credits.send_batches (account_id, messages) VALUES (4, 100);
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (5, 10, 'sms');
INSERT INTO credits.send_batches (account_id, messages) VALUES (13, 30);
SET ROLE regress_upg_worker;
SELECT count(*) FROM credits.claim_recharges(10);
SELECT recharge_id AS r5 FROM credits.recharges WHERE account_id = 5 \gset
SELECT (credits.complete_recharge(:r5, 'psp-5')).status;
SELECT (credits.complete_recharge(:r5, 'psp-5')).status;   -- a retry changes nothing

-- 6: three failures in a row (credits.max_payment_failures, default 3); a
-- batch waiting on a pending recharge when the third one fails.
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (6, 10);
SET ROLE regress_upg_worker;
SELECT recharge_id AS r6 FROM credits.claim_recharges(1) \gset
SELECT (credits.fail_recharge(:r6, 'card declined')).status;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (6, 11);
SET ROLE regress_upg_worker;
SELECT recharge_id AS r6 FROM credits.claim_recharges(1) \gset
SELECT (credits.fail_recharge(:r6, 'card declined')).status;
SELECT (credits.fail_recharge(:r6, 'card declined')).status;   -- a retry changes nothing
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (6, 12);
SET ROLE regress_upg_worker;
SELECT recharge_id AS r6 FROM credits.claim_recharges(1) \gset
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (6, 13, 'push');
SET ROLE regress_upg_worker;
SELECT (credits.fail_recharge(:r6, 'card expired')).status;

-- 7: disabled by the user while a recharge is pending.
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (7, 25, 'push');
SET ROLE regress_upg_admin;
SELECT (credits.disable_auto_recharge(7)).enabled;
SELECT (credits.disable_auto_recharge(7)).enabled;   -- again: changes nothing

-- 8: a pending recharge older than credits.recharge_expiry.
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (8, 100);
RESET ROLE;
UPDATE credits.recharges SET created_at = created_at - interval '2 hours' WHERE account_id = 8;
SET ROLE regress_upg_admin;
SELECT credits.expire_recharges() AS expired;

-- 2, 3 and 10: pending at the update (3: a top-up towards its target, and a
-- second batch it covers).
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
VALUES (2, 40, 'email', NULL), (3, 300, 'email', 'k-3');
COPY credits.send_batches (account_id, messages, channel) FROM STDIN;
3	10	sms
\.
INSERT INTO credits.send_batches (account_id, messages) VALUES (10, 800);

-- 15: a batch partly paid for at the update (60 of its 100 credits; 40 owed);
-- its recharge fails after the update.  16: a batch awaiting its recharge on
-- an account whose balance is positive again (credits added after it): it
-- owes nothing at the update, and its recharge fails after it.
SET ROLE regress_upg_admin;
SELECT credits.open_account(15, 60);
SELECT credits.enable_auto_recharge(15, 0, 1000);
SELECT credits.open_account(16, 0);
SELECT credits.enable_auto_recharge(16, 0, 1000);
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (15, 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (16, 100);
SET ROLE regress_upg_admin;
SELECT credits.add_credits(16, 250);
RESET ROLE;
SQL
rc=$?
if [ $rc -eq 0 ] && ! grep -q ERROR "$WORK/workload.log"; then
	ok "$OLD: the workload runs through the $OLD API with the new library, as the README's roles"
else
	not_ok "$OLD: the workload runs through the $OLD API with the new library, as the README's roles"
	grep -B2 -A2 ERROR "$WORK/workload.log" | head -12 | sed 's/^/#   /'
fi
check "$OLD: three payment failures turned auto-recharge off and notified credits_auto_recharge_disabled for account 6" \
	grep -q 'credits_auto_recharge_disabled" with payload "6"' "$WORK/workload.log"
note "$OLD: $(q upg "SELECT count(*) FROM credits.accounts") accounts, $(q upg "SELECT count(*) FROM credits.send_batches") batches, $(q upg "SELECT count(*) FROM credits.recharges") recharges, $(q upg "SELECT count(*) FROM credits.ledger") ledger rows"

same "$OLD: the data covers every batch status" \
	"$(q upg "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM credits.send_batches")" "awaiting_credits,failed,ready"
same "$OLD: the data covers every recharge status (pending 2, 3, 10, 15 and 16; processing 4 and 13; succeeded 5; failed and cancelled 6; cancelled 7; expired 8)" \
	"$(q upg "SELECT string_agg(account_id || ':' || status, ',' ORDER BY recharge_id) FROM credits.recharges")" \
	"4:processing,5:succeeded,13:processing,6:failed,6:failed,6:failed,6:cancelled,7:cancelled,8:cancelled,2:pending,3:pending,10:pending,15:pending,16:pending"
same "$OLD: policies on, off by the user, off after payment failures" \
	"$(q upg "SELECT string_agg(account_id || ':' || enabled || ':' || coalesce(disabled_reason, '-'), ',' ORDER BY account_id)
	          FROM credits.auto_recharge WHERE account_id IN (6, 7, 3)")" \
	"3:true:-,6:false:payment_failed,7:false:disabled_by_user"
same "$OLD: idempotent resends debited nothing (one debit per batch, 5000 bulk batches)" \
	"$(q upg "SELECT count(*) FILTER (WHERE idempotency_key LIKE 'bulk-%'), (SELECT count(*) FROM credits.ledger WHERE kind = 'debit') = count(*)
	          FROM credits.send_batches")" "5000|t"
same "$OLD: verify() returns no rows after the workload" "$(q upg "SELECT * FROM credits.verify()")" ""

# Error cases: a database at 0.1.0 keeps its codes, whatever library serves it.
say "1b. $OLD error codes from the new library"
r_pending=$(q upg "SELECT recharge_id FROM credits.recharges WHERE account_id = 2")
r_processing=$(q upg "SELECT recharge_id FROM credits.recharges WHERE account_id = 4")
r_succeeded=$(q upg "SELECT recharge_id FROM credits.recharges WHERE account_id = 5")
table_dump upg "$WORK/before_errors"
fails_with "$OLD trigger: a batch above the balance, auto-recharge off" upg CR001 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (9, 1)"
fails_with "$OLD trigger: a COPY above the balance" upg CR001 \
	"$APP COPY credits.send_batches (account_id, messages) FROM STDIN" $'9\t5\n'
fails_with "$OLD trigger: a need above max_credits" upg CR002 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 5000)"
fails_with "$OLD trigger: a batch for an account that does not exist" upg CR003 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (999, 1)"
fails_with "$OLD trigger: a channel without a price" upg CR004 \
	"$APP INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1, 1, 'fax')"
fails_with "$OLD trigger: the table owner setting cost" upg CR007 \
	"INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (1, 1, 1)"
fails_with "$OLD trigger: the table owner setting status" upg CR007 \
	"INSERT INTO credits.send_batches (account_id, messages, status) VALUES (1, 1, 'ready')"
fails_with "$OLD trigger: the table owner setting recharge_id" upg CR007 \
	"INSERT INTO credits.send_batches (account_id, messages, recharge_id) VALUES (1, 1, $r_pending)"
note "$OLD database, new library: the table owner's row with cost and status both set gives $(code upg "BEGIN; INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1, 1, 1, 'ready'); ROLLBACK") (0.1.1 stores such a row as restored; $OLD refused it with CR007)"
fails_with "$OLD: the application cannot even name cost (column grants)" upg 42501 \
	"$APP INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (1, 1, 1)"
fails_with "$OLD guard: UPDATE of a batch" upg CR008 \
	"UPDATE credits.send_batches SET messages = 1 WHERE account_id = 1"
fails_with "$OLD guard: DELETE of a batch" upg CR008 "DELETE FROM credits.send_batches WHERE account_id = 1"
fails_with "$OLD guard: TRUNCATE of send_batches" upg CR008 "TRUNCATE credits.send_batches"
fails_with "$OLD guard: UPDATE of the ledger" upg CR009 "UPDATE credits.ledger SET delta = 0"
fails_with "$OLD guard: DELETE from the ledger" upg CR009 "DELETE FROM credits.ledger"
fails_with "$OLD trigger: zero messages" upg CR011 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 0)"
fails_with "$OLD trigger: a monthly limit exceeded" upg CR018 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (10, 300)"
fails_with "$OLD function: add_credits to an account that does not exist" upg CR003 \
	"$ADMIN SELECT credits.add_credits(999, 1)"
fails_with "$OLD function: complete_recharge of a recharge that does not exist" upg CR005 \
	"SELECT credits.complete_recharge(99999, 'x')"
fails_with "$OLD function: complete_recharge of a settled recharge with another reference" upg CR006 \
	"$WORKER SELECT credits.complete_recharge($r_succeeded, 'psp-other')"
fails_with "$OLD function: open_account of an account that exists" upg CR010 "$ADMIN SELECT credits.open_account(1)"
fails_with "$OLD function: add_credits overflowing a bigint" upg CR012 \
	"$ADMIN SELECT credits.open_account(11, 9223372036854775000); SELECT credits.add_credits(11, 1000)"
fails_with "$OLD function: an invalid policy" upg CR013 "$ADMIN SELECT credits.enable_auto_recharge(9, -1, 10)"
fails_with "$OLD function: negative initial credits" upg CR014 "$ADMIN SELECT credits.open_account(12, -5)"
fails_with "$OLD function: completing an unclaimed recharge" upg CR015 \
	"$WORKER SELECT credits.complete_recharge($r_pending, 'x')"
fails_with "$OLD function: a payment reference used by another recharge" upg CR017 \
	"$WORKER SELECT credits.complete_recharge($r_processing, 'psp-5')"
fails_with "$OLD function: an empty payment reference" upg 22023 \
	"$WORKER SELECT credits.complete_recharge($r_processing, '')"
fails_with "$OLD function: a NULL argument" upg 22004 "$ADMIN SELECT credits.add_credits(1, NULL)"
fails_with "$OLD: the application may not call add_credits" upg 42501 "$APP SELECT credits.add_credits(1, 1)"
table_dump upg "$WORK/after_errors"
same_files "$OLD: the refused statements changed nothing" "$WORK/before_errors" "$WORK/after_errors"
same "$OLD: verify() returns no rows after the error cases" "$(q upg "SELECT * FROM credits.verify()")" ""

################################################################################
say "1c. a $MID database served by the new library"
# Its own workload through the $MID API: claim tokens and leases, a released
# claim, an expired lease, batches partly or wholly owed, a threshold top-up
# with a positive balance, an awaiting batch on a positive balance, two
# recharges in flight for one account.  Updated to $NEW in section 2c.
"$PG_BIN/createdb" upg11 || exit 1
same "CREATE EXTENSION credits VERSION '$MID' installs $MID" \
	"$(q upg11 "CREATE EXTENSION credits VERSION '$MID'; SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$MID"
pg -d upg11 >"$WORK/workload11.log" 2>&1 <<'SQL'
INSERT INTO credits.prices (channel, credits_per_message) VALUES ('sms', 7);
SELECT credits.open_account(1, 5000);       -- funded, every kind of insert
SELECT count(credits.open_account(a, 10000)) FROM generate_series(200, 219) a;
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
SELECT 200 + g % 20, 1 + g % 9, CASE WHEN g % 4 = 0 THEN 'sms' ELSE 'email' END, 'b-' || g
  FROM generate_series(1, 2000) g;
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
VALUES (1, 10, 'sms', 'k-1'), (1, 20, 'email', 'k-2');
COPY credits.send_batches (account_id, messages, channel, idempotency_key) FROM STDIN;
1	5	sms	copy-1
1	6	email	\N
\.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1, 10, 'k-1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
-- 3: two batches awaiting one recharge (150 partly paid, 30 wholly owed);
-- 4: one batch partly paid; 5: completed before the update.  3 and 4 are
-- claimed with tokens before the update and settled with them after it.
SELECT credits.open_account(3, 100), credits.enable_auto_recharge(3, 0, 1000);
SELECT credits.open_account(4, 100), credits.enable_auto_recharge(4, 0, 1000);
SELECT credits.open_account(5, 0), credits.enable_auto_recharge(5, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (3, 150);
INSERT INTO credits.send_batches (account_id, messages) VALUES (3, 30);
INSERT INTO credits.send_batches (account_id, messages) VALUES (4, 250);
INSERT INTO credits.send_batches (account_id, messages) VALUES (5, 50);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT status FROM credits.complete_recharge((SELECT recharge_id FROM credits.recharges WHERE account_id = 5), 'psp11-5',
                                             (SELECT claim_token FROM credits.recharges WHERE account_id = 5));
-- 6: three failures with tokens turn auto-recharge off.
SELECT credits.open_account(6, 0), credits.enable_auto_recharge(6, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (6, 10);
SELECT f.status FROM credits.claim_recharges(10) c, credits.fail_recharge(c.recharge_id, 'declined', c.claim_token) f;
INSERT INTO credits.send_batches (account_id, messages) VALUES (6, 11);
SELECT f.status FROM credits.claim_recharges(10) c, credits.fail_recharge(c.recharge_id, 'declined', c.claim_token) f;
INSERT INTO credits.send_batches (account_id, messages) VALUES (6, 12);
SELECT f.status FROM credits.claim_recharges(10) c, credits.fail_recharge(c.recharge_id, 'declined', c.claim_token) f;
-- 8: claimed, released with its token at the end (pending again, claimed
-- once); 9: claimed, its lease expired at the end.
SELECT credits.open_account(8, 0), credits.enable_auto_recharge(8, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (8, 60);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT credits.open_account(9, 0), credits.enable_auto_recharge(9, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (9, 70);
SELECT count(*) FROM credits.claim_recharges(10);
-- 15: two recharges in flight: the first claimed (so it cannot grow), the
-- second opened by the next batch; the account owes all 130.
SELECT credits.open_account(15, 0), credits.enable_auto_recharge(15, 0, 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (15, 80);
SELECT count(*) FROM credits.claim_recharges(10);
INSERT INTO credits.send_batches (account_id, messages) VALUES (15, 50);
-- 2: wholly owed, pending.  10: a threshold top-up, balance still positive.
SELECT credits.open_account(2, 0), credits.enable_auto_recharge(2, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 40);
SELECT credits.open_account(10, 500), credits.enable_auto_recharge(10, 400, 2000, target_balance => 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (10, 200);
-- 7: spent some; 11: nothing at all.
SELECT credits.open_account(7, 300);
INSERT INTO credits.send_batches (account_id, messages) VALUES (7, 100);
SELECT credits.open_account(11, 0);
-- 12: an expired recharge, refunded; 13: disabled by the user, refunded.
SELECT credits.open_account(12, 50), credits.enable_auto_recharge(12, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (12, 100);
UPDATE credits.recharges SET created_at = created_at - interval '2 hours' WHERE account_id = 12;
SELECT credits.expire_recharges();
SELECT credits.open_account(13, 0), credits.enable_auto_recharge(13, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (13, 20);
SELECT (credits.disable_auto_recharge(13)).enabled;
-- 14: a batch awaiting its recharge, then credits added: balance positive.
SELECT credits.open_account(14, 0), credits.enable_auto_recharge(14, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (14, 100);
SELECT credits.add_credits(14, 250);
-- 16: a batch partly paid for (40 owed); after the update credits arrive
-- and repay the 40, then its recharge fails.
SELECT credits.open_account(16, 60), credits.enable_auto_recharge(16, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (16, 100);
-- 17 and 18: batches partly paid for (70 and 20 owed); after the update
-- 17's recharge expires and 18's policy is disabled: both are cancelled.
SELECT credits.open_account(17, 30), credits.enable_auto_recharge(17, 0, 1000);
SELECT credits.open_account(18, 80), credits.enable_auto_recharge(18, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (17, 100), (18, 100);
-- the release and the expired lease
SELECT status FROM credits.release_recharge((SELECT recharge_id FROM credits.recharges WHERE account_id = 8),
                                            (SELECT claim_token FROM credits.recharges WHERE account_id = 8));
UPDATE credits.recharges SET lease_expires_at = now() - interval '1 minute' WHERE account_id = 9;
SQL
rc=$?
if [ $rc -eq 0 ] && ! grep -q ERROR "$WORK/workload11.log"; then
	ok "$MID: the workload runs through the $MID API with the new library"
else
	not_ok "$MID: the workload runs through the $MID API with the new library"
	grep -B2 -A2 ERROR "$WORK/workload11.log" | head -12 | sed 's/^/#   /'
fi
same "$MID: recharges: pending 2, 8 (released), 10, 14, 15; processing 3, 4, 9 (lease expired), 15; succeeded 5; failed 6; cancelled 12, 13" \
	"$(q upg11 "SELECT string_agg(account_id || ':' || status || ':' || claim_count || ':' || coalesce((lease_expires_at < now())::text, ''), ',' ORDER BY account_id, recharge_id) FROM credits.recharges")" \
	"2:pending:0:,3:processing:1:false,4:processing:1:false,5:succeeded:1:,6:failed:1:,6:failed:1:,6:failed:1:,8:pending:1:,9:processing:1:true,10:pending:0:,12:cancelled:0:,13:cancelled:0:,14:pending:0:,15:processing:1:false,15:pending:0:,16:pending:0:,17:pending:0:,18:pending:0:"
same "$MID: balances before the update (3 and 4 partly owed, 15 owing two recharges, 10 and 14 positive with a recharge in flight)" \
	"$(q upg11 "SELECT string_agg(account_id || ':' || balance, ' ' ORDER BY account_id) FROM credits.accounts WHERE account_id < 100")" \
	"1:4869 2:-40 3:-80 4:-150 5:0 6:0 7:200 8:-60 9:-70 10:300 11:0 12:50 13:0 14:150 15:-130 16:-40 17:-70 18:-20"
fails_with "$MID trigger: a batch above the balance, auto-recharge off" upg11 MC001 \
	"INSERT INTO credits.send_batches (account_id, messages) VALUES (11, 1)"
fails_with "$MID function: add_credits to an account that does not exist" upg11 MC003 "SELECT credits.add_credits(999, 1)"
same "$MID: verify() returns no rows after the workload" "$(q upg11 "SELECT * FROM credits.verify()")" ""

# Two databases that never run the update (section 6): a little of
# everything now, more after the rest of the suite has run.
for db in keep10 keep11 keep20; do
	case $db in keep10) v=$OLD ;; keep11) v=$MID ;; *) v=$PREV ;; esac
	"$PG_BIN/createdb" $db
	pg -d $db >"$WORK/$db.log" 2>&1 <<SQL || { not_ok "$v: set-up of $db"; sed 's/^/#   /' "$WORK/$db.log" | head; }
CREATE EXTENSION credits VERSION '$v';
SELECT credits.open_account(1, 100), credits.enable_auto_recharge(1, 0, 1000);
SELECT credits.open_account(2, 50);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 150), (2, 20);
SQL
done

################################################################################
say "1d. a $PREV database served by the new library"
# Its own workload through the $PREV API, as the README's roles (and an
# auditor's SELECT on credits.ledger for reporting, which the update must
# carry to the view): grants of every source (signup, purchase, plan, promo,
# one expiring, lapsed by expire_grants; a plan renewed by renew_plans),
# single-row, multi-row, INSERT ... SELECT and COPY batches, idempotency
# keys, batches drawing from two and three grants, batches owed and repaid,
# recharges in flight with awaiting batches (claimed with tokens), a failed
# recharge refunding a batch of three debit rows, a repointed batch (its
# recharge_id no longer its debit row's), batches whose created_at the table
# owner set, payment failures turning auto-recharge off.  Updated to $NEW in
# section 2d.
"$PG_BIN/createdb" upg20 || exit 1
same "CREATE EXTENSION credits VERSION '$PREV' installs $PREV" \
	"$(q upg20 "CREATE EXTENSION credits VERSION '$PREV'; SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$PREV"
pg -d upg20 >"$WORK/setup20.log" 2>&1 <<'SQL' || { cat "$WORK/setup20.log"; echo "not ok - setting up the $PREV database failed"; exit 1; }
-- The README's roles (Privileges), as of 0.2.0, and an auditor's SELECT on
-- the ledger for reporting (the grant the update copies to the view).
GRANT USAGE ON SCHEMA credits TO regress_upg_app;
GRANT SELECT, INSERT (account_id, messages, channel, idempotency_key) ON credits.send_batches TO regress_upg_app;
GRANT SELECT ON credits.accounts, credits.prices, credits.recharges TO regress_upg_app;
GRANT USAGE ON SCHEMA credits TO regress_upg_worker;
GRANT SELECT ON credits.recharges, credits.recharge_queue TO regress_upg_worker;
GRANT EXECUTE ON FUNCTION credits.claim_recharges(integer),
                          credits.complete_recharge(bigint, text, uuid),
                          credits.fail_recharge(bigint, text, uuid),
                          credits.release_recharge(bigint, uuid) TO regress_upg_worker;
GRANT USAGE ON SCHEMA credits TO regress_upg_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON credits.prices TO regress_upg_admin;
GRANT EXECUTE ON FUNCTION credits.open_account(bigint, bigint),
                          credits.open_account(bigint, bigint, timestamptz),
                          credits.add_credits(bigint, bigint, text),
                          credits.enable_auto_recharge(bigint, bigint, bigint, bigint, bigint),
                          credits.disable_auto_recharge(bigint),
                          credits.expire_recharges(),
                          credits.verify() TO regress_upg_admin;
GRANT EXECUTE ON FUNCTION credits.grant_credits(bigint, bigint, text, timestamptz, integer, text),
                          credits.set_plan(bigint, bigint, timestamptz),
                          credits.cancel_plan(bigint),
                          credits.renew_plans(timestamptz),
                          credits.expire_grants(timestamptz) TO regress_upg_admin;
GRANT USAGE ON SCHEMA credits TO regress_upg_reporting;
GRANT SELECT ON credits.account_overview, credits.recharge_history,
                credits.usage_daily, credits.usage_monthly, credits.recharge_queue,
                credits.balance_by_grant, credits.grants, credits.plans TO regress_upg_reporting;
GRANT EXECUTE ON FUNCTION credits.expiring_credits(interval),
                          credits.batch_funding(bigint) TO regress_upg_reporting;
GRANT SELECT ON credits.ledger TO regress_upg_reporting;
GRANT USAGE ON SCHEMA credits TO regress_upg_nobody;
SQL
pg -d upg20 >"$WORK/workload20.log" 2>&1 <<'SQL'
LISTEN credits_auto_recharge_disabled;
SET ROLE regress_upg_admin;
INSERT INTO credits.prices (channel, credits_per_message) VALUES ('sms', 7), ('push', 2);
-- 1: signup credits, a purchase, a plan; every kind of insert, idempotency keys.
SELECT credits.open_account(1, 10000);
SELECT credits.add_credits(1, 500, E'a purchase with ''quotes'' and ünïcödé');
SELECT count(credits.open_account(a, 100000)) FROM generate_series(100, 149) a;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 10);
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
VALUES (1, 20, 'sms', 'k-1'), (1, 30, 'push', 'k-2'), (100, 5, 'email', NULL);
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
SELECT 100 + g % 50, 1 + g % 7, (ARRAY['email', 'sms', 'push'])[1 + g % 3], 'bulk-' || g
  FROM generate_series(1, 3000) g;
COPY credits.send_batches (account_id, messages, channel, idempotency_key) FROM STDIN;
1	7	sms	copy-1
1	8	email	\N
100	9	push	copy-2
\.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1, 20, 'k-1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
SELECT 100 + g % 50, 1 + g % 7, (ARRAY['email', 'sms', 'push'])[1 + g % 3], 'bulk-' || g
  FROM generate_series(1, 100) g
ON CONFLICT (account_id, idempotency_key) DO NOTHING;

-- 2: a plan (1000) and signup credits (300): a batch of 1200 draws from both.
SET ROLE regress_upg_admin;
SELECT credits.open_account(2, 300);
SELECT monthly_credits FROM credits.set_plan(2, 1000);
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (2, 1200, 'two-grants');

-- 3 and 4: signup (50) and an expiring promo (30), auto-recharge: a batch of
-- 100 draws both and owes 20, awaiting its recharge.  4's recharge fails
-- before the update (a refund of a batch of three debit rows), 3's after it.
SET ROLE regress_upg_admin;
SELECT credits.open_account(a, 50), credits.enable_auto_recharge(a, 0, 1000) FROM generate_series(3, 4) a;
SELECT count(credits.grant_credits(a, 30, 'promo', now() + interval '30 days', note => 'spring promo')) FROM generate_series(3, 4) a;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (3, 100), (4, 100);
SET ROLE regress_upg_worker;
SELECT f.status FROM credits.claim_recharges(10) c, credits.fail_recharge(c.recharge_id, 'card declined', c.claim_token) f
 WHERE c.account_id = 4;

-- 5: owed and repaid before the update; 6: owed, its recharge pending at the update.
SET ROLE regress_upg_admin;
SELECT credits.open_account(a, 40), credits.enable_auto_recharge(a, 0, 1000) FROM generate_series(5, 6) a;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (5, 100, 'email'), (6, 100, 'email');
SET ROLE regress_upg_worker;
SELECT f.status FROM credits.claim_recharges(10) c, credits.complete_recharge(c.recharge_id, 'psp20-' || c.recharge_id, c.claim_token) f
 WHERE c.account_id = 5;

-- 7: two batches awaiting one recharge, claimed before the update (settled
-- with its token after it); a third waits on a second recharge.
SET ROLE regress_upg_admin;
SELECT credits.open_account(7, 0), credits.enable_auto_recharge(7, 0, 1000);
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (7, 60);
INSERT INTO credits.send_batches (account_id, messages) VALUES (7, 40);
SET ROLE regress_upg_worker;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 7;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (7, 25);

-- 8: an expiring promo lapsed by expire_grants; 9: a plan renewed by
-- renew_plans (both with the extension's clock moved on).
SET ROLE regress_upg_admin;
SELECT credits.open_account(8, 0);
SELECT count(credits.grant_credits(8, 100, 'promo', now() + interval '1 hour'));
SELECT credits.add_credits(8, 50);
SELECT credits.open_account(9, 0);
SELECT monthly_credits FROM credits.set_plan(9, 400, now() - interval '20 days');
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (8, 30), (9, 100);
RESET ROLE;
LOAD 'credits';
SET credits.clock_offset = 7200;
SET ROLE regress_upg_admin;
SELECT credits.expire_grants(now() + interval '7000 seconds');
RESET ROLE;
SET credits.clock_offset = 1036800;   -- 12 days
SET ROLE regress_upg_admin;
SELECT credits.renew_plans(now() + interval '12 days' - interval '1 minute');
RESET ROLE;
RESET credits.clock_offset;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (8, 20);

-- 10: batches whose created_at the table owner set (an import): the debit
-- entry of one drawn from two grants.
RESET ROLE;
SELECT credits.open_account(10, 100);
SELECT credits.add_credits(10, 100);
INSERT INTO credits.send_batches (account_id, messages, created_at)
VALUES (10, 150, '2026-01-15 10:00:00+00'), (10, 20, '2026-01-16 11:00:00+00');

-- 11: a batch repointed: a top-up (target 500) claimed, then two batches
-- on a second recharge; when the second one succeeds, the newer batch still
-- lives on the first recharge's credits and now awaits it.
SET ROLE regress_upg_admin;
SELECT credits.open_account(11, 0), credits.enable_auto_recharge(11, 0, 1000, target_balance => 500);
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (11, 50);
SET ROLE regress_upg_worker;
SELECT count(*) FROM credits.claim_recharges(10) WHERE account_id = 11;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (11, 600);
INSERT INTO credits.send_batches (account_id, messages) VALUES (11, 400);
SET ROLE regress_upg_worker;
SELECT f.status FROM credits.claim_recharges(10) c, credits.complete_recharge(c.recharge_id, 'psp20-' || c.recharge_id, c.claim_token) f
 WHERE c.account_id = 11;

-- 12: three payment failures turn auto-recharge off.
SET ROLE regress_upg_admin;
SELECT credits.open_account(12, 0), credits.enable_auto_recharge(12, 0, 1000);
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (12, 10);
SET ROLE regress_upg_worker;
SELECT f.status FROM credits.claim_recharges(10) c, credits.fail_recharge(c.recharge_id, 'declined', c.claim_token) f WHERE c.account_id = 12;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (12, 11);
SET ROLE regress_upg_worker;
SELECT f.status FROM credits.claim_recharges(10) c, credits.fail_recharge(c.recharge_id, 'declined', c.claim_token) f WHERE c.account_id = 12;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (12, 12);
SET ROLE regress_upg_worker;
SELECT f.status FROM credits.claim_recharges(10) c, credits.fail_recharge(c.recharge_id, 'declined', c.claim_token) f WHERE c.account_id = 12;

-- 13: a multi-grant batch (promo 30 + purchase 50) partly owed (20), its
-- recharge pending at the update: disabled after it (a cancel refunds it).
SET ROLE regress_upg_admin;
SELECT credits.open_account(13, 0), credits.enable_auto_recharge(13, 0, 1000);
SELECT credits.add_credits(13, 50);
SELECT count(credits.grant_credits(13, 30, 'promo'));
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (13, 100);

-- 14 and 15: as 3, refunded by disable_auto_recharge in the session left
-- open across the update: 14's before it, 15's after it.
SET ROLE regress_upg_admin;
SELECT credits.open_account(a, 50), credits.enable_auto_recharge(a, 0, 1000) FROM generate_series(14, 15) a;
SELECT count(credits.grant_credits(a, 30, 'promo', now() + interval '30 days')) FROM generate_series(14, 15) a;
SET ROLE regress_upg_app;
INSERT INTO credits.send_batches (account_id, messages) VALUES (14, 100), (15, 100);
RESET ROLE;
SQL
rc=$?
if [ $rc -eq 0 ] && ! grep -q ERROR "$WORK/workload20.log"; then
	ok "$PREV: the workload runs through the $PREV API with the new library, as the README's roles"
else
	not_ok "$PREV: the workload runs through the $PREV API with the new library, as the README's roles"
	grep -B2 -A2 ERROR "$WORK/workload20.log" | head -12 | sed 's/^/#   /'
fi
check "$PREV: three payment failures turned auto-recharge off and notified credits_auto_recharge_disabled for account 12" \
	grep -q 'credits_auto_recharge_disabled" with payload "12"' "$WORK/workload20.log"
note "$PREV: $(q upg20 "SELECT count(*) FROM credits.accounts") accounts, $(q upg20 "SELECT count(*) FROM credits.send_batches") batches, $(q upg20 "SELECT count(*) FROM credits.recharges") recharges, $(q upg20 "SELECT count(*) FROM credits.grants") grants, $(q upg20 "SELECT count(*) FROM credits.ledger") ledger rows"
same "$PREV: the data covers every batch status, every recharge status but cancelled, every ledger kind" \
	"$(q upg20 "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM credits.send_batches")|$(q upg20 "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM credits.recharges")|$(q upg20 "SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM credits.ledger")" \
	"awaiting_credits,failed,ready|failed,pending,processing,succeeded|debit,expire,grant,open,plan,recharge,refund,repay"
same "$PREV: batches of several debit rows: 2's from the plan and signup, 10's from signup and purchase, 3's, 4's and 13's from two grants and what they owe" \
	"$(q upg20 "SELECT string_agg(account_id || ':' || rows, ' ' ORDER BY batch_id) FROM (
	            SELECT b.batch_id, b.account_id, string_agg(coalesce(g.source, '-') || l.delta, ',' ORDER BY l.entry_id) AS rows
	              FROM credits.send_batches b JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	              LEFT JOIN credits.grants g ON g.grant_id = l.grant_id
	             GROUP BY b.batch_id, b.account_id HAVING count(*) > 1) x")" \
	"2:plan-1000,signup-200 3:signup-50,promo-30,--20 4:signup-50,promo-30,--20 5:signup-40,--60 6:signup-40,--60 10:signup-100,purchase-50 13:promo-30,purchase-50,--20 14:signup-50,promo-30,--20 15:signup-50,promo-30,--20"
same "$PREV: 4's failed recharge refunded each of its batch's three debit rows" \
	"$(q upg20 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	            WHERE l.account_id = 4 AND l.kind = 'refund'")|$(balances upg20 4)" "-:20,signup:50,promo:30|4:80/80/0"
same "$PREV: a repointed batch: 11's newest batch awaits the first recharge, its debit row names the second" \
	"$(q upg20 "SELECT string_agg(format('%s now %s, debited on %s', b.status, b.recharge_id - r.first, l.recharge_id - r.first), ',')
	            FROM credits.send_batches b JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit',
	                 (SELECT min(recharge_id) AS first FROM credits.recharges WHERE account_id = 11) r
	           WHERE b.recharge_id IS DISTINCT FROM l.recharge_id")" "awaiting_credits now 0, debited on 1"
same "$PREV: the table owner's batches of 10 keep the created_at it gave; their debit rows were written now" \
	"$(q upg20 "SELECT string_agg(b.created_at::date || ':' || (l.created_at > now() - interval '1 hour'), ',' ORDER BY l.entry_id)
	            FROM credits.send_batches b JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit' WHERE b.account_id = 10")" \
	"2026-01-15:true,2026-01-15:true,2026-01-16:true"
same "$PREV: idempotent resends debited nothing (3000 bulk batches, each with debit rows)" \
	"$(q upg20 "SELECT count(*) FILTER (WHERE idempotency_key LIKE 'bulk-%'), bool_and(EXISTS (SELECT FROM credits.ledger l WHERE l.batch_id = b.batch_id AND l.kind = 'debit'))
	            FROM credits.send_batches b")|$(q upg20 "SELECT count(*) FROM credits.ledger WHERE kind = 'debit' AND account_id >= 100")" "3000|t|3002"
same "$PREV: balance/remaining/owed of the accounts of the workload" \
	"$(balances upg20 "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")" \
	"2:100/100/0 3:-20/0/20 4:80/80/0 5:0/0/0 6:-60/0/60 7:-125/0/125 8:30/30/0 9:400/400/0 10:30/30/0 11:-450/0/450 12:0/0/0 13:-20/0/20"
same "$PREV: verify() returns no rows after the workload" "$(q upg20 "SELECT * FROM credits.verify()")" ""
fails_with "$PREV trigger: a batch above the balance, auto-recharge off" upg20 MC001 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (12, 1)"

################################################################################
say "2. ALTER EXTENSION credits UPDATE"
check "credits.control's default_version ($NEW) is newer than $OLD" \
	test "$(q upg "SELECT '$NEW' <> '$OLD' AND string_to_array('$NEW', '.')::int[] > string_to_array('$OLD', '.')::int[]")" == t
same "pg_extension_update_paths: $OLD reaches $NEW in one ALTER EXTENSION UPDATE, through $MID and $PREV" \
	"$(q upg "SELECT path FROM pg_extension_update_paths('credits') WHERE source = '$OLD' AND target = '$NEW'")" "$OLD--$MID--$PREV--$NEW"
same "pg_extension_update_paths: $MID reaches $NEW through $PREV" \
	"$(q upg "SELECT path FROM pg_extension_update_paths('credits') WHERE source = '$MID' AND target = '$NEW'")" "$MID--$PREV--$NEW"
same "pg_extension_update_paths: $PREV reaches $NEW in one script" \
	"$(q upg "SELECT path FROM pg_extension_update_paths('credits') WHERE source = '$PREV' AND target = '$NEW'")" "$PREV--$NEW"

# A session connected before the update (an application's connection pool),
# left open across it.  Its output goes to stderr only (errors and \warn
# markers), which is not buffered.
# session_open DB: starts it (one at a time); session_close ends it.
session_open() {
	rm -f "$WORK/session.in" "$WORK/session.err"
	mkfifo "$WORK/session.in"
	"$PG_BIN/psql" -X -q -At -v VERBOSITY=sqlstate -d "$1" <"$WORK/session.in" >/dev/null 2>"$WORK/session.err" &
	SESSION_PID=$!
	exec 7>"$WORK/session.in"
	session_n=0
}
session_close() {
	exec 7>&-
	wait "$SESSION_PID"
	SESSION_PID=
}
session_open upg
# session SQL: runs SQL in that session; sets $session_out to what it wrote
# to stderr meanwhile.  (Not for $(...): the count must stay in this shell.)
session() {
	local i
	session_n=$((session_n + 1))
	( trap '' PIPE; printf '%s\n\\warn mark-%d\n' "$1" "$session_n" >&7 ) 2>/dev/null
	for ((i = 0; i < 200; i++)); do
		grep -q "^mark-$session_n\$" "$WORK/session.err" && break
		sleep 0.1
	done
	if [ $session_n -eq 1 ]; then
		session_out=$(sed -n "1,/^mark-1\$/p" "$WORK/session.err" | grep -v '^mark-')
	else
		session_out=$(sed -n "/^mark-$((session_n - 1))\$/,/^mark-$session_n\$/p" "$WORK/session.err" | grep -v '^mark-')
	fi
}
session "SET ROLE regress_upg_app;"
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (9, 1);"
same "a session open before the update: a refused batch gets $OLD's CR001" "$session_out" "ERROR:  CR001"

# What must not change: taken now, compared after the update.
tables upg "$WORK/tables_old"
snapshot upg "$WORK/tables_old" "$WORK/before"
ledger_before upg "$WORK/ledger_before_upg"
grants upg "$WORK/grants_before"
# (the ledger table is ledger_entries after the update, under the name it had)
filenodes() {
	q upg "SELECT CASE c.relname WHEN 'ledger_entries' THEN 'ledger' ELSE c.relname END || ' ' || pg_relation_filenode(c.oid) FROM pg_class c
	        WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'r' ORDER BY 1"
}
filenodes_before=$(filenodes)
"$PG_BIN/pg_dump" -Fc -d upg -f "$WORK/old.dump" || not_ok "pg_dump of the $OLD database"
out=$(pg -d upg -c "ALTER EXTENSION credits UPDATE" 2>&1)
same "ALTER EXTENSION credits UPDATE runs without an error or a notice" "$out" ""
same "extversion is credits.control's default_version" \
	"$(q upg "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$NEW"
same "after the update: verify() returns no rows" "$(q upg "SELECT * FROM credits.verify()")" ""
snapshot upg "$WORK/tables_old" "$WORK/after"
for t in $(cut -d'|' -f1 "$WORK/tables_old") sequences; do
	same_files "after the update: credits.$t unchanged ($(wc -l <"$WORK/before/$t") rows, the columns of $OLD)" \
		"$WORK/before/$t" "$WORK/after/$t"
done
grants upg "$WORK/grants_after"
same "the update rewrote no table (same relfilenodes; the ledger's is ledger_entries')" "$(filenodes | grep -vE '^(grants|plans) ')" "$filenodes_before"
update_checks upg "$OLD" "$WORK/tables_old"
entry_checks upg "$OLD" "$WORK/ledger_before_upg"
same "the update left the policy with min_balance > max_credits (allowed in $OLD) as it was" \
	"$(q upg "SELECT min_balance || '/' || max_credits || '/' || enabled FROM credits.auto_recharge WHERE account_id = 14")" "600/500/true"
# The update to 0.1.1 drops three internal functions (settlement moved into
# C); later versions may drop or re-declare other internal ones ("_" names).
# They were granted to no one, and nothing else may lose a grant.
dropped='^fn credits\.(_settle_batches\(bigint,text\)|_post\(credits\.accounts,bigint,text,bigint,bigint,text,bigint\)|_lock_recharge\(bigint\)) \{postgres=X/postgres\}$'
same "the update drops the internal _settle_batches, _post and _lock_recharge ($MID), which no role was granted" \
	"$(grep -vxFf "$WORK/grants_after" "$WORK/grants_before" | grep -cE "$dropped")" "3"
internal='^fn credits\._[a-z0-9_]+\([^ ]*\) \{postgres=X/postgres\}$'
others=$(grep -vxFf "$WORK/grants_after" "$WORK/grants_before" | grep -vE "$dropped" | grep -E "$internal")
[ -n "$others" ] && note "internal functions the update drops as well: $(cut -d' ' -f2 <<<"$others" | tr '\n' ' ')"
same "the other internal functions that disappear are gone (not kept with other rights)" \
	"$(while read -r _ f _; do [ -n "$f" ] && grep -F "fn $f " "$WORK/grants_after"; done <<<"$others")" ""
if changed=$(grep -vxFf "$WORK/grants_after" "$WORK/grants_before" | grep -vE "$dropped" | grep -vE "$internal"); then
	not_ok "after the update: every grant on a $OLD object is as it was"
	sed 's/^/#   was: /' <<<"$changed" | head -10
	grep -F -f <(cut -d' ' -f1,2 <<<"$changed" | sed 's/$/ /') "$WORK/grants_after" | head -10 | sed 's/^/#   now: /'
else
	ok "after the update: every grant on a $OLD object is as it was"
fi

session "INSERT INTO credits.send_batches (account_id, messages) VALUES (9, 1);"
same "the session open across the update: a refused batch now gets MC001" "$session_out" "ERROR:  MC001"
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 10);"
same "the session open across the update: a batch that grows a pending recharge works" \
	"$session_out|$(q upg "SELECT credits || '/' || status FROM credits.recharges WHERE account_id = 2")" "|50/pending"
same "the session open across the update: that batch owes its 10 credits (one debit row without a grant)" \
	"$(q upg "SELECT b.owed || '|' || string_agg(coalesce(l.grant_id::text, '-') || ':' || l.delta, ',') FROM credits.send_batches b JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	          WHERE b.batch_id = (SELECT max(batch_id) FROM credits.send_batches WHERE account_id = 2) GROUP BY b.owed")" "10|-:-10"
b1=$(q upg "SELECT balance FROM credits.accounts WHERE account_id = 1")
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5);"
same "the session open across the update: a batch of a funded account draws its carried-over grant" \
	"$session_out|$(q upg "SELECT string_agg(g.source || ':' || l.delta || ':' || g.remaining || '/' || g.credits, ',') FROM credits.ledger l JOIN credits.grants g USING (grant_id)
	          WHERE l.batch_id = (SELECT max(batch_id) FROM credits.send_batches WHERE account_id = 1) AND l.kind = 'debit'")|$(q upg "SELECT count(*) FROM credits.verify()")" \
	"|purchase:-5:$((b1 - 5))/$b1|0"
session_close

# The session that runs the update sees the new codes at once.
"$PG_BIN/createdb" same_session
out=$("$PG_BIN/psql" -X -q -At -d same_session 2>&1 <<SQL
CREATE EXTENSION credits VERSION '$OLD';
SELECT 'account ' || (credits.open_account(1, 0)).account_id;
\set VERBOSITY sqlstate
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5);
SELECT credits.add_credits(2, 1);
ALTER EXTENSION credits UPDATE;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5);
SELECT credits.add_credits(2, 1);
SQL
)
out=$(grep -v '^NOTICE' <<<"$out")
same "the session that runs the update: CR001 and CR003 before it, MC001 and MC003 right after it" \
	"$(tr '\n' ' ' <<<"$out")" "account 1 ERROR:  CR001 ERROR:  CR003 ERROR:  MC001 ERROR:  MC003 "

# An update rolled back: the session goes on with 0.1.0 (its caches must
# follow the catalog back); an update between two debits of one transaction.
"$PG_BIN/createdb" rolled_back
out=$("$PG_BIN/psql" -X -q -At -d rolled_back 2>&1 <<SQL
CREATE EXTENSION credits VERSION '$OLD';
SELECT 'account ' || (credits.open_account(1, 100)).account_id;
SELECT 'policy ' || (credits.enable_auto_recharge(1, 0, 1000)).enabled;
\set VERBOSITY sqlstate
INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 5);
BEGIN;
ALTER EXTENSION credits UPDATE;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 150);
SELECT 'claimed ' || count(*) FROM credits.claim_recharges(10) WHERE claim_token IS NOT NULL;
INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 5);
ROLLBACK;
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'credits';
INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 5);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 150);
SELECT 'claimed ' || count(*) FROM credits.claim_recharges(10);
SELECT 'completed ' || (credits.complete_recharge(max(recharge_id), 'psp-1')).status FROM credits.recharges;
SELECT 'problems ' || count(*) FROM credits.verify();
BEGIN;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 10);
ALTER EXTENSION credits UPDATE;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 10), (1, 20);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 150);
COMMIT;
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'credits';
SELECT 'batches ' || string_agg(cost || ':' || status, ',' ORDER BY batch_id) FROM credits.send_batches;
SELECT 'problems ' || count(*) FROM credits.verify();
SQL
)
same "an update rolled back: the same session goes on at $OLD (CR codes, debits, claims, verify) and a later update in a transaction between debits works" \
	"$(grep -v '^NOTICE' <<<"$out" | tr '\n' ' ')" \
	"account 1 policy true ERROR:  CR003 claimed 1 ERROR:  MC003 version $OLD ERROR:  CR003 claimed 1 completed succeeded problems 0 version $NEW batches 150:ready,10:awaiting_credits,10:awaiting_credits,20:awaiting_credits,150:awaiting_credits problems 0 "

say "2b. the roles keep the rights they had"
before=$(q upg "SELECT balance || '/' || (SELECT count(*) FROM credits.ledger WHERE account_id = 1) FROM credits.accounts WHERE account_id = 1")
same "application: INSERT of a batch (cost/status, balance/ledger rows of account 1: $before)" \
	"$(q upg "$APP INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1, 3, 'sms') RETURNING cost || '/' || status")/$(q upg "SELECT balance || '/' || (SELECT count(*) FROM credits.ledger WHERE account_id = 1) FROM credits.accounts WHERE account_id = 1")" \
	"21/ready/$((${before%/*} - 21))/$((${before#*/} + 1))"
same "application: COPY of a batch" "$(code upg "$APP COPY credits.send_batches (account_id, messages, idempotency_key) FROM STDIN" $'1\t2\tafter-update\n')" ok
same "application: an idempotent resend of a $OLD key inserts and debits nothing" \
	"$(q upg "$APP INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1, 20, 'k-1')
	          ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING batch_id")|$(q upg "SELECT count(*) FROM credits.ledger WHERE account_id = 1")" \
	"|$((${before#*/} + 2))"
same "application: reads accounts, prices and recharges" \
	"$(q upg "$APP SELECT count(*) > 0 FROM credits.accounts, credits.prices, credits.recharges")" t
fails_with "application: still cannot name cost" upg 42501 \
	"$APP INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1, 1, 1, 'ready')"
same "payment worker: complete_recharge(bigint, text) settles the recharge claimed under $OLD" \
	"$(q upg "$WORKER SELECT (credits.complete_recharge($r_processing, 'psp-4')).status")|$(q upg "SELECT string_agg(status, ',') FROM credits.send_batches WHERE account_id = 4")" \
	"succeeded|ready"
same "payment worker: claim_recharges(integer) claims the recharges pending since $OLD" \
	"$(q upg "$WORKER SELECT string_agg(account_id::text, ',' ORDER BY recharge_id) FROM credits.claim_recharges(10)")" "2,3,10,15,16"
same "payment worker: complete_recharge(bigint, text) without a token, twice (idempotent)" \
	"$(q upg "$WORKER SELECT (credits.complete_recharge(recharge_id, 'psp-2')).status FROM credits.recharges WHERE account_id = 2;
	          SELECT (credits.complete_recharge(recharge_id, 'psp-2')).status FROM credits.recharges WHERE account_id = 2")" \
	$'succeeded\nsucceeded'
same "payment worker: fail_recharge(bigint, text) without a token refunds the batch" \
	"$(q upg "$WORKER SELECT (credits.fail_recharge(recharge_id, 'card declined')).status FROM credits.recharges WHERE account_id = 10")|$(q upg "SELECT string_agg(status, ',') FROM credits.send_batches WHERE account_id = 10")" \
	"failed|failed"
same "payment worker: completes the top-up of account 3; both its batches are ready" \
	"$(q upg "$WORKER SELECT (credits.complete_recharge(recharge_id, 'psp-3')).status FROM credits.recharges WHERE account_id = 3")|$(q upg "SELECT string_agg(status, ',') FROM credits.send_batches WHERE account_id = 3")" \
	"succeeded|ready,ready"
# What settling the batches of 0.1.0 did to grants and debts (doc/grants.md:
# credits that arrive repay what is owed; a refund cancels the owed part and
# puts the part that was paid for into a new purchase grant).
fails_with "payment worker: fail_recharge(bigint, text) without a token, account 15" upg ok \
	"$WORKER SELECT credits.fail_recharge(recharge_id, 'card declined') FROM credits.recharges WHERE account_id = 15"
fails_with "payment worker: fail_recharge(bigint, text) without a token, account 16" upg ok \
	"$WORKER SELECT credits.fail_recharge(recharge_id, 'card declined') FROM credits.recharges WHERE account_id = 16"
same "settled after the update: balance/remaining/owed of 2 and 4 (repaid by their recharges), 10 (refunded: debt cancelled), 15 and 16 (refunded)" \
	"$(balances upg "2, 4, 10, 15, 16")" "2:0/0/0 4:0/0/0 10:0/0/0 15:60/60/0 16:250/250/0"
same "account 3's top-up repaid both batches' debt (270) and the rest (930) is a recharge grant" \
	"$(balances upg 3)|$(q upg "SELECT string_agg(source || ' ' || remaining || '/' || credits, ', ' ORDER BY grant_id) FROM credits.grants WHERE account_id = 3")" \
	"3:930/930/0|recharge 930/1200"
same "a refund of a $OLD batch partly owed (account 15: 40 owed of 100): one refund row without a grant (the 40 owed forgiven, the 60 paid for back), the 60 a new purchase grant carried over like a 0.1 balance" \
	"$(q upg "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY g.source NULLS FIRST)
	          FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id) WHERE l.account_id = 15 AND l.kind = 'refund'")|$(q upg "SELECT string_agg(format('%s %s/%s carried %s', source, remaining, credits, coalesce(carried_over, 0)), ', ' ORDER BY grant_id)
	          FROM credits.grants WHERE account_id = 15")" \
	"-:100|purchase 60/60 carried 60"
same "a refund of a $OLD batch that owed nothing (account 16): one refund row without a grant, all 100 a new purchase grant carried over beside the first one" \
	"$(q upg "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',') FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	          WHERE l.account_id = 16 AND l.kind = 'refund'")|$(q upg "SELECT string_agg(format('%s %s/%s carried %s', source, remaining, credits, coalesce(carried_over, 0)), ', ' ORDER BY grant_id)
	          FROM credits.grants WHERE account_id = 16")" \
	"-:100|purchase 150/150 carried 150, purchase 100/100 carried 100"
same "the refunded batches of 10, 15 and 16 were paid for by nothing in the end (batch_funding nets to 0 per grant)" \
	"$(q upg "SELECT count(*) FROM credits.send_batches b, credits.batch_funding(b.batch_id) f
	          WHERE b.account_id IN (10, 15, 16) AND b.status = 'failed' AND f.credits <> 0")|$(q upg "SELECT string_agg(status, ',') FROM credits.send_batches WHERE account_id IN (10, 15, 16)")" \
	"0|failed,failed,failed"
same "reporting: reads the four report views" \
	"$(q upg "$REPORTING SELECT (SELECT count(*) FROM credits.account_overview) > 0, (SELECT count(*) FROM credits.recharge_history) > 0,
	          (SELECT count(*) FROM credits.usage_daily) > 0, (SELECT count(*) FROM credits.usage_monthly) > 0")" "t|t|t|t"
same "reporting: account_overview shows the states of $OLD" \
	"$(q upg "$REPORTING SELECT string_agg(account_id || ':' || auto_recharge, ',' ORDER BY account_id) FROM credits.account_overview WHERE account_id IN (1, 6, 7)")" \
	"1:never set,6:off (payment_failed),7:off (disabled_by_user)"
fails_with "reporting: still cannot read the tables" upg 42501 "$REPORTING SELECT count(*) FROM credits.accounts"
same "policy admin: add_credits, enable_auto_recharge, expire_recharges and verify" \
	"$(q upg "$ADMIN SELECT credits.add_credits(9, 100); SELECT (credits.enable_auto_recharge(9, 0, 500)).enabled;
	          SELECT credits.expire_recharges(); SELECT count(*) FROM credits.verify()" | tr '\n' ' ')" "100 t 0 0 "
same "nothing in schema credits is open to PUBLIC after the update (functions, tables, views, sequences)" \
	"$(q upg "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
	          WHERE p.pronamespace = 'credits'::regnamespace AND has_function_privilege('regress_upg_nobody', p.oid, 'EXECUTE')")|$(q upg "SELECT string_agg(c.relname, ', ') FROM pg_class c
	          WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v', 'S')
	            AND (has_table_privilege('regress_upg_nobody', c.oid, 'SELECT') OR has_table_privilege('regress_upg_nobody', c.oid, 'INSERT')
	                 OR has_table_privilege('regress_upg_nobody', c.oid, 'UPDATE') OR has_table_privilege('regress_upg_nobody', c.oid, 'DELETE'))")" "|"
same "after the update and the roles' work: verify() returns no rows" "$(q upg "SELECT * FROM credits.verify()")" ""

################################################################################
say "2c. ALTER EXTENSION credits UPDATE of the $MID database"
tables upg11 "$WORK/tables11"
snapshot upg11 "$WORK/tables11" "$WORK/before11"
ledger_before upg11 "$WORK/ledger_before_upg11"
grants upg11 "$WORK/grants11_before"
"$PG_BIN/pg_dump" -Fc -d upg11 -f "$WORK/mid.dump" || not_ok "pg_dump of the $MID database"
out=$(pg -d upg11 -c "ALTER EXTENSION credits UPDATE" 2>&1)
same "$MID: ALTER EXTENSION credits UPDATE runs without an error or a notice" "$out" ""
same "$MID: extversion is credits.control's default_version" \
	"$(q upg11 "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$NEW"
snapshot upg11 "$WORK/tables11" "$WORK/after11"
for t in $(cut -d'|' -f1 "$WORK/tables11") sequences; do
	same_files "$MID, after the update: credits.$t unchanged ($(wc -l <"$WORK/before11/$t") rows, the columns of $MID)" \
		"$WORK/before11/$t" "$WORK/after11/$t"
done
grants upg11 "$WORK/grants11_after"
same "$MID, after the update: every grant on a $MID object is as it was (internal functions aside)" \
	"$(grep -vxFf "$WORK/grants11_after" "$WORK/grants11_before" | grep -vE "$internal")" ""
update_checks upg11 "$MID" "$WORK/tables11"
entry_checks upg11 "$MID" "$WORK/ledger_before_upg11"

q upg11 "UPDATE credits.recharges SET created_at = created_at - interval '2 hours' WHERE account_id = 17" >/dev/null
same "$MID, updated: expire_recharges cancels 17's recharge, disable_auto_recharge 18's; the owed parts cancel the debts, the parts paid for before the update become purchase grants" \
	"$(q upg11 "SELECT credits.expire_recharges()")|$(q upg11 "SELECT (credits.disable_auto_recharge(18)).enabled")|$(balances upg11 "17, 18")|$(q upg11 "SELECT string_agg(format('%s:%s %s/%s', account_id, source, remaining, credits), ', ' ORDER BY grant_id) FROM credits.grants WHERE account_id IN (17, 18)")|$(q upg11 "SELECT string_agg(status || ':' || owed, ',' ORDER BY batch_id) FROM credits.send_batches WHERE account_id IN (17, 18)")" \
	"1|f|17:30/30/0 18:80/80/0|17:purchase 30/30, 18:purchase 80/80|failed:0,failed:0"
# Settling the recharges of $MID: claimed before the update with a token (3,
# 4, the first of 15), or claimed now (2, 8 released, 9 with an expired lease,
# 10, 14, the second of 15).
same "$MID, updated: claim_recharges takes the pending, the released and the expired-lease recharges (account:claim_count)" \
	"$(q upg11 "SELECT string_agg(account_id || ':' || claim_count, ',' ORDER BY recharge_id) FROM credits.claim_recharges(20)")" \
	"8:2,9:2,15:1,2:1,10:1,14:1,16:1"
settle() {	# settle complete|fail ACCOUNT [first|last]: with the current token
	local pick=max; [ "${3:-last}" = first ] && pick=min
	if [ "$1" = complete ]; then
		q upg11 "SELECT (credits.complete_recharge(recharge_id, 'psp11-' || recharge_id, claim_token)).status FROM credits.recharges
		         WHERE recharge_id = (SELECT $pick(recharge_id) FROM credits.recharges WHERE account_id = $2)"
	else
		q upg11 "SELECT (credits.fail_recharge(recharge_id, 'declined', claim_token)).status FROM credits.recharges
		         WHERE recharge_id = (SELECT $pick(recharge_id) FROM credits.recharges WHERE account_id = $2)"
	fi
}
same "$MID, updated: settled with their tokens: complete 2, 4, 8, 9, 10 and 15's first; fail 3, 14 and 15's second" \
	"$(settle complete 2) $(settle complete 4) $(settle complete 8) $(settle complete 9) $(settle complete 10) $(settle complete 15 first) $(settle fail 3) $(settle fail 14) $(settle fail 15)" \
	"succeeded succeeded succeeded succeeded succeeded succeeded failed failed failed"
same "$MID, updated: balance/remaining/owed after the settlements" \
	"$(balances upg11 "2, 3, 4, 8, 9, 10, 14, 15")" \
	"2:0/0/0 3:100/100/0 4:0/0/0 8:0/0/0 9:0/0/0 10:1000/1000/0 14:250/250/0 15:0/0/0"
same "$MID, updated: the batches: 3's two failed, 4's ready, 14's failed, 15's first ready and second failed" \
	"$(q upg11 "SELECT string_agg(account_id || ':' || messages || ':' || status || ':' || owed, ' ' ORDER BY batch_id) FROM credits.send_batches WHERE account_id IN (3, 4, 14, 15)")" \
	"3:150:failed:0 3:30:failed:0 4:250:ready:0 15:80:ready:0 15:50:failed:0 14:100:failed:0"
same "$MID, updated: the grants: 3 a purchase of the 100 its refund paid back, 4 and 15 recharges spent on their debts, 10 carried-over and its top-up, 14 carried-over and the refund" \
	"$(q upg11 "SELECT string_agg(format('%s:%s %s/%s%s', account_id, source, remaining, credits, CASE WHEN closed_at IS NOT NULL THEN ' closed' ELSE '' END), ', ' ORDER BY account_id, grant_id)
	            FROM credits.grants WHERE account_id IN (3, 4, 10, 14, 15)")" \
	"3:purchase 100/100, 4:recharge 0/150 closed, 10:purchase 300/300, 10:recharge 700/700, 14:purchase 150/150, 14:purchase 100/100, 15:recharge 0/80 closed"
same "$MID, updated: 15's first recharge repaid its oldest batch (the 80 it owed), a pair of repay rows naming that batch" \
	"$(q upg11 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta || ':' || b.messages, ',' ORDER BY l.delta)
	            FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id) JOIN credits.send_batches b USING (batch_id)
	           WHERE l.account_id = 15 AND l.kind = 'repay'")" "recharge:-80:80,-:80:80"
same "$MID, updated: the refunds of 3's batches total their costs" \
	"$(q upg11 "SELECT string_agg(b.cost || ':' || (SELECT sum(delta) FROM credits.ledger l WHERE l.batch_id = b.batch_id AND l.kind = 'refund'), ',' ORDER BY batch_id)
	            FROM credits.send_batches b WHERE account_id = 3")" "150:150,30:30"
same "$MID, updated: credits that arrive for an account that owes (16: 40) repay its batch first" \
	"$(q upg11 "SELECT credits.add_credits(16, 100)")|$(balances upg11 16)|$(q upg11 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY l.entry_id)
	            FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id) WHERE l.account_id = 16 AND l.kind = 'repay'")" \
	"60|16:60/60/0|purchase:-40,-:40"
same "$MID, updated: then its recharge fails: the 40 repaid go back to the grant that repaid them, the 60 paid for before the update into a new purchase grant (carried over: its refund row names no grant)" \
	"$(settle fail 16)|$(balances upg11 16)|$(q upg11 "SELECT string_agg(g.grant_id - (SELECT min(grant_id) FROM credits.grants WHERE account_id = 16) || ':' || l.delta, ',' ORDER BY g.grant_id)
	            FROM credits.ledger l JOIN credits.grants g USING (grant_id) WHERE l.account_id = 16 AND l.kind = 'refund'")|$(q upg11 "SELECT string_agg(format('%s %s/%s', source, remaining, credits), ', ' ORDER BY grant_id) FROM credits.grants WHERE account_id = 16")" \
	"failed|16:160/160/0|0:40|purchase 100/100, purchase 60/60"
q upg11 "SELECT credits.grant_credits(7, 50, 'promo')" >/dev/null
same "$MID, updated: a debit on a carried-over balance draws a new promo first (priority 30), then the carried-over purchase grant (50)" \
	"$(q upg11 "INSERT INTO credits.send_batches (account_id, messages) VALUES (7, 60) RETURNING cost || '/' || status")|$(q upg11 "SELECT string_agg(g.source || ':' || l.delta, ',' ORDER BY l.entry_id)
	            FROM credits.ledger l JOIN credits.grants g USING (grant_id) WHERE l.account_id = 7 AND l.kind = 'debit'")|$(balances upg11 7)" \
	"60/ready|promo:-50,purchase:-10|7:190/190/0"
fails_with "$MID, updated: a batch above the balance, auto-recharge off" upg11 MC001 \
	"INSERT INTO credits.send_batches (account_id, messages) VALUES (11, 1)"
same "$MID, updated: verify() returns no rows after the settlements" "$(q upg11 "SELECT * FROM credits.verify()")" ""

################################################################################
say "2d. ALTER EXTENSION credits UPDATE of the $PREV database"
# Every row of every table (the ledger through credits.ledger, before and
# after), the sequences and the grants, before and after; then the roles,
# a session open across the update, new debits, and the settlement of the
# batches debited before it.
session_open upg20
session "SET ROLE regress_upg_app;"
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 2);"
session "SET ROLE regress_upg_admin; SELECT credits.disable_auto_recharge(14); SET ROLE regress_upg_app;"
same "$PREV: a session open before the update debits a batch, refunds one of three debit rows (14)" \
	"$session_out|$(q upg20 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	          WHERE l.account_id = 14 AND l.kind = 'refund'")" "|-:20,signup:50,promo:30"
tables upg20 "$WORK/tables20"
grep -v '^ledger|' "$WORK/tables20" >"$WORK/tables20_noledger"
snapshot upg20 "$WORK/tables20_noledger" "$WORK/before20"
q upg20 "SELECT last_value, is_called FROM credits.grants_grant_id_seq" >>"$WORK/before20/sequences"
ledger_before upg20 "$WORK/ledger_before_upg20"
grants upg20 "$WORK/grants20_before"
"$PG_BIN/pg_dump" -Fc -d upg20 -f "$WORK/prev.dump" || not_ok "pg_dump of the $PREV database"
out=$(pg -d upg20 -c "ALTER EXTENSION credits UPDATE" 2>&1)
same "$PREV: ALTER EXTENSION credits UPDATE runs without an error or a notice" "$out" ""
same "$PREV: extversion is credits.control's default_version" \
	"$(q upg20 "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$NEW"
snapshot upg20 "$WORK/tables20_noledger" "$WORK/after20"
q upg20 "SELECT last_value, is_called FROM credits.grants_grant_id_seq" >>"$WORK/after20/sequences"
for t in $(cut -d'|' -f1 "$WORK/tables20_noledger") sequences; do
	same_files "$PREV, after the update: credits.$t unchanged ($(wc -l <"$WORK/before20/$t") rows, the columns of $PREV)" \
		"$WORK/before20/$t" "$WORK/after20/$t"
done
entry_checks upg20 "$PREV" "$WORK/ledger_before_upg20"
same "$PREV, updated: the batches whose created_at the table owner set keep the created_at of their debit rows (written at the debit)" \
	"$(q upg20 "SELECT string_agg(b.created_at::date || ':' || (l.created_at > now() - interval '1 hour'), ',' ORDER BY l.entry_id)
	            FROM credits.send_batches b JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit' WHERE b.account_id = 10")" \
	"2026-01-15:true,2026-01-15:true,2026-01-16:true"
same "$PREV, updated: the repointed batch: its debit row in ledger_entries still names the recharge it was debited on, its entry columns null" \
	"$(q upg20 "SELECT string_agg(format('%s now %s, debited on %s, entry %s', b.status, b.recharge_id - r.first, e.recharge_id - r.first, coalesce(b.entry_recharge_id::text, 'null')), ',')
	            FROM credits.send_batches b JOIN credits.ledger_entries e ON e.batch_id = b.batch_id AND e.kind = 'debit',
	                 (SELECT min(recharge_id) AS first FROM credits.recharges WHERE account_id = 11) r
	           WHERE b.recharge_id IS DISTINCT FROM e.recharge_id")" "awaiting_credits now 0, debited on 1, entry null"
same "$PREV, updated: 3's batch of three debit rows: all three in ledger_entries, the batch row's entry null" \
	"$(q upg20 "SELECT coalesce(b.entry_id::text, 'null') || '|' ||
	                   (SELECT string_agg(coalesce(g.source, '-') || ':' || e.delta, ',' ORDER BY e.entry_id) FROM credits.ledger_entries e
	                      LEFT JOIN credits.grants g USING (grant_id) WHERE e.batch_id = b.batch_id AND e.kind = 'debit')
	              FROM credits.send_batches b WHERE b.account_id = 3")" "null|signup:-50,promo:-30,-:-20"
same "$PREV, updated: verify() returns no rows" "$(q upg20 "SELECT * FROM credits.verify()")" ""
grants upg20 "$WORK/grants20_after"
same "$PREV, updated: every grant on a $PREV object is as it was (credits.ledger, now the view, included)" \
	"$(grep -vxFf "$WORK/grants20_after" "$WORK/grants20_before")" ""
same "$PREV, updated: the SELECT on the ledger is the reporting role's on the view (copied), not PUBLIC's; pg_init_privs records the view as a fresh install does (owner only), so pg_dump keeps the grant" \
	"$(q upg20 "SELECT has_table_privilege('regress_upg_reporting', 'credits.ledger', 'SELECT'), has_table_privilege('regress_upg_nobody', 'credits.ledger', 'SELECT'),
	            (SELECT initprivs = acldefault('r', c.relowner) FROM pg_init_privs, pg_class c WHERE objoid = c.oid AND c.oid = 'credits.ledger'::regclass AND classoid = 'pg_class'::regclass AND objsubid = 0)
	            FROM pg_class WHERE oid = 'credits.ledger'::regclass")" "t|f|t"
note "$PREV, updated: credits.ledger ACL $(q upg20 "SELECT relacl FROM pg_class WHERE oid = 'credits.ledger'::regclass"), credits.ledger_entries ACL $(q upg20 "SELECT relacl FROM pg_class WHERE oid = 'credits.ledger_entries'::regclass")"

# The session connected before the update.
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 3);"
same "$PREV: the session open across the update debits a batch: its entry on the batch row, no debit row in ledger_entries" \
	"$session_out|$(q upg20 "SELECT b.cost || ':' || b.entry_delta || ':' || (b.entry_balance_after = a.balance) || ':' || (SELECT source FROM credits.grants WHERE grant_id = b.entry_grant_id) || ':' ||
	                          (SELECT count(*) FROM credits.ledger_entries e WHERE e.batch_id = b.batch_id)
	                     FROM credits.send_batches b JOIN credits.accounts a USING (account_id) WHERE b.batch_id = (SELECT max(batch_id) FROM credits.send_batches)")" \
	"|3:-3:true:signup:0"
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (12, 1);"
same "$PREV: the session open across the update: a refused batch gets MC001" "$session_out" "ERROR:  MC001"
session "SET ROLE regress_upg_admin; SELECT credits.disable_auto_recharge(15); SET ROLE regress_upg_app;"
same "$PREV: the session open across the update refunds a batch debited before it (15: its first debit now on the batch row): the same refund rows as 14's" \
	"$session_out|$(q upg20 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	          WHERE l.account_id = 15 AND l.kind = 'refund'")|$(balances upg20 "14, 15")|$(q upg20 "SELECT count(*) FROM credits.verify()")" \
	"|-:20,signup:50,promo:30|14:80/80/0 15:80/80/0|0"
session_close

say "2e. the roles in the updated $PREV database, new debits, and the settlement of batches debited before the update"
b_before=$(q upg20 "SELECT balance FROM credits.accounts WHERE account_id = 1")
same "application: a single-row INSERT (cost/status), its debit entry on the batch row (delta, balance after, grant), nothing in ledger_entries" \
	"$(q upg20 "$APP INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1, 3, 'sms') RETURNING cost || '/' || status")|$(q upg20 "SELECT b.entry_delta || '/' || b.entry_balance_after || '/' || g.source || '/' ||
	          (SELECT count(*) FROM credits.ledger_entries e WHERE e.batch_id = b.batch_id) FROM credits.send_batches b JOIN credits.grants g ON g.grant_id = b.entry_grant_id
	          WHERE b.batch_id = (SELECT max(batch_id) FROM credits.send_batches)")" \
	"21/ready|-21/$((b_before - 21))/signup/0"
n_before=$(q upg20 "SELECT count(*) FROM credits.send_batches")
m_before=$(q upg20 "SELECT max(batch_id) FROM credits.send_batches")
out=$(q upg20 "$APP INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
               VALUES (1, 4, 'push', 'after-1'), (100, 5, 'email', 'after-2');
               INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
               SELECT 100 + g % 50, 1 + g % 5, 'after-bulk-' || g FROM generate_series(1, 500) g")
same "application: multi-row and INSERT ... SELECT" "$out" ""
same "application: COPY" "$(code upg20 "$APP COPY credits.send_batches (account_id, messages, idempotency_key) FROM STDIN" $'1\t2\tafter-copy\n101\t3\t\\N\n')" ok
same "application: an idempotent resend of $PREV keys (one row, 100 bulk rows) inserts and debits nothing" \
	"$(q upg20 "$APP INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1, 20, 'k-1')
	          ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING batch_id")|$(q upg20 "$APP INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
	          SELECT 100 + g % 50, 1 + g % 7, 'email', 'bulk-' || g FROM generate_series(1, 100) g ON CONFLICT (account_id, idempotency_key) DO NOTHING")|$(q upg20 "SELECT count(*) FROM credits.send_batches")" \
	"||$((n_before + 504))"
same "the new batches: each carries one debit entry of -cost, none has a debit row in ledger_entries (single-grant debits)" \
	"$(q upg20 "SELECT count(*) || ' ' || count(*) FILTER (WHERE b.entry_delta = -b.cost AND b.entry_grant_id IS NOT NULL
	                    AND NOT EXISTS (SELECT FROM credits.ledger_entries e WHERE e.batch_id = b.batch_id))
	            FROM credits.send_batches b WHERE b.batch_id > $m_before")" "504 504"
out=$(q upg20 "SELECT credits.open_account(16, 50); SELECT credits.grant_credits(16, 50, 'promo') > 0;
               LOAD 'credits'; SET credits.direct_writes = off;
               INSERT INTO credits.send_batches (account_id, messages) VALUES (16, 80);
               INSERT INTO credits.send_batches (account_id, messages) VALUES (16, 5), (16, 6)" 2>&1)
same "credits.direct_writes = off (the SQL path): a debit of two grants and a multi-row insert, entries as on the direct path" \
	"$(tail -1 <<<"$out")|$(q upg20 "SELECT string_agg(b.cost || ':' || (SELECT string_agg(coalesce(g.source, '-') || l.delta || ':' || (l.entry_id = b.entry_id), ',' ORDER BY l.entry_id)
	                                      FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id) WHERE l.batch_id = b.batch_id), ' ' ORDER BY b.batch_id)
	          FROM credits.send_batches b WHERE b.account_id = 16")|$(balances upg20 16)|$(q upg20 "SELECT count(*) FROM credits.verify()")" \
	"t|80:signup-50:true,promo-30:false 5:promo-5:true 6:promo-6:true|16:9/9/0|0"
same "the table owner's batch with a created_at of its own, after the update: its debit entry (the batch row) has that created_at" \
	"$(q upg20 "INSERT INTO credits.send_batches (account_id, messages, created_at) VALUES (1, 4, '2026-02-01 12:00:00+00') RETURNING cost")|$(q upg20 "SELECT l.created_at = b.created_at FROM credits.ledger l JOIN credits.send_batches b USING (batch_id)
	          WHERE l.kind = 'debit' AND b.batch_id = (SELECT max(batch_id) FROM credits.send_batches)")" "4|t"
q upg20 "SELECT credits.open_account(17, 10), credits.grant_credits(17, 10, 'promo')" >/dev/null
q upg20 "INSERT INTO credits.send_batches (account_id, messages, created_at) VALUES (17, 15, '2026-02-01 12:00:00+00')" >/dev/null
note "a batch of two grants with the table owner's created_at, after the update: its debit rows' created_at $(q upg20 "SELECT string_agg(CASE WHEN l.created_at = b.created_at THEN 'the batch''s' ELSE 'now' END || ' (' || CASE WHEN EXISTS (SELECT FROM credits.send_batches s WHERE s.entry_id = l.entry_id) THEN 'batch row' ELSE 'ledger_entries' END || ')', ', ' ORDER BY l.entry_id)
	FROM credits.ledger l JOIN credits.send_batches b USING (batch_id) WHERE l.kind = 'debit' AND b.account_id = 17")"
fails_with "application: cannot name entry_id (column grants)" upg20 42501 \
	"$APP INSERT INTO credits.send_batches (account_id, messages, entry_id) VALUES (1, 1, 1)"
fails_with "the table owner setting entry_id" upg20 MC007 \
	"INSERT INTO credits.send_batches (account_id, messages, entry_id) VALUES (1, 1, 999999)"
fails_with "the table owner setting entry_delta" upg20 MC007 \
	"INSERT INTO credits.send_batches (account_id, messages, entry_delta) VALUES (1, 1, -1)"
fails_with "the table owner setting entry_grant_id" upg20 MC007 \
	"INSERT INTO credits.send_batches (account_id, messages, entry_grant_id) VALUES (1, 1, 1)"
fails_with "the table owner setting entry_recharge_id" upg20 MC007 \
	"INSERT INTO credits.send_batches (account_id, messages, entry_recharge_id) VALUES (1, 1, 1)"
fails_with "guard: UPDATE of a batch's entry" upg20 MC008 "UPDATE credits.send_batches SET entry_delta = 0 WHERE account_id = 1"
fails_with "guard: DELETE from ledger_entries" upg20 MC009 "DELETE FROM credits.ledger_entries WHERE account_id = 1"
fails_with "guard: DELETE from the ledger view" upg20 MC009 "DELETE FROM credits.ledger WHERE account_id = 1"
fails_with "guard: UPDATE of the ledger view" upg20 MC009 "UPDATE credits.ledger SET delta = 0 WHERE account_id = 1"
fails_with "guard: INSERT into the ledger view by a role that may not restore (INSERT granted)" upg20 MC009 \
	"GRANT INSERT ON credits.ledger TO regress_upg_admin; $ADMIN INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (1, 0, 0, 'open')"
q upg20 "$ADMIN SELECT credits.grant_credits(2, 50, 'promo')" >/dev/null
same "a debit of two grants after the update (2: signup 100, then a new promo): the first on the batch row, the second a debit row in ledger_entries" \
	"$(q upg20 "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 120) RETURNING cost")|$(q upg20 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta || ':' || EXISTS (SELECT FROM credits.send_batches s WHERE s.entry_id = l.entry_id), ',' ORDER BY l.entry_id)
	          FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id) WHERE l.batch_id = (SELECT max(batch_id) FROM credits.send_batches WHERE account_id = 2)")|$(balances upg20 2)" \
	"120|signup:-100:true,promo:-20:false|2:30/30/0"
same "a debit past zero after the update (6: nothing left, a recharge in flight): the batch row's entry names no grant, it owes its cost" \
	"$(q upg20 "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (6, 10) RETURNING status || ':' || owed || ':' || coalesce(entry_grant_id::text, '-') || ':' || entry_delta || ':' || (entry_recharge_id = recharge_id)")|$(balances upg20 6)" \
	"awaiting_credits:10:-:-10:true|6:-70/0/70"
# Settling the recharges of $PREV with the tokens of claims made before the update.
settle20() {	# settle20 complete|fail ACCOUNT [first|last]
	local pick=max; [ "${3:-last}" = first ] && pick=min
	if [ "$1" = complete ]; then
		q upg20 "$WORKER SELECT (credits.complete_recharge(recharge_id, 'psp20-' || recharge_id, claim_token)).status FROM credits.recharges
		         WHERE recharge_id = (SELECT $pick(recharge_id) FROM credits.recharges WHERE account_id = $2 AND status IN ('pending', 'processing'))"
	else
		q upg20 "$WORKER SELECT (credits.fail_recharge(recharge_id, 'declined', claim_token)).status FROM credits.recharges
		         WHERE recharge_id = (SELECT $pick(recharge_id) FROM credits.recharges WHERE account_id = $2 AND status IN ('pending', 'processing'))"
	fi
}
same "policy admin: disable_auto_recharge(13) cancels its recharge: the batch of $PREV (promo, purchase, owed) refunded row by row (the owed part, then the grants in grant order, as $PREV writes them)" \
	"$(q upg20 "$ADMIN SELECT (credits.disable_auto_recharge(13)).enabled")|$(q upg20 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	          WHERE l.account_id = 13 AND l.kind = 'refund'")|$(balances upg20 13)" \
	"f|-:20,purchase:50,promo:30|13:80/80/0"
q upg20 "$WORKER SELECT count(*) FROM credits.claim_recharges(20)" >/dev/null
same "payment worker: fail 3's recharge (claimed before the update): its batch of three debit rows (one on the batch row) refunded row by row" \
	"$(settle20 fail 3)|$(q upg20 "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	          WHERE l.account_id = 3 AND l.kind = 'refund'")|$(q upg20 "SELECT status || ':' || owed FROM credits.send_batches WHERE account_id = 3")|$(balances upg20 3)" \
	"failed|-:20,signup:50,promo:30|failed:0|3:80/80/0"
same "payment worker: complete 7's two recharges: its three batches ready, their debts repaid" \
	"$(settle20 complete 7 first) $(settle20 complete 7)|$(q upg20 "SELECT string_agg(status || ':' || owed, ',' ORDER BY batch_id) FROM credits.send_batches WHERE account_id = 7")|$(q upg20 "SELECT count(*) FROM credits.ledger WHERE account_id = 7 AND kind = 'repay'")|$(balances upg20 7)" \
	"succeeded succeeded|ready:0,ready:0,ready:0|6|7:0/0/0"
same "payment worker: complete 6's first recharge (claimed before the update): the batch of $PREV repaid; the new one awaits its own" \
	"$(settle20 complete 6 first)|$(q upg20 "SELECT string_agg(status || ':' || owed, ',' ORDER BY batch_id) FROM credits.send_batches WHERE account_id = 6")|$(balances upg20 6)" \
	"succeeded|ready:0,awaiting_credits:10|6:-10/0/10"
same "payment worker: complete 11's top-up: the repointed batch turns ready" \
	"$(settle20 complete 11)|$(q upg20 "SELECT string_agg(status || ':' || owed, ',' ORDER BY batch_id) FROM credits.send_batches WHERE account_id = 11")|$(balances upg20 11)" \
	"succeeded|ready:0,ready:0,ready:0|11:100/100/0"
same "reporting: reads credits.ledger (the grant copied from the table): the same rows as the table owner" \
	"$(q upg20 "$REPORTING SELECT count(*), sum(delta), max(entry_id) FROM credits.ledger")" "$(q upg20 "SELECT count(*), sum(delta), max(entry_id) FROM credits.ledger")"
b2=$(q upg20 "SELECT min(batch_id) FROM credits.send_batches WHERE account_id = 2")
same "reporting: the report views, balance_by_grant, batch_funding of a batch of $PREV drawn from two grants" \
	"$(q upg20 "$REPORTING SELECT (SELECT count(*) FROM credits.account_overview) > 0, (SELECT count(*) FROM credits.recharge_history) > 0,
	          (SELECT count(*) FROM credits.usage_daily) > 0, (SELECT count(*) FROM credits.balance_by_grant WHERE account_id = 4 AND refunded > 0)")|$(q upg20 "$REPORTING SELECT string_agg(source || ':' || abs(credits), ',' ORDER BY source)
	          FROM credits.batch_funding($b2)")" \
	"t|t|t|2|plan:1000,signup:200"
fails_with "reporting: still cannot read send_batches" upg20 42501 "$REPORTING SELECT count(*) FROM credits.send_batches"
note "reporting, COPY credits.ledger TO STDOUT (the table form, as \\copy credits.ledger does) after the update: $(code upg20 "$REPORTING COPY credits.ledger TO STDOUT") (a view: COPY (SELECT * FROM credits.ledger) TO works: $(code upg20 "$REPORTING COPY (SELECT * FROM credits.ledger) TO STDOUT"))"
same "policy admin: add_credits, enable_auto_recharge, expire_recharges and verify" \
	"$(q upg20 "$ADMIN SELECT credits.add_credits(12, 100); SELECT (credits.enable_auto_recharge(12, 0, 500)).enabled;
	          SELECT credits.expire_recharges(); SELECT count(*) FROM credits.verify()" | tr '\n' ' ')" "100 t 0 0 "
same "nothing in schema credits is open to PUBLIC after the update (functions, tables, views, sequences)" \
	"$(q upg20 "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
	          WHERE p.pronamespace = 'credits'::regnamespace AND has_function_privilege('regress_upg_nobody', p.oid, 'EXECUTE')")|$(q upg20 "SELECT string_agg(c.relname, ', ') FROM pg_class c
	          WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v', 'S')
	            AND (has_table_privilege('regress_upg_nobody', c.oid, 'SELECT') OR has_table_privilege('regress_upg_nobody', c.oid, 'INSERT')
	                 OR has_table_privilege('regress_upg_nobody', c.oid, 'UPDATE') OR has_table_privilege('regress_upg_nobody', c.oid, 'DELETE'))")" "|"
same "batch_funding of a batch debited after the update from two grants: its batch row's entry and its ledger_entries row" \
	"$(q upg20 "$REPORTING SELECT string_agg(source || ':' || abs(credits), ',' ORDER BY source) FROM credits.batch_funding($(q upg20 "SELECT max(batch_id) FROM credits.send_batches WHERE account_id = 2"))")" \
	"promo:20,signup:100"
# Grants of $PREV lapsing and a plan of $PREV renewing after the update.
same "expire_grants after the update (the clock 31 days on): the expiring promos of $PREV still open lapse (3's, refunded after the update; 4's, before it; 14's and 15's)" \
	"$(q upg20 "LOAD 'credits'; SET credits.clock_offset = $((31 * 86400)); SELECT credits.expire_grants(now() + interval '31 days' - interval '1 minute')")|$(q upg20 "SELECT string_agg(account_id || ':' || delta, ',' ORDER BY account_id) FROM credits.ledger WHERE kind = 'expire' AND account_id IN (3, 4, 14, 15)")|$(balances upg20 "3, 4, 14, 15")" \
	"4|3:-30,4:-30,14:-30,15:-30|3:50/50/0 4:50/50/0 14:50/50/0 15:50/50/0"
same "renew_plans after the update (the clock 45 days on): the plans of $PREV renew, 2's and 9's (9: an expire row, a plan row)" \
	"$(q upg20 "LOAD 'credits'; SET credits.clock_offset = $((45 * 86400)); SELECT credits.renew_plans(now() + interval '45 days' - interval '1 minute')")|$(q upg20 "SELECT string_agg(kind || ':' || delta, ',' ORDER BY entry_id) FROM credits.ledger WHERE account_id = 9 AND kind IN ('plan', 'expire')")|$(balances upg20 9)" \
	"2|plan:400,expire:-300,plan:400,expire:-400,plan:400|9:400/400/0"
same "$PREV, updated, after new debits and the settlements: verify() returns no rows" "$(q upg20 "SELECT * FROM credits.verify()")" ""

################################################################################
say "2f. what the update to $NEW refuses (MC029), changing nothing"
# A DBA's view or function that reads credits.ledger would follow the table
# to ledger_entries and silently lose the batches' debits: the update
# refuses while one exists, and so it does while a batch has no debit row.
"$PG_BIN/createdb" refuse20
pg -d refuse20 >"$WORK/refuse20.log" 2>&1 <<SQL || { not_ok "set-up of refuse20"; sed 's/^/#   /' "$WORK/refuse20.log" | head; }
CREATE EXTENSION credits VERSION '$PREV';
SELECT credits.open_account(1, 100), credits.enable_auto_recharge(1, 0, 1000);
SELECT credits.grant_credits(1, 20, 'promo');
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 30), (1, 150);
CREATE VIEW public.my_ledger AS SELECT * FROM credits.ledger;
CREATE MATERIALIZED VIEW public.my_sums AS SELECT account_id, sum(delta) AS total FROM credits.ledger GROUP BY account_id;
CREATE FUNCTION public.my_total(bigint) RETURNS bigint LANGUAGE sql STABLE
BEGIN ATOMIC SELECT sum(delta) FROM credits.ledger WHERE account_id = \$1; END;
-- a function whose body is text reads credits.ledger by name when it runs
CREATE FUNCTION public.my_debits(bigint) RETURNS bigint LANGUAGE sql STABLE
AS 'SELECT count(*) FROM credits.ledger WHERE account_id = \$1 AND kind = ''debit''';
SQL
table_dump refuse20 "$WORK/refuse_before"
fails_with "$PREV with a DBA's view and a BEGIN ATOMIC function reading credits.ledger: ALTER EXTENSION credits UPDATE is refused" \
	refuse20 MC029 "ALTER EXTENSION credits UPDATE"
out=$(pg -d refuse20 -c "ALTER EXTENSION credits UPDATE" 2>&1)
expect "the refusal names the view" "view public.my_ledger" "$out"
expect "the refusal names the function" "my_total" "$out"
expect "the refusal names the materialized view" "my_sums" "$out"
note "the refusal: $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
table_dump refuse20 "$WORK/refuse_after"
same "refused: still at $PREV, credits.ledger still a table, no ledger_entries, no entry columns" \
	"$(q refuse20 "SELECT extversion, (SELECT relkind FROM pg_class WHERE oid = 'credits.ledger'::regclass), to_regclass('credits.ledger_entries') IS NULL,
	               (SELECT count(*) FROM pg_attribute WHERE attrelid = 'credits.send_batches'::regclass AND attname LIKE 'entry\_%')
	          FROM pg_extension WHERE extname = 'credits'")" "$PREV|r|t|0"
same_files "refused: every row of every table as it was" "$WORK/refuse_before" "$WORK/refuse_after"
same "refused: the database goes on at $PREV (a debit, the DBA's view, verify)" \
	"$(q refuse20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5) RETURNING cost")|$(q refuse20 "SELECT count(*) FROM public.my_ledger WHERE kind = 'debit'")|$(q refuse20 "SELECT count(*) FROM credits.verify()")" \
	"5|5|0"
fails_with "with the view and the materialized view dropped, the BEGIN ATOMIC function alone: still refused" refuse20 MC029 \
	"DROP VIEW public.my_ledger; DROP MATERIALIZED VIEW public.my_sums; ALTER EXTENSION credits UPDATE"
out=$(q refuse20 "DROP VIEW public.my_ledger; DROP MATERIALIZED VIEW public.my_sums; DROP FUNCTION public.my_total(bigint); ALTER EXTENSION credits UPDATE")
same "with both dropped, the update runs (the text-bodied function does not hold it back)" \
	"$out|$(q refuse20 "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "|$NEW"
same "after it: the view created again reads all 5 debit rows (1 + 3 of two grants and owed + 1), the text-bodied function too; verify() returns no rows" \
	"$(q refuse20 "CREATE VIEW public.my_ledger AS SELECT * FROM credits.ledger; SELECT count(*) FROM public.my_ledger WHERE kind = 'debit'")|$(q refuse20 "SELECT public.my_debits(1)")|$(q refuse20 "SELECT * FROM credits.verify()")" \
	"5|5|"

same "verify() check 21: a ledger_entries row given a batch's entry_id (behind the extension's back) is reported" \
	"$(q refuse20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 1);
	               SET session_replication_role = replica;
	               INSERT INTO credits.ledger_entries (entry_id, account_id, delta, balance_after, kind, note) OVERRIDING SYSTEM VALUE
	               SELECT entry_id, account_id, 0, entry_balance_after, 'grant', 'a copy' FROM credits.send_batches WHERE entry_id IS NOT NULL;
	               SELECT problem FROM credits.verify() WHERE problem LIKE '%entries (%'")" \
	"$(q refuse20 "SELECT format('ledger entry %s is 2 entries (debit of batch %s, grant)', entry_id, batch_id) FROM credits.send_batches WHERE entry_id IS NOT NULL")"

# A batch without its debit row (a damaged database: verify() check 5):
# the update moves no row, so it does not refuse; it hides nothing either.
"$PG_BIN/createdb" refuse20b
pg -d refuse20b >"$WORK/refuse20b.log" 2>&1 <<SQL || { not_ok "set-up of refuse20b"; sed 's/^/#   /' "$WORK/refuse20b.log" | head; }
CREATE EXTENSION credits VERSION '$PREV';
SELECT credits.open_account(1, 100);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 30), (1, 20);
SET session_replication_role = replica;
DELETE FROM credits.ledger WHERE kind = 'debit' AND batch_id = (SELECT max(batch_id) FROM credits.send_batches);
SQL
same "a $PREV database where a batch has no debit row: verify() says so" \
	"$(q refuse20b "SELECT count(*) FROM credits.verify() WHERE problem LIKE 'batch % has 0 debit rows%'")" 1
problems_before=$(q refuse20b "SELECT * FROM credits.verify()")
same "... the update (nothing moves) runs, and verify() still reports exactly that problem" \
	"$(q refuse20b "ALTER EXTENSION credits UPDATE")|$(q refuse20b "SELECT extversion FROM pg_extension WHERE extname = 'credits'")|$(q refuse20b "SELECT * FROM credits.verify()")" \
	"|$NEW|$problems_before"

################################################################################
say "2g. what a DBA gave on or hung off the ledger table, after the update"
# Grants on credits.ledger (to PUBLIC, with grant option, on columns) are
# the DBA's: whoever could read the ledger before the update reads the view
# after it.  A DBA's foreign key to the ledger, trigger, CHECK constraint or
# column on it would stop applying to debits (the batch rows carry them):
# refused (MC029), each named, nothing changed; with them gone it runs.
"$PG_BIN/createdb" dba20
pg -d dba20 >"$WORK/dba20.log" 2>&1 <<SQL || { not_ok "set-up of dba20"; sed 's/^/#   /' "$WORK/dba20.log" | head; }
CREATE EXTENSION credits VERSION '$PREV';
SELECT credits.open_account(1, 100), credits.grant_credits(1, 20, 'promo');
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 30), (1, 80);
GRANT USAGE ON SCHEMA credits TO PUBLIC;
GRANT SELECT ON credits.ledger TO PUBLIC;
GRANT SELECT ON credits.ledger TO regress_upg_admin WITH GRANT OPTION;
GRANT SELECT (entry_id, account_id, delta) ON credits.ledger TO regress_upg_worker;
CREATE TABLE public.audit (entry_id bigint, kind text);
CREATE FUNCTION public.audit_ledger() RETURNS trigger LANGUAGE plpgsql AS
\$\$BEGIN INSERT INTO public.audit VALUES (NEW.entry_id, NEW.kind); RETURN NULL; END\$\$;
CREATE TRIGGER audit AFTER INSERT ON credits.ledger FOR EACH ROW EXECUTE FUNCTION public.audit_ledger();
ALTER TABLE credits.ledger ADD COLUMN audited boolean;
ALTER TABLE credits.ledger ADD CONSTRAINT dba_nonzero CHECK (delta <> 0 OR kind = 'open');
CREATE TABLE public.disputes (entry_id bigint REFERENCES credits.ledger (entry_id), reason text);
INSERT INTO public.disputes SELECT min(entry_id), 'wrong price' FROM credits.ledger WHERE kind = 'debit';
SQL
fails_with "a DBA's table with a foreign key to credits.ledger: the update is refused" dba20 MC029 "ALTER EXTENSION credits UPDATE"
out=$(pg -d dba20 -c "ALTER EXTENSION credits UPDATE" 2>&1)
expect "the refusal names the foreign key" "disputes" "$out"
table_dump dba20 "$WORK/dba20_before"
fails_with "without the foreign key, the DBA's trigger, CHECK and column on the ledger table: the update is refused" dba20 MC029 \
	"DROP TABLE public.disputes; ALTER EXTENSION credits UPDATE"
out=$(pg -d dba20 -c "DROP TABLE public.disputes; ALTER EXTENSION credits UPDATE" 2>&1)
expect "the refusal names the trigger" "trigger audit" "$out"
expect "the refusal names the CHECK constraint" "constraint dba_nonzero" "$out"
expect "the refusal names the column" "column audited" "$out"
note "the refusal: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
table_dump dba20 "$WORK/dba20_after"
same "refused: still at $PREV, every row as it was" \
	"$(q dba20 "SELECT extversion FROM pg_extension WHERE extname = 'credits'")|$(cmp -s "$WORK/dba20_before" "$WORK/dba20_after" && echo same)" "$PREV|same"
privs() {	# privs DB: who reads what of credits.ledger (the worker's column grants, PUBLIC aside)
	q "$1" "SELECT has_table_privilege('regress_upg_nobody', 'credits.ledger', 'SELECT') || ' ' ||
	              has_table_privilege('regress_upg_admin', 'credits.ledger', 'SELECT WITH GRANT OPTION') || ' ' ||
	              coalesce((SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a, aclexplode(a.attacl) x
	                         WHERE a.attrelid = 'credits.ledger'::regclass AND x.grantee = 'regress_upg_worker'::regrole
	                           AND x.privilege_type = 'SELECT'), 'no column grant')"
}
privs_before=$(privs dba20)
same "$PREV: PUBLIC reads the ledger, admin with grant option, worker three columns" "$privs_before" "true true entry_id,account_id,delta"
out=$(q dba20 "DROP TABLE public.disputes; DROP TRIGGER audit ON credits.ledger; ALTER TABLE credits.ledger DROP CONSTRAINT dba_nonzero, DROP COLUMN audited;
               ALTER EXTENSION credits UPDATE")
same "with all of them gone, the update runs" "$out|$(q dba20 "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "|$NEW"
same "updated: the same roles read the same of credits.ledger, the view (PUBLIC's SELECT, the grant option, the column grants)" "$(privs dba20)" "$privs_before"
same "updated: PUBLIC's SELECT is PUBLIC's on the view alone: nothing else in schema credits opened" \
	"$(q dba20 "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c
	           WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v', 'S') AND has_table_privilege('regress_upg_nobody', c.oid, 'SELECT')")" \
	"ledger,ledger_entries"
note "updated: credits.ledger ACL $(q dba20 "SELECT coalesce(relacl::text, 'default') FROM pg_class WHERE oid = 'credits.ledger'::regclass"), column ACLs $(q dba20 "SELECT coalesce(string_agg(attname || ' ' || attacl::text, ', '), 'none') FROM pg_attribute WHERE attrelid = 'credits.ledger'::regclass AND attacl IS NOT NULL")"
same "updated: PUBLIC reads the rows of the view (as it read the table's)" \
	"$(q dba20 "$NOBODY SELECT count(*) FROM credits.ledger")" "$(q dba20 "SELECT count(*) FROM credits.ledger")"
same "updated: with a dropped column in ledger_entries (the DBA's), add_credits and a debit of two grants write their rows" \
	"$(q dba20 "SELECT credits.add_credits(1, 50)")|$(q dba20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 30) RETURNING cost")|$(q dba20 "SELECT string_agg(g.source || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l JOIN credits.grants g USING (grant_id)
	          WHERE l.batch_id = (SELECT max(batch_id) FROM credits.send_batches)")" \
	"60|30|promo:-10,purchase:-20"
same "updated: verify() returns no rows" "$(q dba20 "SELECT * FROM credits.verify()")" ""

# A DBA's publication of the ledger table (change data capture to a
# warehouse): it would follow the table and stop carrying debits.
"$PG_BIN/createdb" pub20
q pub20 "CREATE EXTENSION credits VERSION '$PREV'; SELECT credits.open_account(1, 100);
         INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5);
         CREATE PUBLICATION ledger_cdc FOR TABLE credits.ledger" >/dev/null 2>&1
out=$(code pub20 "ALTER EXTENSION credits UPDATE")
note "a DBA's publication FOR TABLE credits.ledger: the update gives $out; the publication then carries $(q pub20 "SELECT coalesce(string_agg(schemaname || '.' || tablename, ', '), 'nothing') FROM pg_publication_tables WHERE pubname = 'ledger_cdc'")"
same "a DBA's publication FOR TABLE credits.ledger: the update is refused (MC029), or the publication still carries every debit entry" \
	"$([ "$out" = MC029 ] && echo ok || q pub20 "SELECT CASE WHEN count(*) FILTER (WHERE tablename = 'send_batches') > 0 THEN 'ok' ELSE 'updated (' || coalesce(string_agg(tablename, ','), 'nothing') || ' published, not the batches'' debit entries)' END FROM pg_publication_tables WHERE pubname = 'ledger_cdc'")" "ok"

# Row-level security on the ledger table (a tenant filter): the view reads
# its tables as its owner, so the filter would stop applying to the
# tenant's reads of credits.ledger.  Refused, and the tenant still sees
# only its own rows.
"$PG_BIN/createdb" rls20
q rls20 "CREATE EXTENSION credits VERSION '$PREV';
         SELECT credits.open_account(1, 100), credits.open_account(2, 100);
         INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5), (2, 7);
         GRANT USAGE ON SCHEMA credits TO regress_upg_reporting;
         GRANT SELECT ON credits.ledger TO regress_upg_reporting;
         ALTER TABLE credits.ledger ENABLE ROW LEVEL SECURITY;
         CREATE POLICY tenant_one ON credits.ledger TO regress_upg_reporting USING (account_id = 1)" >/dev/null 2>&1
tenant_rows() { q rls20 "$REPORTING SELECT string_agg(DISTINCT account_id::text, ',') || '/' || count(*) FROM credits.ledger"; }
same "$PREV: a tenant under row-level security reads its own ledger rows" "$(tenant_rows)" "1/2"
fails_with "row-level security on the ledger table: the update is refused" rls20 MC029 "ALTER EXTENSION credits UPDATE"
expect "the refusal names row-level security" "row-level security" "$(pg -d rls20 -c "ALTER EXTENSION credits UPDATE" 2>&1)"
same "refused: still at $PREV, the tenant still reads only its rows" \
	"$(q rls20 "SELECT extversion FROM pg_extension WHERE extname = 'credits'")|$(tenant_rows)" "$PREV|1/2"

# A DBA's own column named entry_id in send_batches of a database not yet
# updated: the entry columns are the extension's only in a 0.3.0 schema, so
# the library debits as $PREV does and leaves the DBA's column alone.
"$PG_BIN/createdb" col20
q col20 "CREATE EXTENSION credits VERSION '$PREV'; SELECT credits.open_account(1, 100);
         ALTER TABLE credits.send_batches ADD COLUMN entry_id bigint DEFAULT 42" >/dev/null 2>&1
same "$PREV with a DBA's column send_batches.entry_id: a batch is debited as in $PREV, the column keeps its default, a ledger row per debit" \
	"$(q col20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5) RETURNING cost || '/' || entry_id")|$(q col20 "SELECT count(*) FROM credits.ledger WHERE kind = 'debit'")|$(q col20 "SELECT * FROM credits.verify()")" \
	"5/42|1|"

################################################################################
say "2h. the update from $PREV rolled back, inside a transaction, and while debits wait on it"
# The library's caches (the table layout: the ledger table or the batch
# row's entry) must follow the catalog: forward at the update, back when it
# rolls back, and for a statement that waited on the update's locks.
"$PG_BIN/createdb" rolled_back20
out=$("$PG_BIN/psql" -X -q -At -d rolled_back20 2>&1 <<SQL
CREATE EXTENSION credits VERSION '$PREV';
SELECT 'account ' || (credits.open_account(1, 100)).account_id;
SELECT 'promo ' || (credits.grant_credits(1, 50, 'promo') > 0);
SELECT 'policy ' || (credits.enable_auto_recharge(1, 0, 1000)).enabled;
\set VERBOSITY sqlstate
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 10);
BEGIN;
ALTER EXTENSION credits UPDATE;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 20);
SELECT 'in the update: entry ' || (entry_id IS NOT NULL) || ', ledger_entries debits ' || (SELECT count(*) FROM credits.ledger_entries WHERE kind = 'debit') FROM credits.send_batches WHERE messages = 20;
ROLLBACK;
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'credits';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 30), (1, 100);
SELECT 'debit rows ' || string_agg(b.messages || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l JOIN credits.send_batches b USING (batch_id) WHERE l.kind = 'debit';
SELECT 'problems ' || count(*) FROM credits.verify();
BEGIN;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5);
ALTER EXTENSION credits UPDATE;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 6), (1, 7);
SELECT 'refunded ' || (credits.disable_auto_recharge(1)).enabled;
COMMIT;
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'credits';
SELECT 'batches ' || string_agg(messages || ':' || status || ':' || coalesce(entry_delta::text, '-'), ',' ORDER BY batch_id) FROM credits.send_batches;
SELECT 'ledger_entries debits ' || string_agg(b.messages || ':' || e.delta, ',' ORDER BY e.entry_id) FROM credits.ledger_entries e JOIN credits.send_batches b USING (batch_id) WHERE e.kind = 'debit';
SELECT 'problems ' || count(*) FROM credits.verify();
SQL
)
same "an update from $PREV rolled back: the session goes on at $PREV (the ledger table written again); an update between debits of one transaction, and the refunds after it" \
	"$(grep -v '^NOTICE' <<<"$out" | tr '\n' ' ')" \
	"account 1 promo true policy true in the update: entry true, ledger_entries debits 1 version $PREV debit rows 10:-10,30:-30,100:-60,100:-40 problems 0 refunded false version $NEW batches 10:ready:-,30:ready:-,100:ready:-,5:ready:-,6:failed:-5,7:failed:-7 ledger_entries debits 10:-10,30:-30,100:-60,100:-40,5:-5,6:-1 problems 0 "

# A debit that waits on the update's locks, in a session that debited
# before it.
"$PG_BIN/createdb" race20
q race20 "CREATE EXTENSION credits VERSION '$PREV'; SELECT credits.open_account(1, 1000), credits.grant_credits(1, 10, 'promo')" >/dev/null
session_open race20
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 1);"
"$PG_BIN/psql" -X -q -d race20 -c "BEGIN; ALTER EXTENSION credits UPDATE; SELECT pg_sleep(2); COMMIT;" >/dev/null 2>"$WORK/race20.log" &
updater=$!
locked=no
for ((i = 0; i < 50; i++)); do
	[ "$(q race20 "SELECT count(*) FROM pg_locks WHERE relation = 'credits.send_batches'::regclass AND mode = 'AccessExclusiveLock' AND granted")" -gt 0 ] && { locked=yes; break; }
	sleep 0.1
done
session "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 2), (1, 1000);"
wait $updater
session_close
same "a multi-row debit that waited on the update (its session debited before it): written the $NEW way, entries on the batch rows, the second of two grants in ledger_entries" \
	"$locked|$session_out|$(cat "$WORK/race20.log")|$(q race20 "SELECT extversion FROM pg_extension WHERE extname = 'credits'")|$(q race20 "SELECT string_agg(b.messages || ':' || coalesce(b.entry_delta::text, '-') || ':' || (SELECT coalesce(string_agg(e.delta::text, ','), '-') FROM credits.ledger_entries e WHERE e.batch_id = b.batch_id AND e.kind = 'debit'), ' ' ORDER BY b.batch_id) FROM credits.send_batches b")|$(q race20 "SELECT count(*) FROM credits.verify()")" \
	"yes|||$NEW|1:-:-1 2:-2:- 1000:-997:-3|0"

################################################################################
say "3. $NEW in the updated database"
fails_with "$NEW trigger: a batch above the balance" upg MC001 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 1000000)"
fails_with "$NEW trigger: a need above max_credits" upg MC002 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 5000)"
fails_with "$NEW trigger: a batch for an account that does not exist" upg MC003 \
	"$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (999, 1)"
fails_with "$NEW function: add_credits to an account that does not exist" upg MC003 \
	"$ADMIN SELECT credits.add_credits(999, 1)"
fails_with "$NEW trigger: the table owner setting cost alone" upg MC007 \
	"INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (1, 1, 1)"
fails_with "$NEW guard: UPDATE of a batch" upg MC008 "UPDATE credits.send_batches SET messages = 1 WHERE account_id = 1"
fails_with "$NEW guard: DELETE from the ledger (the view)" upg MC009 "DELETE FROM credits.ledger"
fails_with "$NEW guard: DELETE from the ledger's table, ledger_entries" upg MC009 "DELETE FROM credits.ledger_entries"
fails_with "$NEW guard: UPDATE of a batch's debit entry" upg MC008 "UPDATE credits.send_batches SET entry_balance_after = 0 WHERE account_id = 1"
fails_with "$NEW trigger: the table owner setting entry_balance_after alone" upg MC007 \
	"INSERT INTO credits.send_batches (account_id, messages, entry_balance_after) VALUES (1, 1, 1)"
fails_with "$NEW function: open_account of an account that exists" upg MC010 "$ADMIN SELECT credits.open_account(1)"
fails_with "$NEW function: min_balance above max_credits" upg MC013 "$ADMIN SELECT credits.enable_auto_recharge(9, 600, 500)"
fails_with "$NEW function: completing a settled recharge with another reference" upg MC006 \
	"$WORKER SELECT credits.complete_recharge($r_succeeded, 'psp-other')"

# The README's 0.1.1 grants for the payment worker.
pg -d upg -c "GRANT EXECUTE ON FUNCTION credits.claim_recharges(integer),
                credits.complete_recharge(bigint, text, uuid), credits.fail_recharge(bigint, text, uuid),
                credits.release_recharge(bigint, uuid) TO regress_upg_worker;
              GRANT SELECT ON credits.recharges, credits.recharge_queue TO regress_upg_worker;" >/dev/null 2>"$WORK/grant.log"
check "$NEW: the README's payment worker grants apply" test ! -s "$WORK/grant.log"
sed 's/^/#   /' "$WORK/grant.log"

# Account 13: claimed under 0.1.0, so no token and no lease.
r13=$(q upg "SELECT recharge_id FROM credits.recharges WHERE account_id = 13")
same "a recharge claimed under $OLD: claim_count 1, no token, no lease, and claim_recharges does not take it again" \
	"$(q upg "SELECT status, claim_count, claim_token IS NULL, lease_expires_at IS NULL FROM credits.recharges WHERE recharge_id = $r13")|$(q upg "$WORKER SELECT count(*) FROM credits.claim_recharges(10)")|$(q upg "$WORKER SELECT processing_without_lease FROM credits.recharge_queue")" \
	"processing|1|t|t|0|1"
fails_with "a recharge claimed under $OLD: complete_recharge with a token" upg MC020 \
	"$WORKER SELECT credits.complete_recharge($r13, 'psp-13', gen_random_uuid())"
same "a recharge claimed under $OLD: an operator's release_recharge(id) makes it pending, amount kept" \
	"$(q upg "SELECT status, credits, claimed_credits FROM credits.release_recharge($r13)")" "pending|30|30"
out=$(q upg "$WORKER SELECT recharge_id, claim_count FROM credits.claim_recharges(10)")
t13=$(q upg "SELECT claim_token FROM credits.recharges WHERE recharge_id = $r13")
same "a worker claims it again (claim_count 2) and completes it with its token" \
	"$out|$(q upg "$WORKER SELECT status FROM credits.complete_recharge($r13, 'psp-13', '$t13')")|$(q upg "SELECT string_agg(status, ',') FROM credits.send_batches WHERE account_id = 13")" \
	"$r13|2|succeeded|ready"

# Account 20: claims, leases, tokens.
q upg "$ADMIN SELECT credits.open_account(20, 0); SELECT credits.enable_auto_recharge(20, 0, 1000)" >/dev/null
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (20, 100)" >/dev/null
r20=$(q upg "SELECT recharge_id FROM credits.recharges WHERE account_id = 20")
# The worker tries to lengthen its own lease first: in a session that has
# not loaded the library yet, SET makes a placeholder, which must not count.
out=$("$PG_BIN/psql" -X -q -At -d upg -c "$WORKER SET credits.claim_lease = '10h'" \
	-c "SELECT recharge_id, claim_token IS NOT NULL, lease_expires_at - claimed_at, claim_count, status FROM credits.claim_recharges(10)" 2>/dev/null)
same "claim_recharges: a token, a lease of credits.claim_lease (15 min by default, whatever the worker SETs), claim_count 1" \
	"$out" "$r20|t|00:15:00|1|processing"
t1=$(q upg "SELECT claim_token FROM credits.recharges WHERE recharge_id = $r20")
same "release_recharge with the current token: pending again, token and lease cleared, amount and failures kept" \
	"$(q upg "$WORKER SELECT status, claim_token IS NULL, lease_expires_at IS NULL, credits, claim_count FROM credits.release_recharge($r20, '$t1')")|$(q upg "SELECT payment_failures FROM credits.auto_recharge WHERE account_id = 20")" \
	"pending|t|t|100|1|0"
table_dump upg "$WORK/before_released"
fails_with "complete_recharge with the token of a released claim" upg MC020 \
	"$WORKER SELECT credits.complete_recharge($r20, 'psp-20-r', '$t1')"
fails_with "fail_recharge with the token of a released claim" upg MC020 \
	"$WORKER SELECT credits.fail_recharge($r20, 'declined', '$t1')"
table_dump upg "$WORK/after_released"
same_files "the tokens of a released claim changed nothing" "$WORK/before_released" "$WORK/after_released"
same "release_recharge of a pending recharge returns it unchanged" \
	"$(q upg "$WORKER SELECT status, credits FROM credits.release_recharge($r20, '$t1')")" "pending|100"
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (20, 50)" >/dev/null
same "a released recharge is never grown: the next batch opens a new one" \
	"$(q upg "SELECT string_agg(credits || ':' || status, ',' ORDER BY recharge_id) FROM credits.recharges WHERE account_id = 20")" \
	"100:pending,50:pending"
q upg "UPDATE credits.recharges SET created_at = created_at - interval '2 hours' WHERE recharge_id = $r20" >/dev/null
same "expire_recharges leaves a released recharge (claimed once) pending, however old" \
	"$(q upg "$ADMIN SELECT credits.expire_recharges()")|$(q upg "SELECT status FROM credits.recharges WHERE recharge_id = $r20")" "0|pending"
same "disable_auto_recharge cancels the never-claimed recharge, leaves the released one pending" \
	"$(q upg "$ADMIN SELECT (credits.disable_auto_recharge(20)).enabled")|$(q upg "SELECT string_agg(credits || ':' || status, ',' ORDER BY recharge_id) FROM credits.recharges WHERE account_id = 20")" \
	"f|100:pending,50:cancelled"
# Worker A claims with a lease of one second; it expires; worker B reclaims.
t2=$(q upg "SET credits.claim_lease = '2s'; $WORKER SELECT claim_token FROM credits.claim_recharges(10) WHERE recharge_id = $r20")
same "a processing recharge whose lease has not expired is not claimed again" \
	"$(q upg "$WORKER SELECT count(*) FROM credits.claim_recharges(10)")" "0"
fails_with "credits.claim_lease: at least one second" upg 22023 "LOAD 'credits'; SET credits.claim_lease = '500ms'"
fails_with "credits.claim_lease: only a superuser sets it" upg 42501 "LOAD 'credits'; $WORKER SET credits.claim_lease = '1h'"
sleep 2.2
out=$(q upg "$WORKER SELECT recharge_id, claim_token <> '$t2', claim_count, credits FROM credits.claim_recharges(10)")
same "after the lease expires, another worker claims it: a new token, claim_count 3, same amount" "$out" "$r20|t|3|100"
t3=$(q upg "SELECT claim_token FROM credits.recharges WHERE recharge_id = $r20")
table_dump upg "$WORK/before_stale"
fails_with "complete_recharge with the stale token" upg MC020 \
	"$WORKER SELECT credits.complete_recharge($r20, 'psp-20-a', '$t2')"
fails_with "fail_recharge with the stale token" upg MC020 \
	"$WORKER SELECT credits.fail_recharge($r20, 'declined', '$t2')"
fails_with "release_recharge with the stale token" upg MC020 \
	"$WORKER SELECT credits.release_recharge($r20, '$t2')"
fails_with "complete_recharge with a token never issued" upg MC020 \
	"$WORKER SELECT credits.complete_recharge($r20, 'psp-20-a', gen_random_uuid())"
table_dump upg "$WORK/after_stale"
same_files "the stale tokens changed nothing" "$WORK/before_stale" "$WORK/after_stale"
fails_with "complete_recharge: a payment reference with a leading blank" upg MC021 \
	"$WORKER SELECT credits.complete_recharge($r20, ' psp', '$t3')"
fails_with "complete_recharge: an empty payment reference (22023 in $OLD)" upg MC021 \
	"$WORKER SELECT credits.complete_recharge($r20, '', '$t3')"
fails_with "complete_recharge: a payment reference over 255 bytes" upg MC021 \
	"$WORKER SELECT credits.complete_recharge($r20, repeat('é', 128), '$t3')"
same "complete_recharge with the current token: succeeded, the batch is ready" \
	"$(q upg "$WORKER SELECT status FROM credits.complete_recharge($r20, 'psp-20', '$t3')")|$(q upg "SELECT string_agg(status, ',' ORDER BY batch_id) FROM credits.send_batches WHERE account_id = 20")" \
	"succeeded|ready,failed"
same "complete_recharge again with the same reference and a stale token: idempotent" \
	"$(q upg "$WORKER SELECT status, payment_ref FROM credits.complete_recharge($r20, 'psp-20', '$t1')")" "succeeded|psp-20"
fails_with "release_recharge of a settled recharge" upg MC006 "$WORKER SELECT credits.release_recharge($r20, '$t3')"
fails_with "release_recharge of a recharge that does not exist" upg MC005 "$WORKER SELECT credits.release_recharge(99999, gen_random_uuid())"
# A failure with a token counts towards credits.max_payment_failures.
q upg "$ADMIN SELECT credits.enable_auto_recharge(20, 0, 1000)" >/dev/null
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (20, 1000)" >/dev/null
t4=$(q upg "$WORKER SELECT claim_token FROM credits.claim_recharges(10)")
same "fail_recharge with the current token: failed, refunded, one payment failure counted" \
	"$(q upg "$WORKER SELECT status FROM credits.fail_recharge((SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 20), 'declined', '$t4')")|$(q upg "SELECT payment_failures FROM credits.auto_recharge WHERE account_id = 20")" \
	"failed|1"
# Account 24: a lease that ran out with nobody claiming again: the token is
# still the current one.  And payment references at the edges.
q upg "$ADMIN SELECT credits.open_account(24, 0), credits.enable_auto_recharge(24, 0, 1000)" >/dev/null
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (24, 7)" >/dev/null
t24=$(q upg "$WORKER SELECT claim_token FROM credits.claim_recharges(10)")
r24=$(q upg "SELECT recharge_id FROM credits.recharges WHERE account_id = 24")
q upg "UPDATE credits.recharges SET lease_expires_at = now() - interval '1 minute' WHERE recharge_id = $r24" >/dev/null
fails_with "complete_recharge: a payment reference of blanks" upg MC021 \
	"$WORKER SELECT credits.complete_recharge($r24, '   ', '$t24')"
fails_with "complete_recharge: a payment reference with a trailing tab" upg MC021 \
	"$WORKER SELECT credits.complete_recharge($r24, E'psp\t', '$t24')"
same "complete_recharge after the lease ran out, nobody having claimed again: the token still holds; a reference of 255 bytes is accepted" \
	"$(q upg "$WORKER SELECT status, octet_length(payment_ref) FROM credits.complete_recharge($r24, repeat('é', 127) || 'x', '$t24')")" "succeeded|255"

# One of each for the queue: a pending recharge (account 21), a processing one
# with a live lease (22), one with an expired lease (23).
q upg "$ADMIN SELECT credits.open_account(a, 0), credits.enable_auto_recharge(a, 0, 1000) FROM generate_series(21, 23) a" >/dev/null
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (22, 5), (23, 5)" >/dev/null
q upg "$WORKER SELECT count(*) FROM credits.claim_recharges(10)" >/dev/null
q upg "UPDATE credits.recharges SET lease_expires_at = now() - interval '1 minute' WHERE account_id = 23" >/dev/null
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (21, 5)" >/dev/null
same "recharge_queue: one row with its columns" \
	"$(q upg "$WORKER SELECT pending, processing, expired_leases, oldest_pending_age >= '0', oldest_processing_age >= '0',
	          next_lease_expiry IS NOT NULL, failed_last_hour, succeeded_last_hour, switched_off_today FROM credits.recharge_queue")" \
	"1|2|1|t|t|t|$(q upg "SELECT count(*) FROM credits.recharges WHERE status = 'failed' AND settled_at > now() - interval '1 hour'")|$(q upg "SELECT count(*) FROM credits.recharges WHERE status = 'succeeded' AND settled_at > now() - interval '1 hour'")|$(q upg "SELECT count(*) FROM credits.auto_recharge WHERE disabled_reason = 'payment_failed' AND disabled_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")"
same "recharge_queue is a security_barrier view" \
	"$(q upg "SELECT 'security_barrier=true' = ANY (reloptions) FROM pg_class WHERE oid = 'credits.recharge_queue'::regclass")" t
fails_with "recharge_queue: not for the application" upg 42501 "$APP SELECT * FROM credits.recharge_queue"
same "at the end: verify() returns no rows" "$(q upg "SELECT * FROM credits.verify()")" ""

################################################################################
say "3b. grants, plans and expiry in the updated $OLD database"
# ledger_of ACCOUNT: its ledger rows from 0.2.0 on, "kind:delta:source".
ledger_of() {
	q upg "SELECT string_agg(l.kind || ':' || l.delta || ':' || coalesce(g.source, '-'), ',' ORDER BY l.entry_id)
	         FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id) WHERE l.account_id = $1"
}
# grants_of ACCOUNT: its grants, "source remaining/credits prio P[ closed]".
grants_of() {
	q upg "SELECT string_agg(format('%s %s/%s prio %s%s', source, remaining, credits, priority,
	                                CASE WHEN closed_at IS NOT NULL THEN ' closed' ELSE '' END), ', ' ORDER BY grant_id)
	         FROM credits.grants WHERE account_id = $1"
}
# 40: signup credits, a promo that expires, a plan and a purchase.
q upg "SELECT credits.open_account(40, 500)" >/dev/null
same "open_account with signup credits: a signup grant (priority 20, never expiring) and an open ledger row naming it" \
	"$(grants_of 40)|$(q upg "SELECT expires_at IS NULL FROM credits.grants WHERE account_id = 40")|$(ledger_of 40)" \
	"signup 500/500 prio 20|t|open:500:signup"
promo40=$(q upg "SELECT credits.grant_credits(40, 200, 'promo', now() + interval '1 day', note => 'welcome')")
same "grant_credits: a promo grant (priority 30) expiring when asked, with its note; a grant ledger row" \
	"$(q upg "SELECT format('%s %s/%s prio %s %s %s', source, remaining, credits, priority, expires_at - created_at > interval '23 hours', note)
	          FROM credits.grants WHERE grant_id = '$promo40'")|$(ledger_of 40)" \
	"promo 200/200 prio 30 t welcome|open:500:signup,grant:200:promo"
same "set_plan: the period containing now, anchored now, of one calendar month" \
	"$(q upg "SET TimeZone = 'UTC'; SELECT format('%s %s %s %s', monthly_credits, period_start = anchored_at,
	          period_end = ((anchored_at AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC', cancelled_at IS NULL)
	          FROM credits.set_plan(40, 1000)")" "1000 t t t"
same "set_plan: a plan grant (priority 10) of the period, expiring at its end; a plan ledger row" \
	"$(q upg "SELECT format('%s %s/%s prio %s %s %s', g.source, g.remaining, g.credits, g.priority, g.expires_at = p.period_end, g.period_start = p.period_start)
	          FROM credits.grants g JOIN credits.plans p USING (account_id) WHERE g.account_id = 40 AND g.source = 'plan'")|$(ledger_of 40)" \
	"plan 1000/1000 prio 10 t t|open:500:signup,grant:200:promo,plan:1000:plan"
same "add_credits: a purchase grant; the balance is the sum of the grants" \
	"$(q upg "SELECT credits.add_credits(40, 300)")|$(balances upg 40)" "2000|40:2000/2000/0"
b1=$(q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (40, 1200) RETURNING batch_id")
b2=$(q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (40, 400) RETURNING batch_id")
same "debits draw the plan first, then signup, then promo, one ledger row per grant drawn" \
	"$(q upg "SELECT string_agg(l.batch_id || ':' || g.source || ':' || l.delta, ',' ORDER BY l.entry_id)
	          FROM credits.ledger l JOIN credits.grants g USING (grant_id) WHERE l.batch_id IN ($b1, $b2) AND l.kind = 'debit'")" \
	"$b1:plan:-1000,$b1:signup:-200,$b2:signup:-300,$b2:promo:-100"
same "batch_funding: which grants paid for a batch" \
	"$(q upg "SELECT string_agg(source || ':' || abs(credits), ',' ORDER BY source) FROM credits.batch_funding($b2)")" "promo:100,signup:300"
same "the spent grants are closed; account_overview's plan, free, promo and bought credits and owed" \
	"$(grants_of 40)|$(q upg "$REPORTING SELECT concat_ws(' ', plan_credits, free_credits, promo_credits, bought_credits, owed) FROM credits.account_overview WHERE account_id = 40")" \
	"signup 0/500 prio 20 closed, promo 100/200 prio 30, plan 0/1000 prio 10 closed, purchase 300/300 prio 50|0 0 100 300 0"
same "expiring_credits: the promo's 100 credits within 2 days" \
	"$(q upg "SELECT source || ':' || remaining FROM credits.expiring_credits(interval '2 days') WHERE account_id = 40")" "promo:100"

# 41: signup credits that expire; the clock moved past their expiry.
q upg "SELECT credits.open_account(41, 300, now() + interval '1 hour'); SELECT credits.add_credits(41, 100)" >/dev/null
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (41, 50)" >/dev/null
same "past an expiry (credits.clock_offset 2 h), a debit first expires what is left (an expire row), then draws the next grant" \
	"$(q upg "LOAD 'credits'; SET credits.clock_offset = 7200; $APP INSERT INTO credits.send_batches (account_id, messages) VALUES (41, 10) RETURNING cost || '/' || status")|$(ledger_of 41)|$(grants_of 41)|$(balances upg 41)" \
	"10/ready|open:300:signup,grant:100:purchase,debit:-50:signup,expire:-250:signup,debit:-10:purchase|signup 0/300 prio 20 closed, purchase 90/100 prio 50|41:90/90/0"
# 42: an expired promo is never spent; expire_grants for idle accounts.
q upg "SELECT credits.open_account(42, 0); SELECT credits.grant_credits(42, 100, 'promo', now() + interval '1 hour')" >/dev/null
fails_with "past its expiry, a promo's credits are not spent (no auto-recharge)" upg MC001 \
	"LOAD 'credits'; SET credits.clock_offset = 7200; $APP INSERT INTO credits.send_batches (account_id, messages) VALUES (42, 50)"
fails_with "expire_grants: not with a time in the future" upg MC026 "SELECT credits.expire_grants(now() + interval '1 day')"
fails_with "renew_plans: not with a time in the future" upg MC026 "SELECT credits.renew_plans(now() + interval '1 day')"
out=$("$PG_BIN/psql" -X -q -At -d upg -c "LISTEN credits_expiring" \
	-c "LOAD 'credits'; SET credits.clock_offset = 7200; SELECT credits.expire_grants(now() + interval '7000 seconds')" 2>&1)
same "expire_grants: expires the idle account's due promo (and only that), notifies credits_expiring" \
	"$(head -1 <<<"$out")|$(grep -o 'payload ".*"' <<<"$out" | tr -d ' ')|$(ledger_of 42)|$(balances upg 42)" \
	'1|payload"{"grants":1,"credits":100}"|open:0:-,grant:100:promo,expire:-100:promo|42:0/0/0'

# 43: a plan that started 10 days ago, renewed when its period ends.
q upg "SELECT credits.open_account(43, 0)" >/dev/null
same "set_plan from a start in the past: the period containing now, anchored on it" \
	"$(q upg "SET TimeZone = 'UTC'; SELECT format('%s %s %s', p.period_start = s.starts, p.period_end = ((s.starts AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC', p.anchored_at = s.starts)
	          FROM (SELECT now() - interval '10 days' AS starts) s, credits.set_plan(43, 1000, s.starts) p")" "t t t"
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (43, 300)" >/dev/null
same "set_plan on an account with a plan: the new amount is for the next period, this period's grant stays" \
	"$(q upg "SELECT monthly_credits FROM credits.set_plan(43, 2000)")|$(grants_of 43)" "2000|plan 700/1000 prio 10"
fails_with "set_plan: not starting in the future" upg MC024 "SELECT credits.set_plan(42, 100, now() + interval '1 day')"
fails_with "set_plan: monthly credits must be positive" upg MC014 "SELECT credits.set_plan(43, 0)"
fails_with "grant_credits: not expiring in the past" upg MC023 "SELECT credits.grant_credits(43, 10, 'promo', now() - interval '1 second')"
fails_with "grant_credits: an unknown source" upg MC023 "SELECT credits.grant_credits(43, 10, 'gift')"
fails_with "grant_credits: a priority above 100" upg MC023 "SELECT credits.grant_credits(43, 10, 'promo', priority => 101)"
fails_with "cancel_plan: an account without a plan" upg MC025 "SELECT credits.cancel_plan(41)"
renew="LOAD 'credits'; SET credits.clock_offset = $((25 * 86400)); SELECT credits.renew_plans(now() + interval '25 days' - interval '1 minute')"
same "renew_plans, 25 days on: only 43's period has ended; its grant expires, the next period (2000) opens; again: nothing to do" \
	"$(q upg "$renew")|$(q upg "$renew")|$(ledger_of 43)|$(grants_of 43)|$(q upg "SET TimeZone = 'UTC'; SELECT (period_start = ((anchored_at AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC')
	          || ' ' || (period_end = ((anchored_at AT TIME ZONE 'UTC') + interval '2 months') AT TIME ZONE 'UTC') FROM credits.plans WHERE account_id = 43")" \
	"1|0|open:0:-,plan:1000:plan,debit:-300:plan,expire:-700:plan,plan:2000:plan|plan 0/1000 prio 10 closed, plan 2000/2000 prio 10|true true"
same "cancel_plan: cancelled, idempotent; the current grant stays" \
	"$(q upg "SELECT cancelled_at IS NOT NULL FROM credits.cancel_plan(43)")|$(q upg "SELECT count(DISTINCT c.cancelled_at) FROM (SELECT cancelled_at FROM credits.plans WHERE account_id = 43 UNION ALL SELECT cancelled_at FROM credits.cancel_plan(43)) c")|$(grants_of 43)" \
	"t|1|plan 0/1000 prio 10 closed, plan 2000/2000 prio 10"

# 44: a debit that crosses zero owes the rest; its recharge repays it.
q upg "SELECT credits.open_account(44, 100), credits.enable_auto_recharge(44, 0, 1000)" >/dev/null
b44=$(q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (44, 150) RETURNING batch_id")
same "a debit past zero: one row from the signup grant, one without a grant for the 50 owed; the batch owes 50" \
	"$(q upg "SELECT string_agg(coalesce(g.source, '-') || ':' || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	          WHERE l.batch_id = $b44 AND l.kind = 'debit'")|$(q upg "SELECT status || ' owes ' || owed FROM credits.send_batches WHERE batch_id = $b44")|$(balances upg 44)" \
	"signup:-100,-:-50|awaiting_credits owes 50|44:-50/0/50"
q upg "$WORKER SELECT count(*) FROM credits.claim_recharges(10)" >/dev/null
same "its recharge completes: a recharge grant, a pair of repay rows naming the batch; nothing owed" \
	"$(q upg "$WORKER SELECT status FROM credits.complete_recharge((SELECT recharge_id FROM credits.recharges WHERE account_id = 44), 'psp-44')")|$(q upg "SELECT string_agg(l.kind || ':' || coalesce(g.source, '-') || ':' || l.delta || ':' || coalesce(l.batch_id = $b44, false), ',' ORDER BY l.kind, l.delta)
	          FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id) WHERE l.account_id = 44 AND l.kind IN ('recharge', 'repay')")|$(q upg "SELECT status || ' owes ' || owed FROM credits.send_batches WHERE batch_id = $b44")|$(balances upg 44)" \
	"succeeded|recharge:recharge:50:false,repay:recharge:-50:true,repay:-:50:true|ready owes 0|44:0/0/0"
# 45: a batch drew a promo that expires before the batch's recharge fails.
q upg "SELECT credits.open_account(45, 0), credits.enable_auto_recharge(45, 0, 1000); SELECT credits.grant_credits(45, 50, 'promo', now() + interval '1 hour')" >/dev/null
q upg "$APP INSERT INTO credits.send_batches (account_id, messages) VALUES (45, 80)" >/dev/null
q upg "$WORKER SELECT count(*) FROM credits.claim_recharges(10)" >/dev/null
same "a refund to a grant that expired meanwhile: a refund row, then an expire row; the owed part cancels the debt" \
	"$(q upg "LOAD 'credits'; SET credits.clock_offset = 7200; $WORKER SELECT status FROM credits.fail_recharge((SELECT recharge_id FROM credits.recharges WHERE account_id = 45), 'declined')")|$(ledger_of 45)|$(grants_of 45)|$(balances upg 45)" \
	"failed|open:0:-,grant:50:promo,debit:-50:promo,debit:-30:-,refund:30:-,refund:50:promo,expire:-50:promo|promo 0/50 prio 30 closed|45:0/0/0"
table_dump upg "$WORK/before_carry"
same "carry_over_balances() on the updated database, grants in use: nothing to do, nothing changed" \
	"$(q upg "SELECT credits.carry_over_balances()")|$(table_dump upg "$WORK/after_carry"; cmp -s "$WORK/before_carry" "$WORK/after_carry" && echo same)" "0|same"
same "after grants, plans and expiry: verify() returns no rows" "$(q upg "SELECT * FROM credits.verify()")" ""

################################################################################
say "4. a fresh CREATE EXTENSION credits and $OLD, $MID or $PREV + UPDATE give the same objects"
# catalog DB DIR [acl]: a description of everything the extension owns.
catalog() {
	local db=$1 dir=$2 acl=${3:-}
	mkdir -p "$dir"
	"$PG_BIN/psql" -X -d "$db" -c '\dx+ credits' >"$dir/dx" 2>&1
	q "$db" "SELECT extversion, extrelocatable, extnamespace::regnamespace, extconfig::regclass[]::text, extcondition
	           FROM pg_extension WHERE extname = 'credits'" >"$dir/extension"
	q "$db" "SELECT p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname, p.prosecdef, p.provolatile,
	                p.proparallel, p.proisstrict, p.proconfig, p.prorows, p.probin, md5(p.prosrc),
	                pg_get_function_arguments(p.oid), obj_description(p.oid, 'pg_proc')
	                ${acl:+, p.proacl}
	           FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	          WHERE p.pronamespace = 'credits'::regnamespace ORDER BY 1" >"$dir/functions"
	q "$db" "SELECT c.relname, c.relkind, c.reloptions, obj_description(c.oid, 'pg_class') ${acl:+, c.relacl}
	           FROM pg_class c WHERE c.relnamespace = 'credits'::regnamespace ORDER BY 1" >"$dir/relations"
	q "$db" "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
	                a.attidentity, pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum) ${acl:+, a.attacl}
	           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	           LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
	          WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'v')
	          ORDER BY 1, 2" >"$dir/columns"
	q "$db" "SELECT conrelid::regclass, conname, pg_get_constraintdef(oid) FROM pg_constraint
	          WHERE connamespace = 'credits'::regnamespace ORDER BY 1, 2" >"$dir/constraints"
	q "$db" "SELECT indexrelid::regclass, pg_get_indexdef(indexrelid) FROM pg_index
	          WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'credits'::regnamespace) ORDER BY 1" >"$dir/indexes"
	q "$db" "SELECT tgrelid::regclass, tgname, tgenabled, pg_get_triggerdef(oid) FROM pg_trigger
	          WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'credits'::regnamespace)
	          ORDER BY 1, 2" >"$dir/triggers"
	q "$db" "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
	          WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'v' ORDER BY 1" >"$dir/views"
	q "$db" "SELECT seqrelid::regclass, seqtypid::regtype, seqstart, seqincrement, seqmax, seqmin, seqcache, seqcycle
	           FROM pg_sequence WHERE seqrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'credits'::regnamespace)
	          ORDER BY 1" >"$dir/sequences"
	q "$db" "SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
	          WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	            AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'credits') ORDER BY 1" >"$dir/members"
	# what pg_dump takes for the extension's own privileges (not dumped)
	q "$db" "SELECT pg_describe_object(i.classoid, i.objoid, i.objsubid), i.privtype, i.initprivs FROM pg_init_privs i
	          WHERE (i.classoid, i.objoid) IN (SELECT classid, objid FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	                                            AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'credits'))
	          ORDER BY 1" >"$dir/initprivs"
}
"$PG_BIN/createdb" fresh
"$PG_BIN/createdb" stepped
"$PG_BIN/createdb" stepped11
"$PG_BIN/createdb" stepped20
q fresh "CREATE EXTENSION credits" >/dev/null
q stepped "CREATE EXTENSION credits VERSION '$OLD'; ALTER EXTENSION credits UPDATE" >/dev/null
q stepped11 "CREATE EXTENSION credits VERSION '$MID'; ALTER EXTENSION credits UPDATE" >/dev/null
q stepped20 "CREATE EXTENSION credits VERSION '$PREV'; ALTER EXTENSION credits UPDATE" >/dev/null
"$PG_BIN/createdb" stepped_twice
q stepped_twice "CREATE EXTENSION credits VERSION '$OLD'; ALTER EXTENSION credits UPDATE TO '$PREV'" >/dev/null
q stepped_twice "ALTER EXTENSION credits UPDATE" >/dev/null
same "a fresh CREATE EXTENSION credits installs $NEW" "$(q fresh "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$NEW"
catalog fresh "$WORK/cat_fresh" acl
catalog stepped "$WORK/cat_stepped" acl
catalog stepped11 "$WORK/cat_stepped11" acl
catalog stepped20 "$WORK/cat_stepped20" acl
catalog stepped_twice "$WORK/cat_stepped_twice" acl
catalog upg "$WORK/cat_upg"
catalog upg11 "$WORK/cat_upg11"
catalog upg20 "$WORK/cat_upg20"
catalog fresh "$WORK/cat_fresh_noacl"
note "the extension has $(wc -l <"$WORK/cat_fresh/members") member objects, $(wc -l <"$WORK/cat_fresh/functions") functions"
for part in dx extension functions relations columns constraints indexes triggers views sequences members initprivs; do
	same_files "fresh and $OLD + UPDATE: same $part (grants included)" "$WORK/cat_fresh/$part" "$WORK/cat_stepped/$part"
	same_files "fresh and $MID + UPDATE: same $part (grants included)" "$WORK/cat_fresh/$part" "$WORK/cat_stepped11/$part"
	same_files "fresh and $PREV + UPDATE: same $part (grants included)" "$WORK/cat_fresh/$part" "$WORK/cat_stepped20/$part"
	same_files "fresh and $OLD + UPDATE TO '$PREV' + UPDATE: same $part (grants included)" "$WORK/cat_fresh/$part" "$WORK/cat_stepped_twice/$part"
done
# The workload databases: the same objects; their grants differ by design,
# but not what pg_init_privs records (a DBA's grants are dumped).
for part in functions relations columns constraints indexes triggers views members initprivs; do
	same_files "fresh and the updated $OLD workload database: same $part" "$WORK/cat_fresh_noacl/$part" "$WORK/cat_upg/$part"
	same_files "fresh and the updated $MID workload database: same $part" "$WORK/cat_fresh_noacl/$part" "$WORK/cat_upg11/$part"
	same_files "fresh and the updated $PREV workload database: same $part" "$WORK/cat_fresh_noacl/$part" "$WORK/cat_upg20/$part"
done
same "$NEW's tables and sequences, grants, plans and ledger_entries included, are dumped with the data (pg_extension_config_dump), and no view" \
	"$(q fresh "SELECT string_agg(c::text, ',' ORDER BY c::text) FROM pg_extension, unnest(extconfig::regclass[]) c WHERE extname = 'credits'")" \
	"$(q fresh "SELECT string_agg(c.oid::regclass::text, ',' ORDER BY c.oid::regclass::text) FROM pg_class c
	            WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'S')")"
same "$NEW: ledger_entries is among them, credits.ledger (the view) is not" \
	"$(q fresh "SELECT 'credits.ledger_entries'::regclass = ANY (extconfig), 'credits.ledger'::regclass = ANY (extconfig) FROM pg_extension WHERE extname = 'credits'")" "t|f"
same "fresh: every SECURITY DEFINER function pins search_path" \
	"$(q fresh "SELECT string_agg(oid::regprocedure::text, ', ') FROM pg_proc WHERE pronamespace = 'credits'::regnamespace
	            AND prosecdef AND NOT coalesce(proconfig, '{}') @> '{\"search_path=pg_catalog, pg_temp\"}'")" ""
same "fresh: the report views are security_barrier" \
	"$(q fresh "SELECT string_agg(relname || ':' || coalesce('security_barrier=true' = ANY (reloptions), false), ',' ORDER BY relname)
	            FROM pg_class WHERE relnamespace = 'credits'::regnamespace AND relkind = 'v'")" \
	"account_overview:true,balance_by_grant:true,ledger:true,recharge_history:true,recharge_queue:true,usage_daily:true,usage_monthly:true"

################################################################################
say "5. dumps: old dumps restored into $NEW the plain way, or at their version and updated; the updated databases dumped and restored"
"$PG_BIN/createdb" restored
"$PG_BIN/pg_restore" -d restored "$WORK/old.dump" >"$WORK/restore.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ ! -s "$WORK/restore.log" ]; then
	ok "pg_restore of the $OLD dump reports no error"
else
	not_ok "pg_restore of the $OLD dump reports no error (exit code $rc)"
	head -5 "$WORK/restore.log" | sed 's/^/#   /'
fi
same "the restored database is at $NEW" "$(q restored "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$NEW"
snapshot restored "$WORK/tables_old" "$WORK/restored"
for t in $(cut -d'|' -f1 "$WORK/tables_old") sequences; do
	same_files "restored: credits.$t as in the $OLD database before the update" "$WORK/before/$t" "$WORK/restored/$t"
done
# The restore made the extension at $NEW and loaded rows of $OLD, which have
# no grants: carry_over_balances() does what the update does to them.
same "restored: before carry_over_balances(), verify() reports each account with a balance other than 0 (and only those)" \
	"$(q restored "SELECT count(DISTINCT account_id) FROM credits.verify()")" "$(q restored "SELECT count(*) FROM credits.accounts WHERE balance <> 0")"
same "restored: carry_over_balances() carries over each account with a balance other than 0" \
	"$(q restored "SELECT credits.carry_over_balances()")" "$(q restored "SELECT count(*) FROM credits.accounts WHERE balance <> 0")"
update_checks restored "$OLD restored into $NEW, carried over" "$WORK/tables_old"
table_dump restored "$WORK/restored_carried"
same "restored: carry_over_balances() again: nothing to do, nothing changed" \
	"$(q restored "SELECT credits.carry_over_balances()")|$(table_dump restored "$WORK/restored_carried2"; cmp -s "$WORK/restored_carried" "$WORK/restored_carried2" && echo same)" "0|same"
same "restored: a new batch is debited (cost/status) and verify() stays empty" \
	"$(q restored "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 4) RETURNING cost || '/' || status")|$(q restored "SELECT count(*) FROM credits.verify()")" \
	"4/ready|0"

# The $MID dump, restored the same way, and a batch sent before anyone ran
# carry_over_balances(): the debit must be refused, or carried over with
# the rest; either way verify() is empty afterwards.
"$PG_BIN/createdb" restored_mid_plain
"$PG_BIN/pg_restore" -d restored_mid_plain "$WORK/mid.dump" >"$WORK/restore_mid_plain.log" 2>&1
same "the $MID dump restored the plain way into $NEW: no error" "$?|$(head -3 "$WORK/restore_mid_plain.log")" "0|"
note "a batch of account 1 before carry_over_balances(): $(q restored_mid_plain "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 4) RETURNING 'cost ' || cost || ', ' || status || ', owes ' || owed" | head -2 | tr '\n' ' ')"
same "restored from $MID, a batch sent before carry_over_balances(), then carry_over_balances(): verify() returns no rows" \
	"$(q restored_mid_plain "SELECT credits.carry_over_balances()" >/dev/null; q restored_mid_plain "SELECT * FROM credits.verify()")" ""

# The $PREV dump, restored the same way: its ledger rows go through the view
# into ledger_entries (a restoring role's INSERT), its batches keep null
# entries; nothing to carry over.
"$PG_BIN/createdb" restored_prev_plain
"$PG_BIN/pg_restore" -d restored_prev_plain "$WORK/prev.dump" >"$WORK/restore_prev_plain.log" 2>&1
same "the $PREV dump restored the plain way into $NEW: no error" "$?|$(head -3 "$WORK/restore_prev_plain.log")" "0|"
snapshot restored_prev_plain "$WORK/tables20_noledger" "$WORK/restored_prev_plain"
q restored_prev_plain "SELECT last_value, is_called FROM credits.grants_grant_id_seq" >>"$WORK/restored_prev_plain/sequences"
same "restored from $PREV into $NEW: every table and sequence as in the $PREV database before its update" \
	"$(for t in $(cut -d'|' -f1 "$WORK/tables20_noledger") sequences; do cmp -s "$WORK/before20/$t" "$WORK/restored_prev_plain/$t" || echo "$t differs"; done)" ""
entry_checks restored_prev_plain "$PREV restored into $NEW" "$WORK/ledger_before_upg20"
same "restored from $PREV into $NEW: verify() returns no rows; the reporting role's SELECT on credits.ledger (in the dump) is on the view" \
	"$(q restored_prev_plain "SELECT * FROM credits.verify()")|$(q restored_prev_plain "SELECT has_table_privilege('regress_upg_reporting', 'credits.ledger', 'SELECT')")" "|t"
same "restored from $PREV into $NEW: new debits (two grants), the refund of a batch of the dump, verify()" \
	"$(q restored_prev_plain "SELECT credits.grant_credits(2, 50, 'promo') > 0; INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5), (2, 120) RETURNING cost" | tr '\n' ' ')|$(q restored_prev_plain "SELECT (credits.fail_recharge(recharge_id, 'declined', claim_token)).status FROM credits.recharges WHERE account_id = 3")|$(q restored_prev_plain "SELECT string_agg(kind || ':' || delta, ',' ORDER BY entry_id) FROM credits.ledger WHERE account_id = 3 AND kind = 'refund'")|$(q restored_prev_plain "SELECT count(*) FROM credits.verify()")" \
	"t 5 120 |failed|refund:20,refund:50,refund:30|0"
"$PG_BIN/createdb" restored_prev_par
PGOPTIONS='-c session_replication_role=replica' "$PG_BIN/pg_restore" -j 3 -d restored_prev_par "$WORK/prev.dump" >"$WORK/restore_prev_par.log" 2>&1
same "the $PREV dump restored into $NEW in parallel (pg_restore -j 3, session_replication_role = replica): no error, the ledger as it was, verify() empty" \
	"$?|$(head -3 "$WORK/restore_prev_par.log")|$(pg -d restored_prev_par -c "COPY (SELECT * FROM credits.ledger ORDER BY entry_id) TO STDOUT" | cmp -s - "$WORK/ledger_before_upg20" && echo same)|$(q restored_prev_par "SELECT count(*) FROM credits.verify()")" \
	"0||same|0"
fails_with "restored into $NEW: an INSERT into the ledger view by a role that may not restore is refused" restored_prev_plain MC009 \
	"GRANT USAGE ON SCHEMA credits TO regress_upg_admin; GRANT INSERT ON credits.ledger TO regress_upg_admin; $ADMIN INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (1, 0, 0, 'open')"

# The way to bring an old dump to $NEW with its grants: restore it into the
# version it was taken from, then update.  0.1.0 refuses restored batches
# (CR007), so its dump is restored without triggers; 0.1.1 recognises them.
"$PG_BIN/createdb" restored_at_old
q restored_at_old "CREATE EXTENSION credits VERSION '$OLD'" >/dev/null
PGOPTIONS='-c session_replication_role=replica' "$PG_BIN/pg_restore" -d restored_at_old "$WORK/old.dump" >"$WORK/restore_at_old.log" 2>&1
same "the $OLD dump restored into a database created at $OLD (without triggers): no error but the dump's CREATE SCHEMA credits" \
	"$(grep -E '^pg_restore: (error|warning)' "$WORK/restore_at_old.log")" \
	$'pg_restore: error: could not execute query: ERROR:  schema "credits" already exists\npg_restore: warning: errors ignored on restore: 1'
snapshot restored_at_old "$WORK/tables_old" "$WORK/restored_at_old"
ledger_before restored_at_old "$WORK/ledger_before_at_old"
same "restored at $OLD: every table as in the $OLD database before the update" \
	"$(for t in $(cut -d'|' -f1 "$WORK/tables_old") sequences; do cmp -s "$WORK/before/$t" "$WORK/restored_at_old/$t" || echo "$t differs"; done)" ""
same "restored at $OLD, then ALTER EXTENSION credits UPDATE: no error" "$(q restored_at_old "ALTER EXTENSION credits UPDATE")" ""
update_checks restored_at_old "$OLD restored" "$WORK/tables_old"
entry_checks restored_at_old "$OLD restored" "$WORK/ledger_before_at_old"
"$PG_BIN/createdb" restored_at_mid
q restored_at_mid "CREATE EXTENSION credits VERSION '$MID'" >/dev/null
"$PG_BIN/pg_restore" -d restored_at_mid "$WORK/mid.dump" >"$WORK/restore_at_mid.log" 2>&1
same "the $MID dump restored the plain way into a database created at $MID: no error but the dump's CREATE SCHEMA credits" \
	"$(grep -E '^pg_restore: (error|warning)' "$WORK/restore_at_mid.log")" \
	$'pg_restore: error: could not execute query: ERROR:  schema "credits" already exists\npg_restore: warning: errors ignored on restore: 1'
snapshot restored_at_mid "$WORK/tables11" "$WORK/restored_at_mid"
ledger_before restored_at_mid "$WORK/ledger_before_at_mid"
same "restored at $MID: every table as in the $MID database before the update" \
	"$(for t in $(cut -d'|' -f1 "$WORK/tables11") sequences; do cmp -s "$WORK/before11/$t" "$WORK/restored_at_mid/$t" || echo "$t differs"; done)" ""
same "restored at $MID, then ALTER EXTENSION credits UPDATE: no error" "$(q restored_at_mid "ALTER EXTENSION credits UPDATE")" ""
update_checks restored_at_mid "$MID restored" "$WORK/tables11"
entry_checks restored_at_mid "$MID restored" "$WORK/ledger_before_at_mid"
"$PG_BIN/createdb" restored_at_prev
q restored_at_prev "CREATE EXTENSION credits VERSION '$PREV'" >/dev/null
"$PG_BIN/pg_restore" -d restored_at_prev "$WORK/prev.dump" >"$WORK/restore_at_prev.log" 2>&1
same "the $PREV dump restored the plain way into a database created at $PREV: no error but the dump's CREATE SCHEMA credits" \
	"$(grep -E '^pg_restore: (error|warning)' "$WORK/restore_at_prev.log")" \
	$'pg_restore: error: could not execute query: ERROR:  schema "credits" already exists\npg_restore: warning: errors ignored on restore: 1'
snapshot restored_at_prev "$WORK/tables20_noledger" "$WORK/restored_at_prev"
q restored_at_prev "SELECT last_value, is_called FROM credits.grants_grant_id_seq" >>"$WORK/restored_at_prev/sequences"
ledger_before restored_at_prev "$WORK/ledger_before_at_prev"
same "restored at $PREV: every table (the ledger included) and sequence as in the $PREV database before the update" \
	"$(for t in $(cut -d'|' -f1 "$WORK/tables20_noledger") sequences; do cmp -s "$WORK/before20/$t" "$WORK/restored_at_prev/$t" || echo "$t differs"; done
	   cmp -s "$WORK/ledger_before_upg20" "$WORK/ledger_before_at_prev" || echo "ledger differs")" ""
same "restored at $PREV, then ALTER EXTENSION credits UPDATE: no error" "$(q restored_at_prev "ALTER EXTENSION credits UPDATE")" ""
entry_checks restored_at_prev "$PREV restored" "$WORK/ledger_before_at_prev"
same "restored at $PREV and updated: verify() returns no rows; the reporting role's SELECT on the ledger (dumped for the table) is on the view" \
	"$(q restored_at_prev "SELECT * FROM credits.verify()")|$(q restored_at_prev "SELECT has_table_privilege('regress_upg_reporting', 'credits.ledger', 'SELECT')")" "|t"
same "restored at $PREV and updated: new debits (one of two grants) and a settlement" \
	"$(q restored_at_prev "SELECT credits.grant_credits(2, 50, 'promo')" >/dev/null; q restored_at_prev "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5), (2, 120) RETURNING cost" | tr '\n' ' ')|$(q restored_at_prev "SELECT (credits.fail_recharge(recharge_id, 'declined', claim_token)).status FROM credits.recharges WHERE account_id = 3")|$(q restored_at_prev "SELECT count(*) FROM credits.verify()")" \
	"5 120 |failed|0"

# And the updated databases themselves, dumped and restored the plain way.
"$PG_BIN/pg_dump" -Fc -d upg11 -f "$WORK/new11.dump"
"$PG_BIN/createdb" restored_new11
"$PG_BIN/pg_restore" -d restored_new11 "$WORK/new11.dump" >"$WORK/restore_new11.log" 2>&1
same "pg_restore of a dump of the updated $MID database: no error" "$?|$(head -3 "$WORK/restore_new11.log")" "0|"
table_dump upg11 "$WORK/upg11_final"
table_dump restored_new11 "$WORK/restored_new11"
same_files "the updated $MID database restored: every table identical (all columns, grants included)" "$WORK/upg11_final" "$WORK/restored_new11"
same "the updated $MID database restored: verify() returns no rows" "$(q restored_new11 "SELECT * FROM credits.verify()")" ""
"$PG_BIN/pg_dump" -Fc -d upg -f "$WORK/new.dump"
"$PG_BIN/createdb" restored_new
"$PG_BIN/pg_restore" -d restored_new "$WORK/new.dump" >"$WORK/restore_new.log" 2>&1
rc=$?
table_dump upg "$WORK/upg_final"
table_dump restored_new "$WORK/restored_new"
if [ $rc -eq 0 ] && [ ! -s "$WORK/restore_new.log" ]; then
	ok "pg_restore of a dump of the updated database reports no error"
else
	not_ok "pg_restore of a dump of the updated database reports no error (exit code $rc)"
	head -5 "$WORK/restore_new.log" | sed 's/^/#   /'
fi
same_files "the updated database restored: every table identical (all columns)" "$WORK/upg_final" "$WORK/restored_new"
same "the updated database restored: verify() returns no rows" "$(q restored_new "SELECT * FROM credits.verify()")" ""
"$PG_BIN/pg_dump" -Fc -d upg20 -f "$WORK/new20.dump"
"$PG_BIN/createdb" restored_new20
"$PG_BIN/pg_restore" -d restored_new20 "$WORK/new20.dump" >"$WORK/restore_new20.log" 2>&1
same "pg_restore of a dump of the updated $PREV database: no error" "$?|$(head -3 "$WORK/restore_new20.log")" "0|"
table_dump upg20 "$WORK/upg20_final"
table_dump restored_new20 "$WORK/restored_new20"
same_files "the updated $PREV database restored: every table (ledger_entries, send_batches with its entries) and the ledger view identical" "$WORK/upg20_final" "$WORK/restored_new20"
same "the updated $PREV database restored: the ledger view returns the same rows, created_at included" \
	"$(pg -d restored_new20 -c "COPY (SELECT * FROM credits.ledger ORDER BY entry_id) TO STDOUT" | md5sum)" "$(pg -d upg20 -c "COPY (SELECT * FROM credits.ledger ORDER BY entry_id) TO STDOUT" | md5sum)"
same "the updated $PREV database restored: verify() returns no rows" "$(q restored_new20 "SELECT * FROM credits.verify()")" ""
grants upg20 "$WORK/grants20_final"
grants restored_new20 "$WORK/grants20_restored"
same_files "the updated $PREV database restored: every grant, the reporting role's on credits.ledger included (pg_init_privs)" "$WORK/grants20_final" "$WORK/grants20_restored"
same "the updated $PREV database restored: the reporting role reads credits.ledger" \
	"$(q restored_new20 "$REPORTING SELECT count(*) FROM credits.ledger")" "$(q upg20 "SELECT count(*) FROM credits.ledger")"
"$PG_BIN/createdb" restored_new20_par
PGOPTIONS='-c session_replication_role=replica' "$PG_BIN/pg_restore" -j 3 -d restored_new20_par "$WORK/new20.dump" >"$WORK/restore_new20_par.log" 2>&1
same "a parallel restore (pg_restore -j 3, session_replication_role = replica) of the updated $PREV database: no error, every table identical, the same grants, verify() empty" \
	"$?|$(head -3 "$WORK/restore_new20_par.log")|$(table_dump restored_new20_par "$WORK/restored_new20_par"; cmp -s "$WORK/upg20_final" "$WORK/restored_new20_par" && echo same)|$(grants restored_new20_par "$WORK/grants20_par"; cmp -s "$WORK/grants20_final" "$WORK/grants20_par" && echo same)|$(q restored_new20_par "SELECT count(*) FROM credits.verify()")" \
	"0||same|same|0"
same "the updated $PREV database restored: sequences continue, a new debit and verify()" \
	"$(q restored_new20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 2) RETURNING (batch_id > (SELECT max(batch_id) FROM credits.send_batches)) || ':' || (entry_id > (SELECT max(entry_id) FROM credits.ledger))")|$(q restored_new20 "SELECT count(*) FROM credits.verify()")" \
	"true:true|0"

################################################################################
say "6. databases that never ran the update, served by the library of $NEW"
# keep10 and keep11 were created at $OLD and $MID in section 1c; the library
# has since served $NEW databases in the same cluster.  Debits and settlement
# work, each keeps its SQLSTATE class, and nothing of grants happens: no
# grant tables or columns, one debit row per batch even past zero, one
# recharge row per success, one refund row per failed batch.
for db in keep10 keep11; do
	v=$OLD cls=CR; [ $db = keep11 ] && v=$MID cls=MC
	same "$v, never updated: still at $v, no grants or plans tables, no ledger.grant_id or send_batches.owed" \
		"$(q $db "SELECT extversion, to_regclass('credits.grants') IS NULL, to_regclass('credits.plans') IS NULL,
		           (SELECT count(*) FROM pg_attribute WHERE (attrelid, attname) IN (('credits.ledger'::regclass, 'grant_id'), ('credits.send_batches'::regclass, 'owed')))
		           FROM pg_extension WHERE extname = 'credits'")" "$v|t|t|0"
	same "$v, never updated: a batch past zero grows the pending recharge (cost/status, recharge credits)" \
		"$(q $db "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 30) RETURNING cost || '/' || status")|$(q $db "SELECT string_agg(credits || ':' || status, ',') FROM credits.recharges")" \
		"30/awaiting_credits|80:pending"
	same "$v, never updated: one debit row per batch (also for the one that crossed zero), no grant behaviour" \
		"$(q $db "SELECT string_agg(b.batch_id || ':' || (SELECT string_agg(l.delta::text, ',') FROM credits.ledger l WHERE l.batch_id = b.batch_id AND l.kind = 'debit'), ' ' ORDER BY b.batch_id)
		           FROM credits.send_batches b")|$(q $db "SELECT string_agg(account_id || ':' || balance, ' ' ORDER BY account_id) FROM credits.accounts")" \
		"1:-150 2:-20 3:-30|1:-80 2:30"
	if [ $db = keep11 ]; then
		complete="SELECT (credits.complete_recharge(recharge_id, 'psp-keep-' || recharge_id, claim_token)).status FROM credits.claim_recharges(10)"
		fail="SELECT (credits.fail_recharge(recharge_id, 'declined', claim_token)).status FROM credits.claim_recharges(10)"
	else
		complete="SELECT (credits.complete_recharge(recharge_id, 'psp-keep-' || recharge_id)).status FROM credits.claim_recharges(10)"
		fail="SELECT (credits.fail_recharge(recharge_id, 'declined')).status FROM credits.claim_recharges(10)"
	fi
	same "$v, never updated: claimed and completed: one recharge row, the batches ready, the balance 0" \
		"$(q $db "$complete")|$(q $db "SELECT string_agg(kind || ':' || delta, ',' ORDER BY entry_id) FROM credits.ledger WHERE kind NOT IN ('open', 'debit')")|$(q $db "SELECT string_agg(status, ',' ORDER BY batch_id) FROM credits.send_batches WHERE account_id = 1")|$(q $db "SELECT balance FROM credits.accounts WHERE account_id = 1")" \
		"succeeded|recharge:80|ready,ready|0"
	q $db "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 200)" >/dev/null
	same "$v, never updated: a failed recharge: one refund row of the batch's cost, the balance back to 0" \
		"$(q $db "$fail")|$(q $db "SELECT string_agg(kind || ':' || delta, ',' ORDER BY entry_id) FROM credits.ledger WHERE kind = 'refund'")|$(q $db "SELECT balance FROM credits.accounts WHERE account_id = 1")" \
		"failed|refund:200|0"
	same "$v, never updated: add_credits writes one grant row" \
		"$(q $db "SELECT credits.add_credits(2, 10)")|$(q $db "SELECT count(*) FROM credits.ledger WHERE kind = 'grant'")" "40|1"
	fails_with "$v, never updated: a batch above the balance" $db ${cls}001 "INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 1000)"
	fails_with "$v, never updated: add_credits to an account that does not exist" $db ${cls}003 "SELECT credits.add_credits(999, 1)"
	fails_with "$v, never updated: a negative amount" $db ${cls}014 "SELECT credits.open_account(3, -5)"
	same "$v, never updated: the ledger kinds of $v only, and verify() returns no rows" \
		"$(q $db "SELECT string_agg(DISTINCT kind, ',') FROM credits.ledger")|$(q $db "SELECT * FROM credits.verify()")" \
		"debit,grant,open,recharge,refund|"
done

# keep20, created at $PREV in section 1c, never updated: it keeps writing
# its ledger table (debit rows per grant and for what is owed, repay pairs,
# refunds per row), grants and plans work, verify() stays empty.
same "$PREV, never updated: still at $PREV, credits.ledger a table, no ledger_entries, no entry columns" \
	"$(q keep20 "SELECT extversion, (SELECT relkind FROM pg_class WHERE oid = 'credits.ledger'::regclass), to_regclass('credits.ledger_entries') IS NULL,
	           (SELECT count(*) FROM pg_attribute WHERE attrelid = 'credits.send_batches'::regclass AND attname LIKE 'entry\_%')
	           FROM pg_extension WHERE extname = 'credits'")" "$PREV|r|t|0"
same "$PREV, never updated: a batch past zero owes its cost and grows the pending recharge" \
	"$(q keep20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 30) RETURNING cost || '/' || status || '/' || owed")|$(q keep20 "SELECT string_agg(credits || ':' || status, ',') FROM credits.recharges")" \
	"30/awaiting_credits/30|80:pending"
same "$PREV, never updated: the debit rows in the ledger table: per grant drawn and for what is owed" \
	"$(q keep20 "SELECT string_agg(b.batch_id - m.first + 1 || ':' || (SELECT string_agg(coalesce(g.source, '-') || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	                                             WHERE l.batch_id = b.batch_id AND l.kind = 'debit'), ' ' ORDER BY b.batch_id)
	           FROM credits.send_batches b, (SELECT min(batch_id) AS first FROM credits.send_batches) m")|$(balances keep20 "1, 2")" \
	"1:signup-100,--50 2:signup-20 3:--30|1:-80/0/80 2:30/30/0"
same "$PREV, never updated: claimed and completed with its token: a recharge grant, repay pairs, the batches ready, the balance 0" \
	"$(q keep20 "SELECT (credits.complete_recharge(recharge_id, 'psp-keep-' || recharge_id, claim_token)).status FROM credits.claim_recharges(10)")|$(q keep20 "SELECT string_agg(kind || ':' || delta, ',' ORDER BY entry_id) FROM credits.ledger WHERE kind NOT IN ('open', 'debit')")|$(q keep20 "SELECT string_agg(status || ':' || owed, ',' ORDER BY batch_id) FROM credits.send_batches WHERE account_id = 1")|$(balances keep20 1)" \
	"succeeded|recharge:80,repay:-50,repay:50,repay:-30,repay:30|ready:0,ready:0|1:0/0/0"
q keep20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 200)" >/dev/null
same "$PREV, never updated: a failed recharge: one refund row of what the batch owed, the balance back to 0" \
	"$(q keep20 "SELECT (credits.fail_recharge(recharge_id, 'declined', claim_token)).status FROM credits.claim_recharges(10)")|$(q keep20 "SELECT string_agg(kind || ':' || delta || ':' || coalesce(grant_id::text, '-'), ',' ORDER BY entry_id) FROM credits.ledger WHERE kind = 'refund'")|$(balances keep20 1)" \
	"failed|refund:200:-|1:0/0/0"
same "$PREV, never updated: grant_credits and add_credits write grants and their ledger rows; a batch of two grants two debit rows" \
	"$(q keep20 "SELECT credits.grant_credits(2, 10, 'promo')" >/dev/null; q keep20 "SELECT credits.add_credits(2, 10)")|$(q keep20 "INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 35) RETURNING cost")|$(q keep20 "SELECT string_agg(coalesce(g.source, '-') || l.delta, ',' ORDER BY l.entry_id) FROM credits.ledger l LEFT JOIN credits.grants g USING (grant_id)
	          WHERE l.batch_id = (SELECT max(batch_id) FROM credits.send_batches)")|$(balances keep20 2)" \
	"50|35|signup-30,promo-5|2:15/15/0"
fails_with "$PREV, never updated: a batch above the balance" keep20 MC001 "INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 1000)"
fails_with "$PREV, never updated: the table owner setting cost alone" keep20 MC007 "INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (2, 1, 1)"
fails_with "$PREV, never updated: DELETE from the ledger table" keep20 MC009 "DELETE FROM credits.ledger"
same "$PREV, never updated: the ledger kinds, one ledger row per entry in the table, and verify() returns no rows" \
	"$(q keep20 "SELECT string_agg(DISTINCT kind, ',') FROM credits.ledger")|$(q keep20 "SELECT count(*) FROM credits.ledger")|$(q keep20 "SELECT * FROM credits.verify()")" \
	"debit,grant,open,recharge,refund,repay|17|"

# The library tells a $NEW schema by its tables, not by a DBA's objects: a
# DBA's own relation named credits.ledger_entries (a view over the ledger)
# in a database not yet at $NEW must not make it write the $NEW way.
for v in $OLD $MID $PREV; do
	db=ownrel_${v//./}
	"$PG_BIN/createdb" $db
	q $db "CREATE EXTENSION credits VERSION '$v'; SELECT credits.open_account(1, 100);
	       CREATE VIEW credits.ledger_entries AS SELECT * FROM credits.ledger" >/dev/null
	same "$v, never updated, with a DBA's view named credits.ledger_entries: a debit writes the ledger table, verify() empty" \
		"$(q $db "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5) RETURNING cost")|$(q $db "SELECT count(*) FROM credits.ledger WHERE kind = 'debit'")|$(q $db "SELECT count(*) FROM credits.verify()")" \
		"5|1|0"
done
# The same for 0.2.0's tables in a 0.1 database (a library-wide rule since 0.2.0).
for v in $OLD $MID; do
	db=owngrants_${v//./}
	"$PG_BIN/createdb" $db
	q $db "CREATE EXTENSION credits VERSION '$v'; SELECT credits.open_account(1, 100);
	       CREATE VIEW credits.grants AS SELECT account_id, balance FROM credits.accounts" >/dev/null
	same "$v, never updated, with a DBA's view named credits.grants: a debit works as in $v, verify() empty" \
		"$(q $db "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5) RETURNING cost")|$(q $db "SELECT count(*) FROM credits.ledger WHERE kind = 'debit'")|$(q $db "SELECT count(*) FROM credits.verify()")" \
		"5|1|0"
done

elapsed=$(( $(date +%s) - built ))
check "the suite ran in under five minutes (the frozen suites, 0.2.0's bulk included, take most of it; $elapsed s after a build of $((built - started)) s)" test "$elapsed" -lt 300

finish

#!/usr/bin/env bash
# test/upgrade/run.sh: ALTER EXTENSION credits UPDATE on a database full of data.
#
# Builds and installs the current tree (the NEW library and every install and
# update script), then:
#
#   1. old database, new library: CREATE EXTENSION credits VERSION '0.1.0' in
#      database "upg", grants the README's roles, and runs a mixed workload
#      through the 0.1.0 API (single-row, multi-row, INSERT ... SELECT and COPY
#      batches, idempotency keys, targets, monthly limits, claims, completions,
#      failures up to credits.max_payment_failures, disable, expiry) and its
#      error cases: a database that has not run the update must keep raising
#      the 0.1.0 SQLSTATEs (CR...), from the C triggers and the SQL functions.
#   2. the update: a snapshot of every row of every extension table (the
#      columns 0.1.0 had, in a canonical order), the sequences and the grants
#      is taken before ALTER EXTENSION credits UPDATE and compared after it;
#      extversion is credits.control's default_version; verify() stays empty;
#      a session connected before the update, and the session that runs it,
#      see the new codes; the roles keep working with the rights they had
#      (2-argument complete_recharge and fail_recharge included); nothing new
#      is open to PUBLIC.
#   3. the new version in that database: MC codes, claim tokens and leases,
#      a stale token refused with MC020 and nothing changed, release_recharge,
#      the recharge_queue view; verify() empty at the end.
#   4. same objects either way: a fresh CREATE EXTENSION credits and 0.1.0 +
#      UPDATE give the same catalog (\dx+, functions with their security,
#      volatility and settings, tables, constraints, indexes, triggers, views,
#      comments, grants, pg_dump configuration).
#   5. a dump of the 0.1.0 database restored with a plain pg_restore into the
#      new version: same rows, verify() empty.
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
# grants DB FILE: the ACL of every relation, column and function of schema credits.
grants() {
	q "$1" "SELECT 'rel ' || c.relname || ' ' || coalesce(c.relacl::text, '-')
	          FROM pg_class c WHERE c.relnamespace = 'credits'::regnamespace
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
	for t in accounts auto_recharge recharges send_batches ledger; do
		echo "== $t"
		pg -d "$1" -c "COPY (SELECT * FROM credits.$t ORDER BY 1) TO STDOUT"
	done >"$2" 2>&1
}

################################################################################
say "0. $OLD's own regression suites, on a $OLD database served by the new library"
# test/upgrade/0.1.0/ holds sql/ and expected/ of the 0.1.0 release (all but
# bulk, which takes 20 s), with one deliberate change: the CR007 hint now
# mentions restores.  Run with pg_regress against CREATE EXTENSION credits
# VERSION '0.1.0', they prove that every promise 0.1.0 made still holds.
OLDREG=test/upgrade/$OLD
PG_REGRESS=$("$PG_BIN/pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress
"$PG_BIN/createdb" old_regress
q old_regress "CREATE EXTENSION credits VERSION '$OLD'" >/dev/null
# PostgreSQL 16 and later read expected/ from --expecteddir (default: the
# current directory), 15 from --inputdir.
expecteddir=()
"$PG_REGRESS" --help 2>&1 | grep -q -- --expecteddir && expecteddir=(--expecteddir="$OLDREG")
"$PG_REGRESS" --bindir="$PG_BIN" --inputdir="$OLDREG" "${expecteddir[@]}" --outputdir="$WORK/old_regress" \
	--use-existing --dbname=old_regress \
	install seed_example debit auto_recharge recharge_worker idempotency batch_guard \
	privileges policy_limits reports verify >"$WORK/old_regress.log" 2>&1
while read -r name result; do
	if [ "$result" == ok ]; then
		ok "$OLD's regression suite $name passes on a $OLD database"
	else
		not_ok "$OLD's regression suite $name passes on a $OLD database"
		sed -n "/^diff .*\/$name.out/,/^diff /p" "$WORK/old_regress/regression.diffs" 2>/dev/null | head -30 | sed 's/^/#   /'
	fi
done < <(sed -nE 's/^(test|ok [0-9]+ *[-+]?|not ok [0-9]+ *[-+]?) +([a-z_]+) +\.\.\. +(ok|FAILED).*/\2 \3/p; s/^ok [0-9]+ +[-+]? +([a-z_]+) .*/\1 ok/p; s/^not ok [0-9]+ +[-+]? +([a-z_]+) .*/\1 FAILED/p' "$WORK/old_regress.log")
check "$OLD's regression suites all ran ($(grep -cE '^test |^(not )?ok ' "$WORK/old_regress.log") of 11)" \
	test "$(grep -cE '^test |^(not )?ok ' "$WORK/old_regress.log")" -eq 11

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
same "$OLD: the data covers every recharge status (pending 2, 3 and 10; processing 4 and 13; succeeded 5; failed and cancelled 6; cancelled 7; expired 8)" \
	"$(q upg "SELECT string_agg(account_id || ':' || status, ',' ORDER BY recharge_id) FROM credits.recharges")" \
	"4:processing,5:succeeded,13:processing,6:failed,6:failed,6:failed,6:cancelled,7:cancelled,8:cancelled,2:pending,3:pending,10:pending"
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
say "2. ALTER EXTENSION credits UPDATE"
check "credits.control's default_version ($NEW) is newer than $OLD" \
	test "$(q upg "SELECT '$NEW' <> '$OLD' AND string_to_array('$NEW', '.')::int[] > string_to_array('$OLD', '.')::int[]")" == t
same "pg_extension_update_paths: $OLD reaches $NEW in one script" \
	"$(q upg "SELECT path FROM pg_extension_update_paths('credits') WHERE source = '$OLD' AND target = '$NEW'")" "$OLD--$NEW"

# A session connected before the update (an application's connection pool),
# left open across it.  Its output goes to stderr only (errors and \warn
# markers), which is not buffered.
mkfifo "$WORK/session.in"
"$PG_BIN/psql" -X -q -At -v VERBOSITY=sqlstate -d upg <"$WORK/session.in" >/dev/null 2>"$WORK/session.err" &
SESSION_PID=$!
exec 7>"$WORK/session.in"
session_n=0
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
grants upg "$WORK/grants_before"
filenodes() {
	q upg "SELECT c.relname || ' ' || pg_relation_filenode(c.oid) FROM pg_class c
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
same "the update rewrote no table (same relfilenodes)" "$(filenodes)" "$filenodes_before"
same "the update left the policy with min_balance > max_credits (allowed in $OLD) as it was" \
	"$(q upg "SELECT min_balance || '/' || max_credits || '/' || enabled FROM credits.auto_recharge WHERE account_id = 14")" "600/500/true"
# The update drops three internal functions (settlement moved into C); they
# were granted to no one, and nothing else may lose a grant.
dropped='^fn credits\.(_settle_batches\(bigint,text\)|_post\(credits\.accounts,bigint,text,bigint,bigint,text,bigint\)|_lock_recharge\(bigint\)) \{postgres=X/postgres\}$'
same "the update drops exactly the internal _settle_batches, _post and _lock_recharge, which no role was granted" \
	"$(grep -vxFf "$WORK/grants_after" "$WORK/grants_before" | grep -cE "$dropped")" "3"
if changed=$(grep -vxFf "$WORK/grants_after" "$WORK/grants_before" | grep -vE "$dropped"); then
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
exec 7>&-
wait "$SESSION_PID"
SESSION_PID=

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
	"$(q upg "$WORKER SELECT string_agg(account_id::text, ',' ORDER BY recharge_id) FROM credits.claim_recharges(10)")" "2,3,10"
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
fails_with "$NEW guard: DELETE from the ledger" upg MC009 "DELETE FROM credits.ledger"
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
say "4. a fresh CREATE EXTENSION credits and $OLD + UPDATE give the same objects"
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
}
"$PG_BIN/createdb" fresh
"$PG_BIN/createdb" stepped
q fresh "CREATE EXTENSION credits" >/dev/null
q stepped "CREATE EXTENSION credits VERSION '$OLD'; ALTER EXTENSION credits UPDATE" >/dev/null
same "a fresh CREATE EXTENSION credits installs $NEW" "$(q fresh "SELECT extversion FROM pg_extension WHERE extname = 'credits'")" "$NEW"
catalog fresh "$WORK/cat_fresh" acl
catalog stepped "$WORK/cat_stepped" acl
catalog upg "$WORK/cat_upg"
catalog fresh "$WORK/cat_fresh_noacl"
note "the extension has $(wc -l <"$WORK/cat_fresh/members") member objects, $(wc -l <"$WORK/cat_fresh/functions") functions"
for part in dx extension functions relations columns constraints indexes triggers views sequences members; do
	same_files "fresh and $OLD + UPDATE: same $part (grants included)" "$WORK/cat_fresh/$part" "$WORK/cat_stepped/$part"
done
# The workload's database: the same objects; its grants differ by design.
for part in functions relations columns constraints indexes triggers views members; do
	same_files "fresh and the updated workload database: same $part" "$WORK/cat_fresh_noacl/$part" "$WORK/cat_upg/$part"
done
same "fresh: every SECURITY DEFINER function pins search_path" \
	"$(q fresh "SELECT string_agg(oid::regprocedure::text, ', ') FROM pg_proc WHERE pronamespace = 'credits'::regnamespace
	            AND prosecdef AND NOT coalesce(proconfig, '{}') @> '{\"search_path=pg_catalog, pg_temp\"}'")" ""
same "fresh: the report views are security_barrier" \
	"$(q fresh "SELECT string_agg(relname || ':' || coalesce('security_barrier=true' = ANY (reloptions), false), ',' ORDER BY relname)
	            FROM pg_class WHERE relnamespace = 'credits'::regnamespace AND relkind = 'v'")" \
	"account_overview:true,recharge_history:true,recharge_queue:true,usage_daily:true,usage_monthly:true"

################################################################################
say "5. a dump of the $OLD database restored into $NEW with a plain pg_restore"
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
same "restored: verify() returns no rows" "$(q restored "SELECT * FROM credits.verify()")" ""
same "restored: a new batch is debited (cost/status) and verify() stays empty" \
	"$(q restored "INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 4) RETURNING cost || '/' || status")|$(q restored "SELECT count(*) FROM credits.verify()")" \
	"4/ready|0"

# And the updated database itself, dumped and restored the plain way.
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

elapsed=$(( $(date +%s) - built ))
check "the suite ran in well under a minute ($elapsed s after a build of $((built - started)) s)" test "$elapsed" -lt 40

finish

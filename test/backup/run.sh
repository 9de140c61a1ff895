#!/usr/bin/env bash
# test/backup/run.sh: pg_dump and restore of a database that uses credits.
#
# Builds varied data in database "src" (accounts, prices, policies with
# targets and monthly limits, batches in every status, recharges in every
# status, payment failures, odd strings, role grants; credit grants of every
# source, a plan, expired grants and a batch that owes), then restores it into new
# databases the ways a DBA would:
#
#   a. plain:  psql -f dump.sql, nothing special            (as a superuser)
#   b. plain:  pg_dump --disable-triggers, psql -f          (as a superuser)
#   c. custom: pg_dump -Fc, pg_restore -d db dump, nothing special
#   d. custom: pg_restore --disable-triggers
#   e. custom, in three passes: pre-data, then --data-only --disable-triggers,
#      then post-data
#   f. plain, with session_replication_role = replica for the restoring session
#   g. custom, pg_restore with session_replication_role = replica (README)
#   h. custom, parallel pg_restore -j 2 with session_replication_role =
#      replica (plain -j 2 is only reported: see there)
#   i. a data-only plain dump into a database where CREATE EXTENSION credits
#      has run (grants are not in such a dump)
#
# Since 0.1.1 a row arriving in send_batches with cost and status already set,
# inserted by the table owner or a superuser, is a restored row: stored as is
# and not debited.  So a-e and i are full restores without any setting.  (In
# 0.1.0, a-d left the debit trigger on while the data loaded and it refused
# every batch with CR007: --disable-triggers only acts on data-only dumps and
# restores, and the extension's triggers exist as soon as the dump's CREATE
# EXTENSION has run, before any table data is loaded.)
#
# For every restore, every table, sequence and grant (column grants included)
# must come back identical, verify() must be empty, and new batches,
# recharges and settlements must keep working with fresh ids.  The install
# script registers prices for pg_dump with WHERE channel <> 'email', so src
# also changes the email price to see whether that survives.
#
# After the restores (j), the rule must stay narrow: an application role with
# the README's column grants cannot even name cost or status (42501), a role
# given INSERT on the whole table still gets MC007, a superuser's row with
# only one of them set gets MC007, and a superuser's row without them is
# debited normally.
#
# Prints "ok - ..." / "not ok - ..." per check, "# ..." notes, and
# "N passed, N failed"; exits non-zero on any failure.  Safe to run again:
# a leftover cluster is removed first, and this one at exit.
set -uo pipefail

CREDITS_PURPOSE=backup
CREDITS_PORT=${CREDITS_PORT:-54347}
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$REPO_ROOT"

source "$REPO_ROOT/test/lib.sh"

WORK=$(mktemp -d /tmp/credits-backup-files.XXXXXX)
chmod 755 "$WORK"
trap 'stop_cluster; rm -rf "$WORK"' EXIT

build_and_install
start_cluster || { echo "not ok - cluster did not start"; exit 1; }

# q DB SQL: one value, unaligned.
q() { pg -d "$1" -At -c "$2"; }

say "building data in database src"
"$PG_BIN/createdb" src || exit 1
pg -d src >"$WORK/src.log" 2>&1 <<'SQL' || { cat "$WORK/src.log"; echo "not ok - building the data in src failed"; exit 1; }
CREATE EXTENSION credits;
INSERT INTO credits.prices (channel, credits_per_message) VALUES ('sms', 7), ('push', 2);
-- A DBA changes the shipped email price.
UPDATE credits.prices SET credits_per_message = 3 WHERE channel = 'email';
CREATE ROLE regress_backup_reader;
GRANT USAGE ON SCHEMA credits TO regress_backup_reader;
GRANT SELECT ON credits.accounts, credits.account_overview TO regress_backup_reader;
-- The application as the README grants it (column INSERT), and a careless
-- grant of INSERT on the whole table.
CREATE ROLE regress_backup_app;
GRANT USAGE ON SCHEMA credits TO regress_backup_app;
GRANT SELECT, INSERT (account_id, messages, channel, idempotency_key) ON credits.send_batches TO regress_backup_app;
GRANT SELECT ON credits.accounts, credits.prices, credits.recharges TO regress_backup_app;
CREATE ROLE regress_backup_loose;
GRANT USAGE ON SCHEMA credits TO regress_backup_loose;
GRANT SELECT, INSERT ON credits.send_batches TO regress_backup_loose;

SELECT credits.open_account(1, 10000);   -- funded, no policy: ready batches
SELECT credits.open_account(2, 0);       -- target + monthly limit: a pending recharge
SELECT credits.open_account(3, 100);     -- a processing recharge
SELECT credits.open_account(4, 0);       -- a succeeded recharge
SELECT credits.open_account(5, 0);       -- failed recharges, turned off by payment failures
SELECT credits.open_account(6, 0);       -- disabled by the user: a cancelled recharge
SELECT credits.open_account(7, 50);      -- an expired recharge
SELECT credits.open_account(8, 0);       -- nothing yet
SELECT credits.add_credits(1, 500, E'grant with ''quotes'', "double", \\backslash, a\ttab, a\nnewline and ünïcödé');

INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key) VALUES
	(1, 10, 'email', 'k-1'), (1, 20, 'sms', 'k-2'), (1, 30, 'push', NULL),
	(1, 5, 'email', E'odd key: ''q'' "dq" \\ \t end');
COPY credits.send_batches (account_id, messages, channel, idempotency_key) FROM STDIN;
1	7	sms	copy-1
1	8	email	\N
\.

-- 3: a recharge claimed by a worker and not settled yet.
SELECT credits.enable_auto_recharge(3, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (3, 200);
SELECT count(*) FROM credits.claim_recharges(10);

-- 4: a succeeded recharge.
SELECT credits.enable_auto_recharge(4, 0, 1000, 300);
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (4, 10, 'sms');
SELECT count(*) FROM credits.claim_recharges(10);
SELECT credits.complete_recharge((SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 4), 'psp-4-"ok"');

-- 5: three failures in a row turn auto-recharge off.
SELECT credits.enable_auto_recharge(5, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (5, 10);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT credits.fail_recharge((SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 5), E'card declined: "insufficient funds" \\ 51');
INSERT INTO credits.send_batches (account_id, messages) VALUES (5, 11);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT credits.fail_recharge((SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 5), 'card declined');
INSERT INTO credits.send_batches (account_id, messages) VALUES (5, 12);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT credits.fail_recharge((SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 5), 'card expired');

-- 6: disabled while a recharge was pending.
SELECT credits.enable_auto_recharge(6, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (6, 10, 'push');
SELECT credits.disable_auto_recharge(6);

-- 7: a pending recharge that expires.
SELECT credits.enable_auto_recharge(7, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (7, 100);
UPDATE credits.recharges SET created_at = created_at - interval '2 hours' WHERE account_id = 7;
SELECT credits.expire_recharges();

-- 2: a pending recharge bought towards a target, within a monthly limit, and
-- a second batch that it covers.
SELECT credits.enable_auto_recharge(2, 100, 5000, 1000, 20000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (2, 300);
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (2, 10, 'sms');

-- 9: a plan (started in the past), a promo that lapses, and one that will.
SELECT credits.open_account(9, 500);
SELECT credits.set_plan(9, 1000, now() - interval '40 days');
SELECT credits.grant_credits(9, 70, 'promo', now() + interval '1 hour', note => 'summer promo');
SELECT credits.grant_credits(9, 30, 'promo', now() + interval '30 days', 25);
INSERT INTO credits.send_batches (account_id, messages) VALUES (9, 100);
SET credits.clock_offset = '2h';
SELECT credits.expire_grants();
RESET credits.clock_offset;
INSERT INTO credits.send_batches (account_id, messages) VALUES (9, 10);

-- Refused statements leave gaps in the sequences.
DO $$
BEGIN
	INSERT INTO credits.send_batches (account_id, messages) VALUES (8, 1);
EXCEPTION WHEN SQLSTATE 'MC001' THEN NULL;
END
$$;
SQL

# The state of one database: every table in key order, the sequences, the
# grants and verify().
state() {
	local db=$1 out=$2
	mkdir -p "$out"
	pg -d "$db" -c "COPY (SELECT * FROM credits.accounts ORDER BY account_id) TO STDOUT" >"$out/accounts"
	pg -d "$db" -c "COPY (SELECT * FROM credits.ledger ORDER BY entry_id) TO STDOUT" >"$out/ledger"
	pg -d "$db" -c "COPY (SELECT * FROM credits.auto_recharge ORDER BY account_id) TO STDOUT" >"$out/auto_recharge"
	pg -d "$db" -c "COPY (SELECT * FROM credits.recharges ORDER BY recharge_id) TO STDOUT" >"$out/recharges"
	pg -d "$db" -c "COPY (SELECT * FROM credits.send_batches ORDER BY batch_id) TO STDOUT" >"$out/send_batches"
	pg -d "$db" -c "COPY (SELECT * FROM credits.grants ORDER BY grant_id) TO STDOUT" >"$out/grants_table"
	pg -d "$db" -c "COPY (SELECT * FROM credits.plans ORDER BY account_id) TO STDOUT" >"$out/plans"
	pg -d "$db" -c "COPY (SELECT * FROM credits.prices WHERE channel <> 'email' ORDER BY channel) TO STDOUT" >"$out/prices"
	q "$db" "SELECT credits_per_message FROM credits.prices WHERE channel = 'email'" >"$out/email_price"
	pg -d "$db" -c "COPY (SELECT 'batch', last_value, is_called FROM credits.send_batches_batch_id_seq
	                      UNION ALL SELECT 'recharge', last_value, is_called FROM credits.recharges_recharge_id_seq
	                      UNION ALL SELECT 'entry', last_value, is_called FROM credits.ledger_entry_id_seq
	                      UNION ALL SELECT 'grant', last_value, is_called FROM credits.grants_grant_id_seq) TO STDOUT" >"$out/sequences"
	pg -d "$db" -c "COPY (SELECT c.relname, c.relacl FROM pg_class c
	                       WHERE c.relnamespace = 'credits'::regnamespace
	                      UNION ALL
	                      SELECT c.relname || '.' || a.attname, a.attacl FROM pg_class c
	                        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attacl IS NOT NULL
	                       WHERE c.relnamespace = 'credits'::regnamespace
	                      ORDER BY 1) TO STDOUT" >"$out/grants"
	pg -d "$db" -c "COPY (SELECT * FROM credits.verify()) TO STDOUT" >"$out/verify"
}
state src "$WORK/src"

check "src: the data covers every batch status (ready, awaiting_credits, failed)" \
	test "$(q src "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM credits.send_batches")" == "awaiting_credits,failed,ready"
check "src: the data covers every recharge status" \
	test "$(q src "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM credits.recharges")" == "cancelled,failed,pending,processing,succeeded"
check "src: the data covers every ledger kind" \
	test "$(q src "SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM credits.ledger")" == "debit,expire,grant,open,plan,recharge,refund,repay"
check "src: the data covers every grant source, open, spent and expired grants, a plan and a batch that owes" \
	test "$(q src "SELECT string_agg(DISTINCT source, ',' ORDER BY source) FROM credits.grants")|$(q src "SELECT count(*) FILTER (WHERE closed_at IS NULL) > 0 AND count(*) FILTER (WHERE closed_at IS NOT NULL) > 0 FROM credits.grants")|$(q src "SELECT count(*) FROM credits.plans")|$(q src "SELECT count(*) > 0 FROM credits.send_batches WHERE owed > 0")" == "plan,promo,purchase,recharge,signup|t|1|t"
check "src: policies on, off by the user, off after payment failures, with target and monthly limit" \
	test "$(q src "SELECT count(*) FILTER (WHERE enabled) > 0 AND count(*) FILTER (WHERE disabled_reason = 'disabled_by_user') = 1
	                AND count(*) FILTER (WHERE disabled_reason = 'payment_failed') = 1
	                AND count(*) FILTER (WHERE target_balance IS NOT NULL AND monthly_limit IS NOT NULL) = 1
	               FROM credits.auto_recharge")" == "t"
check "src: verify() is empty" test ! -s "$WORK/src/verify"
note "src: $(q src "SELECT count(*) FROM credits.accounts") accounts, $(q src "SELECT count(*) FROM credits.send_batches") batches, $(q src "SELECT count(*) FROM credits.recharges") recharges, $(q src "SELECT count(*) FROM credits.ledger") ledger rows, email price $(cat "$WORK/src/email_price")"

# compare NAME DIR: every part of the state of a restored database against src.
# With a third argument "data-only", the grants are not compared (a data-only
# dump has none).
compare() {
	local name=$1 dir=$2 kind=${3:-} t
	for t in accounts ledger auto_recharge recharges send_batches grants_table plans; do
		if diff -q "$WORK/src/$t" "$dir/$t" >/dev/null; then
			ok "$name: credits.$t identical to src ($(wc -l <"$dir/$t") rows)"
		else
			not_ok "$name: credits.$t identical to src"
			diff "$WORK/src/$t" "$dir/$t" | head -10 | sed 's/^/#   /'
		fi
	done
	if diff -q "$WORK/src/prices" "$dir/prices" >/dev/null; then
		ok "$name: prices other than email identical to src"
	else
		not_ok "$name: prices other than email identical to src"
		diff "$WORK/src/prices" "$dir/prices" | sed 's/^/#   /'
	fi
	# Documented (README, Backup and restore): the shipped ('email', 1) row is
	# not dumped, so a changed email price comes back as 1 and is set again.
	same "$name: the shipped email price comes back as shipped, as documented (src: $(cat "$WORK/src/email_price"), restored: $(cat "$dir/email_price"))" \
		"$(cat "$dir/email_price")" "1"
	if diff -q "$WORK/src/sequences" "$dir/sequences" >/dev/null; then
		ok "$name: the batch_id, recharge_id, entry_id and grant_id sequences are where src left them"
	else
		not_ok "$name: the batch_id, recharge_id, entry_id and grant_id sequences are where src left them"
		diff "$WORK/src/sequences" "$dir/sequences" | sed 's/^/#   /'
	fi
	if [ "$kind" == data-only ]; then
		:
	elif diff -q "$WORK/src/grants" "$dir/grants" >/dev/null; then
		ok "$name: grants made after CREATE EXTENSION survive"
	else
		not_ok "$name: grants made after CREATE EXTENSION survive"
		diff "$WORK/src/grants" "$dir/grants" | sed 's/^/#   /'
	fi
	if [ -s "$dir/verify" ]; then
		not_ok "$name: verify() is empty"
		sed 's/^/#   /' "$dir/verify"
	else
		ok "$name: verify() is empty"
	fi
}

# keeps_working NAME DB: new batches, recharges and settlements after a restore,
# with ids above everything src used.
keeps_working() {
	local name=$1 db=$2 before after out id
	local max_batch max_entry max_recharge
	max_batch=$(q src "SELECT max(batch_id) FROM credits.send_batches")
	max_entry=$(q src "SELECT max(entry_id) FROM credits.ledger")
	max_recharge=$(q src "SELECT max(recharge_id) FROM credits.recharges")

	before=$(q "$db" "SELECT balance || '/' || (SELECT count(*) FROM credits.ledger WHERE account_id = 1) FROM credits.accounts WHERE account_id = 1")
	out=$(q "$db" "INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
	               VALUES (1, 10, 'sms', 'after-restore') RETURNING batch_id || '/' || cost || '/' || status" 2>&1 | head -1)
	after=$(q "$db" "SELECT balance || '/' || (SELECT count(*) FROM credits.ledger WHERE account_id = 1) FROM credits.accounts WHERE account_id = 1")
	same "$name: a new sms batch costs 70, is ready, and is debited once (balance/ledger rows of account 1: $before -> $after)" \
		"$(cut -d/ -f2,3 <<<"$out") $after" \
		"70/ready $((${before%/*} - 70))/$((${before#*/} + 1))"
	id=$(cut -d/ -f1 <<<"$out")
	check "$name: its batch_id ($id) is above every batch_id of src ($max_batch)" \
		test "$id" -gt "$max_batch" 2>/dev/null
	id=$(q "$db" "SELECT l.entry_id FROM credits.ledger l JOIN credits.send_batches b USING (batch_id)
	              WHERE b.idempotency_key = 'after-restore' AND l.kind = 'debit'" 2>&1 | head -1)
	check "$name: its ledger entry_id ($id) is above every entry_id of src ($max_entry)" \
		test "$id" -gt "$max_entry" 2>/dev/null
	out=$(q "$db" "INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1, 10, 'k-1')
	               ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING batch_id" 2>&1 | head -1)
	same "$name: resending an idempotency key of src debits nothing" \
		"$out|$(q "$db" "SELECT count(*) FROM credits.ledger WHERE account_id = 1")" "|$((${before#*/} + 1))"

	id=$(q "$db" "SELECT credits.enable_auto_recharge(8, 0, 1000) IS NOT NULL;
	              INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (8, 10, 'push') RETURNING recharge_id" 2>&1 | tail -1)
	check "$name: a new shortfall opens a recharge ($id) above every recharge_id of src ($max_recharge)" \
		test "$id" -gt "$max_recharge" 2>/dev/null

	# A worker claims the pending recharge of src (account 2) and the new one,
	# and settles them with the processing one of src (account 3).
	out=$(q "$db" "SELECT string_agg(account_id::text, ',' ORDER BY recharge_id) FROM credits.claim_recharges(10)" 2>&1 | head -1)
	same "$name: a worker claims the pending recharge of src and the new one" "$out" "2,8"
	out=$(q "$db" "SELECT string_agg((credits.complete_recharge(recharge_id, 'after-restore-' || recharge_id)).status, ','
	                                 ORDER BY recharge_id)
	                 FROM credits.recharges WHERE account_id IN (2, 3, 8) AND status = 'processing'" 2>&1 | head -1)
	same "$name: complete_recharge settles them and the processing recharge of src" "$out" "succeeded,succeeded,succeeded"
	same "$name: no batch is left awaiting credits" \
		"$(q "$db" "SELECT count(*) FROM credits.send_batches WHERE status = 'awaiting_credits'")" "0"
	out=$(q "$db" "SELECT * FROM credits.verify()" 2>&1)
	same "$name: verify() is empty after the new work" "$out" ""
}

# lost NAME DB: when batches are missing, verify() must say so (README,
# Troubleshooting: it reports "a partial restore").
lost() {
	local name=$1 db=$2 n
	n=$(( $(wc -l <"$WORK/src/send_batches") - $(wc -l <"$WORK/$db/send_batches") ))
	if [ "$n" -gt 0 ]; then
		note "$name: $n of $(wc -l <"$WORK/src/send_batches") batches were not restored, though the ledger keeps their debits"
		if [ -s "$WORK/$db/verify" ]; then
			ok "$name: verify() reports the batches missing from the restore"
		else
			not_ok "$name: verify() reports the batches missing from the restore (it returns no row)"
		fi
	fi
}

# restored NAME DB LOG RC: the full set of checks on one restore.
restored() {
	local name=$1 db=$2 log=$3 rc=$4 kind=${5:-}
	if [ "$rc" -eq 0 ] && ! grep -q 'ERROR' "$log"; then
		ok "$name: the restore reports no error"
	else
		not_ok "$name: the restore reports no error (exit code $rc)"
		grep -E 'ERROR|error|warning' "$log" | head -4 | sed 's/^/#   /'
	fi
	state "$db" "$WORK/$db"
	compare "$name" "$WORK/$db" "$kind"
	lost "$name" "$db"
	keeps_working "$name" "$db"
}

"$PG_BIN/pg_dump" -d src --disable-triggers -f "$WORK/plain.sql"
"$PG_BIN/pg_dump" -d src -f "$WORK/plain_nodt.sql"
"$PG_BIN/pg_dump" -d src -Fc -f "$WORK/src.dump"
note "the plain dump made with --disable-triggers holds $(grep -c 'DISABLE TRIGGER' "$WORK/plain.sql") DISABLE TRIGGER commands; its CREATE EXTENSION (line $(grep -n 'CREATE EXTENSION' "$WORK/plain.sql" | cut -d: -f1)) comes before the data of credits.send_batches (line $(grep -n 'COPY credits.send_batches' "$WORK/plain.sql" | cut -d: -f1))"

################################################################################
say "a. plain format, psql -f with nothing special"
"$PG_BIN/createdb" rest_a
"$PG_BIN/psql" -X -q -d rest_a -f "$WORK/plain_nodt.sql" >"$WORK/a.log" 2>&1
restored "a. psql -f dump.sql" rest_a "$WORK/a.log" $?

################################################################################
say "b. plain format made with --disable-triggers, psql -f"
if diff <(grep -v '^.restrict\|^.unrestrict' "$WORK/plain.sql") \
        <(grep -v '^.restrict\|^.unrestrict' "$WORK/plain_nodt.sql") >/dev/null; then
	note "pg_dump writes the same plain dump with and without --disable-triggers"
fi
"$PG_BIN/createdb" rest_b
"$PG_BIN/psql" -X -q -d rest_b -f "$WORK/plain.sql" >"$WORK/b.log" 2>&1
restored "b. psql -f of a dump made with --disable-triggers" rest_b "$WORK/b.log" $?

################################################################################
say "c. custom format, pg_restore with nothing special"
"$PG_BIN/createdb" rest_c
"$PG_BIN/pg_restore" -d rest_c "$WORK/src.dump" >"$WORK/c.log" 2>&1
restored "c. pg_restore -d db dump" rest_c "$WORK/c.log" $?

################################################################################
say "d. custom format, pg_restore --disable-triggers"
"$PG_BIN/createdb" rest_d
"$PG_BIN/pg_restore" --disable-triggers -d rest_d "$WORK/src.dump" >"$WORK/d.log" 2>&1
restored "d. pg_restore --disable-triggers" rest_d "$WORK/d.log" $?

################################################################################
say "e. custom format in three passes: pre-data, --data-only --disable-triggers, post-data"
"$PG_BIN/createdb" rest_e
{
	"$PG_BIN/pg_restore" --section=pre-data -d rest_e "$WORK/src.dump" &&
	"$PG_BIN/pg_restore" --data-only --disable-triggers -d rest_e "$WORK/src.dump" &&
	"$PG_BIN/pg_restore" --section=post-data -d rest_e "$WORK/src.dump"
} >"$WORK/e.log" 2>&1
restored "e. pg_restore in three passes" rest_e "$WORK/e.log" $?

################################################################################
say "f. plain format with session_replication_role = replica"
"$PG_BIN/createdb" rest_f
PGOPTIONS='-c session_replication_role=replica' \
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d rest_f -f "$WORK/plain.sql" >"$WORK/f.log" 2>&1
restored "f. psql with session_replication_role = replica" rest_f "$WORK/f.log" $?

################################################################################
say "g. custom format, pg_restore with session_replication_role = replica"
"$PG_BIN/createdb" rest_g
PGOPTIONS='-c session_replication_role=replica' \
	"$PG_BIN/pg_restore" -d rest_g "$WORK/src.dump" >"$WORK/g.log" 2>&1
restored "g. pg_restore with session_replication_role = replica" rest_g "$WORK/g.log" $?

################################################################################
say "h. custom format, parallel pg_restore -j 2"
# A plain parallel restore is not promised: the foreign keys between the
# extension's tables (recharges and auto_recharge reference accounts) come
# with CREATE EXTENSION, and pg_restore -j may load recharges before
# accounts.  What it does is reported as a note; with
# session_replication_role = replica (no FK triggers) it must work.
"$PG_BIN/createdb" rest_h_plain
"$PG_BIN/pg_restore" -j 2 -d rest_h_plain "$WORK/src.dump" >"$WORK/h_plain.log" 2>&1
note "h. plain pg_restore -j 2: exit code $?; $(grep -c 'ERROR' "$WORK/h_plain.log") errors; $(grep -m1 'ERROR' "$WORK/h_plain.log" | cut -c1-160)"
"$PG_BIN/createdb" rest_h
PGOPTIONS='-c session_replication_role=replica' \
	"$PG_BIN/pg_restore" -j 2 -d rest_h "$WORK/src.dump" >"$WORK/h.log" 2>&1
restored "h. pg_restore -j 2 with session_replication_role = replica" rest_h "$WORK/h.log" $?

################################################################################
say "i. a data-only plain dump into a database with CREATE EXTENSION credits"
"$PG_BIN/pg_dump" -d src --data-only -f "$WORK/data.sql"
"$PG_BIN/createdb" rest_i
{
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d rest_i -c 'CREATE EXTENSION credits' &&
	"$PG_BIN/psql" -X -q -d rest_i -f "$WORK/data.sql"
} >"$WORK/i.log" 2>&1
restored "i. psql -f of a data-only dump" rest_i "$WORK/i.log" $? data-only

################################################################################
say "j. who may insert a row with cost and status set"
# In the database of c (restored with nothing special), after its checks.
# code DB SQL: the SQLSTATE the SQL fails with, or "ok".
code() {
	local err
	err=$("$PG_BIN/psql" -X -q -At -v VERBOSITY=sqlstate -d "$1" -c "$2" 2>&1 >/dev/null)
	if [ -z "$err" ]; then
		echo ok
	else
		sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\)$/\1/p' <<<"$err" | head -1 | grep . || echo "?? $err"
	fi
}
totals() {
	q rest_c "SELECT (SELECT count(*) FROM credits.send_batches) || '/' || (SELECT count(*) FROM credits.ledger)
	          || '/' || (SELECT sum(balance) FROM credits.accounts)"
}
before=$(totals)
same "j. the application (README column grants) cannot name cost and status" \
	"$(code rest_c "SET ROLE regress_backup_app; INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1, 1, 1, 'ready')")" 42501
same "j. a role granted INSERT on the whole table gets MC007 for a row with cost and status" \
	"$(code rest_c "SET ROLE regress_backup_loose; INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1, 1, 1, 'ready')")" MC007
same "j. that role gets MC007 through COPY too" \
	"$(printf '1\t1\t1\tready\n' | "$PG_BIN/psql" -X -q -At -v VERBOSITY=sqlstate -d rest_c \
	     -c "SET ROLE regress_backup_loose; COPY credits.send_batches (account_id, messages, cost, status) FROM STDIN" 2>&1 | sed -n 's/^ERROR: *//p')" MC007
same "j. that role gets MC007 with status, recharge_id and cost all set" \
	"$(code rest_c "SET ROLE regress_backup_loose; INSERT INTO credits.send_batches (account_id, messages, cost, status, recharge_id)
	                VALUES (2, 1, 1, 'awaiting_credits', $(q rest_c "SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 2"))")" MC007
same "j. a superuser's row with cost but no status gets MC007" \
	"$(code rest_c "INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (1, 1, 3)")" MC007
same "j. a superuser's row with status but no cost gets MC007" \
	"$(code rest_c "INSERT INTO credits.send_batches (account_id, messages, status) VALUES (1, 1, 'ready')")" MC007
same "j. the refused rows changed nothing (batches/ledger rows/sum of balances)" "$(totals)" "$before"
out=$(q rest_c "SELECT balance FROM credits.accounts WHERE account_id = 1")
same "j. a superuser's row without cost and status is debited normally (cost/status, balance of account 1: $out)" \
	"$(q rest_c "INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (1, 2, 'sms') RETURNING cost || '/' || status")/$(q rest_c "SELECT balance FROM credits.accounts WHERE account_id = 1")" \
	"14/ready/$((out - 14))"
same "j. the application's batch is debited normally" \
	"$(q rest_c "SET ROLE regress_backup_app; INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 5) RETURNING cost || '/' || status" 2>&1 | tail -1)/$(q rest_c "SELECT balance FROM credits.accounts WHERE account_id = 1")" \
	"5/ready/$((out - 19))"
same "j. verify() is empty" "$(q rest_c "SELECT * FROM credits.verify()" 2>&1)" ""
# What a superuser's hand-made "restored" row does outside a restore: stored
# as is, not debited, and verify() says so.
out=$(q rest_c "INSERT INTO credits.send_batches (account_id, messages, cost, status) VALUES (1, 1, 1, 'ready') RETURNING batch_id" 2>&1 | head -1)
check "j. a superuser's row with cost and status set is stored as is, not debited, and verify() names it (batch $out)" \
	test "$(q rest_c "SELECT count(*) FROM credits.ledger WHERE batch_id = ${out:-0}")|$(q rest_c "SELECT count(*) FROM credits.verify() WHERE problem LIKE 'batch ${out:-0} %'")" == "0|1"

finish

#!/usr/bin/env bash
# test/backup/run.sh: pg_dump and restore of a database that uses credits.
#
# Builds varied data in database "src" (accounts, prices, policies with
# targets and monthly limits, batches in every status, recharges in every
# status, payment failures, odd strings, grants), then restores it into new
# databases the ways a DBA would:
#
#   a. plain:  pg_dump --disable-triggers | psql          (as a superuser)
#   b. custom: pg_dump -Fc, pg_restore --disable-triggers (as a superuser)
#   c. custom: pg_restore with nothing special
#   d. custom, in three passes: pre-data, then --data-only --disable-triggers,
#      then post-data
#   e. plain, with session_replication_role = replica for the restoring session
#   f. custom, pg_restore with session_replication_role = replica (README)
#
# a-c leave the debit trigger on while the data loads: the batches are
# refused (MC007), which must be reported, and nothing may be debited twice.
# d-f are full restores.
#
# For every restore, every table, sequence and grant must come back identical,
# verify() must be empty, and new batches, recharges and settlements must keep
# working with fresh ids.  The install script registers prices for pg_dump
# with WHERE channel <> 'email', so src also changes the email price to see
# whether that survives.
#
# Why a and b are not enough: --disable-triggers only acts on data-only dumps
# and restores, and the extension's triggers exist as soon as the dump's
# CREATE EXTENSION has run, before any table data is loaded.
#
# Prints "ok - ..." / "not ok - ..." per check, "# ..." notes, and
# "N passed, N failed"; exits non-zero on any failure.  Safe to run again:
# a leftover cluster is removed first, and this one at exit.
set -uo pipefail

CREDITS_PURPOSE=backup
CREDITS_PORT=${CREDITS_PORT:-54347}
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$REPO_ROOT"

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok - %s\n' "$1"; }
not_ok() { failed=$((failed + 1)); printf 'not ok - %s\n' "$1"; }
note() { printf '# %s\n' "$*"; }
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# same DESCRIPTION A B: ok when the two strings are equal, else shows both.
same() {
	if [ "$2" == "$3" ]; then ok "$1"; else not_ok "$1"; note "  have: $2"; note "  want: $3"; fi
}

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
	pg -d "$db" -c "COPY (SELECT * FROM credits.prices WHERE channel <> 'email' ORDER BY channel) TO STDOUT" >"$out/prices"
	q "$db" "SELECT credits_per_message FROM credits.prices WHERE channel = 'email'" >"$out/email_price"
	pg -d "$db" -c "COPY (SELECT 'batch', last_value, is_called FROM credits.send_batches_batch_id_seq
	                      UNION ALL SELECT 'recharge', last_value, is_called FROM credits.recharges_recharge_id_seq
	                      UNION ALL SELECT 'entry', last_value, is_called FROM credits.ledger_entry_id_seq) TO STDOUT" >"$out/sequences"
	pg -d "$db" -c "COPY (SELECT c.relname, c.relacl FROM pg_class c
	                       WHERE c.relnamespace = 'credits'::regnamespace ORDER BY 1) TO STDOUT" >"$out/grants"
	pg -d "$db" -c "COPY (SELECT * FROM credits.verify()) TO STDOUT" >"$out/verify"
}
state src "$WORK/src"

check "src: the data covers every batch status (ready, awaiting_credits, failed)" \
	test "$(q src "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM credits.send_batches")" == "awaiting_credits,failed,ready"
check "src: the data covers every recharge status" \
	test "$(q src "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM credits.recharges")" == "cancelled,failed,pending,processing,succeeded"
check "src: the data covers every ledger kind" \
	test "$(q src "SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM credits.ledger")" == "debit,grant,open,recharge,refund"
check "src: policies on, off by the user, off after payment failures, with target and monthly limit" \
	test "$(q src "SELECT count(*) FILTER (WHERE enabled) > 0 AND count(*) FILTER (WHERE disabled_reason = 'disabled_by_user') = 1
	                AND count(*) FILTER (WHERE disabled_reason = 'payment_failed') = 1
	                AND count(*) FILTER (WHERE target_balance IS NOT NULL AND monthly_limit IS NOT NULL) = 1
	               FROM credits.auto_recharge")" == "t"
check "src: verify() is empty" test ! -s "$WORK/src/verify"
note "src: $(q src "SELECT count(*) FROM credits.accounts") accounts, $(q src "SELECT count(*) FROM credits.send_batches") batches, $(q src "SELECT count(*) FROM credits.recharges") recharges, $(q src "SELECT count(*) FROM credits.ledger") ledger rows, email price $(cat "$WORK/src/email_price")"

# compare NAME DIR: every part of the state of a restored database against src.
compare() {
	local name=$1 dir=$2 t
	for t in accounts ledger auto_recharge recharges send_batches; do
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
		ok "$name: the batch_id, recharge_id and entry_id sequences are where src left them"
	else
		not_ok "$name: the batch_id, recharge_id and entry_id sequences are where src left them"
		diff "$WORK/src/sequences" "$dir/sequences" | sed 's/^/#   /'
	fi
	if diff -q "$WORK/src/grants" "$dir/grants" >/dev/null; then
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
	id=$(q "$db" "SELECT entry_id FROM credits.ledger l JOIN credits.send_batches b USING (batch_id)
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
	local name=$1 db=$2 log=$3 rc=$4
	if [ "$rc" -eq 0 ] && ! grep -q 'ERROR' "$log"; then
		ok "$name: the restore reports no error"
	else
		not_ok "$name: the restore reports no error (exit code $rc)"
		grep -E 'ERROR|error|warning' "$log" | head -4 | sed 's/^/#   /'
	fi
	state "$db" "$WORK/$db"
	compare "$name" "$WORK/$db"
	lost "$name" "$db"
	keeps_working "$name" "$db"
}

"$PG_BIN/pg_dump" -d src --disable-triggers -f "$WORK/plain.sql"
"$PG_BIN/pg_dump" -d src -f "$WORK/plain_nodt.sql"
"$PG_BIN/pg_dump" -d src -Fc -f "$WORK/src.dump"
note "the plain dump made with --disable-triggers holds $(grep -c 'DISABLE TRIGGER' "$WORK/plain.sql") DISABLE TRIGGER commands; its CREATE EXTENSION (line $(grep -n 'CREATE EXTENSION' "$WORK/plain.sql" | cut -d: -f1)) comes before the data of credits.send_batches (line $(grep -n 'COPY credits.send_batches' "$WORK/plain.sql" | cut -d: -f1))"

################################################################################
say "a-c. restores that leave the triggers on (not the documented way)"
# --disable-triggers acts only on data-only restores, so a, b and c all load
# the data with the debit trigger on: COPY into send_batches is refused
# (MC007).  What must hold: the restore says so, and nothing is debited twice.
if diff <(grep -v '^.restrict\|^.unrestrict' "$WORK/plain.sql") \
        <(grep -v '^.restrict\|^.unrestrict' "$WORK/plain_nodt.sql") >/dev/null; then
	note "pg_dump writes the same plain dump with and without --disable-triggers"
fi
"$PG_BIN/createdb" rest_a
"$PG_BIN/psql" -X -q -d rest_a -f "$WORK/plain.sql" >"$WORK/c_a.log" 2>&1
rc_a=$?
"$PG_BIN/createdb" rest_b
"$PG_BIN/pg_restore" --disable-triggers -d rest_b "$WORK/src.dump" >"$WORK/c_b.log" 2>&1
rc_b=$?
"$PG_BIN/createdb" rest_c
"$PG_BIN/pg_restore" -d rest_c "$WORK/src.dump" >"$WORK/c_c.log" 2>&1
rc_c=$?
for c in "a:rest_a:$rc_a:plain --disable-triggers" "b:rest_b:$rc_b:pg_restore --disable-triggers" "c:rest_c:$rc_c:pg_restore"; do
	IFS=: read -r kind db rc label <<<"$c"
	state "$db" "$WORK/$db"
	note "$kind. $label: exit code $rc; send_batches $(wc -l <"$WORK/$db/send_batches") of $(wc -l <"$WORK/src/send_batches") rows"
	grep 'ERROR' "$WORK/c_$kind.log" | head -1 | sed 's/^/#   /'
	check "$kind. $label: the restore reports the refused batches rather than passing silently" \
		grep -q 'MC007\|set by the extension' "$WORK/c_$kind.log"
	check "$kind. $label: nothing is debited a second time (ledger and balances identical to src)" \
		diff -q <(cat "$WORK/src/ledger" "$WORK/src/accounts") <(cat "$WORK/$db/ledger" "$WORK/$db/accounts")
	lost "$kind. $label" "$db"
done

################################################################################
say "d. custom format in three passes: pre-data, --data-only --disable-triggers, post-data"
"$PG_BIN/createdb" rest_d
{
	"$PG_BIN/pg_restore" --section=pre-data -d rest_d "$WORK/src.dump" &&
	"$PG_BIN/pg_restore" --data-only --disable-triggers -d rest_d "$WORK/src.dump" &&
	"$PG_BIN/pg_restore" --section=post-data -d rest_d "$WORK/src.dump"
} >"$WORK/d.log" 2>&1
restored "d. pg_restore in three passes" rest_d "$WORK/d.log" $?

################################################################################
say "e. plain format with session_replication_role = replica"
"$PG_BIN/createdb" rest_e
PGOPTIONS='-c session_replication_role=replica' \
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d rest_e -f "$WORK/plain.sql" >"$WORK/e.log" 2>&1
restored "e. psql with session_replication_role = replica" rest_e "$WORK/e.log" $?

################################################################################
say "f. custom format, pg_restore with session_replication_role = replica (the README's way)"
"$PG_BIN/createdb" rest_f
PGOPTIONS='-c session_replication_role=replica' \
	"$PG_BIN/pg_restore" -d rest_f "$WORK/src.dump" >"$WORK/f.log" 2>&1
restored "f. pg_restore with session_replication_role = replica" rest_f "$WORK/f.log" $?

printf '\n%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

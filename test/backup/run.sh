#!/usr/bin/env bash
# test/backup/run.sh: pg_dump and restore of a database that uses credits.
#
# Builds varied data in database "src" (accounts, prices, policies with
# targets and monthly limits, batches in every status, recharges in every
# status, payment failures, odd strings, grants), then restores it the ways a
# DBA would:
#
#   a. plain:  pg_dump --disable-triggers | psql         (as a superuser)
#   b. custom: pg_dump -Fc, pg_restore --disable-triggers (as a superuser)
#   c. both again WITHOUT --disable-triggers, to show why the README asks
#      for it
#
# For a and b every table, sequence and grant must come back identical,
# verify() must be empty, and new batches, recharges and settlements must
# keep working with fresh ids.  The install script registers prices for
# pg_dump with WHERE channel <> 'email', so src also changes the email price
# to see whether that survives.
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
pg -d src <<'SQL' || { echo "not ok - building the data in src failed"; exit 1; }
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
EXCEPTION WHEN SQLSTATE 'CR001' THEN NULL;
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
	same "$name: the changed email price survives (src: $(cat "$WORK/src/email_price"), restored: $(cat "$dir/email_price"))" \
		"$(cat "$dir/email_price")" "$(cat "$WORK/src/email_price")"
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

# keeps_working NAME DB: new batches, recharges and settlements after a restore.
keeps_working() {
	local name=$1 db=$2 before after out
	local max_batch max_entry max_recharge
	max_batch=$(q "$db" "SELECT max(batch_id) FROM credits.send_batches")
	max_entry=$(q "$db" "SELECT max(entry_id) FROM credits.ledger")
	max_recharge=$(q "$db" "SELECT max(recharge_id) FROM credits.recharges")

	before=$(q "$db" "SELECT balance || '/' || (SELECT count(*) FROM credits.ledger WHERE account_id = 1) FROM credits.accounts WHERE account_id = 1")
	out=$(q "$db" "INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)
	               VALUES (1, 10, 'sms', 'after-restore') RETURNING batch_id || '/' || cost || '/' || status" 2>&1)
	after=$(q "$db" "SELECT balance || '/' || (SELECT count(*) FROM credits.ledger WHERE account_id = 1) FROM credits.accounts WHERE account_id = 1")
	same "$name: a new sms batch costs 70, is ready, and is debited once (balance/ledger rows $before -> $after)" \
		"$(cut -d/ -f2,3 <<<"$out") $after" \
		"70/ready $((${before%/*} - 70))/$((${before#*/} + 1))"
	check "$name: its batch_id $(cut -d/ -f1 <<<"$out") is above the restored maximum $max_batch" \
		test "$(cut -d/ -f1 <<<"$out")" -gt "$max_batch" 2>/dev/null
	check "$name: its ledger entry is above the restored maximum entry_id $max_entry" \
		test "$(q "$db" "SELECT entry_id FROM credits.ledger l JOIN credits.send_batches b USING (batch_id)
		                 WHERE b.idempotency_key = 'after-restore' AND l.kind = 'debit'")" -gt "$max_entry" 2>/dev/null
	out=$(q "$db" "INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (1, 10, 'k-1')
	               ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING batch_id" 2>&1)
	same "$name: resending a restored idempotency key debits nothing" \
		"$out|$(q "$db" "SELECT count(*) FROM credits.ledger WHERE account_id = 1")" "|$((${before#*/} + 1))"

	out=$(q "$db" "SELECT credits.enable_auto_recharge(8, 0, 1000) IS NOT NULL;
	               INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (8, 10, 'push') RETURNING recharge_id" 2>&1 | tail -1)
	check "$name: a new shortfall opens recharge $out, above the restored maximum $max_recharge" \
		test "$out" -gt "$max_recharge" 2>/dev/null

	# A worker settles the restored pending recharge (account 2) and the new one.
	out=$(q "$db" "SELECT string_agg(account_id::text, ',' ORDER BY recharge_id) FROM credits.claim_recharges(10)" 2>&1)
	same "$name: a worker claims the restored pending recharge and the new one" "$out" "2,8"
	out=$(q "$db" "SELECT credits.complete_recharge(recharge_id, 'after-restore-' || recharge_id) IS NOT NULL
	                 FROM credits.recharges WHERE account_id IN (2, 3, 8) AND status = 'processing'
	               ORDER BY recharge_id" 2>&1 | sort -u)
	same "$name: complete_recharge settles them, and the processing one restored from src" "$out" "t"
	same "$name: their awaiting batches are ready" \
		"$(q "$db" "SELECT count(*) FROM credits.send_batches WHERE status = 'awaiting_credits'")" "0"
	out=$(q "$db" "SELECT * FROM credits.verify()" 2>&1)
	same "$name: verify() is empty after the new work" "$out" ""
}

################################################################################
say "a. plain format: pg_dump --disable-triggers | psql"
"$PG_BIN/pg_dump" -d src --disable-triggers -f "$WORK/plain.sql"
"$PG_BIN/createdb" rest_plain
if pg -d rest_plain -f "$WORK/plain.sql" >"$WORK/plain.log" 2>&1; then
	ok "plain: the restore runs without an error"
else
	not_ok "plain: the restore runs without an error"
	sed 's/^/#   /' "$WORK/plain.log" | head -20
fi
state rest_plain "$WORK/rest_plain"
compare plain "$WORK/rest_plain"
keeps_working plain rest_plain

################################################################################
say "b. custom format: pg_dump -Fc, pg_restore --disable-triggers"
"$PG_BIN/pg_dump" -d src -Fc -f "$WORK/src.dump"
"$PG_BIN/createdb" rest_custom
if "$PG_BIN/pg_restore" --disable-triggers --exit-on-error -d rest_custom "$WORK/src.dump" >"$WORK/custom.log" 2>&1; then
	ok "custom: pg_restore exits 0"
else
	not_ok "custom: pg_restore exits 0"
	sed 's/^/#   /' "$WORK/custom.log" | head -20
fi
state rest_custom "$WORK/rest_custom"
compare custom "$WORK/rest_custom"
keeps_working custom rest_custom

################################################################################
say "c. the same without --disable-triggers"
# What a DBA who forgets the option gets; the README tells them to use it.
without() {
	local name=$1 db=$2 log=$3 rc=$4
	local batches_src batches ledger_src ledger
	batches_src=$(wc -l <"$WORK/src/send_batches")
	batches=$(q "$db" "SELECT count(*) FROM credits.send_batches")
	ledger_src=$(wc -l <"$WORK/src/ledger")
	ledger=$(q "$db" "SELECT count(*) FROM credits.ledger")
	note "$name without --disable-triggers: exit code $rc; errors:"
	grep -E 'ERROR|error' "$log" | head -5 | sed 's/^/#   /'
	note "$name without --disable-triggers: send_batches restored $batches of $batches_src rows, ledger $ledger of $ledger_src rows"
	check "$name without --disable-triggers: the restore reports an error, it does not pass silently" \
		grep -q 'ERROR' "$log"
	state "$db" "$WORK/$db"
	check "$name without --disable-triggers: no batch is debited a second time (ledger identical to src)" \
		diff -q "$WORK/src/ledger" "$WORK/$db/ledger"
	check "$name without --disable-triggers: balances identical to src (nothing debited twice)" \
		diff -q "$WORK/src/accounts" "$WORK/$db/accounts"
	if [ "$batches" -lt "$batches_src" ]; then
		if [ -s "$WORK/$db/verify" ]; then
			ok "$name without --disable-triggers: verify() reports the lost batches ($(wc -l <"$WORK/$db/verify") problems)"
		else
			not_ok "$name without --disable-triggers: verify() reports the lost batches (README: it reports 'a partial restore'; it found nothing although $((batches_src - batches)) debited batches are missing)"
		fi
	fi
}

"$PG_BIN/pg_dump" -d src -f "$WORK/plain_nodt.sql"
"$PG_BIN/createdb" rest_plain_nodt
"$PG_BIN/psql" -X -q -d rest_plain_nodt -f "$WORK/plain_nodt.sql" >"$WORK/plain_nodt.log" 2>&1
without plain rest_plain_nodt "$WORK/plain_nodt.log" $?

"$PG_BIN/createdb" rest_custom_nodt
"$PG_BIN/pg_restore" -d rest_custom_nodt "$WORK/src.dump" >"$WORK/custom_nodt.log" 2>&1
without custom rest_custom_nodt "$WORK/custom_nodt.log" $?

printf '\n%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

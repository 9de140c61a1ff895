#!/usr/bin/env bash
# test/worker/run.sh: the credits-worker test suite.
#
# Builds and installs the extension, starts a throwaway cluster (its own run
# directory and port, so it can run beside scripts/test and scripts/demo),
# builds worker/credits-worker, and runs it against the cluster with fake
# charge commands:
#
#   usage        --help, bad options, no server at start
#   basic        --once settles every recharge with the printed references
#   declines     exit 1 + stderr fails the recharge, batches refunded
#   outcomes     empty stdout, killed, exit 75: unknown (left processing);
#                silent exit, long and invalid stderr: declines
#   two-workers  200 recharges, two workers: each charged exactly once
#   restart      server killed mid-charge and restarted; the same worker
#                reconnects, records the charge in hand, settles new work
#   sigterm      exits 0 promptly after the recharge in hand; idle too;
#                the signal is logged
#   leftovers    --once -q settles what sigterm left pending, silently
#   double-term  a second signal: unstarted claims released, exit 0
#   notify       with a 60 s poll interval, a NOTIFY wakes the worker
#   term-outage  SIGTERM with a charge in hand and the server down: records
#                it if the server returns within 10 s, else exit 3 + the SQL
#   start-checks command not found / not executable (5), no extension (6),
#                missing grants (7): refuses to start, nothing claimed
#   not-run      exit 127 and 126 (chmod -x while running): released, no
#                payment failure, auto-recharge on, batches awaiting
#   timeout      --charge-timeout: process group killed (SIGKILL after the
#                grace for one ignoring SIGTERM), outcome unknown, retried
#                with the same id; an idempotent fake PSP charges once
#   bad-refs     300-byte and blank references: unknown, logged whole
#   lock         an account row held by a transaction delays that account
#                only (lock_timeout 55P03, then statement_timeout 57014);
#                settled after the holder commits
#   stale        lease expired and claimed again by SQL: MC020 logged with
#                the reference, not retried
#   heartbeat    --heartbeat 1 lines; auto-recharge turned off (own NOTIFY
#                confirmed, a foreign one logged as a hint)
#
# Prints "ok - NAME" or "not ok - NAME" per case, then "N passed, N failed",
# and exits non-zero on any failure.  Port: CREDITS_WORKER_PORT (54343);
# run directory: CREDITS_RUN_DIR (/tmp/credits-worker).
# Worker logs are kept in the printed directory when a case fails, or
# always with CREDITS_WORKER_KEEP=1.
set -uo pipefail

CREDITS_PURPOSE=worker
CREDITS_PORT=${CREDITS_WORKER_PORT:-54343}
CREDITS_RUN_DIR=${CREDITS_RUN_DIR:-/tmp/credits-worker}
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib.sh"
cd "$REPO_ROOT"

# CREDITS_WORKER_BIN tests another build (an installed one, a sanitizer build).
W=${CREDITS_WORKER_BIN:-$REPO_ROOT/worker/credits-worker}
T=$(mktemp -d /tmp/credits-worker-test.XXXXXX)
WORKER_PIDS=()
passed=0
failed=0
why=""

cleanup() {
	local p
	for p in "${WORKER_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	stop_cluster
	if [ "$failed" -eq 0 ] && [ -z "${CREDITS_WORKER_KEEP:-}" ]; then rm -rf "$T"; else echo "# worker logs kept in $T"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- helpers

q() { pg -At -c "$1" 2>/dev/null; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[ "${s%% *}" != Z ]
}

# wait_sql SQL SECONDS: until SQL returns t.
wait_sql() {
	local deadline=$(($(now_ms) + $2 * 1000))
	while [ "$(q "$1")" != t ]; do
		[ "$(now_ms)" -ge "$deadline" ] && return 1
		sleep 0.1
	done
}

# wait_lines FILE N SECONDS: until FILE has at least N lines.
wait_lines() {
	local deadline=$(($(now_ms) + $3 * 1000))
	while [ "$(wc -l <"$1" 2>/dev/null || echo 0)" -lt "$2" ]; do
		[ "$(now_ms)" -ge "$deadline" ] && return 1
		sleep 0.05
	done
}

# wait_exit PID SECONDS: sets EXIT_CODE; fails if still running after SECONDS.
wait_exit() {
	local deadline=$(($(now_ms) + $2 * 1000))
	while alive "$1"; do
		[ "$(now_ms)" -ge "$deadline" ] && return 1
		sleep 0.05
	done
	wait "$1"
	EXIT_CODE=$?
}

# start_worker LOG ARGS...: runs the worker in the background; sets PID.
start_worker() {
	local log=$1
	shift
	"$W" "$@" >>"$T/$log" 2>&1 &
	PID=$!
	WORKER_PIDS+=("$PID")
}

# accounts FIRST LAST: open them empty with auto-recharge on.
accounts() {
	q "SELECT count(credits.open_account(a, 0)) FROM generate_series($1, $2) a" >/dev/null &&
		q "SELECT count(credits.enable_auto_recharge(a, 0, 100000)) FROM generate_series($1, $2) a" >/dev/null
}

# batches FIRST LAST MESSAGES: one batch per account, debited below zero.
batches() {
	q "INSERT INTO credits.send_batches (account_id, messages)
	   SELECT a, $3 FROM generate_series($1, $2) a" >/dev/null
}

# unsettled FIRST LAST: recharges of those accounts not settled yet.
unsettled() {
	q "SELECT count(*) FROM credits.recharges
	   WHERE account_id BETWEEN $1 AND $2 AND status IN ('pending', 'processing')"
}

settled_sql() {
	echo "SELECT count(*) > 0 AND count(*) FILTER (WHERE status IN ('pending', 'processing')) = 0
	      FROM credits.recharges WHERE account_id BETWEEN $1 AND $2"
}

# no_duplicates FILE: no recharge id charged twice.
no_duplicates() {
	[ -z "$(sort "$1" | uniq -d)" ]
}

verify_ok() {
	[ "$(q 'SELECT count(*) FROM credits.verify()')" = 0 ]
}

run_case() {
	local name=$1 p
	shift
	why=""
	if "$@"; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "not ok - $name"
		[ -n "$why" ] && echo "#   $why"
	fi
	# A case that failed half-way must not leave a worker to disturb the next.
	for p in "${WORKER_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	WORKER_PIDS=()
}

fail() {
	why=$1
	return 1
}

# ---------------------------------------------------------- charge commands

# Logs the recharge id, optionally sleeps, prints a reference naming the
# recharge, the account and the credits, so the test can check all three
# reached the command.
cat >"$T/charge-ok.sh" <<'EOF'
#!/bin/sh
printf '%s\n' "$CREDITS_RECHARGE_ID" >>"$CHARGE_LOG"
if [ -n "${CHARGE_SLEEP:-}" ]; then sleep "$CHARGE_SLEEP"; fi
printf 'ch_%s_%s_%s\n' "$CREDITS_RECHARGE_ID" "$CREDITS_ACCOUNT_ID" "$CREDITS_CREDITS"
EOF

# Declines odd accounts with a message on stderr.
cat >"$T/charge-decline.sh" <<'EOF'
#!/bin/sh
printf '%s\n' "$CREDITS_RECHARGE_ID" >>"$CHARGE_LOG"
if [ $((CREDITS_ACCOUNT_ID % 2)) -eq 1 ]; then
	printf '  card declined for account %s  \n' "$CREDITS_ACCOUNT_ID" >&2
	exit 1
fi
printf 'ch_%s\n' "$CREDITS_RECHARGE_ID"
EOF

# One way of ending per account.
cat >"$T/charge-outcomes.sh" <<'EOF'
#!/bin/sh
printf '%s\n' "$CREDITS_RECHARGE_ID" >>"$CHARGE_LOG"
case $CREDITS_ACCOUNT_ID in
2100) printf '  ref-%s  \nsecond line\n' "$CREDITS_RECHARGE_ID"; echo "a warning" >&2 ;;
2101) exit 0 ;;
2102) exit 3 ;;
2103) kill -9 $$ ;;
2104) head -c 5000 /dev/zero | tr '\0' x >&2; exit 1 ;;
2105) printf '\377bad\000byte\n' >&2; exit 1 ;;
2106) head -c 999 /dev/zero | tr '\0' y >&2; printf '\303\251zzz' >&2; exit 1 ;;
2107) echo "psp timed out" >&2; exit 75 ;;
esac
EOF
chmod +x "$T"/charge-*.sh

# ------------------------------------------------------------------- cases

case_usage() {
	grep -q -- '--poll-interval' <<<"$("$W" --help)" || fail "--help" || return 1
	grep -q '^credits-worker' <<<"$("$W" --version)" || fail "--version" || return 1
	"$W" >/dev/null 2>&1
	[ $? -eq 1 ] || fail "no -c: expected exit 1" || return 1
	"$W" -c true -b 0 >/dev/null 2>&1
	[ $? -eq 1 ] || fail "-b 0: expected exit 1" || return 1
	"$W" -c true --bogus >/dev/null 2>&1
	[ $? -eq 1 ] || fail "--bogus: expected exit 1" || return 1
	"$W" -c true -d "host=$T/nosocket port=1 dbname=postgres" >"$T/usage.log" 2>&1
	[ $? -eq 2 ] || fail "no server: expected exit 2" || return 1
	grep -q 'could not connect' "$T/usage.log" || fail "no 'could not connect' line" || return 1
}

case_basic() {
	accounts 1000 1019 && batches 1000 1019 100 && batches 1000 1019 50 || fail "setup" || return 1
	# Two batches per account grew one pending recharge of 150 each.
	[ "$(unsettled 1000 1019)" = 20 ] || fail "expected 20 pending recharges, got $(unsettled 1000 1019)" || return 1
	CHARGE_LOG=$T/basic.charges "$W" --once -b 7 -c "$T/charge-ok.sh" >"$T/basic.log" 2>&1
	local rc=$?
	[ $rc -eq 0 ] || fail "--once exited $rc" || return 1
	[ "$(q "SELECT count(*) FROM credits.recharges WHERE account_id BETWEEN 1000 AND 1019
	        AND status = 'succeeded' AND credits = 150
	        AND payment_ref = format('ch_%s_%s_%s', recharge_id, account_id, credits)")" = 20 ] ||
		fail "not all 20 recharges succeeded with the printed reference" || return 1
	[ "$(q "SELECT count(*) FROM credits.send_batches WHERE account_id BETWEEN 1000 AND 1019 AND status <> 'ready'")" = 0 ] ||
		fail "batches not ready" || return 1
	[ "$(q "SELECT count(*) FROM credits.accounts WHERE account_id BETWEEN 1000 AND 1019 AND (balance, in_flight) <> (0, 0)")" = 0 ] ||
		fail "balances not back to 0" || return 1
	[ "$(grep -c ': succeeded ref=ch_' "$T/basic.log")" = 20 ] || fail "expected 20 'succeeded' log lines" || return 1
	[ "$(wc -l <"$T/basic.charges")" = 20 ] && no_duplicates "$T/basic.charges" || fail "charge log" || return 1
	verify_ok || fail "verify() reports problems"
}

case_declines() {
	accounts 2000 2009 && batches 2000 2009 100 || fail "setup" || return 1
	CHARGE_LOG=$T/declines.charges "$W" --once -c "$T/charge-decline.sh" >"$T/declines.log" 2>&1
	local rc=$?
	[ $rc -eq 0 ] || fail "--once exited $rc" || return 1
	[ "$(q "SELECT count(*) FROM credits.recharges WHERE account_id BETWEEN 2000 AND 2009 AND account_id % 2 = 1
	        AND status = 'failed' AND failure_reason = format('card declined for account %s', account_id)")" = 5 ] ||
		fail "declined recharges: $(q "SELECT string_agg(status || ':' || coalesce(failure_reason, ''), ', ')
		      FROM credits.recharges WHERE account_id BETWEEN 2000 AND 2009 AND account_id % 2 = 1")" || return 1
	[ "$(q "SELECT count(*) FROM credits.recharges WHERE account_id BETWEEN 2000 AND 2009 AND account_id % 2 = 0
	        AND status = 'succeeded' AND payment_ref = 'ch_' || recharge_id")" = 5 ] ||
		fail "accepted recharges not succeeded" || return 1
	[ "$(q "SELECT count(*) FROM credits.send_batches WHERE account_id BETWEEN 2000 AND 2009
	        AND status = CASE WHEN account_id % 2 = 1 THEN 'failed' ELSE 'ready' END")" = 10 ] ||
		fail "batch statuses" || return 1
	[ "$(q "SELECT count(*) FROM credits.ledger WHERE account_id BETWEEN 2000 AND 2009 AND kind = 'refund' AND delta = 100")" = 5 ] ||
		fail "expected 5 refunds of 100" || return 1
	[ "$(grep -c ': failed: card declined for account' "$T/declines.log")" = 5 ] || fail "expected 5 'failed' log lines" || return 1
	verify_ok || fail "verify() reports problems"
}

case_outcomes() {
	accounts 2100 2107 && batches 2100 2107 10 || fail "setup" || return 1
	CHARGE_LOG=$T/outcomes.charges "$W" --once -c "exec $T/charge-outcomes.sh" >"$T/outcomes.log" 2>&1
	local rc=$?
	# Three outcomes are unknown (exit 0 without a reference; killed; exit 75): --once
	# leaves them processing for their lease and exits 4.
	[ $rc -eq 4 ] || fail "--once exited $rc, expected 4" || return 1
	local got
	got=$(q "SELECT string_agg(account_id || ' ' || status || ' ' || coalesce(payment_ref, '') || '|' ||
	                 CASE WHEN octet_length(failure_reason) > 100
	                      THEN octet_length(failure_reason)::text || ' bytes ending ' || right(failure_reason, 3)
	                      ELSE coalesce(failure_reason, '') END, E'\n' ORDER BY account_id)
	         FROM credits.recharges WHERE account_id BETWEEN 2100 AND 2107")
	local id2100
	id2100=$(q "SELECT recharge_id FROM credits.recharges WHERE account_id = 2100")
	local want="2100 succeeded ref-$id2100|
2101 processing |
2102 failed |charge command exited with status 3
2103 processing |
2104 failed |1000 bytes ending xxx
2105 failed |?bad?byte
2106 failed |999 bytes ending yyy
2107 processing |"
	[ "$got" = "$want" ] || fail "got: $(echo "$got" | tr '\n' ';')" || return 1
	grep -q 'account 2101 credits 10: outcome UNKNOWN .*payment reference (first line of stdout) is blank' "$T/outcomes.log" ||
		fail "no unknown-outcome line for the blank reference" || return 1
	grep -q 'account 2103 credits 10: outcome UNKNOWN .*killed by signal 9' "$T/outcomes.log" ||
		fail "no unknown-outcome line for the killed command" || return 1
	grep -q 'account 2107 credits 10: outcome UNKNOWN .*exit status 75: the command does not know.*psp timed out' "$T/outcomes.log" ||
		fail "no unknown-outcome line for exit 75" || return 1
	[ "$(q "SELECT count(*) FROM credits.auto_recharge WHERE account_id IN (2101, 2103, 2107) AND payment_failures = 0 AND enabled")" = 3 ] ||
		fail "an unknown outcome counted as a payment failure" || return 1
	# An operator checked with the PSP: neither was charged.
	q "SELECT count(credits.fail_recharge(recharge_id, 'not charged (checked with the PSP)'))
	   FROM credits.recharges WHERE account_id IN (2101, 2103, 2107)" >/dev/null || fail "cleanup" || return 1
	verify_ok || fail "verify() reports problems"
}

case_two_workers() {
	local log=$T/two.charges p1 p2
	: >"$log"
	accounts 3000 3199 || fail "setup" || return 1
	CHARGE_LOG=$log CHARGE_SLEEP=0.01 start_worker two-1.log -i 0.5 -b 10 -c "$T/charge-ok.sh"
	p1=$PID
	CHARGE_LOG=$log CHARGE_SLEEP=0.01 start_worker two-2.log -i 0.5 -b 10 -c "$T/charge-ok.sh"
	p2=$PID
	# Four waves of 50 while both run.
	local wave
	for wave in 0 1 2 3; do
		batches $((3000 + wave * 50)) $((3049 + wave * 50)) 100 || fail "inserting wave $wave" || return 1
		sleep 0.3
	done
	wait_sql "$(settled_sql 3000 3199)" 60 || fail "not settled after 60 s: $(unsettled 3000 3199) left" || return 1
	kill -TERM "$p1" "$p2"
	wait_exit "$p1" 10 && [ "$EXIT_CODE" = 0 ] || fail "worker 1 did not stop with 0" || return 1
	wait_exit "$p2" 10 && [ "$EXIT_CODE" = 0 ] || fail "worker 2 did not stop with 0" || return 1
	local n
	n=$(q "SELECT count(*) FROM credits.recharges WHERE account_id BETWEEN 3000 AND 3199")
	[ "$n" = 200 ] || fail "expected 200 recharges, found $n" || return 1
	no_duplicates "$log" || fail "charged twice: $(sort "$log" | uniq -d | head -5 | tr '\n' ' ')" || return 1
	[ "$(wc -l <"$log")" = 200 ] || fail "expected 200 charges, logged $(wc -l <"$log")" || return 1
	[ "$(q "SELECT count(*) FROM credits.recharges WHERE account_id BETWEEN 3000 AND 3199
	        AND status = 'succeeded' AND payment_ref = format('ch_%s_%s_%s', recharge_id, account_id, credits)")" = 200 ] ||
		fail "not all succeeded with their reference" || return 1
	local s1 s2
	s1=$(grep -c ': succeeded ' "$T/two-1.log")
	s2=$(grep -c ': succeeded ' "$T/two-2.log")
	[ $((s1 + s2)) = 200 ] || fail "log lines: $s1 + $s2 <> 200" || return 1
	[ "$s1" -gt 0 ] && [ "$s2" -gt 0 ] || fail "one worker did all the work ($s1 / $s2)" || return 1
	verify_ok || fail "verify() reports problems"
}

case_restart() {
	local log=$T/restart.charges p
	: >"$log"
	accounts 4000 4011 && accounts 4100 4105 && accounts 4200 4205 || fail "setup" || return 1
	CHARGE_LOG=$log CHARGE_SLEEP=0.5 start_worker restart.log -i 1 -b 5 -c "$T/charge-ok.sh"
	p=$PID
	batches 4000 4011 100 || fail "setup batches" || return 1
	# Kill the server while the third charge runs: its outcome is recorded
	# after the restart, by the same process, without charging again.
	wait_lines "$log" 3 20 || fail "worker did not start charging" || return 1
	as_pg "$PG_BIN/pg_ctl" -D "$CREDITS_RUN_DIR/data" -m immediate -w stop >/dev/null 2>&1 ||
		fail "pg_ctl stop" || return 1
	sleep 2
	alive "$p" || fail "worker exited while the server was down" || return 1
	as_pg "$PG_BIN/pg_ctl" -D "$CREDITS_RUN_DIR/data" -l "$CREDITS_RUN_DIR/server.log" -w start >/dev/null ||
		fail "pg_ctl start" || return 1
	wait_sql "$(settled_sql 4000 4011)" 30 || fail "first wave not settled: $(unsettled 4000 4011) left" || return 1
	# More work after the restart, for the same process.
	batches 4100 4105 100 || fail "batches after the restart" || return 1
	wait_sql "$(settled_sql 4100 4105)" 20 || fail "second wave not settled: $(unsettled 4100 4105) left" || return 1
	# Now a fast restart while it idles.
	as_pg "$PG_BIN/pg_ctl" -D "$CREDITS_RUN_DIR/data" -l "$CREDITS_RUN_DIR/server.log" -m fast -w restart >/dev/null ||
		fail "pg_ctl restart" || return 1
	batches 4200 4205 100 || fail "batches after the second restart" || return 1
	wait_sql "$(settled_sql 4200 4205)" 20 || fail "third wave not settled: $(unsettled 4200 4205) left" || return 1
	alive "$p" || fail "worker is gone" || return 1
	[ "$(grep -c 'connection lost' "$T/restart.log")" -ge 2 ] || fail "expected two 'connection lost' lines" || return 1
	no_duplicates "$log" || fail "charged twice: $(sort "$log" | uniq -d | tr '\n' ' ')" || return 1
	[ "$(wc -l <"$log")" = 24 ] || fail "expected 24 charges, logged $(wc -l <"$log")" || return 1
	[ "$(q "SELECT count(*) FROM credits.recharges WHERE account_id BETWEEN 4000 AND 4299
	        AND status = 'succeeded' AND payment_ref = format('ch_%s_%s_%s', recharge_id, account_id, credits)")" = 24 ] ||
		fail "not all 24 succeeded with their reference" || return 1
	kill -TERM "$p"
	wait_exit "$p" 10 && [ "$EXIT_CODE" = 0 ] || fail "did not stop with 0" || return 1
	verify_ok || fail "verify() reports problems"
}

case_sigterm() {
	local log=$T/sigterm.charges p t0 elapsed id
	: >"$log"
	# Idle with a long poll interval: the signal ends the wait at once.
	start_worker sigterm-idle.log -i 60 -c "$T/charge-ok.sh"
	p=$PID
	wait_lines "$T/sigterm-idle.log" 2 10 || fail "idle worker did not start" || return 1
	sleep 0.5
	t0=$(now_ms)
	kill -TERM "$p"
	wait_exit "$p" 5 || fail "idle worker still running 5 s after SIGTERM" || return 1
	elapsed=$(($(now_ms) - t0))
	[ "$EXIT_CODE" = 0 ] && [ "$elapsed" -le 1000 ] ||
		fail "idle worker: exit $EXIT_CODE after $elapsed ms" || return 1

	accounts 5000 5002 || fail "setup" || return 1
	CHARGE_LOG=$log CHARGE_SLEEP=2 start_worker sigterm.log -i 1 -b 1 -c "$T/charge-ok.sh"
	p=$PID
	batches 5000 5002 100 || fail "setup batches" || return 1
	wait_lines "$log" 1 10 || fail "worker did not start charging" || return 1
	t0=$(now_ms)
	kill -TERM "$p"
	wait_exit "$p" 6 || fail "still running 6 s after SIGTERM" || return 1
	elapsed=$(($(now_ms) - t0))
	[ "$EXIT_CODE" = 0 ] || fail "exit status $EXIT_CODE" || return 1
	[ "$elapsed" -le 4000 ] || fail "took $elapsed ms to stop" || return 1
	id=$(head -1 "$log")
	[ "$(q "SELECT status FROM credits.recharges WHERE recharge_id = $id")" = succeeded ] ||
		fail "the recharge in hand ($id) was not recorded" || return 1
	[ "$(wc -l <"$log")" = 1 ] || fail "charged more than the one in hand" || return 1
	[ "$(q "SELECT count(*) FROM credits.recharges WHERE account_id BETWEEN 5000 AND 5002 AND status = 'pending'")" = 2 ] ||
		fail "the other two should still be pending" || return 1
	grep -q ': stopped$' "$T/sigterm.log" || fail "no 'stopped' log line" || return 1
	grep -q ': received SIGTERM: stopping' "$T/sigterm.log" || fail "no log line for the stop signal" || return 1
	grep -q ': received SIGTERM: stopping' "$T/sigterm-idle.log" || fail "idle: no log line for the stop signal" || return 1

	verify_ok || fail "verify() reports problems"
}

case_double_term() {
	local log=$T/double.charges p
	: >"$log"
	accounts 5100 5102 || fail "setup" || return 1
	batches 5100 5102 100 || fail "setup batches" || return 1
	CHARGE_LOG=$log CHARGE_SLEEP=1 start_worker double.log -i 1 -b 3 -c "$T/charge-ok.sh"
	p=$PID
	wait_lines "$log" 1 10 || fail "worker did not start charging" || return 1
	kill -TERM "$p"
	sleep 0.2
	kill -TERM "$p"
	wait_exit "$p" 5 || fail "still running 5 s after two signals" || return 1
	[ "$EXIT_CODE" = 0 ] || fail "exit status $EXIT_CODE, expected 0" || return 1
	[ "$(wc -l <"$log")" = 1 ] || fail "charged more than the one in hand" || return 1
	# Claimed oldest first, charged in that order: the first one is in hand;
	# the two not started are handed back.
	[ "$(q "SELECT string_agg(status, ',' ORDER BY recharge_id) FROM credits.recharges
	        WHERE account_id BETWEEN 5100 AND 5102")" = "succeeded,pending,pending" ] ||
		fail "expected succeeded,pending,pending" || return 1
	[ "$(q "SELECT min(recharge_id) FROM credits.recharges WHERE account_id BETWEEN 5100 AND 5102")" = "$(cat "$log")" ] ||
		fail "charged $(cat "$log"), not the oldest" || return 1
	[ "$(grep -c 'released back to pending' "$T/double.log")" = 2 ] || fail "the two handed back are not logged" || return 1
	grep -q 'received a second stop signal' "$T/double.log" || fail "no log line for the second signal" || return 1
	[ "$(q "SELECT count(*) FROM credits.auto_recharge WHERE account_id BETWEEN 5100 AND 5102 AND payment_failures = 0")" = 3 ] ||
		fail "a release counted as a payment failure" || return 1
	verify_ok || fail "verify() reports problems"
}

case_leftovers() {
	# The two recharges case_sigterm left pending: --once settles them.
	CHARGE_LOG=$T/leftovers.charges "$W" --once -q -c "$T/charge-ok.sh" >"$T/leftovers.log" 2>&1
	local rc=$?
	[ $rc -eq 0 ] || fail "--once exited $rc" || return 1
	[ "$(unsettled 0 999999)" = 0 ] || fail "still unsettled: $(unsettled 0 999999)" || return 1
	[ "$(wc -l <"$T/leftovers.charges")" = 2 ] || fail "expected 2 charges" || return 1
	[ ! -s "$T/leftovers.log" ] || fail "--quiet logged: $(head -1 "$T/leftovers.log")" || return 1
	verify_ok || fail "verify() reports problems"
}

case_notify() {
	local log=$T/notify.charges p id t0 elapsed lock
	: >"$log"
	accounts 6000 6001 || fail "setup" || return 1
	# A recharge that is pending before the worker starts (so the
	# extension's own NOTIFY, if any, is gone) and row-locked while it
	# starts, so its first claim skips it.  Only our NOTIFY can wake it.
	batches 6000 6000 100 || fail "setup batches" || return 1
	id=$(q "SELECT recharge_id FROM credits.recharges WHERE account_id = 6000")
	pg -c "BEGIN; SELECT 1 FROM credits.recharges WHERE recharge_id = $id FOR UPDATE;
	       SELECT pg_sleep(2); COMMIT;" >/dev/null 2>&1 &
	lock=$!
	wait_sql "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep'" 5 ||
		fail "lock holder did not start" || return 1
	CHARGE_LOG=$log start_worker notify.log -i 60 -c "$T/charge-ok.sh"
	p=$PID
	wait_lines "$T/notify.log" 2 10 || fail "worker did not connect" || return 1
	sleep 0.5
	wait "$lock"
	sleep 0.5
	[ "$(q "SELECT status FROM credits.recharges WHERE recharge_id = $id")" = pending ] ||
		fail "recharge $id was claimed before any NOTIFY" || return 1
	t0=$(now_ms)
	q "NOTIFY credits_recharge, '$id'" >/dev/null
	wait_sql "SELECT status = 'succeeded' FROM credits.recharges WHERE recharge_id = $id" 3 ||
		fail "not settled 3 s after the NOTIFY" || return 1
	elapsed=$(($(now_ms) - t0))
	echo "#   settled $elapsed ms after the NOTIFY"

	# A new batch followed by a NOTIFY, as the extension sends it.
	batches 6001 6001 100 || fail "second batch" || return 1
	id=$(q "SELECT recharge_id FROM credits.recharges WHERE account_id = 6001")
	q "NOTIFY credits_recharge, '$id'" >/dev/null
	wait_sql "SELECT status = 'succeeded' FROM credits.recharges WHERE recharge_id = $id" 3 ||
		fail "new batch not settled 3 s after the NOTIFY" || return 1
	kill -TERM "$p"
	wait_exit "$p" 5 && [ "$EXIT_CODE" = 0 ] || fail "did not stop with 0" || return 1
	verify_ok || fail "verify() reports problems"
}

server_stop() { as_pg "$PG_BIN/pg_ctl" -D "$CREDITS_RUN_DIR/data" -m immediate -w stop >/dev/null 2>&1; }
server_start() { as_pg "$PG_BIN/pg_ctl" -D "$CREDITS_RUN_DIR/data" -l "$CREDITS_RUN_DIR/server.log" -w start >/dev/null; }

case_term_outage() {
	local log=$T/outage.charges p id t0 elapsed sql token
	: >"$log"
	accounts 7000 7001 || fail "setup" || return 1
	# SIGTERM while the server is down and a charge is in hand: the worker
	# keeps trying to record it; the server is back within the grace period.
	CHARGE_LOG=$log CHARGE_SLEEP=1 start_worker outage-1.log -i 1 -b 1 -c "$T/charge-ok.sh"
	p=$PID
	batches 7000 7000 100 || fail "setup batches" || return 1
	wait_lines "$log" 1 10 || fail "worker did not start charging" || return 1
	server_stop || fail "pg_ctl stop" || return 1
	kill -TERM "$p"
	sleep 2
	server_start || fail "pg_ctl start" || return 1
	wait_exit "$p" 15 || fail "still running 15 s after SIGTERM" || return 1
	[ "$EXIT_CODE" = 0 ] || fail "exit status $EXIT_CODE, expected 0" || return 1
	[ "$(q "SELECT status FROM credits.recharges WHERE account_id = 7000")" = succeeded ] ||
		fail "the charge in hand was not recorded after the restart" || return 1

	# The server stays down: after the grace period the worker gives up,
	# logs the SQL that records the charge, and exits 3.
	: >"$log"
	CHARGE_LOG=$log CHARGE_SLEEP=1 start_worker outage-2.log -i 1 -b 1 -c "$T/charge-ok.sh"
	p=$PID
	batches 7001 7001 100 || fail "setup batches" || return 1
	id=$(q "SELECT recharge_id FROM credits.recharges WHERE account_id = 7001")
	wait_lines "$log" 1 10 || fail "worker did not start charging" || return 1
	server_stop || fail "pg_ctl stop" || return 1
	t0=$(now_ms)
	kill -TERM "$p"
	wait_exit "$p" 20 || fail "still running 20 s after SIGTERM" || return 1
	elapsed=$(($(now_ms) - t0))
	server_start || fail "pg_ctl start" || return 1
	[ "$EXIT_CODE" = 3 ] || fail "exit status $EXIT_CODE, expected 3" || return 1
	[ "$elapsed" -ge 8000 ] || fail "gave up after $elapsed ms, before the grace period" || return 1
	sql=$(sed -n "s/.*NOT RECORDED (stopped); record it with: //p" "$T/outage-2.log")
	token=$(q "SELECT claim_token FROM credits.recharges WHERE recharge_id = $id")
	[ "$sql" = "SELECT credits.complete_recharge($id, 'ch_${id}_7001_100', '$token');" ] ||
		fail "logged SQL: '$sql'" || return 1
	[ "$(q "SELECT status FROM credits.recharges WHERE recharge_id = $id")" = processing ] ||
		fail "expected the recharge still processing" || return 1
	q "$sql" >/dev/null || fail "the logged SQL failed" || return 1
	[ "$(q "SELECT status FROM credits.recharges WHERE recharge_id = $id")" = succeeded ] ||
		fail "the logged SQL did not settle it" || return 1
	verify_ok || fail "verify() reports problems"
}

# An idempotent fake PSP: it charges each recharge id at most once (the
# ledger $PSP_DIR/charged), and a repeated request for an id it has charged
# answers with the same charge id, as a PSP's idempotency key does.  Each
# request is logged in $PSP_DIR/requests.  With PSP_HANG_FIRST set, the
# first request for an id charges, then hangs (the answer is lost) in a
# child process whose pid goes to $PSP_DIR/child.ID.
cat >"$T/psp.sh" <<'PSP'
#!/bin/sh
id=$CREDITS_RECHARGE_ID
printf '%s\n' "$id" >>"$PSP_DIR/requests"
if grep -qx "$id" "$PSP_DIR/charged" 2>/dev/null; then
	printf 'psp_%s\n' "$id"
	exit 0
fi
printf '%s\n' "$id" >>"$PSP_DIR/charged"
if [ -n "${PSP_HANG_FIRST:-}" ]; then
	sleep 30 &
	echo $! >"$PSP_DIR/child.$id"
	wait
fi
printf 'psp_%s\n' "$id"
PSP

# References the server must never see as a failure.
cat >"$T/charge-badref.sh" <<'BAD'
#!/bin/sh
case $CREDITS_ACCOUNT_ID in
8100) head -c 300 /dev/zero | tr '\0' r; printf '\n' ;;
8101) printf '   \t  \n' ;;
8102) printf 'ch_nbsp\302\240\n' ;;
8103) printf 'ch_with\ttab\n' ;;
esac
BAD

# Execs a program that does not exist: the shell exits 127.
cat >"$T/charge-missing.sh" <<'MISS'
#!/bin/sh
exec /nonexistent/psp-client --charge "$CREDITS_RECHARGE_ID"
MISS
# Ignores SIGTERM (and so do its children): only SIGKILL ends it.
cat >"$T/charge-stubborn.sh" <<'STUB'
#!/bin/sh
trap '' TERM
echo $$ >"$STUB_PIDFILE"
while :; do sleep 0.2; done
STUB
chmod +x "$T"/psp.sh "$T"/charge-badref.sh "$T"/charge-missing.sh "$T"/charge-stubborn.sh

recharge_of() { q "SELECT recharge_id FROM credits.recharges WHERE account_id = $1 ORDER BY recharge_id DESC LIMIT 1"; }

case_start_checks() {
	local rc
	accounts 8000 8000 && batches 8000 8000 100 || fail "setup" || return 1
	# Not on PATH: refuses before connecting, so nothing is claimed.
	"$W" -c "no-such-charge-program --amount 1" >"$T/start-1.log" 2>&1
	rc=$?
	[ $rc -eq 5 ] || fail "program not on PATH: exit $rc, expected 5" || return 1
	grep -q '"no-such-charge-program" was not found as an executable file on PATH' "$T/start-1.log" ||
		fail "no clear message: $(tail -1 "$T/start-1.log")" || return 1
	# A path that is not executable.
	cp "$T/charge-ok.sh" "$T/charge-noexec.sh" && chmod -x "$T/charge-noexec.sh"
	"$W" -c "$T/charge-noexec.sh" >"$T/start-2.log" 2>&1
	rc=$?
	[ $rc -eq 5 ] || fail "not executable: exit $rc, expected 5" || return 1
	grep -q 'cannot run: not executable' "$T/start-2.log" || fail "no 'not executable' message" || return 1
	[ "$(q "SELECT status || ' ' || claim_count FROM credits.recharges WHERE account_id = 8000")" = "pending 0" ] ||
		fail "something was claimed" || return 1
	# A database without the extension.
	q "DROP DATABASE IF EXISTS noext" >/dev/null; q "CREATE DATABASE noext" >/dev/null
	"$W" -d dbname=noext -c "$T/charge-ok.sh" >"$T/start-3.log" 2>&1
	rc=$?
	[ $rc -eq 6 ] || fail "no extension: exit $rc, expected 6" || return 1
	grep -q 'does not have the credits extension' "$T/start-3.log" || fail "no clear message about the extension" || return 1
	# A role without the grants; then one that lacks only release_recharge.
	q "DROP ROLE IF EXISTS regress_nogrant" >/dev/null
	q "CREATE ROLE regress_nogrant LOGIN" >/dev/null || fail "create role" || return 1
	"$W" -d "dbname=postgres user=regress_nogrant" -c "$T/charge-ok.sh" >"$T/start-4.log" 2>&1
	rc=$?
	[ $rc -eq 7 ] || fail "no grants: exit $rc, expected 7" || return 1
	grep -q 'role "regress_nogrant" lacks USAGE on schema credits' "$T/start-4.log" || fail "no clear message about privileges" || return 1
	q "GRANT USAGE ON SCHEMA credits TO regress_nogrant;
	   GRANT EXECUTE ON FUNCTION credits.claim_recharges(integer), credits.complete_recharge(bigint, text, uuid),
	         credits.fail_recharge(bigint, text, uuid) TO regress_nogrant;
	   REVOKE EXECUTE ON FUNCTION credits.release_recharge(bigint, uuid) FROM PUBLIC" >/dev/null || fail "grants" || return 1
	"$W" -d "dbname=postgres user=regress_nogrant" -c "$T/charge-ok.sh" >"$T/start-5.log" 2>&1
	rc=$?
	[ $rc -eq 7 ] || fail "no release grant: exit $rc, expected 7" || return 1
	grep -q 'lacks EXECUTE on credits.release_recharge(bigint, uuid)' "$T/start-5.log" || fail "release_recharge not named" || return 1
	[ "$(q "SELECT status || ' ' || claim_count FROM credits.recharges WHERE account_id = 8000")" = "pending 0" ] ||
		fail "something was claimed" || return 1
	q "DROP DATABASE noext" >/dev/null
	# Never claimed: turning auto-recharge off cancels it.
	q "SELECT credits.disable_auto_recharge(8000)" >/dev/null
}

case_not_run() {
	local p id rc
	accounts 8010 8012 || fail "setup" || return 1
	# A program that execs a missing one: exit 127, the recharge is
	# handed back, --once exits 5.
	batches 8010 8010 100 || fail "setup batches" || return 1
	id=$(recharge_of 8010)
	"$W" --once -c "$T/charge-missing.sh" >"$T/notrun-1.log" 2>&1
	rc=$?
	[ $rc -eq 5 ] || fail "--once with exit 127: exit $rc, expected 5" || return 1
	grep -q "recharge $id account 8010 credits 100: the charge command did not run (exit status 127" "$T/notrun-1.log" ||
		fail "no 'did not run' line" || return 1
	[ "$(q "SELECT r.status || ' ' || p.payment_failures || ' ' || p.enabled
	        FROM credits.recharges r JOIN credits.auto_recharge p USING (account_id) WHERE r.recharge_id = $id")" = "pending 0 true" ] ||
		fail "expected pending, no payment failure, auto-recharge on" || return 1
	[ "$(q "SELECT string_agg(status, ',') FROM credits.send_batches WHERE account_id = 8010")" = awaiting_credits ] ||
		fail "the batch is no longer awaiting" || return 1

	# The command becomes non-executable while the worker runs (exit 126).
	cp "$T/charge-ok.sh" "$T/charge-flip.sh" && chmod +x "$T/charge-flip.sh"
	CHARGE_LOG=$T/notrun.charges start_worker notrun-2.log -i 0.5 --retry-interval 1 -b 1 -c "$T/charge-flip.sh"
	p=$PID
	wait_sql "SELECT status = 'succeeded' FROM credits.recharges WHERE recharge_id = $id" 10 ||
		fail "the handed-back recharge was not settled once the command ran" || return 1
	chmod -x "$T/charge-flip.sh"
	batches 8011 8011 100 || fail "batch 8011" || return 1
	id=$(recharge_of 8011)
	wait_lines "$T/notrun-2.log" 1 10
	local deadline=$(($(now_ms) + 10000))
	until grep -q "recharge $id account 8011 credits 100: released back to pending" "$T/notrun-2.log"; do
		[ "$(now_ms)" -ge "$deadline" ] && { fail "no 'released' line for $id"; return 1; }
		sleep 0.1
	done
	grep -q "recharge $id account 8011 credits 100: the charge command did not run (exit status 126" "$T/notrun-2.log" ||
		fail "no 'did not run' line" || return 1
	[ "$(q "SELECT p.payment_failures || ' ' || p.enabled || ' ' || (r.status IN ('pending', 'processing'))
	        FROM credits.recharges r JOIN credits.auto_recharge p USING (account_id) WHERE r.recharge_id = $id")" = "0 true true" ] ||
		fail "counted as a payment failure" || return 1
	[ "$(q "SELECT status FROM credits.send_batches WHERE account_id = 8011")" = awaiting_credits ] ||
		fail "the batch is no longer awaiting" || return 1
	[ "$(q "SELECT count(*) FROM credits.recharges WHERE account_id = 8011 AND status = 'failed'")" = 0 ] ||
		fail "the recharge failed" || return 1
	# Fixed: the worker (backing off) picks it up again.
	chmod +x "$T/charge-flip.sh"
	wait_sql "SELECT status = 'succeeded' FROM credits.recharges WHERE recharge_id = $id" 20 ||
		fail "not settled after the command was fixed" || return 1
	kill -TERM "$p"
	wait_exit "$p" 5 && [ "$EXIT_CODE" = 0 ] || fail "did not stop with 0" || return 1
	verify_ok || fail "verify() reports problems"
}

case_timeout() {
	local p id child psp=$T/psp-timeout rc t0 elapsed
	mkdir -p "$psp"
	# A command that ignores SIGTERM gets SIGKILL after the 5 s grace.
	accounts 8022 8022 && batches 8022 8022 100 || fail "setup" || return 1
	id=$(recharge_of 8022)
	t0=$(now_ms)
	STUB_PIDFILE=$T/stubborn.pid "$W" --once -t 1 -c "$T/charge-stubborn.sh" >"$T/stubborn.log" 2>&1
	rc=$?
	elapsed=$(($(now_ms) - t0))
	[ $rc -eq 4 ] || fail "stubborn: --once exited $rc, expected 4 (unknown outcome left)" || return 1
	[ "$elapsed" -ge 5500 ] || fail "stubborn: killed after $elapsed ms, before the grace" || return 1
	grep -q "recharge $id: .*still running 5000 ms after SIGTERM: SIGKILL to its process group" "$T/stubborn.log" ||
		fail "stubborn: no SIGKILL line" || return 1
	! alive "$(cat "$T/stubborn.pid")" || fail "stubborn: the command survived SIGKILL" || return 1
	[ "$(q "SELECT status FROM credits.recharges WHERE recharge_id = $id")" = processing ] ||
		fail "stubborn: expected processing" || return 1
	q "SELECT credits.fail_recharge($id, 'not charged (checked with the PSP)')" >/dev/null || fail "cleanup" || return 1
	accounts 8020 8021 && batches 8020 8021 100 || fail "setup" || return 1
	id=$(recharge_of 8020)
	# The first request for each id charges and then hangs past the 1 s
	# timeout: killed with its child; outcome unknown; retried 1 s later
	# with the same recharge id; the PSP answers without charging again.
	PSP_DIR=$psp PSP_HANG_FIRST=1 start_worker timeout.log -i 0.5 -b 1 --charge-timeout 1 --retry-interval 1 -c "$T/psp.sh"
	p=$PID
	local deadline=$(($(now_ms) + 10000))
	until grep -q "recharge $id account 8020 credits 100: outcome UNKNOWN" "$T/timeout.log"; do
		[ "$(now_ms)" -ge "$deadline" ] && { fail "no unknown-outcome line for $id"; return 1; }
		sleep 0.05
	done
	[ "$(q "SELECT status || ' ' || coalesce(failure_reason, '-') FROM credits.recharges WHERE recharge_id = $id")" = "processing -" ] ||
		fail "after the timeout: $(q "SELECT status FROM credits.recharges WHERE recharge_id = $id"), expected processing" || return 1
	child=$(cat "$psp/child.$id" 2>/dev/null)
	[ -n "$child" ] || fail "the PSP recorded no child" || return 1
	! alive "$child" || fail "the charge command's child $child survived the kill" || return 1
	grep -q "did not answer within 1 s: SIGTERM to its process group" "$T/timeout.log" || fail "no kill line" || return 1
	wait_sql "SELECT count(*) = 2 FROM credits.recharges WHERE account_id IN (8020, 8021) AND status = 'succeeded'
	          AND payment_ref = 'psp_' || recharge_id" 20 ||
		fail "not completed after the retries: $(unsettled 8020 8021) left" || return 1
	kill -TERM "$p"
	wait_exit "$p" 5 && [ "$EXIT_CODE" = 0 ] || fail "did not stop with 0" || return 1
	[ "$(grep -cx "$id" "$psp/requests")" -ge 2 ] || fail "recharge $id was not retried" || return 1
	[ -z "$(sort "$psp/charged" | uniq -d)" ] || fail "the PSP charged an id twice" || return 1
	[ "$(wc -l <"$psp/charged")" = 2 ] || fail "expected 2 charges at the PSP" || return 1
	[ "$(q "SELECT count(*) FROM credits.auto_recharge WHERE account_id IN (8020, 8021) AND payment_failures = 0")" = 2 ] ||
		fail "a timeout counted as a payment failure" || return 1
	verify_ok || fail "verify() reports problems"
}

case_bad_refs() {
	local rc long id0 id1
	accounts 8100 8103 && batches 8100 8103 100 || fail "setup" || return 1
	id0=$(recharge_of 8100)
	id1=$(recharge_of 8101)
	long=$(head -c 300 /dev/zero | tr '\0' r)
	"$W" --once -c "$T/charge-badref.sh" >"$T/badref.log" 2>&1
	rc=$?
	[ $rc -eq 4 ] || fail "--once exited $rc, expected 4" || return 1
	grep -q "recharge $id0 account 8100 credits 100: outcome UNKNOWN .*is 300 bytes, more than 255: '$long'" "$T/badref.log" ||
		fail "the 300-byte reference is not logged in full" || return 1
	grep -q "recharge $id1 account 8101 credits 100: outcome UNKNOWN .*is blank" "$T/badref.log" ||
		fail "no unknown-outcome line for the blank reference" || return 1
	grep -q "account 8102 credits 100: outcome UNKNOWN .*leading or trailing white space: 'ch_nbsp"$'\302\240'"'" "$T/badref.log" ||
		fail "no unknown-outcome line for the reference ending in U+00A0" || return 1
	grep -q "account 8103 credits 100: outcome UNKNOWN .*control characters: 'ch_with\\\\x09tab'" "$T/badref.log" ||
		fail "no unknown-outcome line for the reference with a tab" || return 1
	[ "$(q "SELECT string_agg(r.status || ' ' || p.payment_failures || ' ' || p.enabled, ',' ORDER BY r.account_id)
	        FROM credits.recharges r JOIN credits.auto_recharge p USING (account_id) WHERE r.account_id BETWEEN 8100 AND 8103")" = \
	  "processing 0 true,processing 0 true,processing 0 true,processing 0 true" ] ||
		fail "expected all four processing, no payment failure" || return 1
	q "SELECT count(credits.fail_recharge(recharge_id, 'not charged (checked with the PSP)'))
	   FROM credits.recharges WHERE account_id BETWEEN 8100 AND 8103" >/dev/null || fail "cleanup" || return 1
	verify_ok || fail "verify() reports problems"
}

# lock_scenario X NAME ERROR OPTIONS...: account X's row is held by an
# application transaction for 6 s while a worker with OPTIONS settles X's
# recharge and X+1's (claimed after it).  X+1's is completed meanwhile; X's
# recording fails with ERROR, is kept and completed after the holder commits.
lock_scenario() {
	local x=$1 y=$(($1 + 1)) name=$2 error=$3 log=$T/$2.charges p holder idx idy
	shift 3
	: >"$log"
	accounts "$x" "$y" || fail "$name: setup" || return 1
	batches "$x" "$x" 100 && batches "$y" "$y" 100 || fail "$name: setup batches" || return 1
	idx=$(recharge_of "$x")
	idy=$(recharge_of "$y")
	pg -c "BEGIN; SELECT 1 FROM credits.accounts WHERE account_id = $x FOR UPDATE;
	       SELECT pg_sleep(6); COMMIT;" >/dev/null 2>&1 &
	holder=$!
	wait_sql "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep'" 5 ||
		fail "$name: lock holder did not start" || return 1
	CHARGE_LOG=$log start_worker "$name.log" -i 0.5 -b 10 "$@" -c "$T/charge-ok.sh"
	p=$PID
	wait_sql "SELECT status = 'succeeded' FROM credits.recharges WHERE recharge_id = $idy" 5 ||
		fail "$name: the other account's recharge was held up" || return 1
	[ "$(q "SELECT status FROM credits.recharges WHERE recharge_id = $idx")" = processing ] ||
		fail "$name: $x's recharge should still be processing" || return 1
	[ "$(q "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")" = 1 ] ||
		fail "$name: the lock holder ended too soon for this test" || return 1
	grep -q "recharge $idx account $x credits 100: could not record the success now, kept in memory .*ref='ch_${idx}_${x}_100'.*$error" "$T/$name.log" ||
		fail "$name: no deferral line with the reference and '$error'" || return 1
	wait "$holder"
	wait_sql "SELECT status = 'succeeded' AND payment_ref = 'ch_${idx}_${x}_100' FROM credits.recharges WHERE recharge_id = $idx" 20 ||
		fail "$name: $x's recharge not completed after the holder committed" || return 1
	kill -TERM "$p"
	wait_exit "$p" 5 && [ "$EXIT_CODE" = 0 ] || fail "$name: did not stop with 0" || return 1
	[ "$(wc -l <"$log")" = 2 ] && no_duplicates "$log" || fail "$name: charged more than once" || return 1
	verify_ok || fail "$name: verify() reports problems"
}

case_lock() {
	# 55P03 from lock_timeout; then 57014 from statement_timeout alone.
	lock_scenario 8200 lock "canceling statement due to lock timeout" --lock-timeout 0.5 &&
		lock_scenario 8210 stmt "canceling statement due to statement timeout" --lock-timeout 0 --statement-timeout 0.5
}

case_stale() {
	local log=$T/stale.charges p id reclaimed
	: >"$log"
	accounts 8300 8300 || fail "setup" || return 1
	# A 2 s lease and a 4 s charge: the lease expires mid-charge and an SQL
	# claim takes the recharge; the worker's completion then gets MC020.
	CHARGE_LOG=$log CHARGE_SLEEP=4 start_worker stale.log -i 0.5 -b 1 --charge-timeout 10 \
		-d "dbname=postgres options='-c credits.claim_lease=2s'" -c "$T/charge-ok.sh"
	p=$PID
	batches 8300 8300 100 || fail "setup batches" || return 1
	id=$(recharge_of 8300)
	wait_lines "$log" 1 10 || fail "worker did not start charging" || return 1
	wait_sql "SELECT lease_expires_at < now() FROM credits.recharges WHERE recharge_id = $id" 5 ||
		fail "the lease did not expire" || return 1
	reclaimed=$(q "SELECT string_agg(recharge_id::text, ',') FROM credits.claim_recharges(10)")
	[ "$reclaimed" = "$id" ] || fail "the SQL claim got '$reclaimed', expected $id" || return 1
	local deadline=$(($(now_ms) + 8000))
	until grep -q "recharge $id account 8300 credits 100: claim no longer held" "$T/stale.log"; do
		[ "$(now_ms)" -ge "$deadline" ] && { fail "no MC020 line"; return 1; }
		sleep 0.1
	done
	grep -q "claim no longer held .*Dropped: ref='ch_${id}_8300_100'" "$T/stale.log" || fail "the reference is not logged" || return 1
	sleep 2
	[ "$(grep -c "recharge $id .*claim no longer held" "$T/stale.log")" = 1 ] || fail "retried after MC020" || return 1
	[ "$(q "SELECT status || ' ' || claim_count FROM credits.recharges WHERE recharge_id = $id")" = "processing 2" ] ||
		fail "expected processing under the SQL claim" || return 1
	kill -TERM "$p"
	wait_exit "$p" 5 && [ "$EXIT_CODE" = 0 ] || fail "did not stop with 0" || return 1
	# The SQL claim's holder settles it, with the reference the PSP gave.
	q "SELECT credits.complete_recharge($id, 'ch_${id}_8300_100')" >/dev/null || fail "settling by hand" || return 1
	verify_ok || fail "verify() reports problems"
}

case_heartbeat() {
	local p
	accounts 8400 8401 || fail "setup" || return 1
	# max_payment_failures 1: the decline turns auto-recharge off, and the
	# worker logs the extension's NOTIFY; a NOTIFY from elsewhere is a hint.
	CHARGE_LOG=$T/heartbeat.charges start_worker heartbeat.log -i 0.5 --heartbeat 1 \
		-d "dbname=postgres options='-c credits.max_payment_failures=1'" -c "$T/charge-decline.sh"
	p=$PID
	batches 8401 8401 100 || fail "setup batches" || return 1
	wait_sql "SELECT NOT enabled FROM credits.auto_recharge WHERE account_id = 8401" 10 ||
		fail "auto-recharge of 8401 not turned off" || return 1
	q "NOTIFY credits_auto_recharge_disabled, '8400'" >/dev/null
	sleep 2.5
	kill -TERM "$p"
	wait_exit "$p" 5 && [ "$EXIT_CODE" = 0 ] || fail "did not stop with 0" || return 1
	[ "$(grep -c ': heartbeat: claimed [0-9]*, succeeded [0-9]*, failed [0-9]*, unknown outcome [0-9]*, deferred [0-9]*, released [0-9]*' "$T/heartbeat.log")" -ge 2 ] ||
		fail "expected at least 2 heartbeat lines" || return 1
	grep -q 'heartbeat: claimed 1, succeeded 0, failed 1,' "$T/heartbeat.log" || fail "heartbeat counts" || return 1
	grep -q 'account 8401: auto-recharge turned itself off after repeated payment failures' "$T/heartbeat.log" ||
		fail "no auto-recharge-off line" || return 1
	grep -q "says auto-recharge was turned off for account '8400' (.*a hint, not verified" "$T/heartbeat.log" ||
		fail "the foreign NOTIFY is not logged as a hint" || return 1
	q "SELECT credits.enable_auto_recharge(8401, 0, 100000)" >/dev/null
	verify_ok || fail "verify() reports problems"
}

# -------------------------------------------------------------------- run

ensure_packages || exit 1
build_and_install || { echo "not ok - build and install the extension"; echo "0 passed, 1 failed"; exit 1; }
start_cluster || { echo "not ok - start the cluster"; echo "0 passed, 1 failed"; exit 1; }
say "building the worker"
if make -C "$REPO_ROOT" -s -f worker/Makefile.inc PG_CONFIG="$PG_BIN/pg_config" worker/credits-worker; then
	echo "ok - build worker/credits-worker (-Wall -Wextra -Werror)"
	passed=$((passed + 1))
else
	echo "not ok - build worker/credits-worker"
	echo "0 passed, 1 failed"
	exit 1
fi
pg -c "CREATE EXTENSION credits" || { echo "not ok - CREATE EXTENSION"; exit 1; }

say "worker cases"
run_case "usage: --help, bad options (exit 1), no server at start (exit 2)" case_usage
run_case "basic: --once settles 20 recharges with the printed references" case_basic
run_case "declines: exit 1 fails the recharge with stderr as reason, batches refunded" case_declines
run_case "outcomes: no reference and signal and exit 75 unknown, silent exit, long and invalid stderr" case_outcomes
run_case "two workers, 200 recharges: each charged exactly once" case_two_workers
run_case "restart: server killed mid-charge, same worker reconnects and settles" case_restart
run_case "sigterm: exit 0 promptly after the recharge in hand; at once when idle" case_sigterm
run_case "leftovers: --once -q settles what is pending, logs nothing" case_leftovers
run_case "double sigterm: unstarted claims released and logged, exit 0" case_double_term
run_case "notify: a NOTIFY wakes a worker polling every 60 s" case_notify
run_case "sigterm during an outage: records if the server returns, else exit 3 with the SQL" case_term_outage
run_case "start checks: command not found (5), no extension (6), missing grants (7); nothing claimed" case_start_checks
run_case "command not run (126/127): recharge released, no payment failure, batches still awaiting" case_not_run
run_case "charge timeout: process group killed (SIGKILL after the grace), outcome unknown, retried with the same id, charged once" case_timeout
run_case "bad references (300 bytes, blank, U+00A0 at the end, a tab): unknown outcome, logged in full, not failed" case_bad_refs
run_case "lock_timeout and statement_timeout: a locked account delays only its own recharge" case_lock
run_case "stale claim: lease expired and re-claimed, MC020 logged with the reference, not retried" case_stale
run_case "heartbeat, auto-recharge turned off, NOTIFY from elsewhere is a hint" case_heartbeat

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

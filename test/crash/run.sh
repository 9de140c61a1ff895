#!/usr/bin/env bash
# test/crash/run.sh: crash safety of the credits extension (issue 4).
#
# Builds and installs the extension, starts a throwaway cluster with
# synchronous_commit = on and fsync = on, opens 200 accounts with varied
# auto-recharge policies, and then repeats a cycle on the same, growing data:
#
#   load     CLIENTS client loops insert batches, each through one psql
#            session (reopened after the connection breaks):
#            single-row INSERTs, multi-row INSERTs and BEGIN ... COMMIT
#            transactions of 2-3 INSERTs, each row with a fresh idempotency
#            key, as INSERT ... ON CONFLICT (account_id, idempotency_key)
#            DO NOTHING RETURNING; WORKERS worker loops claim recharges
#            (credits.claim_recharges(20)), complete most, fail every 10th;
#            an admin loop makes promo grants that expire within seconds,
#            purchase grants, and calls expire_grants() and renew_plans()
#            (its session's clock moved a month further each time).  The accounts start
#            with signup credits, and plans, promos (some lapsing during the
#            run, some spent first) and purchases (doc/grants.md), so debits
#            draw from several grants, expire them, and owe past zero.
#            Every attempt is logged before it is sent ("sent") and again
#            with the outcome exactly as the client saw it:
#              committed  psql succeeded and RETURNING gave the row
#              failed     the server reported an ERROR (its SQLSTATE kept)
#              noconn     psql could not even connect: nothing was sent
#              unknown    the connection broke mid-statement (or only the
#                         "sent" line exists): it may or may not have committed
#   crash    after a random 2-6 s, kill -9: odd cycles the postmaster alone
#            (its backends finish the statement in hand and may still commit),
#            even cycles the postmaster and all its children at once; from
#            the second cycle on, a CHECKPOINT runs partway through the load
#   restart  pg_ctl start (crash recovery)
#   check    verify() is empty; every committed key is stored as the batch
#            the client was told, with debit rows totalling its cost (one
#            per grant drawn, one for the part owed); no failed or
#            never-sent key is stored; an unknown statement or transaction is
#            stored whole or not at all; no stored batch or ledger row that
#            nobody sent; worker completions and failures seen committed are
#            settled so, and no recharge was claimed twice; every grant's
#            remaining is what its ledger rows put in and took out (0 exactly
#            when closed), every balance is the grants' remaining less what
#            its batches owe, no debit drew a grant at or after its expiry,
#            and a grant the admin loop saw committed exists exactly once
#            (one that failed or was never sent does not)
#   recover  what a real client and worker would do after the crash: retry
#            every unknown key with the same idempotency key (never debited
#            twice), retry unknown settlements with the same payment_ref or
#            reason, settle the recharges left processing, make again the
#            grants whose outcome is unknown and that are not there, run
#            expire_grants() (then no grant past its expiry holds credits);
#            verify() again
#
# Prints "ok - crash cycle N: ..." or "not ok - crash cycle N: ..." per cycle,
# then "N passed, N failed", and exits non-zero on any failure.  Logs are kept
# in the printed directory when a cycle fails (or always with
# CREDITS_CRASH_KEEP=1).  Settings: CREDITS_PORT (54345), CREDITS_CRASH_CYCLES
# (4), CREDITS_CRASH_CLIENTS (5), CREDITS_CRASH_SEED (random; printed, and a
# run with the same seed kills at the same delays), CREDITS_PG_BIN (the bin
# directory of another PostgreSQL 15 tree, e.g. a private copy, to build,
# install and run against instead of the system one).
set -uo pipefail

CREDITS_PURPOSE=crash
CREDITS_PORT=${CREDITS_PORT:-54345}
CREDITS_EXTRA_CONF=$'synchronous_commit = on\nfsync = on'
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib.sh"
# A private PostgreSQL tree (a relocated copy) instead of the system one.
PG_BIN=${CREDITS_PG_BIN:-$PG_BIN}
cd "$REPO_ROOT"

CYCLES=${CREDITS_CRASH_CYCLES:-4}
CLIENTS=${CREDITS_CRASH_CLIENTS:-5}
WORKERS=2
ACCOUNTS=200
SEED=${CREDITS_CRASH_SEED:-$(( $(date +%s) % 30000 ))}
RANDOM=$SEED
DATA="$CREDITS_RUN_DIR/data"
T=$(mktemp -d /tmp/credits-crash-test.XXXXXX)
LOAD_PIDS=()
SERVER_PIDS=()
passed=0
failed=0

# ---------------------------------------------------------------- helpers

# ms_to_s MS: milliseconds as seconds for sleep, e.g. 2500 -> 2.500.
ms_to_s() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# now_ms: sets NOW_MS to the wall clock in milliseconds (no fork).
now_ms() { local t=${EPOCHREALTIME/[.,]/}; NOW_MS=$((10#$t / 1000)); }

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[ "${s%% *}" != Z ]
}

# kill_tree PID: SIGKILL a process and all its descendants, children first.
kill_tree() {
	local c
	for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
	kill -KILL "$1" 2>/dev/null
}

cleanup() {
	local p
	disown -a 2>/dev/null		# no "Killed" job notices
	for p in "${LOAD_PIDS[@]}"; do kill_tree "$p"; done
	stop_cluster
	for p in "${SERVER_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	if [ "$failed" -eq 0 ] && [ -z "${CREDITS_CRASH_KEEP:-}" ]; then rm -rf "$T"; else echo "# logs kept in $T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

q() { pg -At -c "$1"; }

# ---------------------------------------------------------------- sessions
#
# Each load loop talks to the server through one long-lived psql session,
# reopened after the connection breaks, over two named pipes.  Every
# statement sent is followed by "\echo @@st :SQLSTATE", so the loop reads the
# statement's rows and then its SQLSTATE (00000 on success).  psql exits when
# the connection breaks: end of file before the last SQLSTATE means the
# outcome is unknown.

# session_open: start psql; fails (nothing sent) when it cannot connect.
session_open() {
	local fifo="$T/$SESSION_NAME" line
	rm -f "$fifo.in" "$fifo.out"
	mkfifo "$fifo.in" "$fifo.out"
	"$PG_BIN/psql" -X -q -At <"$fifo.in" >"$fifo.out" 2>>"$ERRF" &
	SPID=$!
	exec {WFD}>"$fifo.in" {RFD}<"$fifo.out"
	rm -f "$fifo.in" "$fifo.out"
	printf '\\echo @@hello\n' >&"$WFD" 2>/dev/null
	if read -r -t 10 -u "$RFD" line && [ "$line" = @@hello ]; then return 0; fi
	session_close
	return 1
}

session_close() {
	[ -n "${SPID:-}" ] || return 0
	exec {RFD}<&- {WFD}>&-
	kill -KILL "$SPID" 2>/dev/null
	wait "$SPID" 2>/dev/null
	SPID=""
}

# session_run SQL...: send the statements; OUT gets the result lines, CODES
# one SQLSTATE per statement.  Fails if the session died (or 20 s passed)
# before every statement answered; the session is then closed.
session_run() {
	local s line
	OUT=() CODES=()
	for s; do printf '%s;\n\\echo @@st :SQLSTATE\n' "$s"; done >&"$WFD" 2>/dev/null
	while [ ${#CODES[@]} -lt $# ]; do
		if ! read -r -t 20 -u "$RFD" line; then
			session_close
			return 1
		fi
		case $line in
			@@st\ *) CODES+=("${line#@@st }") ;;
			*) OUT+=("$line") ;;
		esac
	done
}

# first_error: sets ST to the SQLSTATE of the first failed statement in
# CODES, or to nothing when all succeeded.
first_error() {
	local c
	ST=""
	for c in "${CODES[@]}"; do [ "$c" != 00000 ] && { ST=$c; return; }; done
}

# ---------------------------------------------------------------- load

# client ID CYCLE DEADLINE_MS: insert batches until the stop file or the
# deadline.  Log lines: key account messages group kind outcome sqlstate
# batch_id time_ms.
client() {
	local id=$1 cycle=$2 deadline=$3
	local log="$T/c$cycle.$id.log"
	local seq=0 r n i a kind grp vals k b outcome st line
	local -a accts keys msgs stmts
	local -A got
	ERRF="$T/c$cycle.$id.err" SPID="" SESSION_NAME="c$id"
	export PGCONNECT_TIMEOUT=5 PGOPTIONS='-c statement_timeout=15s'
	trap '' PIPE
	RANDOM=$(((SEED * 31 + cycle * 977 + id * 131) % 32768))
	now_ms
	while [ ! -e "$T/stop" ] && [ "$NOW_MS" -lt "$deadline" ]; do
		seq=$((seq + 1))
		grp="$cycle.$id.$seq"
		r=$((RANDOM % 10))
		if [ $r -lt 6 ]; then kind=single; n=1
		elif [ $r -lt 8 ]; then kind=multi; n=$((2 + RANDOM % 3))
		else kind=txn; n=$((2 + RANDOM % 2))
		fi
		# Distinct accounts in ascending order: the lock order that cannot
		# deadlock (README, Troubleshooting).
		accts=() keys=() msgs=()
		a=$((1 + RANDOM % (ACCOUNTS - 80)))
		for ((i = 0; i < n; i++)); do
			accts+=("$a")
			a=$((a + 1 + RANDOM % 20))
			keys+=("k$grp.$i")
			if [ $((RANDOM % 100)) -lt 8 ]; then msgs+=($((200 + RANDOM % 2300)))
			else msgs+=($((1 + RANDOM % 150)))
			fi
		done
		if [ $kind = txn ]; then
			stmts=(BEGIN)
			for ((i = 0; i < n; i++)); do
				stmts+=("INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (${accts[i]}, ${msgs[i]}, '${keys[i]}') ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING idempotency_key, batch_id")
			done
			stmts+=(COMMIT)
		else
			vals=""
			for ((i = 0; i < n; i++)); do
				vals+="${vals:+, }(${accts[i]}, ${msgs[i]}, '${keys[i]}')"
			done
			stmts=("INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES $vals ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING idempotency_key, batch_id")
		fi

		got=()
		st='\N'
		if [ -z "$SPID" ] && ! session_open; then
			outcome=noconn
		else
			now_ms
			for ((i = 0; i < n; i++)); do
				printf '%s\t%s\t%s\t%s\t%s\tsent\t\\N\t\\N\t%s\n' \
					"${keys[i]}" "${accts[i]}" "${msgs[i]}" "$grp" "$kind" "$NOW_MS" >>"$log"
			done
			if ! session_run "${stmts[@]}"; then
				outcome=unknown
			else
				first_error; st=$ST
				if [ -n "$st" ]; then
					outcome=failed
				else
					outcome=committed st='\N'
					for line in "${OUT[@]}"; do
						IFS='|' read -r k b <<<"$line"
						[ -n "$k" ] && got[$k]=$b
					done
				fi
			fi
		fi
		now_ms
		for ((i = 0; i < n; i++)); do
			OUTCOME=$outcome b='\N'
			if [ $outcome = committed ]; then
				if [ -n "${got[${keys[i]}]:-}" ]; then b=${got[${keys[i]}]}; else OUTCOME=norow; fi
			fi
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
				"${keys[i]}" "${accts[i]}" "${msgs[i]}" "$grp" "$kind" "$OUTCOME" "$st" "$b" "$NOW_MS" >>"$log"
		done
		case $outcome in noconn | unknown) sleep 0.1 ;; esac
	done
	session_close
}

# worker ID CYCLE DEADLINE_MS: claim recharges, complete them, fail every 10th.
# Log lines: action recharge_id argument outcome sqlstate time_ms.
worker() {
	local id=$1 cycle=$2 deadline=$3
	local log="$T/w$cycle.$id.log"
	local n=0 rid action arg sql st outcome
	local -a rids
	ERRF="$T/w$cycle.$id.err" SPID="" SESSION_NAME="w$id"
	export PGCONNECT_TIMEOUT=5 PGOPTIONS='-c statement_timeout=15s'
	trap '' PIPE
	now_ms
	while [ ! -e "$T/stop" ] && [ "$NOW_MS" -lt "$deadline" ]; do
		if [ -z "$SPID" ] && ! session_open; then
			now_ms
			printf 'claim\t\\N\t\\N\tnoconn\t\\N\t%s\n' "$NOW_MS" >>"$log"
			sleep 0.1
			now_ms
			continue
		fi
		if ! session_run 'SELECT recharge_id FROM credits.claim_recharges(20)'; then
			now_ms
			printf 'claim\t\\N\t\\N\tunknown\t\\N\t%s\n' "$NOW_MS" >>"$log"
			sleep 0.1
			now_ms
			continue
		fi
		now_ms
		first_error; st=$ST
		if [ -n "$st" ]; then
			printf 'claim\t\\N\t\\N\tfailed\t%s\t%s\n' "$st" "$NOW_MS" >>"$log"
			sleep 0.1
			now_ms
			continue
		fi
		rids=("${OUT[@]}")
		if [ ${#rids[@]} -eq 0 ]; then
			sleep 0.05
			now_ms
			continue
		fi
		for rid in "${rids[@]}"; do
			printf 'claim\t%s\t\\N\tcommitted\t\\N\t%s\n' "$rid" "$NOW_MS" >>"$log"
		done
		for rid in "${rids[@]}"; do
			[ -e "$T/stop" ] && break
			n=$((n + 1))
			if [ $((n % 10)) -eq 0 ]; then
				action=fail arg='card declined'
				sql="SELECT status FROM credits.fail_recharge($rid, '$arg')"
			else
				action=complete arg="pay-$rid"
				sql="SELECT status FROM credits.complete_recharge($rid, '$arg')"
			fi
			printf '%s\t%s\t%s\tsent\t\\N\t%s\n' "$action" "$rid" "$arg" "$NOW_MS" >>"$log"
			if session_run "$sql"; then
				first_error; st=$ST
				if [ -n "$st" ]; then outcome=failed; else outcome=committed st='\N'; fi
			else
				outcome=unknown st='\N'
			fi
			now_ms
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$action" "$rid" "$arg" "$outcome" "$st" "$NOW_MS" >>"$log"
			[ $outcome = unknown ] && break
		done
	done
	session_close
}

# admin ID CYCLE DEADLINE_MS: what billing and cron do beside the load:
# promo grants that expire within seconds (so grants lapse under load),
# purchases, and expire_grants().  Each grant carries a unique note, its key.
# Log lines: action key account credits outcome sqlstate time_ms.
admin() {
	local id=$1 cycle=$2 deadline=$3
	local log="$T/a$cycle.$id.log"
	local n=0 renewals=0 r a c key action st outcome
	local -a stmts
	ERRF="$T/a$cycle.$id.err" SPID="" SESSION_NAME="a$id"
	export PGCONNECT_TIMEOUT=5 PGOPTIONS='-c statement_timeout=15s'
	trap '' PIPE
	RANDOM=$(((SEED * 17 + cycle * 613 + id * 71) % 32768))
	now_ms
	while [ ! -e "$T/stop" ] && [ "$NOW_MS" -lt "$deadline" ]; do
		n=$((n + 1))
		key="g$cycle.$id.$n" a=$((1 + RANDOM % (ACCOUNTS - 80))) c=$((50 + RANDOM % 250))
		r=$((RANDOM % 10))
		if [ $r -lt 6 ]; then
			action=promo
			stmts=("SELECT credits.grant_credits($a, $c, 'promo', clock_timestamp() + interval '$((1 + RANDOM % 12)) seconds', note => '$key')")
		elif [ $r -lt 9 ]; then
			action=purchase
			stmts=("SELECT credits.grant_credits($a, $c, 'purchase', note => '$key')")
		elif [ $((RANDOM % 2)) -eq 0 ]; then
			action=expire a='\N' c='\N'
			stmts=("SELECT credits.expire_grants()")
		else
			# Plans renew as cron would, months on: this session's clock
			# (credits.clock_offset) moves 32 days further each time, so
			# every plan's period has ended and the next one opens.
			renewals=$((renewals + 1))
			action=renew a='\N' c=$(((cycle - 1) * 400 + renewals * 32))
			stmts=("SET credits.clock_offset = $((c * 86400))"
				   "SELECT credits.renew_plans(now() + interval '$c days' - interval '1 minute')"
				   "RESET credits.clock_offset")
		fi
		if [ -z "$SPID" ] && ! session_open; then
			outcome=noconn st='\N'
		else
			now_ms
			printf '%s\t%s\t%s\t%s\tsent\t\\N\t%s\n' "$action" "$key" "$a" "$c" "$NOW_MS" >>"$log"
			if session_run "${stmts[@]}"; then
				first_error; st=$ST
				if [ -n "$st" ]; then outcome=failed; else outcome=committed st='\N'; fi
			else
				outcome=unknown st='\N'
			fi
		fi
		now_ms
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$action" "$key" "$a" "$c" "$outcome" "$st" "$NOW_MS" >>"$log"
		case $outcome in noconn | unknown) sleep 0.1 ;; *) sleep 0.05 ;; esac
	done
	session_close
}

# ---------------------------------------------------------------- checks

# load_logs CYCLE: the cycle's client and worker logs into crash_test.*, one
# row per key (its outcome line, else "unknown") and per worker action.
load_logs() {
	local c=$1
	cat "$T"/c"$c".*.log >"$T/c$c.all" 2>/dev/null
	cat "$T"/w"$c".*.log >"$T/w$c.all" 2>/dev/null
	cat "$T"/a"$c".*.log >"$T/a$c.all" 2>/dev/null
	pg <<-SQL
		TRUNCATE crash_test.stage, crash_test.wstage, crash_test.astage;
		\copy crash_test.stage FROM '$T/c$c.all'
		\copy crash_test.wstage FROM '$T/w$c.all'
		\copy crash_test.astage FROM '$T/a$c.all'
		-- a grant or an expire_grants(): its outcome line, else unknown
		INSERT INTO crash_test.alog
		SELECT DISTINCT ON (key) $c, action, key, account_id, credits,
			   CASE outcome WHEN 'sent' THEN 'unknown' ELSE outcome END, sqlstate, t_ms, NULL
		  FROM crash_test.astage
		 ORDER BY key, outcome = 'sent';
		INSERT INTO crash_test.batches
		SELECT DISTINCT ON (key) $c, key, account_id, messages, grp, kind,
			   CASE outcome WHEN 'sent' THEN 'unknown' ELSE outcome END,
			   sqlstate, batch_id, t_ms, NULL
		  FROM crash_test.stage
		 ORDER BY key, outcome = 'sent';
		-- a settlement attempt: its outcome line, else unknown
		INSERT INTO crash_test.wlog
		SELECT $c, action, recharge_id, arg,
			   CASE outcome WHEN 'sent' THEN 'unknown' ELSE outcome END, sqlstate, t_ms
		  FROM (SELECT DISTINCT ON (action, recharge_id) *
				  FROM crash_test.wstage WHERE action <> 'claim'
				 ORDER BY action, recharge_id, outcome = 'sent') s
		UNION ALL
		SELECT $c, action, recharge_id, arg, outcome, sqlstate, t_ms
		  FROM crash_test.wstage WHERE action = 'claim';
		ANALYZE crash_test.batches, crash_test.wlog, crash_test.alog;
	SQL
}

# problems: one line per broken expectation, over every cycle so far.
problems() {
	pg -At <<-'SQL'
		SELECT format('verify(): account %s: %s', account_id, problem) FROM credits.verify()
		UNION ALL
		SELECT format('key %s (cycle %s, %s) seen committed as batch %s is not stored',
					  b.key, b.cycle, b.kind, b.batch_id)
		  FROM crash_test.batches b WHERE b.outcome = 'committed'
		   AND NOT EXISTS (SELECT FROM credits.send_batches s WHERE s.account_id = b.account_id AND s.idempotency_key = b.key)
		UNION ALL
		SELECT format('key %s seen committed as batch %s of account %s, %s messages, is stored as batch %s of account %s, %s messages, cost %s',
					  b.key, b.batch_id, b.account_id, b.messages, s.batch_id, s.account_id, s.messages, s.cost)
		  FROM crash_test.batches b JOIN credits.send_batches s ON s.account_id = b.account_id AND s.idempotency_key = b.key
		 WHERE b.outcome = 'committed'
		   AND (s.batch_id <> b.batch_id OR s.account_id <> b.account_id
				OR s.messages <> b.messages
				OR s.cost <> s.messages * (SELECT p.credits_per_message FROM credits.prices p WHERE p.channel = s.channel))
		UNION ALL
		-- one debit row per grant drawn (at most once each) plus one for the part owed
		SELECT format('key %s (batch %s, cost %s) seen committed has %s debit rows (%s grants) totalling %s',
					  b.key, s.batch_id, s.cost, count(l.entry_id), count(DISTINCT l.grant_id), coalesce(-sum(l.delta), 0))
		  FROM crash_test.batches b JOIN credits.send_batches s ON s.account_id = b.account_id AND s.idempotency_key = b.key
		  LEFT JOIN credits.ledger l ON l.batch_id = s.batch_id AND l.kind = 'debit'
		 WHERE b.outcome = 'committed'
		 GROUP BY b.key, s.batch_id, s.cost
		HAVING count(l.entry_id) = 0 OR -sum(l.delta) <> s.cost
			OR count(l.entry_id) > count(DISTINCT l.grant_id) + 1
			OR count(*) FILTER (WHERE l.grant_id IS NULL) > 1
		UNION ALL
		SELECT format('key %s (cycle %s, %s) seen %s%s is stored as batch %s',
					  b.key, b.cycle, b.kind,
					  CASE b.outcome WHEN 'noconn' THEN 'never sent (no connection)' ELSE 'failed' END,
					  CASE WHEN b.sqlstate IS NOT NULL THEN ' with ' || b.sqlstate ELSE '' END, s.batch_id)
		  FROM crash_test.batches b JOIN credits.send_batches s ON s.account_id = b.account_id AND s.idempotency_key = b.key
		 WHERE b.outcome IN ('failed', 'noconn')
		UNION ALL
		SELECT format('key %s: psql succeeded but RETURNING gave no row for it', b.key)
		  FROM crash_test.batches b WHERE b.outcome = 'norow'
		UNION ALL
		SELECT format('%s %s (cycle %s) saw an unknown outcome but %s of its %s keys are stored: not atomic',
					  min(b.kind), b.grp, min(b.cycle), count(s.batch_id), count(*))
		  FROM crash_test.batches b LEFT JOIN credits.send_batches s ON s.account_id = b.account_id AND s.idempotency_key = b.key
		 WHERE b.outcome = 'unknown' AND b.kind <> 'single'
		 GROUP BY b.grp
		HAVING count(s.batch_id) NOT IN (0, count(*))
		UNION ALL
		SELECT format('batch %s (account %s, key %s) is stored but no client sent it',
					  s.batch_id, s.account_id, coalesce(s.idempotency_key, 'null'))
		  FROM credits.send_batches s WHERE NOT EXISTS (SELECT FROM crash_test.batches b WHERE b.key = s.idempotency_key AND b.account_id = s.account_id)
		UNION ALL
		SELECT format('ledger entry %s: %s of %s for account %s belongs to no %s',
					  l.entry_id, l.kind, l.delta, l.account_id,
					  CASE l.kind WHEN 'debit' THEN 'stored batch' WHEN 'refund' THEN 'failed batch'
								  WHEN 'recharge' THEN 'succeeded recharge' WHEN 'repay' THEN 'stored batch'
								  WHEN 'grant' THEN 'grant made at the set-up or by the admin loop'
								  WHEN 'plan' THEN 'plan grant' WHEN 'expire' THEN 'expiring grant'
								  ELSE 'expected change' END)
		  FROM credits.ledger l
		  LEFT JOIN credits.grants g ON g.grant_id = l.grant_id AND g.account_id = l.account_id
		 WHERE (l.kind = 'debit' AND NOT EXISTS (SELECT FROM credits.send_batches s WHERE s.batch_id = l.batch_id AND s.account_id = l.account_id))
			OR (l.kind = 'refund' AND NOT EXISTS (SELECT FROM credits.send_batches s WHERE s.batch_id = l.batch_id AND s.status = 'failed'))
			OR (l.kind = 'recharge' AND NOT EXISTS (SELECT FROM credits.recharges r WHERE r.recharge_id = l.recharge_id
																  AND r.status = 'succeeded' AND r.account_id = l.account_id))
			OR (l.kind = 'repay' AND NOT EXISTS (SELECT FROM credits.send_batches s WHERE s.batch_id = l.batch_id AND s.account_id = l.account_id))
			OR (l.kind = 'grant' AND (g.grant_id IS NULL OR l.delta <> g.credits
									  OR NOT (g.note LIKE 'setup%' OR EXISTS (SELECT FROM crash_test.alog a WHERE a.key = g.note))))
			OR (l.kind = 'plan' AND (g.grant_id IS NULL OR g.source <> 'plan'))
			-- (a grant lapsed early, by renew_plans with an "at" in the future
			-- under clock_offset, may take a refund back until its expiry
			-- comes by the wall clock: only a due grant must be empty)
			OR (l.kind = 'expire' AND (g.grant_id IS NULL OR g.expires_at IS NULL
									   OR (g.remaining <> 0 AND g.expires_at <= now())))
			OR l.kind NOT IN ('open', 'grant', 'debit', 'recharge', 'refund', 'plan', 'expire', 'repay')
		UNION ALL
		-- grants: what is left is what the ledger put in and took out
		SELECT format('grant %s (%s, account %s): remaining %s of %s, but carried over %s + ledger %s',
					  g.grant_id, g.source, g.account_id, g.remaining, g.credits, coalesce(g.carried_over, 0), coalesce(l.total, 0))
		  FROM credits.grants g
		  LEFT JOIN (SELECT grant_id, sum(delta) AS total FROM credits.ledger WHERE grant_id IS NOT NULL GROUP BY grant_id) l USING (grant_id)
		 WHERE g.remaining <> coalesce(g.carried_over, 0) + coalesce(l.total, 0)
			OR g.remaining < 0 OR g.remaining > g.credits
			OR (g.remaining = 0) <> (g.closed_at IS NOT NULL)
		UNION ALL
		SELECT format('account %s: balance %s, but its grants hold %s and its batches owe %s',
					  a.account_id, a.balance, coalesce(g.total, 0), coalesce(o.total, 0))
		  FROM credits.accounts a
		  LEFT JOIN (SELECT account_id, sum(remaining) AS total FROM credits.grants GROUP BY account_id) g USING (account_id)
		  LEFT JOIN (SELECT account_id, sum(owed) AS total FROM credits.send_batches GROUP BY account_id) o USING (account_id)
		 WHERE a.balance <> coalesce(g.total, 0) - coalesce(o.total, 0)
			OR coalesce(o.total, 0) <> greatest(-a.balance, 0)
		UNION ALL
		-- no credit spent at or after its grant's expiry (created_at is the
		-- transaction's start, before the lock that decided the debit)
		SELECT format('ledger entry %s (%s of %s) drew grant %s, which expired at %s, in a transaction started at %s',
					  l.entry_id, l.kind, l.delta, g.grant_id, g.expires_at, l.created_at)
		  FROM credits.ledger l JOIN credits.grants g USING (grant_id)
		 WHERE l.kind = 'debit' AND l.created_at >= g.expires_at
		UNION ALL
		SELECT format('grant %s (%s, cycle %s) seen %s%s is %s',
					  a.key, a.action, a.cycle, a.outcome, coalesce(' with ' || a.sqlstate, ''),
					  CASE count(g.grant_id) WHEN 0 THEN 'not stored' ELSE 'stored ' || count(g.grant_id) || ' times' END)
		  FROM crash_test.alog a LEFT JOIN credits.grants g ON g.note = a.key
		 WHERE a.action IN ('promo', 'purchase')
		 GROUP BY a.key, a.action, a.cycle, a.outcome, a.sqlstate
		HAVING count(g.grant_id) > 1
			OR (a.outcome = 'committed' AND count(g.grant_id) <> 1)
			OR (a.outcome IN ('failed', 'noconn') AND count(g.grant_id) <> 0)
		UNION ALL
		SELECT format('grant %s (%s, cycle %s) failed with %s', a.key, a.action, a.cycle, a.sqlstate)
		  FROM crash_test.alog a WHERE a.outcome = 'failed'
		UNION ALL
		SELECT format('account %s has %s open ledger rows', a.account_id, count(l.entry_id))
		  FROM credits.accounts a LEFT JOIN credits.ledger l ON l.account_id = a.account_id AND l.kind = 'open'
		 GROUP BY a.account_id HAVING count(l.entry_id) <> 1
		UNION ALL
		SELECT format('recharge %s was opened by batch %s, which is not stored', r.recharge_id, r.batch_id)
		  FROM credits.recharges r WHERE r.batch_id IS NOT NULL
		   AND NOT EXISTS (SELECT FROM credits.send_batches s WHERE s.batch_id = r.batch_id AND s.account_id = r.account_id)
		UNION ALL
		SELECT format('recharge %s seen claimed (cycle %s) is %s', w.recharge_id, w.cycle, coalesce(r.status, 'missing'))
		  FROM crash_test.wlog w LEFT JOIN credits.recharges r USING (recharge_id)
		 WHERE w.action = 'claim' AND w.outcome = 'committed'
		   AND (r.status IS NULL OR r.status NOT IN ('processing', 'succeeded', 'failed'))
		UNION ALL
		SELECT format('recharge %s was claimed %s times', w.recharge_id, count(*))
		  FROM crash_test.wlog w WHERE w.action = 'claim' AND w.outcome = 'committed'
		 GROUP BY w.recharge_id HAVING count(*) > 1
		UNION ALL
		SELECT format('recharge %s seen %s (cycle %s) is %s with payment_ref %s',
					  w.recharge_id, CASE w.action WHEN 'complete' THEN 'completed' ELSE 'failed' END,
					  w.cycle, coalesce(r.status, 'missing'), coalesce(r.payment_ref, 'null'))
		  FROM crash_test.wlog w LEFT JOIN credits.recharges r USING (recharge_id)
		 WHERE w.action IN ('complete', 'fail') AND w.outcome = 'committed'
		   AND NOT ((w.action = 'complete' AND r.status = 'succeeded' AND r.payment_ref = w.arg)
				 OR (w.action = 'fail' AND r.status = 'failed'))
		UNION ALL
		SELECT format('worker %s of recharge %s (cycle %s) got %s %s', w.action, w.recharge_id, w.cycle, w.outcome,
					  coalesce(w.sqlstate, ''))
		  FROM crash_test.wlog w
		 WHERE w.action IN ('complete', 'fail') AND w.outcome IN ('failed', 'norow');
	SQL
}

# recover CYCLE: what clients and workers do after a crash.  Unknown keys are
# sent again with the same idempotency key (one subtransaction each); the
# key's outcome becomes what the retry found.  Unknown settlements are sent
# again with the same payment_ref or reason (must be no-ops if they had
# committed); recharges still processing are completed; policies turned off
# by payment failures are turned on again so the load keeps its shape.
recover() {
	pg <<-SQL
		DO \$\$
		DECLARE
			k record;
			bid bigint;
			err text;
		BEGIN
			FOR k IN SELECT * FROM crash_test.batches WHERE cycle = $1 AND outcome = 'unknown'
					 ORDER BY account_id, key
			LOOP
				BEGIN
					INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
						VALUES (k.account_id, k.messages, k.key)
						ON CONFLICT (account_id, idempotency_key) DO NOTHING
						RETURNING batch_id INTO bid;
					IF FOUND THEN
						UPDATE crash_test.batches SET outcome = 'committed', batch_id = bid, retry = 'inserted'
						 WHERE key = k.key;
					ELSE
						SELECT batch_id INTO STRICT bid FROM credits.send_batches
						 WHERE account_id = k.account_id AND idempotency_key = k.key;
						UPDATE crash_test.batches SET outcome = 'committed', batch_id = bid, retry = 'present'
						 WHERE key = k.key;
					END IF;
				EXCEPTION WHEN sqlstate 'MC001' OR sqlstate 'MC002' OR sqlstate 'MC018' THEN
					err := SQLSTATE;
					UPDATE crash_test.batches SET outcome = 'failed', sqlstate = err, retry = 'failed'
					 WHERE key = k.key;
				END;
			END LOOP;
		END
		\$\$;
		DO \$\$
		DECLARE
			w record;
			r credits.recharges;
		BEGIN
			FOR w IN SELECT * FROM crash_test.wlog
					  WHERE cycle = $1 AND action IN ('complete', 'fail') AND outcome = 'unknown'
					  ORDER BY recharge_id
			LOOP
				IF w.action = 'complete' THEN
					r := credits.complete_recharge(w.recharge_id, w.arg);
				ELSE
					r := credits.fail_recharge(w.recharge_id, w.arg);
				END IF;
				IF r.status <> (CASE w.action WHEN 'complete' THEN 'succeeded' ELSE 'failed' END) THEN
					RAISE EXCEPTION 'retried % of recharge % left it %', w.action, w.recharge_id, r.status;
				END IF;
			END LOOP;
		END
		\$\$;
		-- a grant whose outcome is unknown: made again unless it is there
		UPDATE crash_test.alog a SET retry = 'present', outcome = 'committed'
		 WHERE cycle = $1 AND outcome = 'unknown' AND action IN ('promo', 'purchase')
		   AND EXISTS (SELECT FROM credits.grants g WHERE g.note = a.key);
		SELECT count(credits.grant_credits(a.account_id, a.credits, a.action,
										   CASE a.action WHEN 'promo' THEN clock_timestamp() + interval '5 seconds' END,
										   note => a.key))
		  FROM (SELECT * FROM crash_test.alog WHERE cycle = $1 AND outcome = 'unknown' AND action IN ('promo', 'purchase')
				 ORDER BY account_id, key) a;
		UPDATE crash_test.alog SET retry = 'inserted', outcome = 'committed'
		 WHERE cycle = $1 AND outcome = 'unknown' AND action IN ('promo', 'purchase');
		SELECT count(credits.complete_recharge(r.recharge_id, 'pay-' || r.recharge_id))
		  FROM (SELECT recharge_id FROM credits.recharges WHERE status = 'processing' ORDER BY recharge_id) r;
		SELECT count(credits.enable_auto_recharge(p.account_id, p.min_balance, p.max_credits,
												  p.target_balance, p.monthly_limit))
		  FROM (SELECT * FROM credits.auto_recharge WHERE NOT enabled ORDER BY account_id) p;
		-- cron's expire_grants(): afterwards no grant past its expiry holds credits
		SELECT credits.expire_grants();
		DO \$\$
		DECLARE
			n bigint;
		BEGIN
			SELECT count(*) INTO n FROM credits.grants WHERE remaining > 0 AND expires_at <= now();
			IF n > 0 THEN
				RAISE EXCEPTION '% grants past their expiry still hold credits after expire_grants()', n;
			END IF;
		END
		\$\$;
	SQL
}

# ---------------------------------------------------------------- set-up

build_and_install || { echo "not ok - build"; exit 1; }
start_cluster || { echo "not ok - cluster start"; exit 1; }
say "crash test: $CYCLES cycles, $CLIENTS clients, $WORKERS workers, $ACCOUNTS accounts, seed $SEED"
pg >/dev/null <<-SQL || { echo "not ok - set-up"; exit 1; }
	CREATE EXTENSION credits;
	DO \$\$ BEGIN
		IF current_setting('synchronous_commit') <> 'on' OR current_setting('fsync') <> 'on' THEN
			RAISE EXCEPTION 'synchronous_commit and fsync must be on';
		END IF;
	END \$\$;
	-- Varied policies: min_balance 0-400, max_credits 200-2000, a target on
	-- two thirds, a monthly limit on one in ten.
	SELECT count(credits.open_account(a, (a * 389) % 1000)) FROM generate_series(1, $ACCOUNTS) a;
	-- Grants (doc/grants.md) besides the signup credits above: a plan on
	-- every 4th account (started up to 19 days ago), a promo on every 3rd
	-- that lapses during the run (5 to 64 s from now), a promo spent before
	-- the plan (priority 5) on every 5th, a purchase on every 7th.
	SELECT count(credits.set_plan(a, 200 + (a * 7) % 5 * 100, now() - make_interval(days => a % 20)))
	  FROM generate_series(4, $ACCOUNTS, 4) a;
	SELECT count(credits.grant_credits(a, 300, 'promo', clock_timestamp() + make_interval(secs => 5 + a % 60), note => 'setup promo'))
	  FROM generate_series(3, $ACCOUNTS, 3) a;
	SELECT count(credits.grant_credits(a, 150, 'promo', now() + interval '1 day', priority => 5, note => 'setup promo, first'))
	  FROM generate_series(5, $ACCOUNTS, 5) a;
	SELECT count(credits.grant_credits(a, 400, 'purchase', note => 'setup purchase')) FROM generate_series(7, $ACCOUNTS, 7) a;
	SELECT count(credits.enable_auto_recharge(a, mb, 200 + (a * 53) % 10 * 200,
			CASE WHEN a % 3 = 0 THEN NULL ELSE mb + (a * 11) % 4 * 250 END,
			CASE WHEN a % 10 = 7 THEN 10000 + (a * 7) % 5 * 10000 END))
	  FROM (SELECT a, (a * 37) % 5 * 100 AS mb FROM generate_series(1, $ACCOUNTS) a) p;
	CREATE SCHEMA crash_test;
	CREATE TABLE crash_test.stage (key text, account_id bigint, messages int, grp text, kind text,
								   outcome text, sqlstate text, batch_id bigint, t_ms bigint);
	CREATE TABLE crash_test.batches (cycle int, key text PRIMARY KEY, account_id bigint, messages int,
									 grp text, kind text, outcome text, sqlstate text, batch_id bigint,
									 t_ms bigint, retry text);
	CREATE INDEX ON crash_test.batches (grp);
	CREATE INDEX ON crash_test.batches (account_id, key);
	CREATE TABLE crash_test.wstage (action text, recharge_id bigint, arg text, outcome text,
									sqlstate text, t_ms bigint);
	CREATE TABLE crash_test.wlog (cycle int, action text, recharge_id bigint, arg text, outcome text,
								  sqlstate text, t_ms bigint);
	CREATE TABLE crash_test.astage (action text, key text, account_id bigint, credits bigint, outcome text,
									sqlstate text, t_ms bigint);
	CREATE TABLE crash_test.alog (cycle int, action text, key text PRIMARY KEY, account_id bigint, credits bigint,
								  outcome text, sqlstate text, t_ms bigint, retry text);
SQL

# ---------------------------------------------------------------- cycles

for ((cycle = 1; cycle <= CYCLES; cycle++)); do
	why=()
	rm -f "$T/stop"
	delay_ms=$((2000 + RANDOM % 4000))
	if [ $((cycle % 2)) -eq 1 ]; then mode="postmaster"; else mode="postmaster and all children"; fi
	now_ms
	start_ms=$NOW_MS
	deadline=$((NOW_MS + delay_ms + 15000))
	LOAD_PIDS=()
	for ((i = 1; i <= CLIENTS; i++)); do client $i $cycle $deadline & LOAD_PIDS+=($!); done
	for ((i = 1; i <= WORKERS; i++)); do worker $i $cycle $deadline & LOAD_PIDS+=($!); done
	admin 1 $cycle $deadline & LOAD_PIDS+=($!)

	# From the second cycle on, a CHECKPOINT partway through the load: the
	# crash then comes after it, and recovery replays from there (full-page
	# images included) rather than from the previous restart.
	if [ $cycle -ge 2 ]; then
		cp_ms=$((500 + RANDOM % (delay_ms - 1000)))
		sleep "$(ms_to_s $cp_ms)"
		q CHECKPOINT >/dev/null 2>&1 || why+=("CHECKPOINT failed during the load")
		now_ms
		rest=$((delay_ms - (NOW_MS - start_ms)))
		[ $rest -gt 0 ] && sleep "$(ms_to_s $rest)"
		checkpoint=", checkpoint at $(ms_to_s $cp_ms) s"
	else
		sleep "$(ms_to_s $delay_ms)"
		checkpoint=""
	fi
	pm=$(head -1 "$DATA/postmaster.pid")
	SERVER_PIDS=($(pgrep -P "$pm"))
	if [ $((cycle % 2)) -eq 1 ]; then
		kill -KILL "$pm"
	else
		kill -KILL "$pm" "${SERVER_PIDS[@]}"
	fi
	SERVER_PIDS+=("$pm")

	# The old server is gone once every process of it has exited (a backend
	# orphaned by the postmaster finishes its statement first) and been
	# reaped: a new postmaster refuses to start while the old PID exists,
	# even as a zombie.  By then the clients have seen their connections fail.
	for ((w = 0; w < 150; w++)); do
		left=0
		for p in "${SERVER_PIDS[@]}"; do [ -e "/proc/$p" ] && left=1; done
		[ $left -eq 0 ] && break
		sleep 0.1
	done
	if [ $left -ne 0 ]; then
		why+=("server processes still there 15 s after the kill: ${SERVER_PIDS[*]}")
		for p in "${SERVER_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
		sleep 0.5
	fi
	sleep 0.5
	touch "$T/stop"
	for ((w = 0; w < 250; w++)); do
		left=0
		for p in "${LOAD_PIDS[@]}"; do alive "$p" && left=1; done
		[ $left -eq 0 ] && break
		sleep 0.1
	done
	if [ $left -ne 0 ]; then
		why+=("load loops still running 25 s after the stop")
		for p in "${LOAD_PIDS[@]}"; do kill_tree "$p"; done
	fi
	wait 2>/dev/null
	LOAD_PIDS=()

	now_ms
	t0=$NOW_MS
	if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$CREDITS_RUN_DIR/server.log" -w -t 60 start >"$T/pg_ctl.out" 2>&1; then
		echo "not ok - crash cycle $cycle: the server did not restart after the kill"
		tail -n 20 "$CREDITS_RUN_DIR/server.log" | sed 's/^/# /'
		failed=$((failed + 1))
		break
	fi
	now_ms
	restart_ms=$((NOW_MS - t0))
	SERVER_PIDS=()

	load_logs $cycle >/dev/null || why+=("could not load the client logs")
	summary=$(q "SELECT format('committed %s, failed %s, unknown %s (%s stored), never sent %s; recharges claimed %s, completed %s, failed %s, unknown %s; grants made %s, unknown %s; renew_plans %s (plan periods so far %s); so far %s debits drew 2+ grants, %s owed a part, %s repay pairs, %s grants expired',
			count(*) FILTER (WHERE outcome = 'committed'),
			count(*) FILTER (WHERE outcome = 'failed'),
			count(*) FILTER (WHERE outcome = 'unknown'),
			count(*) FILTER (WHERE outcome = 'unknown' AND EXISTS (SELECT FROM credits.send_batches s
						WHERE s.account_id = b.account_id AND s.idempotency_key = b.key)),
			count(*) FILTER (WHERE outcome = 'noconn'),
			(SELECT count(*) FROM crash_test.wlog WHERE cycle = $cycle AND action = 'claim' AND outcome = 'committed'),
			(SELECT count(*) FROM crash_test.wlog WHERE cycle = $cycle AND action = 'complete' AND outcome = 'committed'),
			(SELECT count(*) FROM crash_test.wlog WHERE cycle = $cycle AND action = 'fail' AND outcome = 'committed'),
			(SELECT count(*) FROM crash_test.wlog WHERE cycle = $cycle AND action <> 'claim' AND outcome = 'unknown'),
			(SELECT count(*) FROM crash_test.alog WHERE cycle = $cycle AND action IN ('promo', 'purchase') AND outcome = 'committed'),
			(SELECT count(*) FROM crash_test.alog WHERE cycle = $cycle AND action IN ('promo', 'purchase') AND outcome = 'unknown'),
			(SELECT count(*) FROM crash_test.alog WHERE cycle = $cycle AND action = 'renew' AND outcome = 'committed'),
			(SELECT count(*) FROM credits.ledger WHERE kind = 'plan'),
			(SELECT count(*) FROM (SELECT batch_id FROM credits.ledger WHERE kind = 'debit' AND grant_id IS NOT NULL
									GROUP BY batch_id HAVING count(*) > 1) m),
			(SELECT count(*) FROM credits.ledger WHERE kind = 'debit' AND grant_id IS NULL),
			(SELECT count(*) FROM credits.ledger WHERE kind = 'repay' AND grant_id IS NULL),
			(SELECT count(*) FROM credits.ledger WHERE kind = 'expire'))
		FROM crash_test.batches b WHERE cycle = $cycle")
	errors=$(q "SELECT coalesce(string_agg(sqlstate || ' x' || n, ', ' ORDER BY n DESC), 'none')
		FROM (SELECT sqlstate, count(*) n FROM crash_test.batches WHERE cycle = $cycle AND outcome = 'failed' GROUP BY 1) e")
	committed=$(q "SELECT count(*) FROM crash_test.batches WHERE cycle = $cycle AND outcome = 'committed'")
	[ "${committed:-0}" -ge 50 ] || why+=("only ${committed:-0} batches committed before the kill: the load did not run")

	probs=$(problems 2>&1) || why+=("checks failed to run: $probs")
	if [ -n "$probs" ]; then
		why+=("after restart: $(wc -l <<<"$probs") problems")
		echo "$probs" | head -n 15 | sed 's/^/#   /'
	fi
	rec=$(recover $cycle 2>&1) || why+=("recovery failed: $(tr '\n' ' ' <<<"$rec")")
	probs=$(problems 2>&1) || why+=("checks failed to run: $probs")
	if [ -n "$probs" ]; then
		why+=("after the retries: $(wc -l <<<"$probs") problems")
		echo "$probs" | head -n 15 | sed 's/^/#   /'
	fi

	what="kill -9 $mode after $(ms_to_s $delay_ms) s$checkpoint, restart ${restart_ms} ms: $summary; errors $errors"
	if [ ${#why[@]} -eq 0 ]; then
		passed=$((passed + 1))
		echo "ok - crash cycle $cycle: $what"
	else
		failed=$((failed + 1))
		joined=$(printf '%s; ' "${why[@]}")
		echo "not ok - crash cycle $cycle: ${joined%; } ($what)"
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -eq "$CYCLES" ]

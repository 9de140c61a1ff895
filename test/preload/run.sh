#!/usr/bin/env bash
# test/preload/run.sh: what shared_preload_libraries = 'credits' changes.
#
# The library defines the credits.* settings and reserves the prefix when it
# is loaded.  Loaded on first use (no preload), a session that sets a
# misspelt credits.* name before anything loaded the library gets a silent
# placeholder; the README says so and recommends preloading.  Preloaded,
# every session knows the settings from its start and a misspelt name is an
# error for SET, ALTER SYSTEM and ALTER DATABASE, and is reported when
# postgresql.conf is read.  This suite proves both halves, and that the
# extension works preloaded (debit, recharge, settlement, verify()).
#
# Prints "ok - ..." / "not ok - ..." per check and "N passed, N failed";
# exits non-zero on any failure.  Port: CREDITS_PORT (default 54348).
set -uo pipefail

CREDITS_PURPOSE=preload
CREDITS_PORT=${CREDITS_PORT:-54348}
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$REPO_ROOT"

source "$REPO_ROOT/test/lib.sh"
# run SQL...: psql in a new session, errors and all, on one string.
run() { "$PG_BIN/psql" -X -q -At -v VERBOSITY=sqlstate "$@" 2>&1; }

trap 'stop_cluster' EXIT
build_and_install

say "without shared_preload_libraries"
start_cluster || { echo "not ok - cluster did not start"; exit 1; }
pg -c 'CREATE EXTENSION credits' >/dev/null
out=$(run -c 'SET credits.max_paymnt_failures = 5' -c 'SHOW credits.max_paymnt_failures')
expect "not preloaded: a misspelt setting in a fresh session is a silent placeholder (as the README warns)" "5" "$out"
out=$(run -c 'LOAD '\''credits'\''' -c 'SET credits.max_paymnt_failures = 5')
expect "not preloaded: once the library is loaded in the session, a misspelt setting is an error" "42602" "$out"
stop_cluster

say "with shared_preload_libraries = 'credits'"
CREDITS_EXTRA_CONF="shared_preload_libraries = 'credits'
credits.claim_leese = '5min'" start_cluster || { echo "not ok - preloaded cluster did not start"; exit 1; }
out=$(grep -h 'credits.claim_leese' "$CREDITS_RUN_DIR/server.log" || true)
expect "preloaded: a misspelt setting in postgresql.conf is reported at server start" "invalid configuration parameter name \"credits.claim_leese\"" "$out"
out=$(run -c 'SET credits.max_paymnt_failures = 5')
expect "preloaded: SET of a misspelt setting in a fresh session is an error" "42602" "$out"
out=$(run -c "ALTER SYSTEM SET credits.recharge_expiri = '1h'")
# PostgreSQL 17 lets ALTER SYSTEM set custom names it does not know, so the
# error is the reserved prefix's (42602), as for SET; 15 and 16 say 42704.
if [ "$PG_MAJOR" -ge 17 ]; then want=42602; else want=42704; fi
expect "preloaded: ALTER SYSTEM of a misspelt setting is an error" "$want" "$out"
out=$(run -c "ALTER DATABASE postgres SET credits.recharge_expiri = '1h'")
expect "preloaded: ALTER DATABASE ... SET of a misspelt setting is an error" "42602" "$out"
out=$(run -c 'SHOW credits.claim_lease' -c 'SHOW credits.max_payment_failures' -c 'SHOW credits.recharge_expiry')
expect "preloaded: the real settings are defined in every session from the start" "15min
3
1h" "$out"

out=$(run <<'SQL'
CREATE EXTENSION credits;
SELECT credits.open_account(1, 100) IS NOT NULL;
SELECT (credits.enable_auto_recharge(1, 0, 1000)).enabled;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1, 300) RETURNING status;
SELECT (credits.complete_recharge(recharge_id, 'ch_preload_1', claim_token)).status
  FROM credits.claim_recharges(1);
SELECT balance, (SELECT status FROM credits.send_batches) FROM credits.accounts;
SELECT count(*) FROM credits.verify();
SQL
)
expect "preloaded: a debit, its recharge and the settlement work, and verify() is clean" "t
t
awaiting_credits
succeeded
0|ready
0" "$out"

finish

#!/usr/bin/env bash
# test/model/run.sh: the model-based randomized test of the credits extension.
#
# Builds and installs the extension, starts a throwaway cluster (its own run
# directory and port, so it can run beside the other suites), and runs
# test/model/model.py once per seed: random operations applied both to a
# fresh database (model_<seed>) and to an independent Python model of the
# rules, compared after every step.  See model.py for what is compared.
# Three operation mixes: "basic" (accounts, batches, auto-recharge,
# workers), "grants" (the same, plus grants, plans, expiry, the clock and
# transactions) and "upgrade" (basic on a 0.1.1 database, updated part way,
# then grants).
#
#   bash test/model/run.sh                     the fixed seeds below, each
#                                              with its mix
#   bash test/model/run.sh --random [N]        N new random seeds (default 8),
#   MODEL_RANDOM=1 bash test/model/run.sh      grants mix (MODEL_RANDOM=N: N seeds)
#   bash test/model/run.sh --seed S [--mix M] [--steps K] [--log]
#                                              replay one seed (mix: grants
#                                              unless S is a fixed basic seed;
#                                              --log prints every step as SQL)
#   --steps K (or MODEL_STEPS=K)               steps per seed (default 500)
#   MODEL_JOBS=N                               runs at a time (default 2)
#
# Prints "ok - seed S (...)" or "not ok - seed S: ..." per seed, then
# "N passed, N failed", and exits non-zero on any failure.
# Port: CREDITS_PORT (default 54346).
#
# Choosing seeds again (when an operation mix changes): pick_seeds.py runs
# the model alone over many seeds and picks a covering few; mutants.py then
# checks that they catch one-rule mistakes in the grants model.
set -uo pipefail

CREDITS_PURPOSE=model
CREDITS_PORT=${CREDITS_PORT:-54346}
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib.sh"
cd "$REPO_ROOT"

# Debian's interpreter, which python3-psycopg2 installs into (a python3
# earlier on PATH, e.g. pyenv's, would not see it).
PYTHON=${MODEL_PYTHON:-/usr/bin/python3}
MODEL="$REPO_ROOT/test/model/model.py"

# Basic mix.  Chosen among seeds 1-100 for what they reach (dependent
# batches failed, monthly limit cut and exactly filled, growth under a new
# max_credits, DO UPDATE returning a stored batch, payment-failure
# turn-off, 21000, MC017, MC002 at the boundary); together they catch every
# one of a set of one-off mutations of the model's rules.  Seed 70 finds the
# bug of ready batches that lived on a failed recharge's credits (verify():
# "balance + in-flight is negative", step 78); it failed until that was
# fixed.  The basic mix draws exactly the operations it drew before grants
# existed, so these seeds still reach what they were chosen for (in 0.2.0
# the same operations also exercise signup and purchase grants, draw-down,
# owed, repayment and refunds back to grants).
FIXED_SEEDS="74 89 6 54 38 80 72 62 57 70"
# Grants mix.  The mix draws new operations, so its seeds are new: chosen by
# test/model/pick_seeds.py (the model alone, seeds 1-300) as the fewest that
# together reach every rule branch the model counts and every (operation,
# outcome) pair any seed reached, each at least twice where possible
# (plans started, changed, taken up again, refused afresh over the last
# period, renewed with skipped periods or late to a period already over,
# ended and cancelled again, anchored on the 29th-31st; grants expiring at
# a debit, at a lock, by expire_grants (also leaving later ones due) and by
# renew_plans; refunds into lapsed grants, repaying debts first; debits
# drawing from several grants and owing in part; owed repaid from two
# grants; transactions committed and rolled back; the basic mix's branches
# and errors).  Together they catch each of the 21 one-rule mutants of
# test/model/mutants.py (draw-down order, repayment order, refunds to
# lapsed grants, expiry at a debit and at exactly expires_at, month ends,
# skipped periods, ...).  The grants mix found two bugs, fixed in 6f610c9:
# a refund into a lapsed grant left a sent batch owing with nothing in
# flight (verify(): "balance + in-flight is negative"), and set_plan started
# a plan afresh over the last period of the old one ("plan grants overlap",
# or 23505 on grants_one_per_plan_period).
GRANT_SEEDS="20 85 6 7 171 123 39 70 5 72 4"
# Upgrade mix: the basic mix on a 0.1.1 database, ALTER EXTENSION credits
# UPDATE at a random step, then the grants mix (balances carried over into
# purchase grants, negative ones owed by awaiting batches, batches debited
# before the update repaid and refunded).  Seeds 22 144 1 26 38 chosen by
# pick_seeds.py --mix upgrade (seeds 1-150) among those that never refund
# a batch debited before the update, and seed 2, which does (step 129): the
# purchase grant such a refund opened showed in balance_by_grant as drawn
# and refunded (its opening row was a refund row) until bbbb554 (one
# grantless refund row; the grant carried over).  They catch mutants.py
# --mix upgrade's two update mutants (owed by the oldest batches first; a
# legacy refund opening no grant: seed 2 only).
UPGRADE_SEEDS="22 144 1 26 38 2"

usage() {
	sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit "${1:-0}"
}

seeds=""
random_runs=""
steps=${MODEL_STEPS:-500}
log=""
mix=""
case "${MODEL_RANDOM:-}" in
	"" | 0) ;;
	1) random_runs=8 ;;
	*) random_runs=$MODEL_RANDOM ;;
esac
while [ $# -gt 0 ]; do
	case "$1" in
		--random)
			random_runs=8
			if [ $# -gt 1 ] && [[ "$2" =~ ^[0-9]+$ ]]; then random_runs=$2; shift; fi ;;
		--seed)
			[ $# -gt 1 ] || usage 2
			seeds="$seeds $2"; shift ;;
		--steps)
			[ $# -gt 1 ] || usage 2
			steps=$2; shift ;;
		--mix)
			[ $# -gt 1 ] || usage 2
			mix=$2; shift ;;
		--log) log=--log ;;
		-h | --help) usage 0 ;;
		*) echo "unknown argument: $1" >&2; usage 2 ;;
	esac
	shift
done
if ! [[ "$steps" =~ ^[0-9]+$ ]] || { [ -n "$random_runs" ] && ! [[ "$random_runs" =~ ^[0-9]+$ ]]; }; then
	echo "--steps and --random take a number" >&2
	exit 2
fi

PACKAGES="$PACKAGES python3 python3-psycopg2"
ensure_packages
build_and_install || { echo "not ok - build"; echo "0 passed, 1 failed"; exit 1; }
trap stop_cluster EXIT
start_cluster || { echo "not ok - the cluster did not start (see $CREDITS_RUN_DIR/server.log)"; echo "0 passed, 1 failed"; exit 1; }
"$PYTHON" -c 'import psycopg2' || { echo "not ok - $PYTHON cannot import psycopg2"; echo "0 passed, 1 failed"; exit 1; }

if [ -n "$seeds" ]; then
	:
elif [ -n "$random_runs" ]; then
	for _ in $(seq "$random_runs"); do
		seeds="$seeds $(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"
	done
	echo "# random seeds:$seeds, ${mix:-grants} mix (replay one with: bash test/model/run.sh --seed S --mix ${mix:-grants})"
fi

# run_seed SEED MIX
run_seed() {
	"$PYTHON" "$MODEL" --seed "$1" --mix "$2" --steps "$steps" $log
}

# mix_of SEED: the mix given, else basic for a fixed basic seed, else grants.
mix_of() {
	if [ -n "$mix" ]; then echo "$mix"; return; fi
	case " $FIXED_SEEDS " in *" $1 "*) [ -z "$random_runs" ] && { echo basic; return; } ;; esac
	echo grants
}

passed=0
failed=0
started=$(date +%s)
runs=""
if [ -z "$seeds" ] && [ -z "$random_runs" ]; then
	for seed in $FIXED_SEEDS; do runs="$runs $seed:${mix:-basic}"; done
	for seed in $GRANT_SEEDS; do runs="$runs $seed:${mix:-grants}"; done
	for seed in $UPGRADE_SEEDS; do runs="$runs $seed:${mix:-upgrade}"; done
else
	for seed in $seeds; do runs="$runs $seed:$(mix_of "$seed")"; done
fi
# Runs go MODEL_JOBS at a time (default 2: the database and the model
# each keep a core busy); their output is printed in order as they end.
jobs=${MODEL_JOBS:-2}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "MODEL_JOBS takes a number" >&2; exit 2; }
out=$(mktemp -d)
trap 'stop_cluster; rm -rf "$out"' EXIT
n=0
shown=0
# show_done: prints the runs that ended, in order, up to the first still running.
show_done() {
	local rc seed
	while [ "$shown" -lt "$n" ] && [ -f "$out/$((shown + 1)).rc" ]; do
		shown=$((shown + 1))
		cat "$out/$shown.out"
		rc=$(cat "$out/$shown.rc")
		seed=$(cat "$out/$shown.seed")
		if [ "$rc" -eq 0 ]; then
			passed=$((passed + 1))
		else
			# model.py prints its own "not ok" line, unless it could not start
			[ "$rc" -le 2 ] || echo "not ok - seed $seed: model.py exited with status $rc"
			failed=$((failed + 1))
		fi
	done
}
for run in $runs; do
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
		wait -n
		show_done
	done
	n=$((n + 1))
	echo "${run%%:*}" >"$out/$n.seed"
	( run_seed "${run%%:*}" "${run#*:}" >"$out/$n.out" 2>&1; echo $? >"$out/$n.rc.tmp"; mv "$out/$n.rc.tmp" "$out/$n.rc" ) &
done
wait
show_done
echo "# $((passed + failed)) runs x $steps steps in $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

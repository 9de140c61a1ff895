# scripts/lib.sh: shared set-up for scripts/demo, scripts/test and bench/run.
# Sourced, not run.  Installs missing packages, builds and installs the
# extension, and runs a throwaway PostgreSQL cluster on a private socket
# directory and port, so a system cluster never interferes.

PG_MAJOR=${PG_MAJOR:-15}
# PG_BIN may point at another installation (a private copy of the tree, say).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One directory per purpose (demo, test, bench) so two can run side by side.
CREDITS_RUN_DIR=${CREDITS_RUN_DIR:-/tmp/credits-${CREDITS_PURPOSE:-run}}
CREDITS_PORT=${CREDITS_PORT:-54329}
PACKAGES="build-essential postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libpq-dev postgresql-$PG_MAJOR-pgtap libtap-parser-sourcehandler-pgtap-perl"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# as_root CMD...: run with root rights (directly as root, else through sudo).
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# as_pg CMD...: run as the OS user that owns the cluster.  PostgreSQL refuses
# to run as root, so root uses the postgres account.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_packages() {
	local missing=()
	for p in $PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		say "packages: all present"
		return
	fi
	say "installing packages: ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# Debian's postgresql package may start a system cluster on 5432; ours
	# uses its own port and socket directory, so it is left alone.
}

build_and_install() {
	say "building and installing the extension"
	make -C "$REPO_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" >/dev/null
	as_root make -C "$REPO_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
}

# Connection settings every client below uses.
export PGHOST="$CREDITS_RUN_DIR/socket" PGPORT="$CREDITS_PORT" PGUSER=postgres PGDATABASE=postgres

stop_cluster() {
	if [ -f "$CREDITS_RUN_DIR/data/postmaster.pid" ]; then
		as_pg "$PG_BIN/pg_ctl" -D "$CREDITS_RUN_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	as_root rm -rf "$CREDITS_RUN_DIR"
}

start_cluster() {
	stop_cluster				# idempotent: a leftover from an interrupted run goes first
	say "starting a throwaway cluster in $CREDITS_RUN_DIR (port $CREDITS_PORT)"
	as_pg mkdir -p "$CREDITS_RUN_DIR/socket"
	as_pg "$PG_BIN/initdb" -D "$CREDITS_RUN_DIR/data" -U postgres -A trust --no-sync >/dev/null
	cat <<-CONF | as_pg tee -a "$CREDITS_RUN_DIR/data/postgresql.conf" >/dev/null
		listen_addresses = ''
		port = $CREDITS_PORT
		unix_socket_directories = '$CREDITS_RUN_DIR/socket'
		max_prepared_transactions = 10
		${CREDITS_EXTRA_CONF:-}
	CONF
	as_pg "$PG_BIN/pg_ctl" -D "$CREDITS_RUN_DIR/data" -l "$CREDITS_RUN_DIR/server.log" -w start >/dev/null
}

# psql with the throwaway cluster's settings, stopping on the first error.
pg() { "$PG_BIN/psql" -X -P pager=off -v ON_ERROR_STOP=1 -q "$@"; }

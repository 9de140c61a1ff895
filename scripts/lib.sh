# scripts/lib.sh: shared set-up for scripts/demo, scripts/test and bench/run.
# Sourced, not run.  Installs missing packages, builds and installs the
# extension, and runs a throwaway PostgreSQL cluster on a private socket
# directory and port, so a system cluster never interferes.

# Nothing below depends on the caller's locale: perl (pg_prove) warns about
# a LANG that is not generated, sort orders differ, and psql picks its client
# encoding from it.  C.UTF-8 is built into Debian's libc (minbase included).
if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
	CREDITS_LOCALE=C.UTF-8
else
	CREDITS_LOCALE=C
fi
export LC_ALL=$CREDITS_LOCALE LANG=$CREDITS_LOCALE PGCLIENTENCODING=UTF8
unset LANGUAGE

# detect_pg_major: the PostgreSQL major version to test against, when
# PG_MAJOR is not set: that of PG_BIN if given, else the one this Debian
# release ships (12 bookworm: 15, 13 trixie: 17), else the one apt's
# "postgresql" package depends on, else 15.
detect_pg_major() {
	local v=""
	if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/pg_config" ]; then
		v=$("$PG_BIN/pg_config" --version | sed -nE 's/^PostgreSQL ([0-9]+).*/\1/p')
	elif [ -r /etc/os-release ]; then
		case "$(. /etc/os-release && echo "${ID:-}:${VERSION_ID:-}")" in
			debian:11) v=13 ;;
			debian:12) v=15 ;;
			debian:13) v=17 ;;
			*) v=$(apt-cache depends postgresql 2>/dev/null | sed -nE 's/^ *Depends: postgresql-([0-9]+)$/\1/p' | head -n 1) ;;
		esac
	fi
	echo "${v:-15}"
}
PG_MAJOR=${PG_MAJOR:-$(detect_pg_major)}
# PG_BIN may point at another installation (a private copy of the tree, say).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One directory per purpose (demo, test, bench) so two can run side by side.
# CREDITS_RUN_ROOT, if set, holds every one of them (credits-PURPOSE), even a
# suite's fixed one: two checkouts can then be tested at once, on different
# ports.
if [ -n "${CREDITS_RUN_ROOT:-}" ]; then
	CREDITS_RUN_DIR=$CREDITS_RUN_ROOT/credits-${CREDITS_PURPOSE:-run}
else
	CREDITS_RUN_DIR=${CREDITS_RUN_DIR:-/tmp/credits-${CREDITS_PURPOSE:-run}}
fi
CREDITS_PORT=${CREDITS_PORT:-54329}
PACKAGES="build-essential postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libpq-dev postgresql-$PG_MAJOR-pgtap libtap-parser-sourcehandler-pgtap-perl"

# say TEXT: a heading; bold on a terminal, plain text otherwise (logs, CI).
say() {
	if [ -t 1 ]; then printf '\n\033[1m==> %s\033[0m\n' "$*"; else printf '\n==> %s\n' "$*"; fi
}

# as_root CMD...: run with root rights (directly as root, else through sudo).
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# as_pg CMD...: run as the OS user that owns the cluster.  PostgreSQL refuses
# to run as root, so root uses the postgres account, from "/": postgres may
# not be allowed into the caller's directory (a clone under /root, say), and
# every path given here is absolute.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
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
	if [ -n "${CREDITS_RUN_ROOT:-}" ] && [ ! -d "$CREDITS_RUN_ROOT" ]; then
		as_root mkdir -p "$CREDITS_RUN_ROOT" && as_root chmod 1777 "$CREDITS_RUN_ROOT"
	fi
	as_pg mkdir -p "$CREDITS_RUN_DIR/socket"
	# Encoding and locale are explicit: the machine's (none at all on a
	# minbase Debian) would give SQL_ASCII, and messages and sort orders
	# that differ from the expected output.
	as_pg "$PG_BIN/initdb" -D "$CREDITS_RUN_DIR/data" -U postgres -A trust --no-sync \
		-E UTF8 --locale="$CREDITS_LOCALE" >/dev/null
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

# test/lib.sh: the result lines of the standalone suites (test/*/run.sh).
# Sourced, not run, after scripts/lib.sh.  Each check prints "ok - ..." or
# "not ok - ..." (scripts/test counts those lines), notes print "# ...", and
# finish prints "N passed, N failed" and returns non-zero on any failure.

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok - %s\n' "$1"; }
not_ok() { failed=$((failed + 1)); printf 'not ok - %s\n' "$1"; }
note() { printf '# %s\n' "$*"; }
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# same DESCRIPTION HAVE WANT: ok when the two strings are equal, else shows
# both (at most 10 lines of each).
same() {
	if [ "$2" == "$3" ]; then
		ok "$1"
	else
		not_ok "$1"
		note "  have: $(head -10 <<<"$2")"
		note "  want: $(head -10 <<<"$3")"
	fi
}
# expect DESCRIPTION WANT HAVE: ok when HAVE contains WANT.
expect() {
	case $3 in
		*"$2"*) ok "$1" ;;
		*) not_ok "$1"; note "  want: $2"; note "  have: $3" ;;
	esac
}
# finish: the closing line, and the suite's exit status.
finish() {
	printf '\n%d passed, %d failed\n' "$passed" "$failed"
	[ "$failed" -eq 0 ]
}

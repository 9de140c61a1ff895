#!/bin/sh
# run.sh: one fresh database per reproduction (first line of each file: -- version X)
set -u
cd "$(dirname "$0")"
for f in [0-9]*.sql; do
	v=$(sed -n '1s/^-- version //p' "$f")
	db="review_$(basename "$f" .sql | tr -c 'a-z0-9\n' '_')"
	dropdb --if-exists "$db" >/dev/null 2>&1; createdb "$db" || exit 1
	psql -X -q -d "$db" -c "CREATE EXTENSION credits VERSION '$v'" || exit 1
	echo "=== $f"
	psql -X -d "$db" -v VERBOSITY=terse -f "$f" 2>&1
	dropdb "$db"
done

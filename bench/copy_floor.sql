-- bench/copy_floor.sql: the tables of bench/copy_floor, next to bench/schema.sql's
-- bench.bare_batches (the "limit" case).  Run after schema.sql, with
-- psql -v noop_so=/path/to/noop_trigger.so (built from bench/noop_trigger.c).
CREATE FUNCTION bench.noop_trigger() RETURNS trigger
	LANGUAGE c AS :'noop_so', 'bench_noop_trigger';

-- noop_row: bare_batches plus a no-op C BEFORE INSERT ROW trigger.
CREATE TABLE bench.noop_row (LIKE bench.bare_batches INCLUDING ALL);
CREATE TRIGGER noop BEFORE INSERT ON bench.noop_row
	FOR EACH ROW EXECUTE FUNCTION bench.noop_trigger();

-- noop_row_stmt: the same plus a no-op C AFTER INSERT STATEMENT trigger
-- (credits' two insert triggers, with nothing in them).
CREATE TABLE bench.noop_row_stmt (LIKE bench.bare_batches INCLUDING ALL);
CREATE TRIGGER noop BEFORE INSERT ON bench.noop_row_stmt
	FOR EACH ROW EXECUTE FUNCTION bench.noop_trigger();
CREATE TRIGGER noop_stmt AFTER INSERT ON bench.noop_row_stmt
	FOR EACH STATEMENT EXECUTE FUNCTION bench.noop_trigger();

-- noop_stmt: only the AFTER STATEMENT trigger (multi-insert stays on).
CREATE TABLE bench.noop_stmt (LIKE bench.bare_batches INCLUDING ALL);
CREATE TRIGGER noop_stmt AFTER INSERT ON bench.noop_stmt
	FOR EACH STATEMENT EXECUTE FUNCTION bench.noop_trigger();

-- ledger_copy: a table shaped like credits.ledger (its indexes, CHECK and
-- identity), no trigger: what writing one debit's ledger row costs at the
-- very least (bulk COPY of the ledger rows a credits COPY wrote).
CREATE TABLE bench.ledger_copy (LIKE credits.ledger INCLUDING ALL);

-- ledger_noacct: ledger_copy without its (account_id, entry_id) index: what
-- that one index entry per ledger row costs.
CREATE TABLE bench.ledger_noacct (LIKE credits.ledger INCLUDING ALL);
DO $$
DECLARE
	i regclass;
BEGIN
	SELECT indexrelid::regclass INTO STRICT i FROM pg_index
	 WHERE indrelid = 'bench.ledger_noacct'::regclass
	   AND pg_get_indexdef(indexrelid) LIKE '%(account_id, entry_id)';
	EXECUTE format('DROP INDEX %s', i);
END
$$;

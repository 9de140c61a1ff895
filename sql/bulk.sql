--
-- bulk: multi-row statements are debited exactly as row by row, with each
-- account locked once and written once per statement (debit_state.c)
--
\set SHOW_CONTEXT never
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(100000);

-- The same 30,000 batches (more than one write chunk of 8192 rows) over
-- three accounts, two with auto-recharge shortfalls, one paying from a large
-- balance: once as one INSERT ... SELECT (accounts 1001-1003), once row by
-- row (accounts 1011-1013).
SELECT count(*) FROM (
	SELECT credits.open_account(a, CASE WHEN a % 10 = 3 THEN 1000000 ELSE 5000 END)
	  FROM (VALUES (1001), (1002), (1003), (1011), (1012), (1013)) v(a)) o;
SELECT count(*) FROM (
	SELECT credits.enable_auto_recharge(a, 100, 20000, target_balance => 500)
	  FROM (VALUES (1001), (1002), (1011), (1012)) v(a)) e;
CREATE TABLE regress_work AS
	SELECT g, (g % 3) + 1 AS k, 1 + (g * 7) % 13 AS messages,
		   CASE WHEN g % 5 = 0 THEN 'sms' ELSE 'email' END AS channel
	  FROM generate_series(1, 30000) g;
INSERT INTO credits.send_batches (account_id, messages, channel)
SELECT 1000 + k, messages, channel FROM regress_work ORDER BY g;
DO $$
DECLARE w record;
BEGIN
	FOR w IN SELECT * FROM regress_work ORDER BY g LOOP
		INSERT INTO credits.send_batches (account_id, messages, channel)
		VALUES (1010 + w.k, w.messages, w.channel);
	END LOOP;
END
$$;
-- Identical outcomes: statuses, costs, recharges and ledger, position by position.
WITH bulk AS (SELECT account_id - 1000 AS k, row_number() OVER (PARTITION BY account_id ORDER BY batch_id) AS n,
					 cost, status, recharge_id IS NOT NULL AS covered
				FROM credits.send_batches WHERE account_id BETWEEN 1001 AND 1003),
	 rows AS (SELECT account_id - 1010 AS k, row_number() OVER (PARTITION BY account_id ORDER BY batch_id) AS n,
					 cost, status, recharge_id IS NOT NULL AS covered
				FROM credits.send_batches WHERE account_id BETWEEN 1011 AND 1013)
SELECT count(*) AS batches, count(*) FILTER (WHERE b IS DISTINCT FROM r) AS differ
  FROM (SELECT (bulk.cost, bulk.status, bulk.covered) AS b, (rows.cost, rows.status, rows.covered) AS r
		  FROM bulk FULL JOIN rows USING (k, n)) x;
SELECT count(*) AS entries,
	   count(*) FILTER (WHERE (b.delta, b.balance_after, b.kind) IS DISTINCT FROM (r.delta, r.balance_after, r.kind)) AS differ
  FROM (SELECT account_id - 1000 AS k, row_number() OVER (PARTITION BY account_id ORDER BY entry_id) AS n, *
		  FROM credits.ledger WHERE account_id BETWEEN 1001 AND 1003) b
  FULL JOIN (SELECT account_id - 1010 AS k, row_number() OVER (PARTITION BY account_id ORDER BY entry_id) AS n, *
			   FROM credits.ledger WHERE account_id BETWEEN 1011 AND 1013) r USING (k, n);
SELECT count(*) AS recharges,
	   count(*) FILTER (WHERE (b.credits, b.status, b.reason, b.need, b.balance_seen)
							  IS DISTINCT FROM (r.credits, r.status, r.reason, r.need, r.balance_seen)) AS differ
  FROM (SELECT account_id - 1000 AS k, row_number() OVER (PARTITION BY account_id ORDER BY recharge_id) AS n, *
		  FROM credits.recharges WHERE account_id BETWEEN 1001 AND 1003) b
  FULL JOIN (SELECT account_id - 1010 AS k, row_number() OVER (PARTITION BY account_id ORDER BY recharge_id) AS n, *
			   FROM credits.recharges WHERE account_id BETWEEN 1011 AND 1013) r USING (k, n);
SELECT a.account_id - 1000 AS k, a.balance = b.balance AND a.in_flight = b.in_flight AS same
  FROM credits.accounts a JOIN credits.accounts b ON b.account_id = a.account_id + 10
 WHERE a.account_id BETWEEN 1001 AND 1003 ORDER BY 1;
SELECT * FROM credits.verify();
DROP TABLE regress_work;

-- A statement that fails part-way (insufficient credits on account 1003,
-- which has no auto-recharge) leaves nothing behind, not even the rows
-- queued before the failing one.
SELECT balance AS b1003 FROM credits.accounts WHERE account_id = 1003 \gset
SELECT count(*) AS ledger_before FROM credits.ledger \gset
INSERT INTO credits.send_batches (account_id, messages)
SELECT 1003, 1 FROM generate_series(1, 9000)
UNION ALL SELECT 1003, :b1003;
\echo :LAST_ERROR_SQLSTATE
SELECT balance = :b1003 AS unchanged FROM credits.accounts WHERE account_id = 1003;
SELECT count(*) = :ledger_before AS no_ledger_rows FROM credits.ledger;

-- COPY goes the same way.
SELECT balance FROM credits.open_account(1020, 100000);
COPY credits.send_batches (account_id, messages) FROM PROGRAM 'seq 1 10000 | sed "s/.*/1020\t3/"';
SELECT count(*), sum(cost) FROM credits.send_batches WHERE account_id = 1020;
SELECT balance FROM credits.accounts WHERE account_id = 1020;

-- ON CONFLICT DO NOTHING with duplicate keys inside one big statement.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
SELECT 1020, 1, 'k' || (g % 5000) FROM generate_series(1, 10000) g
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT count(*) FROM credits.send_batches WHERE account_id = 1020 AND idempotency_key IS NOT NULL;
SELECT balance FROM credits.accounts WHERE account_id = 1020;

-- Functions called while a statement is debiting see its debits: a grant
-- evaluated between two rows of the same statement.
SELECT balance FROM credits.open_account(1021, 100);
INSERT INTO credits.send_batches (account_id, messages)
SELECT 1021, CASE WHEN g = 2 THEN (SELECT 10 + 0 * credits.add_credits(1021, 50)) ELSE 10 END
  FROM generate_series(1, 3) g;
SELECT delta, balance_after, kind FROM credits.ledger WHERE account_id = 1021 ORDER BY entry_id;
SELECT balance FROM credits.accounts WHERE account_id = 1021;

-- Subtransactions inside a statement: a function with an EXCEPTION block
-- inserting a batch for another account works, and its failure is undone
-- alone; for the account the statement is debiting it is refused (MC019).
SELECT balance FROM credits.open_account(1022, 100);
SELECT balance FROM credits.open_account(1023, 100);
CREATE FUNCTION regress_side_send(acct bigint, n integer) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO credits.send_batches (account_id, messages) VALUES (acct, n);
	RETURN n;
EXCEPTION WHEN SQLSTATE 'MC001' THEN
	RETURN -1;
END
$$;
INSERT INTO credits.send_batches (account_id, messages)
SELECT 1022, 10 + 0 * regress_side_send(1023, CASE WHEN g = 2 THEN 1000 ELSE 5 END)
  FROM generate_series(1, 3) g;
SELECT account_id, cost, status FROM credits.send_batches WHERE account_id IN (1022, 1023) ORDER BY batch_id;
SELECT account_id, balance FROM credits.accounts WHERE account_id IN (1022, 1023) ORDER BY 1;
INSERT INTO credits.send_batches (account_id, messages)
SELECT 1022, 10 + 0 * regress_side_send(1022, 5) FROM generate_series(1, 2) g;
\echo :LAST_ERROR_SQLSTATE
SELECT account_id, balance FROM credits.accounts WHERE account_id IN (1022, 1023) ORDER BY 1;
-- A savepoint rolled back after a bulk insert takes its debits with it.
BEGIN;
SAVEPOINT s;
INSERT INTO credits.send_batches (account_id, messages) SELECT 1022, 1 FROM generate_series(1, 20);
ROLLBACK TO SAVEPOINT s;
INSERT INTO credits.send_batches (account_id, messages) VALUES (1022, 1);
COMMIT;
SELECT balance FROM credits.accounts WHERE account_id = 1022;
DROP FUNCTION regress_side_send(bigint, integer);

-- Triggers someone adds to the extension's own tables may not change an
-- account in the middle of a debit (they would write or drop the state in
-- use): refused with MC019, and nothing is written.
SELECT balance FROM credits.open_account(1024, 0);
SELECT enabled FROM credits.enable_auto_recharge(1024, 0, 1000);
CREATE FUNCTION regress_bonus() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM credits.add_credits(1023, 1, 'bonus'); RETURN NULL; END $$;
CREATE TRIGGER regress_bonus AFTER INSERT ON credits.recharges
	FOR EACH ROW EXECUTE FUNCTION regress_bonus();
INSERT INTO credits.send_batches (account_id, messages) VALUES (1024, 10);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER regress_bonus ON credits.recharges;
-- (a batch's debit entry is in its own row; the statement-end writes are
-- those of its grant and account)
CREATE TRIGGER regress_bonus AFTER UPDATE ON credits.grants
	FOR EACH STATEMENT EXECUTE FUNCTION regress_bonus();
INSERT INTO credits.send_batches (account_id, messages) VALUES (1023, 1), (1023, 2);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER regress_bonus ON credits.grants;
DROP FUNCTION regress_bonus();
SELECT * FROM regress_totals(1023);
SELECT * FROM regress_totals(1024);
SELECT * FROM credits.verify();

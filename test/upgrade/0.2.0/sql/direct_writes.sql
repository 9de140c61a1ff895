--
-- direct_writes: the statement-end write without SQL (row_write.c,
-- credits.direct_writes = on, the default) stores exactly what the SQL path
-- (off) stores.  The same work runs twice, on accounts 8001-8003 with direct
-- writes and on 8011-8013 through SQL, and every row is compared, position
-- by position: batches, ledger, grants, accounts, recharges.
--
\set SHOW_CONTEXT never
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(100000);

-- k = 1: three grants, drawn in priority order and emptied (closed), the
--        second expiring: it lapses inside a later debit (an "expire" row);
-- k = 2: 50 credits and auto-recharge: batches owe and await recharges
--        (debit rows with a recharge_id, in_flight grows);
-- k = 3: a large balance.
CREATE FUNCTION regress_dw_setup(base bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM credits.open_account(base + 1, 0);
	PERFORM credits.grant_credits(base + 1, 40, priority => 10, note => 'first');
	PERFORM credits.grant_credits(base + 1, 100000, expires_at => now() + interval '1 hour',
								  priority => 20, note => 'expiring');
	PERFORM credits.grant_credits(base + 1, 100000, priority => 30, note => 'last');
	PERFORM credits.open_account(base + 2, 50);
	PERFORM credits.enable_auto_recharge(base + 2, 0, 100000);
	PERFORM credits.open_account(base + 3, 10000000);
END
$$;
-- Single-row INSERTs, then one INSERT ... SELECT of 2,500 rows (more than
-- one heap multi-insert of 1,000).
CREATE FUNCTION regress_dw_work(base bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..60 LOOP
		INSERT INTO credits.send_batches (account_id, messages) VALUES (base + 1 + i % 3, 1 + i % 7);
	END LOOP;
	INSERT INTO credits.send_batches (account_id, messages)
	SELECT base + 1 + g % 3, 1 + g % 5 FROM generate_series(1, 2500) g;
END
$$;

SET credits.direct_writes = on;
SELECT regress_dw_setup(8000);
SELECT regress_dw_work(8000);
SET credits.clock_offset = '2h';
INSERT INTO credits.send_batches (account_id, messages) VALUES (8001, 3);
INSERT INTO credits.send_batches (account_id, messages) SELECT 8000 + g, 2 FROM generate_series(1, 3) g;
RESET credits.clock_offset;

SET credits.direct_writes = off;
SELECT regress_dw_setup(8010);
SELECT regress_dw_work(8010);
SET credits.clock_offset = '2h';
INSERT INTO credits.send_batches (account_id, messages) VALUES (8011, 3);
INSERT INTO credits.send_batches (account_id, messages) SELECT 8010 + g, 2 FROM generate_series(1, 3) g;
RESET credits.clock_offset;
RESET credits.direct_writes;

-- The work did what it is meant to exercise, on both sides.
SELECT account_id % 10 AS k, kind, count(*) > 0 AS written
  FROM credits.ledger WHERE account_id IN (8001, 8002, 8011, 8012) AND kind IN ('expire', 'debit')
 GROUP BY 1, 2, account_id / 10 ORDER BY account_id / 10, 1, 2;
SELECT account_id / 10 % 10 AS side, count(*) FILTER (WHERE owed > 0) > 0 AS some_owe,
	   count(*) FILTER (WHERE status = 'awaiting_credits') > 0 AS some_await
  FROM credits.send_batches WHERE account_id IN (8002, 8012) GROUP BY 1 ORDER BY 1;
SELECT account_id / 10 % 10 AS side, count(*) FILTER (WHERE closed_at IS NOT NULL) AS closed
  FROM credits.grants WHERE account_id IN (8001, 8011) GROUP BY 1 ORDER BY 1;

-- Position by position, direct (d) against SQL (s).
CREATE VIEW regress_dw_batches AS
	SELECT account_id, account_id % 10 AS k, account_id / 10 % 10 AS side, batch_id,
		   row_number() OVER (PARTITION BY account_id ORDER BY batch_id) AS n,
		   messages, cost, status, owed, recharge_id IS NOT NULL AS has_recharge
	  FROM credits.send_batches WHERE account_id BETWEEN 8001 AND 8013;
CREATE VIEW regress_dw_ledger AS
	SELECT l.account_id % 10 AS k, l.account_id / 10 % 10 AS side,
		   row_number() OVER (PARTITION BY l.account_id ORDER BY l.entry_id) AS n,
		   l.delta, l.balance_after, l.kind, b.n AS batch_n, g.note AS grant_note,
		   l.recharge_id IS NOT NULL AS has_recharge, l.note,
		   l.created_at = (SELECT max(x.created_at) FROM credits.ledger x
							 WHERE x.account_id = l.account_id AND x.entry_id <= l.entry_id) AS in_order
	  FROM credits.ledger l
	  LEFT JOIN regress_dw_batches b ON b.batch_id = l.batch_id
	  LEFT JOIN credits.grants g ON g.grant_id = l.grant_id
	 WHERE l.account_id BETWEEN 8001 AND 8013;
SELECT count(*) AS batches,
	   count(*) FILTER (WHERE (d.messages, d.cost, d.status, d.owed, d.has_recharge)
							  IS DISTINCT FROM (s.messages, s.cost, s.status, s.owed, s.has_recharge)) AS differ
  FROM (SELECT * FROM regress_dw_batches WHERE side = 0) d
  FULL JOIN (SELECT * FROM regress_dw_batches WHERE side = 1) s USING (k, n);
SELECT count(*) AS entries,
	   count(*) FILTER (WHERE (d.delta, d.balance_after, d.kind, d.batch_n, d.grant_note, d.has_recharge, d.note, d.in_order)
							  IS DISTINCT FROM (s.delta, s.balance_after, s.kind, s.batch_n, s.grant_note, s.has_recharge, s.note, s.in_order)) AS differ
  FROM (SELECT * FROM regress_dw_ledger WHERE side = 0) d
  FULL JOIN (SELECT * FROM regress_dw_ledger WHERE side = 1) s USING (k, n);
SELECT count(*) AS grants,
	   count(*) FILTER (WHERE (d.source, d.credits, d.remaining, d.priority, d.closed, d.note)
							  IS DISTINCT FROM (s.source, s.credits, s.remaining, s.priority, s.closed, s.note)) AS differ
  FROM (SELECT account_id % 10 AS k, row_number() OVER (PARTITION BY account_id ORDER BY grant_id) AS n,
			   source, credits, remaining, priority, closed_at IS NOT NULL AS closed, note
		  FROM credits.grants WHERE account_id BETWEEN 8001 AND 8003) d
  FULL JOIN (SELECT account_id % 10 AS k, row_number() OVER (PARTITION BY account_id ORDER BY grant_id) AS n,
					source, credits, remaining, priority, closed_at IS NOT NULL AS closed, note
			   FROM credits.grants WHERE account_id BETWEEN 8011 AND 8013) s USING (k, n);
SELECT a.account_id % 10 AS k, a.balance = b.balance AND a.in_flight = b.in_flight AS same
  FROM credits.accounts a JOIN credits.accounts b ON b.account_id = a.account_id + 10
 WHERE a.account_id BETWEEN 8001 AND 8003 ORDER BY 1;
SELECT count(*) AS recharges,
	   count(*) FILTER (WHERE (d.credits, d.status, d.reason, d.need) IS DISTINCT FROM (s.credits, s.status, s.reason, s.need)) AS differ
  FROM (SELECT account_id % 10 AS k, row_number() OVER (PARTITION BY account_id ORDER BY recharge_id) AS n, *
		  FROM credits.recharges WHERE account_id BETWEEN 8001 AND 8003) d
  FULL JOIN (SELECT account_id % 10 AS k, row_number() OVER (PARTITION BY account_id ORDER BY recharge_id) AS n, *
			   FROM credits.recharges WHERE account_id BETWEEN 8011 AND 8013) s USING (k, n);

-- Only a superuser changes the setting.
CREATE ROLE regress_dw_user;
SET ROLE regress_dw_user;
SET credits.direct_writes = off;
RESET ROLE;
DROP ROLE regress_dw_user;

DROP VIEW regress_dw_ledger;
DROP VIEW regress_dw_batches;
DROP FUNCTION regress_dw_work(bigint);
DROP FUNCTION regress_dw_setup(bigint);
SELECT * FROM credits.verify();

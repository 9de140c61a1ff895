/* credits--0.2.0--0.3.0.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION credits UPDATE TO '0.3.0'" to load this file. \quit

/*
 * 0.3.0: a batch row is its own debit entry (doc/design.md, "The batch row
 * is the debit's ledger entry").
 *
 * A debit wrote two rows with the same facts: the batch (account, cost,
 * time) and its ledger row (account, -cost, time, balance after), the
 * second with two index entries.  Now the batch row carries its debit entry
 * in five columns (entry_id, entry_delta, entry_balance_after,
 * entry_grant_id, entry_recharge_id), set by the debit trigger.  Every
 * other entry lives in credits.ledger_entries (the table credits.ledger
 * was), and credits.ledger is a view over both with the same columns in
 * the same order, so readers and verify() see the ledger they saw.  A debit
 * that draws from several grants keeps its further "debit" rows in
 * ledger_entries.
 *
 * Upgrading: the table is renamed and the columns are added, nothing is
 * rewritten or moved.  Batches debited before the update keep their debit
 * rows in ledger_entries (their entry_* columns are null): the view shows
 * the ledger exactly as before, and every reader, refunds included, reads
 * both forms.  No balance changes.  For the same reason a dump taken
 * before 0.3.0 restores into 0.3.0: its ledger rows go into ledger_entries
 * (credits.restore_ledger_entry, for the roles that may restore), its
 * batches keep null entries.
 */

--------------------------------------------------------------------------------
-- Refuse what the update cannot carry
--------------------------------------------------------------------------------

-- A view or function of a DBA that reads credits.ledger would follow the
-- rename to ledger_entries and silently lose every batch's debit: refuse,
-- and say which objects to drop and recreate after the update.
DO $$
DECLARE
	dependents text;
BEGIN
	SELECT string_agg(DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
	  INTO dependents
	  FROM pg_catalog.pg_depend d
	 WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
	   AND d.refobjid = 'credits.ledger'::pg_catalog.regclass
	   AND d.deptype = 'n'
	   AND NOT EXISTS (
			-- the extension's own objects, and their rewrite rules
			SELECT FROM pg_catalog.pg_depend e
			 WHERE e.deptype = 'e'
			   AND e.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
			   AND ((e.classid = d.classid AND e.objid = d.objid)
					OR (d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
						AND e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
						AND e.objid = (SELECT r.ev_class FROM pg_catalog.pg_rewrite r
										WHERE r.oid = d.objid))))
	   -- the table's own constraints, indexes, defaults, triggers, policies
	   -- and statistics: they move with it
	   AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint o
						WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
						  AND o.oid = d.objid AND o.conrelid = d.refobjid)
	   AND NOT EXISTS (SELECT FROM pg_catalog.pg_index o
						WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
						  AND o.indexrelid = d.objid AND o.indrelid = d.refobjid)
	   AND NOT EXISTS (SELECT FROM pg_catalog.pg_attrdef o
						WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
						  AND o.oid = d.objid AND o.adrelid = d.refobjid)
	   AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger o
						WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
						  AND o.oid = d.objid AND o.tgrelid = d.refobjid)
	   AND NOT EXISTS (SELECT FROM pg_catalog.pg_policy o
						WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass
						  AND o.oid = d.objid AND o.polrelid = d.refobjid)
	   AND NOT EXISTS (SELECT FROM pg_catalog.pg_statistic_ext o
						WHERE d.classid = 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass
						  AND o.oid = d.objid AND o.stxrelid = d.refobjid);
	IF dependents IS NOT NULL THEN
		RAISE EXCEPTION 'credits 0.3.0 cannot update while objects of your own read credits.ledger'
			USING ERRCODE = 'MC029',
				  DETAIL = format('They would read credits.ledger_entries after the update, without the debits of the batches inserted after it: %s.', dependents),
				  HINT = 'Drop them, run ALTER EXTENSION credits UPDATE, and create them again: they then read the credits.ledger view.';
	END IF;
END
$$;

-- What a DBA put on the ledger table itself stays on it (ledger_entries)
-- and would stop applying to batches' debits, which the batch rows carry
-- from now on: triggers, rules, CHECK, UNIQUE, foreign key and exclusion
-- constraints, unique indexes, columns and publications (FOR TABLE) of the
-- DBA's own.  Row-level
-- security would stop applying to readers of the view (a view reads its
-- tables as its owner).  Refuse, and name them: the DBA drops them,
-- updates, and puts them where they belong (send_batches for debits,
-- ledger_entries for the rest, a view of their own for row filters).
DO $$
DECLARE
	own text;
BEGIN
	SELECT string_agg(what, ', ' ORDER BY what) INTO own
	  FROM (SELECT format('trigger %s', t.tgname) AS what
			  FROM pg_catalog.pg_trigger t
			 WHERE t.tgrelid = 'credits.ledger'::pg_catalog.regclass AND NOT t.tgisinternal
			   AND t.tgname NOT IN ('credits_guard', 'credits_guard_truncate')
			UNION ALL
			SELECT format('rule %s', r.rulename)
			  FROM pg_catalog.pg_rewrite r
			 WHERE r.ev_class = 'credits.ledger'::pg_catalog.regclass
			UNION ALL
			SELECT format('constraint %s', c.conname)
			  FROM pg_catalog.pg_constraint c
			 WHERE c.conrelid = 'credits.ledger'::pg_catalog.regclass
			   AND c.conname NOT IN ('ledger_pkey', 'ledger_kind_check')
			UNION ALL
			SELECT format('unique index %s', x.relname)
			  FROM pg_catalog.pg_index i
			  JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid
			 WHERE i.indrelid = 'credits.ledger'::pg_catalog.regclass AND i.indisunique
			   AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid)
			   AND x.relname NOT IN ('ledger_one_refund_per_batch_grant', 'ledger_one_credit_per_recharge')
			UNION ALL
			SELECT format('column %s', a.attname)
			  FROM pg_catalog.pg_attribute a
			 WHERE a.attrelid = 'credits.ledger'::pg_catalog.regclass AND a.attnum > 0
			   AND NOT a.attisdropped
			   AND a.attname NOT IN ('entry_id', 'account_id', 'delta', 'balance_after', 'kind',
									 'batch_id', 'recharge_id', 'note', 'created_at', 'grant_id')
			UNION ALL
			SELECT format('publication %s', p.pubname)
			  FROM pg_catalog.pg_publication_rel pr
			  JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
			 WHERE pr.prrelid = 'credits.ledger'::pg_catalog.regclass
			UNION ALL
			SELECT 'row-level security'
			  FROM pg_catalog.pg_class c
			 WHERE c.oid = 'credits.ledger'::pg_catalog.regclass
			   AND (c.relrowsecurity OR EXISTS (SELECT FROM pg_catalog.pg_policy p
												 WHERE p.polrelid = c.oid))) o;
	IF own IS NOT NULL THEN
		RAISE EXCEPTION 'credits 0.3.0 cannot update while credits.ledger carries objects of your own'
			USING ERRCODE = 'MC029',
				  DETAIL = format('From 0.3.0 a batch''s debit entry is its send_batches row, so these would no longer apply to debits: %s.', own),
				  HINT = 'Drop them, run ALTER EXTENSION credits UPDATE, then recreate them: on credits.send_batches for debits, on credits.ledger_entries for the other entries; a publication publishes both (README, Upgrading).';
	END IF;
END
$$;

--------------------------------------------------------------------------------
-- The ledger's other entries
--------------------------------------------------------------------------------

ALTER TABLE credits.ledger RENAME TO ledger_entries;
COMMENT ON TABLE credits.ledger_entries IS
	'Append-only journal of every balance change but a batch''s (first) debit, which its send_batches row carries. Read credits.ledger, the whole journal.';

--------------------------------------------------------------------------------
-- A batch's debit entry
--------------------------------------------------------------------------------

ALTER TABLE credits.send_batches
	ADD COLUMN entry_id bigint,
	ADD COLUMN entry_delta bigint,
	ADD COLUMN entry_balance_after bigint,
	ADD COLUMN entry_grant_id bigint,
	ADD COLUMN entry_recharge_id bigint;
COMMENT ON COLUMN credits.send_batches.entry_id IS
	'The batch''s debit entry in credits.ledger: its entry_id (from the ledger''s sequence, in the order of the account''s balance changes). Set by the extension; null for a batch debited before 0.3.0, whose debit rows are in credits.ledger_entries.';
COMMENT ON COLUMN credits.send_batches.entry_delta IS
	'Its delta: minus what the batch drew from entry_grant_id, or (no grant) minus what it owed. -cost unless it drew from several grants. Set by the extension.';
COMMENT ON COLUMN credits.send_batches.entry_balance_after IS
	'The account''s balance after that entry. Set by the extension.';
COMMENT ON COLUMN credits.send_batches.entry_grant_id IS
	'The grant that entry draws from; NULL: what the batch owed (or, debited before 0.2.0, no grant). Set by the extension.';
COMMENT ON COLUMN credits.send_batches.entry_recharge_id IS
	'The recharge the batch awaited when it was debited (recharge_id may point elsewhere since). Set by the extension.';

--------------------------------------------------------------------------------
-- The ledger readers read
--------------------------------------------------------------------------------

-- No index on the batches' entries: that is the point.  An account's
-- history is found by send_batches' (account_id, idempotency_key) index
-- and sorted; a batch's entries by its primary key.  A batch debited
-- before 0.3.0 has no entry of its own (entry_id null): its debit rows are
-- in ledger_entries.
CREATE VIEW credits.ledger WITH (security_barrier = true) AS
SELECT b.entry_id,
	   b.account_id,
	   b.entry_delta AS delta,
	   b.entry_balance_after AS balance_after,
	   'debit'::text AS kind,
	   b.batch_id,
	   b.entry_recharge_id AS recharge_id,
	   NULL::text AS note,
	   b.created_at,
	   b.entry_grant_id AS grant_id
  FROM credits.send_batches b
 WHERE b.entry_id IS NOT NULL
UNION ALL
SELECT e.entry_id,
	   e.account_id,
	   e.delta,
	   e.balance_after,
	   e.kind,
	   e.batch_id,
	   e.recharge_id,
	   e.note,
	   e.created_at,
	   e.grant_id
  FROM credits.ledger_entries e;
-- Append-only still, with the ledger's own SQLSTATE (MC009) rather than
-- "cannot update view".  (TRUNCATE of a view is refused by PostgreSQL.)
-- An INSERT is a restore of a dump taken before 0.3.0 (COPY credits.ledger)
-- when the role may restore (the table owner or a superuser, acting as
-- itself, as for send_batches' restored rows): the row goes into
-- ledger_entries as it was.  Anyone else gets MC009.
CREATE TRIGGER credits_guard INSTEAD OF UPDATE OR DELETE ON credits.ledger
	FOR EACH ROW EXECUTE FUNCTION credits.guard_ledger();
CREATE FUNCTION credits.restore_ledger_entry() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'credits_restore_ledger_entry';
COMMENT ON FUNCTION credits.restore_ledger_entry() IS
	'INSTEAD OF INSERT trigger on the credits.ledger view: a restoring role''s row (a dump taken before 0.3.0) goes into credits.ledger_entries; MC009 for anyone else.';
REVOKE ALL ON FUNCTION credits.restore_ledger_entry() FROM PUBLIC;
CREATE TRIGGER credits_restore INSTEAD OF INSERT ON credits.ledger
	FOR EACH ROW EXECUTE FUNCTION credits.restore_ledger_entry();
-- It must fire under session_replication_role = replica too, the mode a
-- parallel restore needs: a trigger that does not fire there would let
-- COPY into the view report its rows and store none.  ALTER TABLE refuses
-- ENABLE ALWAYS TRIGGER on a view, so it is set here, and the view's
-- relation cache entry is invalidated (ALTER VIEW) so that every session
-- sees it.
UPDATE pg_catalog.pg_trigger SET tgenabled = 'A'
 WHERE tgrelid = 'credits.ledger'::pg_catalog.regclass AND tgname = 'credits_restore';
ALTER VIEW credits.ledger SET (security_barrier = true);
COMMENT ON VIEW credits.ledger IS
	'The journal: one row per balance change; for every account, balance = sum(delta) and balance_after is the running sum in entry_id order. Debits come from their send_batches rows, every other entry from credits.ledger_entries.';

-- Whoever could read the ledger table can read the view (PUBLIC included,
-- if a DBA granted it).  These grants are the DBA's, not the extension's:
-- pg_init_privs is set back to what a fresh install records, so that
-- pg_dump keeps them.
REVOKE ALL ON credits.ledger FROM PUBLIC;
DO $$
DECLARE
	g record;
BEGIN
	FOR g IN
		SELECT a.grantee, a.is_grantable
		  FROM pg_catalog.pg_class c,
			   LATERAL pg_catalog.aclexplode(c.relacl) a
		 WHERE c.oid = 'credits.ledger_entries'::pg_catalog.regclass
		   AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
	LOOP
		EXECUTE format('GRANT SELECT ON credits.ledger TO %s%s',
					   CASE WHEN g.grantee = 0 THEN 'PUBLIC'
							ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
					   CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
	-- and column by column (GRANT SELECT (entry_id, delta) ON credits.ledger)
	FOR g IN
		SELECT a.attname, x.grantee, x.is_grantable
		  FROM pg_catalog.pg_attribute a,
			   LATERAL pg_catalog.aclexplode(a.attacl) x
		 WHERE a.attrelid = 'credits.ledger_entries'::pg_catalog.regclass AND a.attnum > 0
		   AND NOT a.attisdropped AND x.privilege_type = 'SELECT'
	LOOP
		EXECUTE format('GRANT SELECT (%I) ON credits.ledger TO %s%s', g.attname,
					   CASE WHEN g.grantee = 0 THEN 'PUBLIC'
							ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
					   CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
END
$$;
UPDATE pg_catalog.pg_init_privs ip
   SET initprivs = pg_catalog.acldefault('r', c.relowner)
  FROM pg_catalog.pg_class c
 WHERE ip.objoid = 'credits.ledger'::pg_catalog.regclass
   AND ip.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND ip.objsubid = 0
   AND c.oid = ip.objoid;
-- a fresh install records no column privileges for the view
DELETE FROM pg_catalog.pg_init_privs ip
 WHERE ip.objoid = 'credits.ledger'::pg_catalog.regclass
   AND ip.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND ip.objsubid <> 0;

--------------------------------------------------------------------------------
-- Audit
--------------------------------------------------------------------------------

-- verify() reads credits.ledger by name, the view now; one check more.
-- jit off: on a ledger of tens of thousands of rows, compiling this query
-- costs several times what running it does.
CREATE OR REPLACE FUNCTION credits.verify()
	RETURNS TABLE (account_id bigint, problem text)
	LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	SET jit = off
AS $$
	-- 1. balance = sum(ledger.delta)
	SELECT a.account_id,
		   format('balance %s <> ledger sum %s', a.balance, coalesce(l.total, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT l.account_id, sum(l.delta) AS total
				   FROM credits.ledger l GROUP BY l.account_id) l USING (account_id)
	 WHERE a.balance IS DISTINCT FROM coalesce(l.total, 0)
	UNION ALL
	-- 2. each ledger row's balance_after continues the account's running sum
	SELECT l.account_id,
		   format('ledger entry %s: balance_after %s <> running sum %s',
				  l.entry_id, l.balance_after, l.running)
	  FROM (SELECT l.*, sum(l.delta) OVER (PARTITION BY l.account_id ORDER BY l.entry_id) AS running
			  FROM credits.ledger l) l
	 WHERE l.balance_after <> l.running
	UNION ALL
	-- 3. in_flight = sum of pending and processing recharges
	SELECT a.account_id,
		   format('in_flight %s <> pending and processing recharges %s', a.in_flight, coalesce(r.total, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT r.account_id, sum(r.credits) AS total FROM credits.recharges r
				  WHERE r.status IN ('pending', 'processing') GROUP BY r.account_id) r USING (account_id)
	 WHERE a.in_flight IS DISTINCT FROM coalesce(r.total, 0)
	UNION ALL
	-- 4. balance + in-flight recharges >= 0
	SELECT a.account_id, format('balance %s + in-flight %s is negative', a.balance, a.in_flight)
	  FROM credits.accounts a
	 WHERE a.balance::numeric + a.in_flight < 0
	UNION ALL
	-- 5. every batch has debit rows (one per grant drawn, and one for what it
	-- owed) totalling its cost
	SELECT b.account_id,
		   format('batch %s has %s debit rows totalling %s for cost %s',
				  b.batch_id, count(l.entry_id), coalesce(-sum(l.delta), 0), b.cost)
	  FROM credits.send_batches b
	  LEFT JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'debit'
	 GROUP BY b.batch_id, b.account_id, b.cost
	HAVING count(l.entry_id) = 0 OR -sum(l.delta) <> b.cost
	UNION ALL
	-- 6. refunds of the cost exactly when the batch failed
	SELECT b.account_id,
		   format('batch %s is %s with %s refund rows totalling %s',
				  b.batch_id, b.status, count(l.entry_id), coalesce(sum(l.delta), 0))
	  FROM credits.send_batches b
	  LEFT JOIN credits.ledger l ON l.batch_id = b.batch_id AND l.kind = 'refund'
	 GROUP BY b.batch_id, b.account_id, b.cost, b.status
	HAVING (b.status = 'failed') <> (count(l.entry_id) > 0)
		OR (b.status = 'failed' AND sum(l.delta) <> b.cost)
	UNION ALL
	-- 7. an awaiting batch points at a recharge still in flight
	SELECT b.account_id,
		   format('batch %s awaits recharge %s which is %s',
				  b.batch_id, b.recharge_id, coalesce(r.status, 'missing'))
	  FROM credits.send_batches b
	  LEFT JOIN credits.recharges r ON r.recharge_id = b.recharge_id
	 WHERE b.status = 'awaiting_credits'
	   AND (r.status IS NULL OR r.status NOT IN ('pending', 'processing') OR r.account_id <> b.account_id)
	UNION ALL
	-- 8. a succeeded recharge credited exactly once, and no other recharge credited
	SELECT r.account_id,
		   format('recharge %s is %s with %s credit rows totalling %s for %s credits',
				  r.recharge_id, r.status, count(l.entry_id), coalesce(sum(l.delta), 0), r.credits)
	  FROM credits.recharges r
	  LEFT JOIN credits.ledger l ON l.recharge_id = r.recharge_id AND l.kind = 'recharge'
	 GROUP BY r.recharge_id, r.account_id, r.status, r.credits
	HAVING (r.status = 'succeeded') <> (count(l.entry_id) = 1) OR count(l.entry_id) > 1
		OR (r.status = 'succeeded' AND sum(l.delta) <> r.credits)
	UNION ALL
	-- 9. no recharge above the cap it was opened under
	SELECT r.account_id,
		   format('recharge %s of %s credits exceeds max_credits %s', r.recharge_id, r.credits, r.max_credits)
	  FROM credits.recharges r
	 WHERE r.credits > r.max_credits
	UNION ALL
	-- 10. a claimed recharge's amount never changed after the claim
	SELECT r.account_id,
		   format('recharge %s was claimed at %s credits but is now %s', r.recharge_id, r.claimed_credits, r.credits)
	  FROM credits.recharges r
	 WHERE r.claimed_at IS NOT NULL AND r.claimed_credits IS DISTINCT FROM r.credits
	UNION ALL
	-- 11. every ledger row names a batch, recharge or grant that exists
	SELECT l.account_id,
		   format('ledger entry %s (%s) names %s that does not exist', l.entry_id, l.kind,
				  CASE WHEN l.kind IN ('debit', 'refund', 'repay')
						AND NOT EXISTS (SELECT FROM credits.send_batches b WHERE b.batch_id = l.batch_id)
					   THEN 'batch ' || l.batch_id
					   WHEN l.kind = 'recharge'
						AND NOT EXISTS (SELECT FROM credits.recharges r WHERE r.recharge_id = l.recharge_id)
					   THEN 'recharge ' || l.recharge_id
					   ELSE 'grant ' || l.grant_id END)
	  FROM credits.ledger l
	 WHERE (l.kind IN ('debit', 'refund', 'repay')
			AND NOT EXISTS (SELECT FROM credits.send_batches b WHERE b.batch_id = l.batch_id))
		OR (l.kind = 'recharge'
			AND NOT EXISTS (SELECT FROM credits.recharges r WHERE r.recharge_id = l.recharge_id))
		OR (l.grant_id IS NOT NULL
			AND NOT EXISTS (SELECT FROM credits.grants g WHERE g.grant_id = l.grant_id
							AND g.account_id = l.account_id))
	UNION ALL
	-- 13. a negative balance is backed by awaiting batches, so that any
	-- recharge in flight can still fail and be made good by refunds
	SELECT a.account_id,
		   format('balance %s is not backed by awaiting batches (%s)', a.balance, coalesce(w.total, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT b.account_id, sum(b.cost) AS total FROM credits.send_batches b
				  WHERE b.status = 'awaiting_credits' GROUP BY b.account_id) w USING (account_id)
	 WHERE a.balance < 0 AND a.balance + coalesce(w.total, 0) < 0
	UNION ALL
	-- 14. each debit names its batch's account
	SELECT l.account_id,
		   format('ledger entry %s debits batch %s of account %s', l.entry_id, b.batch_id, b.account_id)
	  FROM credits.ledger l
	  JOIN credits.send_batches b ON b.batch_id = l.batch_id
	 WHERE l.kind IN ('debit', 'refund', 'repay') AND l.account_id <> b.account_id
	UNION ALL
	-- 15. only a processing recharge holds a claim; a claimed one has a token
	SELECT r.account_id,
		   format('recharge %s is %s with claim token %s and lease %s',
				  r.recharge_id, r.status, coalesce(r.claim_token::text, 'null'),
				  coalesce(r.lease_expires_at::text, 'null'))
	  FROM credits.recharges r
	 WHERE (r.status = 'pending' AND (r.claim_token IS NOT NULL OR r.lease_expires_at IS NOT NULL))
		OR (r.status = 'processing' AND r.lease_expires_at IS NOT NULL AND r.claim_token IS NULL)
	UNION ALL
	-- 16. balance = sum(remaining) - owed, and an account owes only while
	-- all its grants are empty
	SELECT a.account_id,
		   format('balance %s <> grants'' remaining %s - owed %s', a.balance,
				  coalesce(g.remaining, 0), coalesce(o.owed, 0))
	  FROM credits.accounts a
	  LEFT JOIN (SELECT g.account_id, sum(g.remaining) AS remaining FROM credits.grants g
				  GROUP BY g.account_id) g USING (account_id)
	  LEFT JOIN (SELECT b.account_id, sum(b.owed) AS owed FROM credits.send_batches b
				  WHERE b.owed > 0 GROUP BY b.account_id) o USING (account_id)
	 WHERE a.balance <> coalesce(g.remaining, 0) - coalesce(o.owed, 0)
		OR (coalesce(g.remaining, 0) > 0 AND coalesce(o.owed, 0) > 0)
	UNION ALL
	-- 17. per grant: granted - drawn + refunded - expired = remaining, i.e.
	-- remaining = carried_over + the sum of its ledger rows; closed grants
	-- are empty; a grant past its expiry after an expiry pass is empty
	SELECT g.account_id,
		   format('grant %s: remaining %s <> carried over %s + ledger rows %s%s', g.grant_id,
				  g.remaining, g.carried_over, coalesce(l.total, 0),
				  CASE WHEN g.closed_at IS NOT NULL AND g.remaining <> 0 THEN ' (closed)' ELSE '' END)
	  FROM credits.grants g
	  LEFT JOIN (SELECT l.grant_id, sum(l.delta) AS total FROM credits.ledger l
				  WHERE l.grant_id IS NOT NULL GROUP BY l.grant_id) l USING (grant_id)
	 WHERE g.remaining <> g.carried_over + coalesce(l.total, 0)
		OR (g.closed_at IS NOT NULL AND g.remaining <> 0)
	UNION ALL
	-- 20. each grant is well formed (the constraints grants does not carry,
	-- for speed: see its CREATE TABLE)
	SELECT g.account_id,
		   format('grant %s (%s) is malformed: credits %s, remaining %s, carried over %s, priority %s, recharge %s, period %s, closed %s',
				  g.grant_id, g.source, g.credits, g.remaining, g.carried_over, g.priority,
				  coalesce(g.recharge_id::text, 'none'), coalesce(g.period_start::text, 'none'),
				  coalesce(g.closed_at::text, 'no'))
	  FROM credits.grants g
	 WHERE g.source NOT IN ('signup', 'plan', 'purchase', 'recharge', 'promo')
		OR g.credits <= 0 OR g.remaining > g.credits
		OR g.carried_over < 0 OR g.carried_over > g.credits
		OR g.priority NOT BETWEEN 0 AND 100
		OR (g.source = 'recharge') <> (g.recharge_id IS NOT NULL)
		OR (g.source = 'plan') <> (g.period_start IS NOT NULL)
		OR (g.recharge_id IS NOT NULL
			AND (SELECT count(*) FROM credits.grants o WHERE o.recharge_id = g.recharge_id) > 1)
	UNION ALL
	-- 18. what a batch owes is its grantless debits net of repayments, and
	-- only an awaiting or ready batch owes
	SELECT b.account_id,
		   format('batch %s (%s) owes %s but its grantless rows total %s', b.batch_id, b.status,
				  b.owed, coalesce(-l.total, 0))
	  FROM credits.send_batches b
	  LEFT JOIN (SELECT l.batch_id, sum(l.delta) AS total FROM credits.ledger l
				  WHERE l.grant_id IS NULL AND l.kind IN ('debit', 'repay', 'refund')
				  GROUP BY l.batch_id) l USING (batch_id)
	 WHERE b.owed > 0 AND (b.status = 'failed' OR b.owed > coalesce(-l.total, 0) OR b.owed > b.cost)
	UNION ALL
	-- 19. plan periods: an account's plan grants never overlap (one per
	-- period; periods a plan missed are gaps), and a plan's current period
	-- is a whole period of its anchor, not older than its newest grant
	SELECT g.account_id,
		   format('plan grants %s and %s overlap', g.grant_id, o.grant_id)
	  FROM credits.grants g
	  JOIN credits.grants o ON o.account_id = g.account_id AND o.source = 'plan'
		   AND o.grant_id > g.grant_id
		   AND o.period_start < g.expires_at AND g.period_start < o.expires_at
	 WHERE g.source = 'plan'
	UNION ALL
	SELECT p.account_id,
		   format('plan period from %s to %s is not a period anchored at %s, or is older than its newest plan grant',
				  p.period_start, p.period_end, p.anchored_at)
	  FROM credits.plans p
	 WHERE (credits._plan_period(p.anchored_at, p.period_start)).period_start <> p.period_start
		OR (credits._plan_period(p.anchored_at, p.period_start)).period_end <> p.period_end
		OR EXISTS (SELECT FROM credits.grants g
					WHERE g.account_id = p.account_id AND g.source = 'plan'
					  AND g.period_start > p.period_start)
	UNION ALL
	-- 21. every entry_id is one entry's (no index holds the batches' entries)
	SELECT min(l.account_id),
		   format('ledger entry %s is %s entries (%s)', l.entry_id, count(*),
				  string_agg(l.kind || coalesce(' of batch ' || l.batch_id, ''), ', '
							 ORDER BY l.kind, l.batch_id))
	  FROM credits.ledger l
	 GROUP BY l.entry_id
	HAVING count(*) > 1
	UNION ALL
	-- 22. a batch's debit entry is whole (or absent: debited before 0.3.0)
	SELECT b.account_id,
		   format('batch %s has a partial debit entry: entry_id %s, delta %s, balance after %s, grant %s, recharge %s',
				  b.batch_id, coalesce(b.entry_id::text, 'null'), coalesce(b.entry_delta::text, 'null'),
				  coalesce(b.entry_balance_after::text, 'null'), coalesce(b.entry_grant_id::text, 'null'),
				  coalesce(b.entry_recharge_id::text, 'null'))
	  FROM credits.send_batches b
	 WHERE (b.entry_id IS NULL) <> (b.entry_delta IS NULL)
		OR (b.entry_id IS NULL) <> (b.entry_balance_after IS NULL)
		OR (b.entry_id IS NULL AND (b.entry_grant_id IS NOT NULL OR b.entry_recharge_id IS NOT NULL))
	UNION ALL
	-- 12. every account with ledger rows exists
	SELECT l.account_id, 'ledger rows for an account that does not exist'
	  FROM credits.ledger l
	 WHERE NOT EXISTS (SELECT FROM credits.accounts a WHERE a.account_id = l.account_id)
	 GROUP BY l.account_id
	ORDER BY 1, 2
$$;
COMMENT ON FUNCTION credits.verify() IS
	'Checks every invariant of the extension, grants and plans included; returns one row per problem, none on a healthy database.';

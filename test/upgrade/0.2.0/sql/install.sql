--
-- install: what CREATE EXTENSION credits puts in place
--
\set SHOW_CONTEXT never
SELECT extversion FROM pg_extension WHERE extname = 'credits';

-- Every object of the extension, by kind and name.
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'credits')
   AND deptype = 'e'
 ORDER BY 1;

-- The shipped price list.
SELECT * FROM credits.prices ORDER BY channel;

-- Nothing is open to PUBLIC.
SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE') AS public_can
  FROM pg_class c WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'S')
 ORDER BY 1;
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_can
  FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace
 ORDER BY p.oid::regprocedure::text;

-- Every SECURITY DEFINER function pins its search_path.
SELECT p.oid::regprocedure AS function, p.proconfig
  FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef
 ORDER BY p.oid::regprocedure::text;

-- A helper for the suites that follow: an account's totals in one row, to
-- show that a failed statement left nothing behind.
CREATE FUNCTION regress_totals(acct bigint)
RETURNS TABLE (balance bigint, in_flight bigint, batches bigint, ledger_rows bigint,
			   recharges bigint, recharge_credits numeric)
LANGUAGE sql AS $$
	SELECT a.balance, a.in_flight,
		   (SELECT count(*) FROM credits.send_batches b WHERE b.account_id = acct),
		   (SELECT count(*) FROM credits.ledger l WHERE l.account_id = acct),
		   (SELECT count(*) FROM credits.recharges r WHERE r.account_id = acct),
		   (SELECT coalesce(sum(credits), 0) FROM credits.recharges r WHERE r.account_id = acct)
	  FROM credits.accounts a WHERE a.account_id = acct
$$;

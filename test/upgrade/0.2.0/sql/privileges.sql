--
-- privileges: nothing that moves credits is open to PUBLIC; the documented
-- GRANTs give each kind of user exactly what it needs (README, Privileges)
--
\set SHOW_CONTEXT never
CREATE ROLE regress_app;
CREATE ROLE regress_worker;
CREATE ROLE regress_admin;
CREATE ROLE regress_reporting;
CREATE ROLE regress_nobody;

-- application: inserts batches, reads its rows
GRANT USAGE ON SCHEMA credits TO regress_app;
GRANT SELECT, INSERT (account_id, messages, channel, idempotency_key) ON credits.send_batches TO regress_app;
GRANT SELECT ON credits.accounts, credits.prices, credits.recharges TO regress_app;
-- payment worker
GRANT USAGE ON SCHEMA credits TO regress_worker;
GRANT EXECUTE ON FUNCTION credits.claim_recharges(integer), credits.complete_recharge(bigint, text),
	credits.fail_recharge(bigint, text) TO regress_worker;
GRANT SELECT ON credits.recharges TO regress_worker;
-- policy admin
GRANT USAGE ON SCHEMA credits TO regress_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON credits.prices TO regress_admin;
GRANT EXECUTE ON FUNCTION credits.open_account(bigint, bigint), credits.add_credits(bigint, bigint, text),
	credits.enable_auto_recharge(bigint, bigint, bigint, bigint, bigint), credits.disable_auto_recharge(bigint),
	credits.expire_recharges(),
	credits.verify() TO regress_admin;
-- reporting
GRANT USAGE ON SCHEMA credits TO regress_reporting;
GRANT SELECT ON ALL TABLES IN SCHEMA credits TO regress_reporting;

SET ROLE regress_admin;
SELECT balance FROM credits.open_account(600, 100);
SELECT enabled FROM credits.enable_auto_recharge(600, 0, 500);
INSERT INTO credits.prices VALUES ('push', 2);
RESET ROLE;

-- The application inserts batches; the debit runs as the table owner.
SET ROLE regress_app;
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (600, 30, 'push')
RETURNING cost, status;
INSERT INTO credits.send_batches (account_id, messages) VALUES (600, 100)
RETURNING cost, status;
-- ... but cannot set what the extension manages, nor change anything.
INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (600, 1, 0);
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.send_batches SET status = 'ready';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM credits.send_batches;
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.accounts SET balance = 1000000;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.ledger (account_id, delta, balance_after, kind) VALUES (600, 1000, 1000, 'grant');
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.recharges SET credits = 1;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.auto_recharge VALUES (600, false, 0, 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE credits.prices SET credits_per_message = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT credits.add_credits(600, 1000);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.disable_auto_recharge(600);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.claim_recharges(1);
\echo :LAST_ERROR_SQLSTATE
SELECT credits._cancel_recharge(1, 'failed');
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE credits.send_batches DISABLE TRIGGER credits_debit;
\echo :LAST_ERROR_SQLSTATE
SET session_replication_role = replica;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- A role with no grants cannot even see the schema's contents.
SET ROLE regress_nobody;
SELECT count(*) FROM credits.send_batches;
\echo :LAST_ERROR_SQLSTATE
SELECT credits.open_account(601);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- Reporting reads everything, writes nothing.
SET ROLE regress_reporting;
SELECT balance, in_flight FROM credits.accounts WHERE account_id = 600;
SELECT credits, status FROM credits.recharges WHERE account_id = 600;
INSERT INTO credits.send_batches (account_id, messages) VALUES (600, 1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- A search_path attack: the application puts a hostile schema, with its
-- own "=" and now(), before pg_catalog.  Neither the trigger's SQL nor any
-- SECURITY DEFINER function may call them.  A new connection, so that the
-- trigger prepares its plans under the hostile search_path.
CREATE SCHEMA regress_evil AUTHORIZATION regress_app;
\c -
\set SHOW_CONTEXT never
SET ROLE regress_app;
CREATE FUNCTION regress_evil.eq8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
	$$ BEGIN RAISE EXCEPTION 'hostile bigint = called'; END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_evil.eq8);
CREATE FUNCTION regress_evil.eqt(text, text) RETURNS boolean LANGUAGE plpgsql AS
	$$ BEGIN RAISE EXCEPTION 'hostile text = called'; END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.eqt);
CREATE FUNCTION regress_evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
	$$ BEGIN RAISE EXCEPTION 'hostile now() called'; END $$;
SET search_path = regress_evil, pg_catalog, public;
-- the operator really is picked up by the application's own queries ...
SELECT 1::bigint = 1::bigint;
\echo :LAST_ERROR_SQLSTATE
-- ... but never by the extension's.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (600, 50, 'evil')
ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING cost, status;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (600, 50, 'evil')
ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING cost, status;
INSERT INTO credits.send_batches (account_id, messages) VALUES (600, 400) RETURNING cost, status;
RESET ROLE;
SET ROLE regress_worker;
SELECT account_id, credits, status FROM credits.claim_recharges(100) WHERE account_id = 600;
SELECT credits, status FROM credits.complete_recharge(
	(SELECT min(recharge_id) FROM credits.recharges WHERE account_id = 600), 'ref-600');
SELECT credits, status FROM credits.fail_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 600), 'card declined');
RESET ROLE;
RESET search_path;
SELECT cost, status FROM credits.send_batches WHERE account_id = 600 ORDER BY batch_id;
SELECT * FROM regress_totals(600);

DROP SCHEMA regress_evil CASCADE;
DROP OWNED BY regress_app, regress_worker, regress_admin, regress_reporting, regress_nobody;
DROP ROLE regress_app, regress_worker, regress_admin, regress_reporting, regress_nobody;
SELECT * FROM credits.verify();

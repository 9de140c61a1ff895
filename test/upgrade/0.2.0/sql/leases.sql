--
-- leases: claim tokens and lease expiry, release_recharge, payment_ref
-- rules and the recharge_queue view (0.1.1)
--
-- Settle whatever earlier suites left pending, so claims below see only ours
-- (they are claimed with the default lease of 15 minutes, which does not run
-- out during this suite).
\set SHOW_CONTEXT never
-- Ids in the messages below do not depend on the suites before this one.
SELECT setval('credits.send_batches_batch_id_seq', 1100000, false) AS first_batch_id,
	   setval('credits.recharges_recharge_id_seq', 1100000, false) AS first_recharge_id;
SELECT count(*) >= 0 AS cleared FROM credits.claim_recharges(1000);
SHOW credits.claim_lease;

-- The worker's grants as the README gives them.
CREATE ROLE regress_payment;
GRANT USAGE ON SCHEMA credits TO regress_payment;
GRANT EXECUTE ON FUNCTION credits.claim_recharges(integer),
	credits.complete_recharge(bigint, text, uuid), credits.fail_recharge(bigint, text, uuid),
	credits.release_recharge(bigint, uuid) TO regress_payment;
GRANT SELECT ON credits.recharges, credits.recharge_queue TO regress_payment;

--
-- A claim hands out a token and a lease.
--
SELECT balance FROM credits.open_account(1100, 0);
SELECT enabled FROM credits.enable_auto_recharge(1100, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1100, 100);
SELECT recharge_id AS r1 FROM credits.recharges WHERE account_id = 1100 \gset
SELECT status, claim_token IS NULL AS no_token, lease_expires_at IS NULL AS no_lease, claim_count
  FROM credits.recharges WHERE recharge_id = :r1;
SET ROLE regress_payment;
SELECT recharge_id = :r1 AS r1, credits, status, claim_token IS NOT NULL AS has_token,
	   lease_expires_at = claimed_at + interval '15 minutes' AS lease_15_min, claim_count
  FROM credits.claim_recharges(1);
RESET ROLE;
SELECT claim_token AS t1 FROM credits.recharges WHERE recharge_id = :r1 \gset
SELECT * FROM regress_totals(1100);

-- A wrong token settles nothing: MC020, and nothing changed.
SET ROLE regress_payment;
SELECT credits.complete_recharge(:r1, 'ref-1100', gen_random_uuid());
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r1, 'declined', gen_random_uuid());
\echo :LAST_ERROR_SQLSTATE
SELECT credits.release_recharge(:r1, gen_random_uuid());
\echo :LAST_ERROR_SQLSTATE
-- A NULL token is no way around the check.
SELECT credits.complete_recharge(:r1, 'ref-1100', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r1, 'declined', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.release_recharge(:r1, NULL);
\echo :LAST_ERROR_SQLSTATE
-- The worker has no token-less forms: those are for operators (else a
-- worker could release or settle another worker's claim).
SELECT credits.complete_recharge(:r1, 'ref-1100');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r1, 'declined');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.release_recharge(:r1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT status, claim_token = :'t1' AS same_token, payment_ref, claim_count
  FROM credits.recharges WHERE recharge_id = :r1;
SELECT payment_failures FROM credits.auto_recharge WHERE account_id = 1100;
SELECT * FROM regress_totals(1100);

-- The right token settles it.
SET ROLE regress_payment;
SELECT credits, status, payment_ref FROM credits.complete_recharge(:r1, 'ref-1100', :'t1');
-- The same payment_ref again is a no-op, whatever the token.
SELECT credits, status, payment_ref FROM credits.complete_recharge(:r1, 'ref-1100', gen_random_uuid());
-- A settled recharge cannot be released.
SELECT credits.release_recharge(:r1, :'t1');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT * FROM regress_totals(1100);
SELECT cost, status FROM credits.send_batches WHERE account_id = 1100;

-- fail_recharge with the right token: a payment failure is counted.
INSERT INTO credits.send_batches (account_id, messages) VALUES (1100, 10);
SELECT recharge_id AS r1b, claim_token AS t1b FROM credits.claim_recharges(1) \gset
SELECT recharge_id = :r1b AS r1b, status, failure_reason
  FROM credits.fail_recharge(:r1b, 'card declined', :'t1b');
SELECT payment_failures FROM credits.auto_recharge WHERE account_id = 1100;
SELECT cost, status FROM credits.send_batches WHERE account_id = 1100 ORDER BY batch_id;

--
-- The 2-argument forms still work (operators; no token check).
--
SELECT balance FROM credits.open_account(1101, 0);
SELECT enabled FROM credits.enable_auto_recharge(1101, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1101, 20), (1101, 30);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT credits, status, payment_ref FROM credits.complete_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 1101), 'ref-1101');
INSERT INTO credits.send_batches (account_id, messages) VALUES (1101, 5);
SELECT count(*) FROM credits.claim_recharges(10);
SELECT credits, status, failure_reason FROM credits.fail_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 1101), 'operator: card stolen');
SELECT * FROM regress_totals(1101);

--
-- An expired lease: another claim takes the same recharge with a new token,
-- and the old token is refused.
--
SET credits.claim_lease = '1s';
SHOW credits.claim_lease;
SELECT balance FROM credits.open_account(1102, 0);
SELECT enabled FROM credits.enable_auto_recharge(1102, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1102, 40);
SELECT recharge_id AS r2, claim_token AS t2 FROM credits.claim_recharges(1) \gset
SELECT lease_expires_at = claimed_at + interval '1 second' AS lease_1s, claim_count
  FROM credits.recharges WHERE recharge_id = :r2;
-- Not expired yet: nothing to claim.
SELECT count(*) FROM credits.claim_recharges(10);
SELECT pg_sleep(1.2);
RESET credits.claim_lease;
SELECT recharge_id = :r2 AS same_recharge, claim_token <> :'t2' AS new_token, credits, status,
	   lease_expires_at = claimed_at + interval '15 minutes' AS lease_15_min, claim_count
  FROM credits.claim_recharges(10);
SELECT claim_token AS t2new FROM credits.recharges WHERE recharge_id = :r2 \gset
SELECT * FROM regress_totals(1102);
-- The first worker comes back with its old token: refused, nothing changed.
SELECT credits.complete_recharge(:r2, 'ref-1102-old', :'t2');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r2, 'declined', :'t2');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.release_recharge(:r2, :'t2');
\echo :LAST_ERROR_SQLSTATE
SELECT status, claim_token = :'t2new' AS current_token, payment_ref, claim_count
  FROM credits.recharges WHERE recharge_id = :r2;
SELECT * FROM regress_totals(1102);
-- The second worker completes it.
SELECT credits, status, payment_ref FROM credits.complete_recharge(:r2, 'ref-1102', :'t2new');
SELECT * FROM regress_totals(1102);

-- claim_lease is for superusers, and at least a second.
SET credits.claim_lease = '0';
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_payment;
SET credits.claim_lease = '1h';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SHOW credits.claim_lease;

--
-- release_recharge: processing -> pending, no payment failure counted.
--
SELECT balance FROM credits.open_account(1103, 0);
SELECT enabled FROM credits.enable_auto_recharge(1103, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1103, 50);
SELECT recharge_id AS r3, claim_token AS t3 FROM credits.claim_recharges(1) \gset
SELECT * FROM regress_totals(1103);
SET ROLE regress_payment;
SELECT recharge_id = :r3 AS r3, credits, status, claim_token, lease_expires_at, claim_count
  FROM credits.release_recharge(:r3, :'t3');
RESET ROLE;
SELECT payment_failures FROM credits.auto_recharge WHERE account_id = 1103;
SELECT cost, status, recharge_id = :r3 AS awaits_r3 FROM credits.send_batches WHERE account_id = 1103;
SELECT * FROM regress_totals(1103);
-- A pending recharge comes back unchanged.
SELECT recharge_id = :r3 AS r3, credits, status, claim_token, claim_count
  FROM credits.release_recharge(:r3);
-- The token of the released claim is no longer current: MC020 ("or it was
-- released"), not MC015, whose hint would send the worker to claim it and
-- charge again.
SELECT credits.complete_recharge(:r3, 'ref-1103-old', :'t3');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.fail_recharge(:r3, 'declined', :'t3');
\echo :LAST_ERROR_SQLSTATE
-- Releasing it again is a no-op that returns it unchanged, with or without
-- the old token (nothing is held, nothing changes).
SELECT recharge_id = :r3 AS r3, credits, status, claim_token, claim_count
  FROM credits.release_recharge(:r3, :'t3');
-- Unknown recharge; NULL recharge_id.
SELECT credits.release_recharge(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.release_recharge(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(1103);

-- A released recharge never grows: a new batch that needs credits opens a
-- new recharge.  (A never-claimed pending recharge would have grown.)
INSERT INTO credits.send_batches (account_id, messages) VALUES (1103, 25)
RETURNING status, recharge_id = :r3 AS awaits_r3;
SELECT recharge_id = :r3 AS r3, credits, status, claim_count
  FROM credits.recharges WHERE account_id = 1103 ORDER BY recharge_id;
SELECT * FROM regress_totals(1103);

-- disable_auto_recharge cancels the never-claimed recharge only.
SELECT enabled FROM credits.disable_auto_recharge(1103);
SELECT recharge_id = :r3 AS r3, credits, status, failure_reason
  FROM credits.recharges WHERE account_id = 1103 ORDER BY recharge_id;
SELECT cost, status FROM credits.send_batches WHERE account_id = 1103 ORDER BY batch_id;
SELECT * FROM regress_totals(1103);

-- expire_recharges cancels an old never-claimed recharge, not a released one.
SELECT balance FROM credits.open_account(1104, 0);
SELECT enabled FROM credits.enable_auto_recharge(1104, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1104, 60);
SELECT pg_sleep(1.2);
SET credits.recharge_expiry = 1;
SELECT credits.expire_recharges();
RESET credits.recharge_expiry;
SELECT account_id, recharge_id = :r3 AS r3, credits, status, failure_reason
  FROM credits.recharges WHERE account_id IN (1103, 1104) ORDER BY recharge_id;

-- Re-claimed after the release: the same recharge and amount, a new token.
SELECT recharge_id = :r3 AS r3, credits, status, claim_token <> :'t3' AS new_token, claim_count
  FROM credits.claim_recharges(10);
SELECT claim_token AS t3new FROM credits.recharges WHERE recharge_id = :r3 \gset
-- An operator may release a claim without its token.
SELECT status, claim_token FROM credits.release_recharge(:r3);
SELECT claim_token AS t3new FROM credits.claim_recharges(10) \gset
SELECT claim_count FROM credits.recharges WHERE recharge_id = :r3;

--
-- payment_ref: not empty, no blanks around it, at most 255 bytes.  Each
-- refusal is MC021 and changes nothing.
--
SELECT * FROM regress_totals(1103);
SELECT credits.complete_recharge(:r3, '', :'t3new');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(:r3, '   ', :'t3new');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(:r3, ' x', :'t3new');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(:r3, 'x ', :'t3new');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(:r3, E'x\n', :'t3new');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.complete_recharge(:r3, E'\tx', :'t3new');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT credits.complete_recharge(:r3, repeat('a', 256), :'t3new');
\echo :LAST_ERROR_SQLSTATE
-- 128 characters but 256 bytes
SELECT octet_length(repeat('é', 128)) AS bytes, length(repeat('é', 128)) AS characters;
SELECT credits.complete_recharge(:r3, repeat('é', 128), :'t3new');
\echo :LAST_ERROR_SQLSTATE
-- The 2-argument form checks it too.
SELECT credits.complete_recharge(:r3, repeat('a', 256));
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT status, payment_ref, claim_token = :'t3new' AS same_token
  FROM credits.recharges WHERE recharge_id = :r3;
SELECT * FROM regress_totals(1103);
-- 255 bytes, some of them multibyte, is accepted.
SELECT octet_length('a' || repeat('é', 127)) AS bytes;
SELECT status, payment_ref = 'a' || repeat('é', 127) AS stored
  FROM credits.complete_recharge(:r3, 'a' || repeat('é', 127), :'t3new');
SELECT * FROM regress_totals(1103);
-- and 255 single-byte characters
INSERT INTO credits.send_batches (account_id, messages) VALUES (1104, 1);
SELECT recharge_id AS r4, claim_token AS t4 FROM credits.claim_recharges(1) \gset
SELECT status, payment_ref = repeat('b', 255) AS stored
  FROM credits.complete_recharge(:r4, repeat('b', 255), :'t4');
SELECT cost, status FROM credits.send_batches WHERE account_id = 1104 ORDER BY batch_id;

-- Nor does the payment-failure turn-off cancel a released recharge.
SELECT balance FROM credits.open_account(1107, 0);
SELECT enabled FROM credits.enable_auto_recharge(1107, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages) VALUES (1107, 10);
SELECT recharge_id AS r5, claim_token AS t5 FROM credits.claim_recharges(1) \gset
SELECT status FROM credits.release_recharge(:r5, :'t5');
INSERT INTO credits.send_batches (account_id, messages) VALUES (1107, 5);
-- a worker claims both; the released one is released again, the other fails
-- and (max_payment_failures 1) turns auto-recharge off
SELECT count(*) FROM credits.claim_recharges(2);
SELECT status FROM credits.release_recharge(:r5);
SET credits.max_payment_failures = 1;
SELECT status FROM credits.fail_recharge(
	(SELECT max(recharge_id) FROM credits.recharges WHERE account_id = 1107), 'declined');
RESET credits.max_payment_failures;
SELECT enabled, disabled_reason FROM credits.auto_recharge WHERE account_id = 1107;
SELECT recharge_id = :r5 AS r5, credits, status, claim_count, failure_reason
  FROM credits.recharges WHERE account_id = 1107 ORDER BY recharge_id;
SELECT cost, status FROM credits.send_batches WHERE account_id = 1107 ORDER BY batch_id;
-- it waits for a worker, who settles it
SELECT claim_token AS t5 FROM credits.claim_recharges(1) \gset
SELECT status FROM credits.complete_recharge(:r5, 'ref-1107', :'t5');
SELECT * FROM regress_totals(1107);

--
-- credits.recharge_queue: one row, counted against what was there before.
-- Account 1105 (max_payment_failures 1 for it below) gets: two pending
-- recharges (one of them released), one processing with an expired lease,
-- one processing with a live lease, one failed (which turns its
-- auto-recharge off), one succeeded.
--
SELECT count(*) FROM credits.recharge_queue;
CREATE TEMP TABLE q0 AS SELECT * FROM credits.recharge_queue;
GRANT SELECT ON q0 TO regress_payment;
SELECT balance FROM credits.open_account(1105, 0);
SELECT balance FROM credits.open_account(1106, 0);
SELECT enabled FROM credits.enable_auto_recharge(1105, 0, 1000);
SELECT enabled FROM credits.enable_auto_recharge(1106, 0, 1000);
-- succeeded
INSERT INTO credits.send_batches (account_id, messages) VALUES (1105, 1);
SELECT recharge_id AS q1, claim_token AS qt1 FROM credits.claim_recharges(1) \gset
SELECT status FROM credits.complete_recharge(:q1, 'ref-q1', :'qt1');
-- failed, with auto-recharge turned off by it
INSERT INTO credits.send_batches (account_id, messages) VALUES (1106, 1);
SELECT recharge_id AS q2, claim_token AS qt2 FROM credits.claim_recharges(1) \gset
SET credits.max_payment_failures = 1;
SELECT status FROM credits.fail_recharge(:q2, 'declined', :'qt2');
RESET credits.max_payment_failures;
SELECT enabled, disabled_reason FROM credits.auto_recharge WHERE account_id = 1106;
-- processing, lease expired
SET credits.claim_lease = '1s';
INSERT INTO credits.send_batches (account_id, messages) VALUES (1105, 2);
SELECT count(*) FROM credits.claim_recharges(1);
RESET credits.claim_lease;
-- processing, lease live
INSERT INTO credits.send_batches (account_id, messages) VALUES (1105, 3);
SELECT count(*) FROM credits.claim_recharges(1);
-- pending, released
INSERT INTO credits.send_batches (account_id, messages) VALUES (1105, 4);
SELECT recharge_id AS q5, claim_token AS qt5 FROM credits.claim_recharges(1) \gset
SELECT status FROM credits.release_recharge(:q5, :'qt5');
-- pending, never claimed
INSERT INTO credits.send_batches (account_id, messages) VALUES (1105, 5);
SELECT credits, status, claim_count, lease_expires_at < now() + interval '2 seconds' AS short_lease
  FROM credits.recharges WHERE account_id = 1105 ORDER BY recharge_id;
SELECT pg_sleep(1.2);
SET ROLE regress_payment;
SELECT q.pending - q0.pending AS pending,
	   q.processing - q0.processing AS processing,
	   q.expired_leases - q0.expired_leases AS expired_leases,
	   q.failed_last_hour - q0.failed_last_hour AS failed_last_hour,
	   q.succeeded_last_hour - q0.succeeded_last_hour AS succeeded_last_hour,
	   q.switched_off_today - q0.switched_off_today AS switched_off_today,
	   q.oldest_pending_age >= interval '1 second' AS pending_age_known,
	   q.oldest_processing_age >= interval '1 second' AS processing_age_known,
	   q.next_lease_expiry BETWEEN now() AND now() + interval '15 minutes' AS next_expiry_ahead
  FROM credits.recharge_queue q, q0;
RESET ROLE;
-- The expired lease is taken over by the next claim.
SELECT credits, status, claim_count FROM credits.claim_recharges(1);

DROP TABLE q0;
DROP OWNED BY regress_payment;
DROP ROLE regress_payment;
SELECT * FROM credits.verify();

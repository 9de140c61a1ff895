--
-- idempotency: a retried INSERT ... ON CONFLICT DO NOTHING never debits twice
--
\set SHOW_CONTEXT never
SELECT balance FROM credits.open_account(400, 100);

INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (400, 10, 'k1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING
RETURNING cost, status;
-- The retry: BEFORE triggers fire for it, but nothing is debited.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (400, 10, 'k1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING
RETURNING cost, status;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (400, 10, 'k1')
ON CONFLICT DO NOTHING
RETURNING cost, status;
SELECT * FROM regress_totals(400);

-- The same key twice in one statement: the first row is debited, the second skipped.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key)
VALUES (400, 5, 'k2'), (400, 5, 'k2'), (400, 5, 'k3')
ON CONFLICT (account_id, idempotency_key) DO NOTHING
RETURNING messages, idempotency_key, cost;
SELECT * FROM regress_totals(400);

-- A retry whose batch would not even be affordable any more is still a no-op.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (400, 1000, 'k1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING;
SELECT * FROM regress_totals(400);

-- Without ON CONFLICT a duplicate key is a unique violation; nothing written.
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (400, 10, 'k1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(400);

-- ON CONFLICT DO UPDATE that changes nothing returns the stored batch.
INSERT INTO credits.send_batches AS b (account_id, messages, idempotency_key) VALUES (400, 10, 'k1')
ON CONFLICT (account_id, idempotency_key) DO UPDATE SET idempotency_key = excluded.idempotency_key
RETURNING b.messages, b.cost, b.status;
-- ... but it cannot change what was debited.
INSERT INTO credits.send_batches AS b (account_id, messages, idempotency_key) VALUES (400, 99, 'k1')
ON CONFLICT (account_id, idempotency_key) DO UPDATE SET messages = excluded.messages;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(400);

-- Keys are per account, and NULL keys never conflict.
SELECT balance FROM credits.open_account(401, 100);
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (401, 10, 'k1')
ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING cost;
INSERT INTO credits.send_batches (account_id, messages) VALUES (401, 1), (401, 1)
ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING cost;
SELECT * FROM regress_totals(401);

-- With auto-recharge on, a skipped retry opens no recharge either.
SELECT enabled FROM credits.enable_auto_recharge(401, 0, 1000);
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (401, 200, 'big')
ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING status;
SELECT * FROM regress_totals(401);
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (401, 200, 'big')
ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING status;
SELECT * FROM regress_totals(401);

-- A key first sent in a rolled-back transaction can be sent again.
BEGIN;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (400, 1, 'k9');
ROLLBACK;
INSERT INTO credits.send_batches (account_id, messages, idempotency_key) VALUES (400, 1, 'k9')
ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING cost;
SELECT * FROM regress_totals(400);
SELECT * FROM credits.verify();

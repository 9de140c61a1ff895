--
-- debit: every row that reaches send_batches is priced and debited
--
\set SHOW_CONTEXT never
SELECT balance FROM credits.open_account(100, 1000);
INSERT INTO credits.prices VALUES ('sms', 7);

-- Enough credits: debit, status ready, one debit ledger row naming the batch.
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, 300)
RETURNING account_id, messages, channel, cost, status, recharge_id;
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (100, 10, 'sms')
RETURNING cost, status;
SELECT l.delta, l.balance_after, l.kind, l.batch_id = b.batch_id AS names_batch
  FROM credits.ledger l JOIN credits.send_batches b ON b.batch_id = l.batch_id
 WHERE l.account_id = 100 ORDER BY l.entry_id;

-- Multi-row INSERT, INSERT ... SELECT and COPY are debited row by row.
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, 1), (100, 2), (100, 3);
INSERT INTO credits.send_batches (account_id, messages, channel)
SELECT 100, g, CASE WHEN g % 2 = 0 THEN 'sms' ELSE 'email' END FROM generate_series(1, 4) g;
COPY credits.send_batches (account_id, messages, channel) FROM stdin;
100	5	email
100	1	sms
\.
SELECT messages, channel, cost, status FROM credits.send_batches WHERE account_id = 100 ORDER BY batch_id;
SELECT * FROM regress_totals(100);

-- Spending exactly the balance is fine; the balance never goes below zero
-- with auto-recharge off.
SELECT balance AS before FROM credits.accounts WHERE account_id = 100 \gset
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, :before - 1) RETURNING cost, status;
SELECT balance FROM credits.accounts WHERE account_id = 100;

-- Errors, each followed by proof that nothing was written.
-- insufficient credits (auto-recharge off)
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, 2);
\echo :LAST_ERROR_SQLSTATE
-- a multi-row INSERT whose last row fails leaves none of its rows
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, 1), (100, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(100);
-- unknown account
INSERT INTO credits.send_batches (account_id, messages) VALUES (999, 1);
\echo :LAST_ERROR_SQLSTATE
-- unknown channel
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (100, 1, 'pigeon');
\echo :LAST_ERROR_SQLSTATE
-- messages NULL, zero, negative
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, NULL);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, 0);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages) VALUES (100, -5);
\echo :LAST_ERROR_SQLSTATE
-- account_id and channel NULL
INSERT INTO credits.send_batches (account_id, messages) VALUES (NULL, 1);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (100, 1, NULL);
\echo :LAST_ERROR_SQLSTATE
-- cost overflow: 2147483647 messages at 2147483647 credits fits; the balance
-- check then refuses it.  A price list cannot make it overflow a bigint, but
-- the balance can: see below.
INSERT INTO credits.prices VALUES ('max', 2147483647);
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (100, 2147483647, 'max');
\echo :LAST_ERROR_SQLSTATE
-- managed columns set by the application
INSERT INTO credits.send_batches (account_id, messages, cost) VALUES (100, 1, 0);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages, status) VALUES (100, 1, 'ready');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO credits.send_batches (account_id, messages, recharge_id) VALUES (100, 1, 1);
\echo :LAST_ERROR_SQLSTATE
-- COPY of a bad row
COPY credits.send_batches (account_id, messages) FROM stdin;
100	-1
\.
SELECT * FROM regress_totals(100);

-- Balance overflow: an account near the top of bigint cannot be granted more.
SELECT balance FROM credits.open_account(101, 9223372036854775000);
SELECT credits.add_credits(101, 1000);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM regress_totals(101);

-- Accounts and grants: errors of open_account and add_credits.
SELECT credits.open_account(100);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.open_account(102, -1);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.open_account(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.add_credits(100, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.add_credits(100, -10);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.add_credits(100, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.add_credits(999, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT credits.add_credits(100, 500, 'goodwill');
SELECT delta, balance_after, kind, note FROM credits.ledger
 WHERE account_id = 100 ORDER BY entry_id DESC LIMIT 1;
SELECT account_id, balance FROM credits.open_account(102);
SELECT delta, balance_after, kind FROM credits.ledger WHERE account_id = 102;

-- A price change applies to the next batch.
UPDATE credits.prices SET credits_per_message = 3 WHERE channel = 'sms';
INSERT INTO credits.send_batches (account_id, messages, channel) VALUES (100, 10, 'sms') RETURNING cost;
SELECT * FROM credits.verify();

-- bench/plpgsql_reference.sql: the PL/pgSQL trigger a DBA would write for
-- the same debit rules (price, lock, insufficient credits, ledger row,
-- auto-recharge: grow the pending recharge or open one).  Not part of the
-- extension: it is the alternative credits is measured against.
CREATE TABLE bench.pl_accounts (account_id bigint PRIMARY KEY, balance bigint NOT NULL,
								in_flight bigint NOT NULL DEFAULT 0);
CREATE TABLE bench.pl_policies (account_id bigint PRIMARY KEY, enabled boolean NOT NULL,
								min_balance bigint NOT NULL, max_credits bigint NOT NULL);
CREATE TABLE bench.pl_recharges (recharge_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
								 account_id bigint NOT NULL, credits bigint NOT NULL,
								 status text NOT NULL DEFAULT 'pending', batch_id bigint);
CREATE INDEX ON bench.pl_recharges (account_id) WHERE status = 'pending';
CREATE TABLE bench.pl_batches (LIKE bench.bare_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench.pl_batches ALTER COLUMN batch_id ADD GENERATED ALWAYS AS IDENTITY;
CREATE TABLE bench.pl_ledger (LIKE :ledger_table INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench.pl_ledger ALTER COLUMN entry_id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE bench.pl_ledger ADD PRIMARY KEY (entry_id);
CREATE INDEX ON bench.pl_ledger (account_id, entry_id);

CREATE FUNCTION bench.pl_debit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	price integer;
	acct bench.pl_accounts;
	pol bench.pl_policies;
	new_balance bigint;
	need bigint;
	rid bigint;
BEGIN
	SELECT credits_per_message INTO price FROM credits.prices WHERE channel = NEW.channel;
	IF price IS NULL THEN
		RAISE EXCEPTION 'unknown channel %', NEW.channel;
	END IF;
	NEW.cost := NEW.messages::bigint * price;
	SELECT * INTO acct FROM bench.pl_accounts WHERE account_id = NEW.account_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown account %', NEW.account_id;
	END IF;
	SELECT * INTO pol FROM bench.pl_policies WHERE account_id = NEW.account_id;
	new_balance := acct.balance - NEW.cost;
	NEW.status := 'ready';
	IF pol.enabled IS NOT TRUE THEN
		IF new_balance < 0 THEN
			RAISE EXCEPTION 'insufficient credits' USING ERRCODE = 'MC001';
		END IF;
	ELSIF new_balance + acct.in_flight < pol.min_balance THEN
		need := pol.min_balance - (new_balance + acct.in_flight);
		IF need > pol.max_credits THEN
			RAISE EXCEPTION 'recharge limit exceeded' USING ERRCODE = 'MC002';
		END IF;
		UPDATE bench.pl_recharges SET credits = credits + need
		 WHERE account_id = NEW.account_id AND status = 'pending' AND credits + need <= pol.max_credits
		RETURNING recharge_id INTO rid;
		IF rid IS NULL THEN
			INSERT INTO bench.pl_recharges (account_id, credits, batch_id)
			VALUES (NEW.account_id, need, NEW.batch_id) RETURNING recharge_id INTO rid;
		END IF;
		acct.in_flight := acct.in_flight + need;
		IF new_balance < 0 THEN
			NEW.status := 'awaiting_credits';
			NEW.recharge_id := rid;
		END IF;
	END IF;
	UPDATE bench.pl_accounts SET balance = new_balance, in_flight = acct.in_flight
	 WHERE account_id = NEW.account_id;
	INSERT INTO bench.pl_ledger (account_id, delta, balance_after, kind, batch_id)
	VALUES (NEW.account_id, -NEW.cost, new_balance, 'debit', NEW.batch_id);
	RETURN NEW;
END
$$;
CREATE TRIGGER pl_debit BEFORE INSERT ON bench.pl_batches
	FOR EACH ROW EXECUTE FUNCTION bench.pl_debit();

#!/usr/bin/python3
"""test/model/model.py: model-based randomized test of the credits extension.

Random sequences of operations (open_account, add_credits, single and
multi-row batch INSERTs with random sizes, channels and idempotency keys,
enable/disable_auto_recharge with random policies, claim_recharges,
complete_recharge, fail_recharge and their retries, expire_recharges, price
changes) are applied both to a fresh database with the extension and to the
Model below, an independent re-implementation of the rules in the README
("How a batch is paid for", "Automatic recharge", "Payment workers",
"Idempotent sends").  The model never reads the database to decide anything;
the database is read only to map the identity values it assigned (batch,
recharge and ledger ids) to the model's own ids, and to compare.

After every step the two must agree on: the step's outcome (success or the
SQLSTATE), what the call returned, every account's balance and in_flight,
every batch, recharge, policy and new ledger row, and credits.verify() must
return no rows.  The first disagreement prints the seed, the step, the
operation (as SQL) and the differences, and ends the run.

Not covered here: concurrency (test/specs), expiry by age (every recharge
is younger than credits.recharge_expiry, so expire_recharges() must return
0), and month boundaries (a run stays within one calendar month, so the
monthly limit counts every recharge).

Usage (normally through test/model/run.sh, which starts the cluster):
    model.py --seed S [--steps N] [--log] [--stats]
Connects with the libpq environment (PGHOST, PGPORT, PGUSER), creates
database model_<seed>, and drops it again when the run passes.
Exit status: 0 agreed, 1 disagreed, 2 could not run.
"""

import argparse
import copy
import random
import sys
import traceback

import psycopg2

PENDING, PROCESSING, SUCCEEDED, FAILED, CANCELLED = (
    'pending', 'processing', 'succeeded', 'failed', 'cancelled')
IN_FLIGHT = (PENDING, PROCESSING)
SETTLED = (SUCCEEDED, FAILED, CANCELLED)
READY, AWAITING, BATCH_FAILED = 'ready', 'awaiting_credits', 'failed'

# Prices the test starts with ('email' ships with the extension).
START_PRICES = {'email': 1, 'sms': 7, 'push': 3}
UNKNOWN_CHANNEL = 'fax'
ACCOUNT_POOL = [1, 2, 3]
NEVER_OPENED = 99               # never opened: MC003
NO_SUCH_RECHARGE = 999999999    # an id no recharge will ever have: MC005
FAIL_REASONS = ['card declined', 'insufficient funds', 'timeout']
CANCEL_BY_USER = 'auto-recharge disabled'
CANCEL_BY_FAILURES = 'auto-recharge turned off after payment failures'


class ModelError(Exception):
    """The statement must fail with this SQLSTATE (and change nothing)."""

    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class Model:
    """The credits rules, in plain Python, on plain dicts.

    Ids are the model's own: a batch's id is its index in self.batches, a
    recharge's its index in self.recharges.  Both lists are in creation
    order, which is also the order of the database's identity values.
    """

    def __init__(self, max_payment_failures):
        self.max_payment_failures = max_payment_failures
        self.prices = dict(START_PRICES)
        self.accounts = {}      # account_id -> {balance, in_flight}
        self.policies = {}      # account_id -> policy dict
        self.batches = []
        self.recharges = []
        self.ledger = []        # (account, delta, balance_after, kind, batch, recharge, note)
        self.events = {}        # what happened how often (coverage only)

    def _saw(self, event):
        self.events[event] = self.events.get(event, 0) + 1

    # ------------------------------------------------------------ helpers

    def _account(self, aid):
        if aid is None:
            raise ModelError('22004')
        if aid not in self.accounts:
            raise ModelError('MC003')
        return self.accounts[aid]

    def _post(self, aid, delta, kind, batch=None, recharge=None, note=None):
        acct = self.accounts[aid]
        acct['balance'] += delta
        self.ledger.append((aid, delta, acct['balance'], kind, batch, recharge, note))

    def _recharge(self, rid):
        if rid is None:
            raise ModelError('22004')
        if rid < 0 or rid >= len(self.recharges):
            raise ModelError('MC005')
        return self.recharges[rid]

    def _enabled(self, aid):
        p = self.policies.get(aid)
        return p is not None and p['enabled']

    # ------------------------------------------------------------ accounts

    def open_account(self, aid, initial):
        if initial < 0:
            raise ModelError('MC014')
        if aid in self.accounts:
            raise ModelError('MC010')
        self.accounts[aid] = {'balance': initial, 'in_flight': 0}
        self.ledger.append((aid, initial, initial, 'open', None, None, None))
        return initial

    def add_credits(self, aid, credits, note=None):
        if credits <= 0:
            raise ModelError('MC014')
        self._account(aid)
        self._post(aid, credits, 'grant', note=note)
        return self.accounts[aid]['balance']

    def set_price(self, channel, price):
        self.prices[channel] = price

    # ------------------------------------------------------------ policy

    def enable(self, aid, min_balance, max_credits, target, limit):
        if (min_balance < 0 or max_credits <= 0 or min_balance > max_credits
                or (target is not None and target < min_balance)
                or (limit is not None and limit <= 0)):
            raise ModelError('MC013')
        self._account(aid)
        self.policies[aid] = {
            'enabled': True, 'min_balance': min_balance, 'max_credits': max_credits,
            'target_balance': target, 'monthly_limit': limit,
            'payment_failures': 0, 'disabled_reason': None}
        return True

    def disable(self, aid):
        self._account(aid)
        self._turn_off(aid, 'disabled_by_user')
        return aid in self.policies     # the call returns NULL without a policy

    def _turn_off(self, aid, reason):
        if not self._enabled(aid):
            return
        p = self.policies[aid]
        p['enabled'] = False
        p['disabled_reason'] = reason
        why = CANCEL_BY_FAILURES if reason == 'payment_failed' else CANCEL_BY_USER
        self._saw('turned off: ' + reason)
        for r in self.recharges:
            if r['account'] == aid and r['status'] == PENDING:
                self._cancel(r, why)

    def _cancel(self, r, why):
        self._saw('recharge cancelled')
        r['status'] = CANCELLED
        r['failure_reason'] = why
        self.accounts[r['account']]['in_flight'] -= r['credits']
        self._settle_failed(r)

    def _settle_failed(self, r):
        """A failed or cancelled recharge's awaiting batches fail with a
        refund each, oldest first; then, while balance + in_flight is still
        negative, the account's newest awaiting batches too."""
        aid = r['account']
        for b in self.batches:
            if b['recharge'] == r['id'] and b['status'] == AWAITING:
                b['status'] = BATCH_FAILED
                self._post(aid, b['cost'], 'refund', b['id'], r['id'])
                self._saw('own batch failed')
        acct = self.accounts[aid]
        while acct['balance'] + acct['in_flight'] < 0:
            awaiting = [b for b in self.batches
                        if b['account'] == aid and b['status'] == AWAITING]
            if not awaiting:
                break
            b = awaiting[-1]
            self._saw('dependent batch failed')
            b['status'] = BATCH_FAILED
            self._post(aid, b['cost'], 'refund', b['id'], r['id'])

    # ------------------------------------------------------------ workers

    def claim(self, n):
        if n is None:
            raise ModelError('22004')
        if n < 1:
            raise ModelError('22023')
        picked = [r for r in self.recharges if r['status'] == PENDING][:n]
        for r in picked:
            r['status'] = PROCESSING
            r['claimed_credits'] = r['credits']
        return sorted(r['id'] for r in picked)

    def complete(self, rid, ref):
        if ref is None:
            raise ModelError('22004')
        r = self._recharge(rid)
        if r['status'] == SUCCEEDED and r['payment_ref'] == ref:
            return r['status']                  # a retry: nothing changes
        blanks = ' \t\n\r\f\v'
        if len(ref.encode()) > 255 or ref.strip(blanks) == '' or ref != ref.strip(blanks):
            raise ModelError('MC021')
        if r['status'] in SETTLED:
            raise ModelError('MC006')
        if r['status'] == PENDING:
            raise ModelError('MC015')
        if any(o['payment_ref'] == ref for o in self.recharges):
            raise ModelError('MC017')
        self._saw('recharge succeeded')
        r['status'] = SUCCEEDED
        r['payment_ref'] = ref
        aid = r['account']
        self.accounts[aid]['in_flight'] -= r['credits']
        self._post(aid, r['credits'], 'recharge', None, r['id'])
        # Its awaiting batches turn ready, oldest first, as far as the balance
        # pays for them: a negative balance must stay backed by awaiting
        # batches.  One still living on another in-flight recharge's credits
        # awaits the newest in-flight recharge instead.
        acct = self.accounts[aid]
        awaiting = sum(b['cost'] for b in self.batches
                       if b['account'] == aid and b['status'] == AWAITING)
        for b in self.batches:
            if b['recharge'] == r['id'] and b['status'] == AWAITING:
                if acct['balance'] >= 0 or awaiting - b['cost'] + acct['balance'] >= 0:
                    b['status'] = READY
                    awaiting -= b['cost']
                else:
                    self._saw('batch repointed')
                    b['recharge'] = max(o['id'] for o in self.recharges
                                        if o['account'] == aid
                                        and o['status'] in (PENDING, PROCESSING))
        if aid in self.policies:
            self.policies[aid]['payment_failures'] = 0
        return r['status']

    def fail(self, rid, reason):
        if reason is None:
            raise ModelError('22004')
        r = self._recharge(rid)
        if r['status'] == FAILED and r['failure_reason'] == reason:
            return r['status']                  # a retry: nothing changes
        if r['status'] in SETTLED:
            raise ModelError('MC006')
        if r['status'] == PENDING:
            raise ModelError('MC015')
        self._saw('recharge failed')
        r['status'] = FAILED
        r['failure_reason'] = reason
        aid = r['account']
        self.accounts[aid]['in_flight'] -= r['credits']
        self._settle_failed(r)
        p = self.policies.get(aid)
        if p is not None:
            p['payment_failures'] += 1
            if p['payment_failures'] >= self.max_payment_failures and p['enabled']:
                self._turn_off(aid, 'payment_failed')
        return r['status']

    def expire(self):
        return 0        # every recharge is younger than credits.recharge_expiry

    # ------------------------------------------------------------ batches

    def insert(self, rows, on_conflict):
        """rows: (account, messages, channel, key); on_conflict: None,
        'nothing' or 'update' (DO UPDATE SET idempotency_key =
        EXCLUDED.idempotency_key).  Returns what RETURNING gives, in row
        order: ('new', id) for an inserted batch, ('old', id) for a stored
        batch returned by DO UPDATE; DO NOTHING returns nothing for a skipped
        row.  A failing row fails the whole statement (the caller restores)."""
        out = []
        first_new = len(self.batches)
        touched = set()         # stored batches DO UPDATE already updated
        for aid, messages, channel, key in rows:
            res = self._insert_row(aid, messages, channel, key)
            if isinstance(res, dict):           # a stored batch with this key
                if on_conflict == 'nothing':
                    self._saw('duplicate key skipped')
                    continue
                if on_conflict is None:
                    raise ModelError('23505')
                # DO UPDATE may not touch a row twice, nor one this statement inserted
                if res['id'] >= first_new or res['id'] in touched:
                    raise ModelError('21000')
                touched.add(res['id'])
                self._saw('duplicate key returned by DO UPDATE')
                out.append(('old', res['id']))
            else:
                out.append(('new', res))
        return out

    def _insert_row(self, aid, messages, channel, key):
        """One row, in the trigger's order of checks: the new batch's id,
        or the stored batch it conflicts with (nothing debited)."""
        if messages is None or messages <= 0:
            raise ModelError('MC011')
        acct = self._account(aid)
        if channel not in self.prices:
            raise ModelError('MC004')
        cost = messages * self.prices[channel]
        if key is not None:
            for b in self.batches:
                if b['account'] == aid and b['key'] == key:
                    return b            # conflicts: never debited

        bid = len(self.batches)
        balance = acct['balance']
        after = balance - cost
        shortfall = after < 0
        covering = None
        if not self._enabled(aid):
            if shortfall:
                raise ModelError('MC001')
        else:
            p = self.policies[aid]
            available = after + acct['in_flight']
            if available >= p['min_balance']:
                if shortfall:   # in-flight recharges cover it: the newest one
                    self._saw('covered by newest in-flight')
                    covering = [r for r in self.recharges if r['account'] == aid
                                and r['status'] in IN_FLIGHT][-1]['id']
            else:
                need = p['min_balance'] - available
                if need > p['max_credits']:
                    raise ModelError('MC002')
                amount = need
                if p['target_balance'] is not None:
                    amount = max(need, min(p['target_balance'] - available,
                                           p['max_credits']))
                if p['monthly_limit'] is not None:
                    used = sum(r['credits'] for r in self.recharges
                               if r['account'] == aid
                               and r['status'] in (PENDING, PROCESSING, SUCCEEDED))
                    room = max(0, p['monthly_limit'] - used)
                    if need > room:
                        raise ModelError('MC018')
                    if amount > room:
                        self._saw('amount cut by monthly limit')
                    if need == room:
                        self._saw('need exactly fills the monthly limit')
                    amount = min(amount, room)
                pending = [r for r in self.recharges
                           if r['account'] == aid and r['status'] == PENDING]
                grown = None
                if pending:
                    r = pending[-1]
                    room = max(0, p['max_credits'] - r['credits'])
                    if room >= need:
                        grown = r
                        growth = min(amount, room)
                        self._saw('pending recharge grown')
                        if r['max_credits'] != p['max_credits']:
                            self._saw('pending recharge grown under a new max_credits')
                        r['credits'] += growth
                        r['max_credits'] = p['max_credits']
                        if shortfall:
                            r['reason'] = 'shortfall'
                        acct['in_flight'] += growth
                if grown is None:
                    grown = {
                        'id': len(self.recharges), 'account': aid, 'credits': amount,
                        'status': PENDING,
                        'reason': 'shortfall' if shortfall else 'threshold',
                        'batch': bid, 'balance_seen': balance, 'need': need,
                        'max_credits': p['max_credits'], 'claimed_credits': None,
                        'payment_ref': None, 'failure_reason': None}
                    self.recharges.append(grown)
                    self._saw('recharge opened (%s)' % grown['reason'])
                    if pending:
                        self._saw('recharge opened beside a full pending one')
                    if amount > need:
                        self._saw('recharge above need (target)')
                    acct['in_flight'] += amount
                if shortfall:
                    covering = grown['id']
        self.batches.append({
            'id': bid, 'account': aid, 'messages': messages, 'channel': channel,
            'key': key, 'cost': cost,
            'status': AWAITING if shortfall else READY, 'recharge': covering})
        self._post(aid, -cost, 'debit', bid)
        return bid


# ---------------------------------------------------------------- operations

class Op:
    """One step: the SQL for the database and the same call on the model."""

    def __init__(self, name, sql, params, call, kind='value'):
        self.name = name
        self.sql = sql
        self.params = params
        self.call = call        # Model -> result, or raises ModelError
        self.kind = kind        # how to read the database's result


class Generator:
    """Draws random operations, using the model only to aim them (at
    existing batches, recharges in a given status, and so on)."""

    WEIGHTS = [
        ('open_account', 3), ('add_credits', 5), ('insert', 23), ('insert_multi', 8),
        ('insert_edge', 4),
        ('insert_dup_key', 5), ('enable', 8), ('disable', 2), ('claim', 10),
        ('complete', 12), ('fail', 11), ('expire', 1), ('set_price', 1),
    ]

    def __init__(self, rng):
        self.rng = rng
        self.refs = 0
        self.keys = 0

    def next(self, m):
        names = [n for n, _ in self.WEIGHTS]
        weights = [w for _, w in self.WEIGHTS]
        name = 'open_account' if not m.accounts else self.rng.choices(names, weights)[0]
        return getattr(self, 'op_' + name)(m)

    # -- aiming helpers

    def account(self, m, known=0.93):
        opened = sorted(m.accounts)
        if opened and self.rng.random() < known:
            return self.rng.choice(opened)
        unopened = [a for a in ACCOUNT_POOL if a not in m.accounts]
        return self.rng.choice(unopened + [NEVER_OPENED])

    def messages(self):
        r = self.rng.random()
        if r < 0.03:
            return self.rng.choice([0, -1, -50])
        if r < 0.45:
            return self.rng.randint(1, 20)
        if r < 0.90:
            return self.rng.randint(20, 120)
        return self.rng.randint(120, 2000)

    def channel(self):
        return self.rng.choices(['email', 'sms', 'push', UNKNOWN_CHANNEL],
                                [55, 20, 22, 3])[0]

    def key(self):
        r = self.rng.random()
        if r < 0.5:
            return None
        if r < 0.95:
            self.keys += 1
            return 'key-%d' % self.keys
        return 'k%d' % self.rng.randint(1, 5)   # now and then one used before

    def conflict(self, nothing, update):
        r = self.rng.random()
        return 'nothing' if r < nothing else 'update' if r < nothing + update else None

    def recharge_in(self, m, statuses):
        pool = [r for r in m.recharges if r['status'] in statuses]
        return self.rng.choice(pool) if pool else None

    # -- the operations

    def op_open_account(self, m):
        aid = self.rng.choice(ACCOUNT_POOL)
        initial = self.rng.choice([0, 0, self.rng.randint(1, 300)])
        if self.rng.random() < 0.06:
            initial = -self.rng.randint(1, 10)
        return Op('open_account', 'SELECT balance FROM credits.open_account(%s, %s)',
                  (aid, initial), lambda mm: mm.open_account(aid, initial))

    def op_add_credits(self, m):
        aid = self.account(m)
        credits = self.rng.randint(1, 300)
        if self.rng.random() < 0.08:
            credits = self.rng.choice([0, -1, -100])
        note = self.rng.choice([None, 'model grant'])
        return Op('add_credits', 'SELECT credits.add_credits(%s, %s, %s)',
                  (aid, credits, note), lambda mm: mm.add_credits(aid, credits, note))

    def op_set_price(self, m):
        channel = self.rng.choice(['sms', 'push'])
        price = self.rng.randint(1, 9)
        return Op('set_price',
                  'UPDATE credits.prices SET credits_per_message = %s WHERE channel = %s',
                  (price, channel), lambda mm: mm.set_price(channel, price), kind='none')

    def insert_op(self, name, rows, on_conflict):
        conflict = {
            None: '',
            'nothing': ' ON CONFLICT (account_id, idempotency_key) DO NOTHING',
            'update': ' ON CONFLICT (account_id, idempotency_key)'
                      ' DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key',
        }[on_conflict]
        values = []
        params = []
        for aid, messages, channel, key in rows:
            if channel == 'email' and self.rng.random() < 0.3:
                values.append('(%s, %s, DEFAULT, %s)')  # the column default
                params += [aid, messages, key]
            else:
                values.append('(%s, %s, %s, %s)')
                params += [aid, messages, channel, key]
        sql = ('INSERT INTO credits.send_batches (account_id, messages, channel, idempotency_key)'
               ' VALUES ' + ', '.join(values) + conflict +
               ' RETURNING batch_id, cost, status, recharge_id')
        return Op(name, sql, tuple(params),
                  lambda mm: mm.insert(rows, on_conflict), kind='batches')

    def op_insert(self, m):
        row = (self.account(m), self.messages(), self.channel(), self.key())
        return self.insert_op('insert', [row], self.conflict(0.3, 0.05))

    def op_insert_multi(self, m):
        n = self.rng.randint(2, 4)
        same = self.rng.random() < 0.5
        first = self.account(m)
        rows = []
        for _ in range(n):
            aid = first if same else self.account(m)
            key = self.key()
            if rows and key is not None and self.rng.random() < 0.2:
                aid, key = rows[-1][0], rows[-1][3] or key  # a key twice in one statement
            rows.append((aid, self.messages(), self.channel(), key))
        return self.insert_op('insert_multi', rows, self.conflict(0.35, 0.1))

    def op_insert_dup_key(self, m):
        keyed = [b for b in m.batches if b['key'] is not None]
        if not keyed:
            return self.op_insert(m)
        b = self.rng.choice(keyed)
        rows = [(b['account'], self.messages(), self.channel(), b['key'])]
        r = self.rng.random()
        if r < 0.3:
            rows.insert(self.rng.randint(0, 1),
                        (self.account(m), self.messages(), self.channel(), self.key()))
        elif r < 0.45:
            rows.append((b['account'], self.messages(), self.channel(), b['key']))
        return self.insert_op('insert_dup_key', rows, self.conflict(0.45, 0.25))

    def op_insert_edge(self, m):
        """A batch whose cost lands on a boundary of the rule, computed from
        the model's state: need = max_credits - 1, max_credits or
        max_credits + 1; need = what the monthly limit has left, or one more;
        available = min_balance exactly, or one below; balance = cost."""
        if not m.accounts:
            return self.op_insert(m)
        aid = self.rng.choice(sorted(m.accounts))
        acct = m.accounts[aid]
        p = m.policies.get(aid)
        if p is None or not p['enabled']:
            cost = acct['balance'] + self.rng.choice([0, 1])
        else:
            # need = min_balance - (balance - cost + in_flight)
            base = acct['balance'] + acct['in_flight'] - p['min_balance']
            targets = [p['max_credits'] - 1, p['max_credits'], p['max_credits'] + 1, 0, 1]
            if p['monthly_limit'] is not None:
                used = sum(r['credits'] for r in m.recharges if r['account'] == aid
                           and r['status'] in (PENDING, PROCESSING, SUCCEEDED))
                room = max(0, p['monthly_limit'] - used)
                targets += [room, room + 1, room, room + 1]
            cost = base + self.rng.choice(targets)
        messages = max(1, cost)
        row = (aid, messages, 'email', self.key())
        return self.insert_op('insert_edge', [row], self.conflict(0.1, 0.05))

    def op_enable(self, m):
        aid = self.account(m)
        mn = self.rng.choice([0, 0, 0, 10, 50, 100])
        mx = self.rng.choice([30, 100, 300, 1000, 1000, 1000])
        target = None if self.rng.random() < 0.35 else mn + self.rng.choice([0, 20, 50, 100, 200, 400])
        limit = None if self.rng.random() < 0.45 else self.rng.choice([50, 200, 500, 1000, 2000])
        if self.rng.random() < 0.1:
            bad = self.rng.randint(0, 3)
            if bad == 0:
                mn = -self.rng.randint(1, 5)
            elif bad == 1:
                mx = self.rng.choice([0, -10])
            elif bad == 2:
                mn = max(mn, 10)
                target = mn - self.rng.randint(1, 10)
            else:
                limit = self.rng.choice([0, -1])
        return Op('enable',
                  'SELECT enabled FROM credits.enable_auto_recharge(%s, min_balance => %s,'
                  ' max_credits => %s, target_balance => %s, monthly_limit => %s)',
                  (aid, mn, mx, target, limit),
                  lambda mm: mm.enable(aid, mn, mx, target, limit))

    def op_disable(self, m):
        aid = self.account(m)
        return Op('disable', 'SELECT account_id IS NOT NULL FROM credits.disable_auto_recharge(%s)',
                  (aid,), lambda mm: mm.disable(aid))

    def op_claim(self, m):
        n = self.rng.choice([1, 1, 2, 3, 5]) if self.rng.random() > 0.03 else 0
        return Op('claim', 'SELECT recharge_id FROM credits.claim_recharges(%s)',
                  (n,), lambda mm: mm.claim(n), kind='recharge_ids')

    def new_ref(self):
        self.refs += 1
        return 'ref-%d' % self.refs

    def recharge_op(self, name, sql, rid, arg, call):
        # The recharge is named by its model id; Runner maps it to the
        # database's id (NO_SUCH_RECHARGE for an unknown one).
        return Op(name, sql, (('rid', rid), arg), call)

    def op_complete(self, m):
        rng = self.rng
        kind = rng.choices(['fresh', 'retry', 'other_ref', 'used_ref', 'settled',
                            'pending', 'unknown', 'empty'],
                           [60, 10, 6, 5, 6, 6, 4, 4])[0]
        r = None
        ref = self.new_ref()
        if kind == 'fresh' or kind == 'used_ref':
            r = self.recharge_in(m, (PROCESSING,))
            if r is None and kind == 'fresh' and self.recharge_in(m, (PENDING,)):
                return self.op_claim(m)         # nothing to complete yet
            used = [o['payment_ref'] for o in m.recharges if o['payment_ref']]
            if kind == 'used_ref' and used:
                ref = rng.choice(used)
        elif kind in ('retry', 'other_ref'):
            r = self.recharge_in(m, (SUCCEEDED,))
            if r is not None and kind == 'retry':
                ref = r['payment_ref']
        elif kind == 'settled':
            r = self.recharge_in(m, (FAILED, CANCELLED))
        elif kind == 'pending':
            r = self.recharge_in(m, (PENDING,))
        elif kind == 'empty':
            r = self.recharge_in(m, IN_FLIGHT + SETTLED)
            ref = rng.choice(['', None, ' ', ' ch_x', 'ch_x\n', 'é' * 128, 'r' * 255])
        if r is None and m.recharges and kind != 'unknown':
            r = rng.choice(m.recharges)
        rid = r['id'] if r is not None else None
        return self.recharge_op('complete',
                                'SELECT status FROM credits.complete_recharge(%s, %s)',
                                rid, ref, lambda mm: mm.complete(rid if rid is not None else -1, ref))

    def op_fail(self, m):
        rng = self.rng
        kind = rng.choices(['fresh', 'retry', 'other_reason', 'settled', 'pending', 'unknown',
                            'null'],
                           [62, 12, 6, 8, 8, 4, 2])[0]
        r = None
        reason = rng.choice(FAIL_REASONS)
        if kind == 'fresh':
            r = self.recharge_in(m, (PROCESSING,))
            if r is None and self.recharge_in(m, (PENDING,)):
                return self.op_claim(m)         # nothing to fail yet
        elif kind in ('retry', 'other_reason'):
            r = self.recharge_in(m, (FAILED,))
            if r is not None:
                if kind == 'retry':
                    reason = r['failure_reason']
                else:
                    reason = rng.choice([x for x in FAIL_REASONS if x != r['failure_reason']])
        elif kind == 'settled':
            r = self.recharge_in(m, (SUCCEEDED, CANCELLED))
            if r is not None and r['status'] == CANCELLED and rng.random() < 0.5:
                reason = r['failure_reason']    # a cancelled one is not "failed"
        elif kind == 'pending':
            r = self.recharge_in(m, (PENDING,))
        elif kind == 'null':
            reason = None
        if r is None and m.recharges and kind != 'unknown':
            r = rng.choice(m.recharges)
        rid = r['id'] if r is not None else None
        return self.recharge_op('fail', 'SELECT status FROM credits.fail_recharge(%s, %s)',
                                rid, reason, lambda mm: mm.fail(rid if rid is not None else -1, reason))

    def op_expire(self, m):
        return Op('expire', 'SELECT credits.expire_recharges()', (), lambda mm: mm.expire())


# ---------------------------------------------------------------- the runner

class Mismatch(Exception):
    pass


class Runner:
    def __init__(self, seed, steps, log):
        self.seed = seed
        self.steps = steps
        self.log = log
        self.rng = random.Random(seed)
        self.max_failures = self.rng.choice([1, 2, 3, 3, 4])
        self.model = Model(self.max_failures)
        self.gen = Generator(self.rng)
        self.bid_map = {}       # model batch id -> db batch id
        self.rid_map = {}       # model recharge id -> db recharge id
        self.last_rid = 0       # highest db recharge id mapped so far
        self.last_entry = 0     # highest db ledger entry id compared so far
        self.dbname = 'model_%d' % seed
        self.stats = {}         # (operation, outcome) -> count

    # -- database plumbing

    def setup(self):
        admin = psycopg2.connect(dbname='postgres')
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS %s' % self.dbname)
            cur.execute('CREATE DATABASE %s' % self.dbname)
        admin.close()
        self.conn = psycopg2.connect(dbname=self.dbname)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute('CREATE EXTENSION credits')
            for channel, price in sorted(START_PRICES.items()):
                if channel != 'email':
                    cur.execute('INSERT INTO credits.prices VALUES (%s, %s)', (channel, price))
            cur.execute('SET credits.max_payment_failures = %s', (self.max_failures,))
            cur.execute('SET credits.recharge_expiry = 3600')
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute('SELECT credits._max_payment_failures()')
            assert cur.fetchone()[0] == self.max_failures

    def teardown(self, drop):
        try:
            self.conn.close()
        except Exception:
            pass
        if drop:
            admin = psycopg2.connect(dbname='postgres')
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute('DROP DATABASE IF EXISTS %s' % self.dbname)
            admin.close()

    def query(self, sql, params=()):
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def db_params(self, op):
        out = []
        for p in op.params:
            if isinstance(p, tuple) and p[0] == 'rid':
                out.append(self.rid_map.get(p[1], NO_SUCH_RECHARGE) if p[1] is not None
                           else NO_SUCH_RECHARGE)
            else:
                out.append(p)
        return tuple(out)

    # -- one step

    def step(self, n):
        op = self.gen.next(self.model)
        params = self.db_params(op)
        with self.conn.cursor() as cur:
            sql_text = cur.mogrify(op.sql, params).decode()

        saved = copy.deepcopy(self.model)     # a failing statement changes nothing
        n_recharges, n_ledger = len(self.model.recharges), len(self.model.ledger)
        try:
            want = op.call(self.model)
            want_state = None
        except ModelError as e:
            self.model = saved
            want, want_state = None, e.sqlstate

        got_state, rows, got_error = None, None, ''
        try:
            with self.conn.cursor() as cur:
                cur.execute(op.sql, params)
                rows = cur.fetchall() if cur.description else []
        except psycopg2.Error as e:
            got_state = e.pgcode or 'error'
            got_error = str(e).strip().split('\n')[0]

        if self.log:
            print('# %4d %s -> %s' % (n, sql_text, got_state or rows))
        outcome = got_state or 'ok'
        self.stats[(op.name, outcome)] = self.stats.get((op.name, outcome), 0) + 1

        problems = []
        if want_state != got_state:
            problems.append('outcome: model %s, database %s%s'
                            % (want_state or 'success', got_state or 'success',
                               ' (%s)' % got_error if got_error else ''))
            raise Mismatch(self.report(n, op, sql_text, problems))

        if got_state is None:
            problems += self.check_result(op, want, rows)
        problems += self.map_recharges(n_recharges)
        problems += self.compare_state(n_ledger)
        if problems:
            raise Mismatch(self.report(n, op, sql_text, problems))

    def check_result(self, op, want, rows):
        if op.kind == 'none':
            return []
        if op.kind == 'batches':
            got_ids = [r[0] for r in rows]
            if len(got_ids) != len(want):
                return ['RETURNING: model %d rows %s, database %d rows %s'
                        % (len(want), want, len(got_ids), got_ids)]
            problems = []
            for (how, mid), did in zip(want, got_ids):
                if how == 'new':
                    self.bid_map[mid] = did
                elif self.bid_map.get(mid) != did:
                    problems.append('RETURNING: model returned stored batch %s, database batch %s'
                                    % (self.bid_map.get(mid), did))
            return problems
        if op.kind == 'recharge_ids':
            got = sorted(r[0] for r in rows)
            exp = sorted(self.rid_map.get(i) for i in want)
            return [] if got == exp else ['claimed: model %s, database %s' % (exp, got)]
        got = rows[0][0] if rows else None
        return [] if got == want else ['returned: model %r, database %r' % (want, got)]

    def map_recharges(self, n_before):
        new_model = self.model.recharges[n_before:]
        new_db = [r[0] for r in self.query(
            'SELECT recharge_id FROM credits.recharges WHERE recharge_id > %s ORDER BY 1',
            (self.last_rid,))]
        if len(new_model) != len(new_db):
            return ['new recharges: model %d, database %d (ids %s)'
                    % (len(new_model), len(new_db), new_db)]
        for r, did in zip(new_model, new_db):
            self.rid_map[r['id']] = did
            self.last_rid = did
        return []

    # -- comparing everything

    def compare_state(self, n_ledger):
        m = self.model
        bid = self.bid_map.get
        rid = self.rid_map.get
        problems = []

        def diff(what, want, got):
            for k in sorted(set(want) | set(got), key=repr):
                if want.get(k) != got.get(k):
                    problems.append('%s %s: model %s, database %s'
                                    % (what, k, want.get(k, '(none)'), got.get(k, '(none)')))

        diff('account', {a: (v['balance'], v['in_flight']) for a, v in m.accounts.items()},
             {r[0]: (r[1], r[2]) for r in self.query(
                 'SELECT account_id, balance, in_flight FROM credits.accounts')})

        diff('batch',
             {bid(b['id']): (b['account'], b['messages'], b['channel'], b['key'], b['cost'],
                             b['status'], rid(b['recharge']) if b['recharge'] is not None else None)
              for b in m.batches},
             {r[0]: tuple(r[1:]) for r in self.query(
                 'SELECT batch_id, account_id, messages, channel, idempotency_key, cost,'
                 ' status, recharge_id FROM credits.send_batches')})

        diff('recharge',
             {rid(r['id']): (r['account'], r['credits'], r['status'], r['reason'],
                             bid(r['batch']), r['balance_seen'], r['need'], r['max_credits'],
                             r['claimed_credits'], r['payment_ref'], r['failure_reason'],
                             r['claimed_credits'] is not None, r['status'] in SETTLED)
              for r in m.recharges},
             {r[0]: tuple(r[1:]) for r in self.query(
                 'SELECT recharge_id, account_id, credits, status, reason, batch_id,'
                 ' balance_seen, need, max_credits, claimed_credits, payment_ref,'
                 ' failure_reason, claimed_at IS NOT NULL, settled_at IS NOT NULL'
                 ' FROM credits.recharges')})

        diff('policy',
             {a: (p['enabled'], p['min_balance'], p['max_credits'], p['target_balance'],
                  p['monthly_limit'], p['payment_failures'], p['disabled_reason'],
                  not p['enabled'])
              for a, p in m.policies.items()},
             {r[0]: tuple(r[1:]) for r in self.query(
                 'SELECT account_id, enabled, min_balance, max_credits, target_balance,'
                 ' monthly_limit, payment_failures, disabled_reason, disabled_at IS NOT NULL'
                 ' FROM credits.auto_recharge')})

        want_ledger = [(a, d, ba, k, bid(b) if b is not None else None,
                        rid(r) if r is not None else None, note)
                       for a, d, ba, k, b, r, note in m.ledger[n_ledger:]]
        got = self.query('SELECT entry_id, account_id, delta, balance_after, kind, batch_id,'
                         ' recharge_id, note FROM credits.ledger WHERE entry_id > %s ORDER BY 1',
                         (self.last_entry,))
        if got:
            self.last_entry = got[-1][0]
        got_ledger = [tuple(r[1:]) for r in got]
        if want_ledger != got_ledger:
            problems.append('new ledger rows (account, delta, balance_after, kind, batch,'
                            ' recharge, note):\n      model    %s\n      database %s'
                            % (want_ledger, got_ledger))

        for a, problem in self.query('SELECT account_id, problem FROM credits.verify()'):
            problems.append('verify(): account %s: %s' % (a, problem))
        return problems

    def report(self, n, op, sql_text, problems):
        month = self.query("SELECT date_trunc('month', now() AT TIME ZONE 'UTC')"
                           " = date_trunc('month', %s::timestamp)", (self.started,))[0][0]
        lines = ['seed %d step %d (%s): %s' % (self.seed, n, op.name, sql_text)]
        lines += ['    ' + p for p in problems]
        if not month:
            lines.append('    (the calendar month changed during the run: monthly limits may differ)')
        lines.append('    replay: bash test/model/run.sh --seed %d --steps %d --log'
                     % (self.seed, n))
        return '\n'.join(lines)

    def run(self):
        self.setup()
        self.started = self.query("SELECT (now() AT TIME ZONE 'UTC')::text")[0][0]
        ok = False
        try:
            for n in range(1, self.steps + 1):
                self.step(n)
            ok = True
        finally:
            self.teardown(drop=ok)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--steps', type=int, default=500)
    ap.add_argument('--log', action='store_true', help='print every step as SQL')
    ap.add_argument('--stats', action='store_true',
                    help='print how often each operation had each outcome')
    args = ap.parse_args()

    runner = Runner(args.seed, args.steps, args.log)
    try:
        runner.run()
    except Mismatch as e:
        print('not ok - seed %d: %s' % (args.seed, e))
        return 1
    except Exception:
        print('not ok - seed %d: the test itself failed' % args.seed)
        traceback.print_exc(file=sys.stdout)
        return 2
    finally:
        if args.stats:
            lines = ['#   %-16s %-6s %5d' % (name, outcome, count)
                     for (name, outcome), count in sorted(runner.stats.items())]
            lines += ['#   %-40s %5d' % (event, count)
                      for event, count in sorted(runner.model.events.items())]
            print('\n'.join(lines), flush=True)
    print('ok - seed %d (%d steps, max_payment_failures %d)'
          % (args.seed, args.steps, runner.max_failures))
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/python3
"""test/model/model.py: model-based randomized test of the credits extension.

Random sequences of operations (open_account, add_credits, single and
multi-row batch INSERTs with random sizes, channels and idempotency keys,
enable/disable_auto_recharge with random policies, claim_recharges,
complete_recharge, fail_recharge and their retries, expire_recharges, price
changes) are applied both to a fresh database with the extension and to the
Model below, an independent re-implementation of the rules in the README
("How a batch is paid for", "Automatic recharge", "Payment workers",
"Idempotent sends") and in doc/grants.md.  The model never reads the
database to decide anything; the database is read only to map the identity
values it assigned (batch, recharge, grant and ledger ids, and a recharge
grant's expiry: see "time" below) to the model's own, and to compare.

Two mixes of operations.  "basic" draws exactly the operations the model
drew before grants existed (so the fixed seeds chosen then still reach what
they were chosen for); in 0.2.0 they also exercise signup and purchase
grants, draw-down, owed, repayment and refunds back to grants.  "grants"
adds grant_credits (sources, priorities, expiry; the refused sources and
bad values), open_account's expiring signup grant, recharge grants with a
lifetime (credits.recharge_credit_lifetime, per seed), set_plan,
cancel_plan, renew_plans and expire_grants (with at = now, the whole hour
before, the default, or ahead of the clock), and a clock the model moves
forward (credits.clock_offset: by hours to months, or to just before or
after the next expiry or period end), from a per-seed start near a month's
end, with a per-seed session time zone (plan periods are UTC whatever it is),
and transactions (2-4 of these operations, each in a savepoint that a
failing one is rolled back to, then COMMIT or ROLLBACK).  "upgrade" runs the
basic mix on a database created at version 0.1.1, ALTER EXTENSION credits
UPDATE at a random step (balances carried over into purchase grants,
negative ones owed by awaiting batches, newest first), then the grants mix:
batches debited before the update are repaid and refunded (the part not
owed comes back as a new purchase grant).

After every step the two must agree on: the step's outcome (success or the
SQLSTATE), what the call returned, every account's balance and in_flight,
every batch (owed included), recharge, policy, grant (remaining, expiry,
priority, closed or not), plan and new ledger row (per account, in order,
with its grant), and credits.verify() must return no rows.  The grants mix
also compares account_overview's grant columns and balance_by_grant every
step, and batch_funding() of every batch and expiring_credits() every 25
steps.  The first disagreement prints the seed, the step, the operation (as
SQL) and the differences, and ends the run.

Where doc/grants.md leaves an order or a detail open, the model follows the
0.2.0 implementation and says so: debit rows of a batch that awaits a
recharge name it; a debit expires due grants in draw-down order, every
other lock in expiry order; a refund that lapses at once writes an expire
row naming the batch; grant_credits refuses the plan and recharge sources;
set_plan on a running plan whose period is over renews it at once; an ended
cancelled plan stays, with ended_at; expire_grants(at) expires what is due
by at; a settlement repays debts once, after all its refunds.

Not covered here: concurrency (test/specs), expiry of recharges by age
(every recharge is younger than credits.recharge_expiry, so
expire_recharges() must return 0), and month boundaries of the monthly
limit (it counts by the real clock, not the extension's: a run stays within
one calendar month, so it counts every recharge).

Usage (normally through test/model/run.sh, which starts the cluster):
    model.py --seed S [--mix basic|grants|upgrade] [--steps N] [--log]
             [--stats] [--dry] [--ignore REGEX]
Connects with the libpq environment (PGHOST, PGPORT, PGUSER), creates
database model_<seed> (model_<mix>_<seed>), and drops it again when the
run passes.  --dry runs the model alone (its own invariants; what
pick_seeds.py uses).  Exit status: 0 agreed, 1 disagreed, 2 could not run.
"""

import argparse
import calendar
import copy
import datetime
import math
import random
import re
import sys
import time
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


# ---------------------------------------------------------------- time
#
# The model's clock is an integer number of seconds since the epoch (UTC).
# It is always at half past a whole hour, and every instant the model makes
# (expiries, plan anchors and so period boundaries) is a whole hour, so the
# database's clock (clock_timestamp() + credits.clock_offset, set so that it
# is the model's clock plus the seconds since the offset was set) never
# sees an instant the model does not: nothing lies within 30 minutes after
# the model's now.  A recharge grant expires at completion + its lifetime,
# which the lifetimes below put at a quarter to an hour.

HOUR = 3600
DAY = 24 * HOUR
UTC = datetime.timezone.utc


def to_dt(t):
    return datetime.datetime.fromtimestamp(t, UTC)


def to_epoch(dt):
    return int(dt.timestamp()) if dt.microsecond == 0 else dt.timestamp()


def floor_hour(t):
    return t - t % HOUR


def add_months(t, k):
    """t + k calendar months in UTC, the day clamped to the month's end
    (as PostgreSQL adds an interval of months)."""
    d = to_dt(t)
    y, m = divmod(d.month - 1 + k, 12)
    y += d.year
    day = min(d.day, calendar.monthrange(y, m + 1)[1])
    return to_epoch(d.replace(year=y, month=m + 1, day=day))


def period_of(anchor, t):
    """The plan period [start, end) that contains t, counted in calendar
    months from anchor (t >= anchor)."""
    a, b = to_dt(anchor), to_dt(t)
    k = max(0, (b.year - a.year) * 12 + b.month - a.month - 1)
    while add_months(anchor, k + 1) <= t:
        k += 1
    return add_months(anchor, k), add_months(anchor, k + 1)


def ts(t):
    """A model time as the timestamptz parameter it is sent as."""
    return None if t is None else to_dt(t)


def show(t):
    return None if t is None else to_dt(t).strftime(
        '%Y-%m-%d %H:%M:%S' if t == int(t) else '%Y-%m-%d %H:%M:%S.%f')


SOURCES = ('signup', 'plan', 'purchase', 'recharge', 'promo')
DEFAULT_PRIORITY = {'plan': 10, 'signup': 20, 'promo': 30, 'purchase': 50, 'recharge': 50}


class Model:
    """The credits rules, in plain Python, on plain dicts.

    Ids are the model's own: a batch's id is its index in self.batches, a
    recharge's its index in self.recharges, a grant's its index in
    self.grants.  The lists are in creation order, which is also the order
    of the database's identity values.
    """

    def __init__(self, max_payment_failures, now, recharge_lifetime=0, grants_on=True):
        self.max_payment_failures = max_payment_failures
        self.grants_on = grants_on          # False: a 0.1.1 schema (balances only)
        self.now = now                      # seconds since the epoch (see above)
        self.recharge_lifetime = recharge_lifetime
        self.prices = dict(START_PRICES)
        self.accounts = {}      # account_id -> {balance, in_flight}
        self.policies = {}      # account_id -> policy dict
        self.batches = []
        self.recharges = []
        self.grants = []
        self.plans = {}         # account_id -> plan dict
        self.ledger = []        # (account, delta, balance_after, kind, batch, recharge, grant, note)
        self.events = {}        # what happened how often (coverage only)

    def _saw(self, event):
        self.events[event] = self.events.get(event, 0) + 1

    def snapshot(self):
        """A copy to go back to if the statement fails.  The ledger is only
        ever appended to, so it is shared and cut back on restore()."""
        ledger, self.ledger = self.ledger, None
        try:
            saved = copy.deepcopy(self)
        finally:
            self.ledger = ledger
        saved.ledger = ledger
        saved.ledger_length = len(ledger)
        return saved

    def restore(self):
        del self.ledger[self.ledger_length:]
        return self

    # ------------------------------------------------------------ helpers

    def _account(self, aid):
        if aid is None:
            raise ModelError('22004')
        if aid not in self.accounts:
            raise ModelError('MC003')
        return self.accounts[aid]

    def _post(self, aid, delta, kind, batch=None, recharge=None, note=None, grant=None):
        acct = self.accounts[aid]
        acct['balance'] += delta
        self.ledger.append((aid, delta, acct['balance'], kind, batch, recharge, grant, note))

    def _recharge(self, rid):
        if rid is None:
            raise ModelError('22004')
        if rid < 0 or rid >= len(self.recharges):
            raise ModelError('MC005')
        return self.recharges[rid]

    def _enabled(self, aid):
        p = self.policies.get(aid)
        return p is not None and p['enabled']

    # ------------------------------------------------------------ grants

    @staticmethod
    def _order(g):
        """Draw-down order: priority, soonest expiry (never last), oldest."""
        return (g['priority'], g['expires_at'] is None, g['expires_at'] or 0, g['id'])

    def _open_grants(self, aid):
        return sorted((g for g in self.grants if g['account'] == aid and g['remaining'] > 0),
                      key=self._order)

    def _due(self, g, at=None):
        return g['expires_at'] is not None and g['expires_at'] <= (self.now if at is None else at)

    def _expire_grant(self, g, batch=None):
        x = g['remaining']
        g['remaining'] = 0
        g['expired'] += x
        self._saw('grant expired (%s)' % g['source'])
        self._post(g['account'], -x, 'expire', batch, grant=g['id'])

    def _expire_due(self, aid, at=None, where='a lock'):
        """What every account lock does first: the account's due grants
        lapse, one "expire" row each, soonest expiry first (then oldest);
        the debit trigger goes through them in draw-down order instead (the
        order it holds them in; doc/grants.md names neither)."""
        n = 0
        order = self._order if where == 'a debit' else (
            lambda g: (g['expires_at'] or 0, g['id']))
        for g in sorted(self.grants, key=order):
            if g['account'] == aid and g['remaining'] > 0 and self._due(g, at):
                self._expire_grant(g)
                self._saw('grant expired at ' + where)
                n += 1
        return n

    def _lock(self, aid):
        acct = self._account(aid)
        self._expire_due(aid)
        return acct

    def _owed(self, aid):
        return sum(b['owed'] for b in self.batches if b['account'] == aid)

    def _new_grant(self, aid, credits, source, kind, expires_at=None, priority=None,
                   note=None, recharge=None, period_start=None, ledger_note=None):
        """Credits arrive: a new grant, its ledger row, then what the
        account owes is repaid from them."""
        g = {'id': len(self.grants), 'account': aid, 'source': source, 'credits': credits,
             'remaining': credits,
             'priority': DEFAULT_PRIORITY[source] if priority is None else priority,
             'expires_at': expires_at, 'recharge': recharge, 'period_start': period_start,
             'note': note, 'refunded': 0, 'expired': 0, 'carried_over': 0}
        self.grants.append(g)
        self._saw('grant (%s)' % source)
        self._post(aid, credits, kind, recharge=recharge, note=ledger_note, grant=g['id'])
        self._repay(aid)
        return g

    def _repay(self, aid, only=None, limit=None):
        """Credits the account holds pay what its batches owe, oldest batch
        first, from its grants in draw-down order (or from grant `only`, at
        most `limit` of it): per part, a "repay" pair (-x on the grant, +x
        without one), both naming the batch.  Returns what it paid."""
        paid = 0
        for b in self.batches:
            if b['account'] != aid or b['owed'] == 0:
                continue
            grants = self._open_grants(aid) if only is None else [only]
            for n, g in enumerate(grants):
                if n:
                    self._saw('owed repaid from a second grant')
                x = min(g['remaining'], b['owed'])
                if limit is not None:
                    x = min(x, limit - paid)
                    if x == 0:
                        return paid
                paid += x
                g['remaining'] -= x
                self._post(aid, -x, 'repay', b['id'], grant=g['id'])
                b['owed'] -= x
                self._post(aid, x, 'repay', b['id'])
                b['funding'][g['id']] = b['funding'].get(g['id'], 0) + x
                self._saw('owed repaid')
                if b['owed'] == 0:
                    break
            if b['owed'] > 0:
                return paid
        return paid

    def check(self):
        """The model's own invariants (a bug in the model, not a mismatch)."""
        if not self.grants_on:
            return
        for aid, acct in self.accounts.items():
            rem = sum(g['remaining'] for g in self.grants if g['account'] == aid)
            owed = self._owed(aid)
            assert acct['balance'] == rem - owed, (aid, acct['balance'], rem, owed)
            assert owed == 0 or rem == 0, (aid, rem, owed)
        for g in self.grants:
            assert 0 <= g['remaining'] <= g['credits'], g
        for b in self.batches:
            paid = sum(b['funding'].values()) + b['owed']
            assert paid == (0 if b['status'] == BATCH_FAILED else b['cost']) or b['legacy'], b

    def upgrade(self):
        """ALTER EXTENSION credits UPDATE from 0.1.1: each positive balance
        becomes a purchase grant carrying it over (no ledger row), a negative
        one is owed by the account's awaiting batches, newest first.  The
        batches debited before keep their one grantless debit row (legacy)."""
        for aid in sorted(self.accounts):
            bal = self.accounts[aid]['balance']
            if bal > 0:
                self.grants.append({
                    'id': len(self.grants), 'account': aid, 'source': 'purchase',
                    'credits': bal, 'remaining': bal, 'priority': 50, 'expires_at': None,
                    'recharge': None, 'period_start': None,
                    'note': 'balance carried over from version 0.1', 'refunded': 0,
                    'expired': 0, 'carried_over': bal})
                self._saw('upgrade: balance carried over')
            elif bal < 0:
                newer = 0
                for b in reversed([b for b in self.batches
                                   if b['account'] == aid and b['status'] == AWAITING]):
                    if -bal - newer > 0:
                        b['owed'] = min(b['cost'], -bal - newer)
                        self._saw('upgrade: owed by an awaiting batch')
                    newer += b['cost']
        for b in self.batches:
            b['legacy'] = True
        self.grants_on = True

    # ------------------------------------------------------------ accounts

    def open_account(self, aid, initial, expires_at=False):
        """expires_at False: the 2-argument form; None or a time: the
        3-argument one."""
        if initial < 0:
            raise ModelError('MC014')
        if expires_at not in (False, None) and expires_at <= self.now:
            raise ModelError('MC023')
        if aid in self.accounts:
            raise ModelError('MC010')
        self.accounts[aid] = {'balance': 0, 'in_flight': 0}
        if not self.grants_on:
            self._post(aid, initial, 'open')
        elif initial > 0:
            self._new_grant(aid, initial, 'signup', 'open',
                            expires_at=expires_at if expires_at is not False else None)
        else:
            self._post(aid, 0, 'open')
        return initial

    def add_credits(self, aid, credits, note=None):
        if credits <= 0:
            raise ModelError('MC014')
        self._lock(aid)
        if not self.grants_on:
            self._post(aid, credits, 'grant', note=note)
        else:
            self._new_grant(aid, credits, 'purchase', 'grant', note=note, ledger_note=note)
        return self.accounts[aid]['balance']

    def grant_credits(self, aid, credits, source, expires_at, priority, note):
        if credits <= 0:
            raise ModelError('MC014')
        # plan and recharge grants come only from plans and recharges
        if (source not in ('signup', 'purchase', 'promo')
                or (expires_at is not None and expires_at <= self.now)
                or (priority is not None and not 0 <= priority <= 100)):
            raise ModelError('MC023')
        self._lock(aid)
        g = self._new_grant(aid, credits, source, 'grant', expires_at=expires_at,
                            priority=priority, note=note, ledger_note=note)
        return g['id']

    def set_price(self, channel, price):
        self.prices[channel] = price

    # ------------------------------------------------------------ plans and the clock

    def advance(self, to):
        assert to >= self.now and to % HOUR == HOUR // 2
        self.now = to

    def _plan_row(self, p):
        return (p['monthly_credits'], p['period_start'], p['period_end'], p['anchored_at'],
                p['cancelled'])

    def _open_period(self, aid, p, at):
        """The period containing at opens: a plan grant lapsing at its end
        (none for a period already over by the clock)."""
        start, end = period_of(p['anchored_at'], at)
        p['period_start'], p['period_end'] = start, end
        if end > self.now:
            self._new_grant(aid, p['monthly_credits'], 'plan', 'plan', expires_at=end,
                            period_start=start)

    def set_plan(self, aid, monthly, starts_at):
        if monthly <= 0:
            raise ModelError('MC014')
        if starts_at > self.now:
            raise ModelError('MC024')
        self._lock(aid)
        p = self.plans.get(aid)
        if p is not None and not p['ended'] and (p['period_end'] > self.now
                                                 or not p['cancelled']):
            # a running plan: the new amount applies from the next period
            # (a cancelled one still in its period is taken up again)
            self._saw('plan changed' + (' (taken up again)' if p['cancelled'] else ''))
            p['monthly_credits'] = monthly
            p['cancelled'] = False
            if p['period_end'] <= self.now:     # over, not renewed yet: now
                self._saw('plan renewed by set_plan')
                self._open_period(aid, p, self.now)
            return self._plan_row(p)
        start, end = period_of(starts_at, self.now)
        if p is not None and start < p['period_end']:
            # not over a period the old plan granted: one plan grant per moment
            self._saw('plan afresh refused: its first period overlaps the last one')
            raise ModelError('MC024')
        self._saw('plan started' if p is None else 'plan started afresh')
        p = {'monthly_credits': monthly, 'anchored_at': starts_at, 'cancelled': False,
             'ended': False}
        self.plans[aid] = p
        if add_months(starts_at, 1) <= self.now:
            self._saw('plan anchored in an earlier period')
        if to_dt(starts_at).day > 28:
            self._saw('plan anchored on day %d' % to_dt(starts_at).day)
        self._open_period(aid, p, self.now)
        return self._plan_row(p)

    def cancel_plan(self, aid):
        self._lock(aid)
        p = self.plans.get(aid)
        if p is None:
            raise ModelError('MC025')
        if p['ended']:
            self._saw('ended plan cancelled again')
        p['cancelled'] = True
        return (p['monthly_credits'], True)

    def renew_plans(self, at):
        if at > self.now:
            raise ModelError('MC026')
        n = 0
        for aid in sorted(self.plans):
            p = self.plans[aid]
            if p['ended'] or p['period_end'] > at:
                continue
            self._expire_due(aid, where='renew_plans')  # the old period's grant too
            if p['cancelled']:
                self._saw('plan ended')
                p['ended'] = True
            else:
                self._saw('plan renewed')
                if add_months(p['period_end'], 1) <= at:
                    self._saw('plan periods skipped')
                if period_of(p['anchored_at'], at)[1] <= self.now:
                    self._saw('plan renewed to a period already over')
                self._open_period(aid, p, at)
            n += 1
        return n

    def expire_grants(self, at):
        """Due by at (not by the clock), account by account."""
        if at > self.now:
            raise ModelError('MC026')
        n = 0
        for aid in sorted(self.accounts):
            n += self._expire_due(aid, at, where='expire_grants')
        if any(g['remaining'] > 0 and self._due(g) for g in self.grants):
            self._saw('expire_grants left grants due after its at')
        return n

    # ------------------------------------------------------------ policy

    def enable(self, aid, min_balance, max_credits, target, limit):
        if (min_balance < 0 or max_credits <= 0 or min_balance > max_credits
                or (target is not None and target < min_balance)
                or (limit is not None and limit <= 0)):
            raise ModelError('MC013')
        self._lock(aid)
        self.policies[aid] = {
            'enabled': True, 'min_balance': min_balance, 'max_credits': max_credits,
            'target_balance': target, 'monthly_limit': limit,
            'payment_failures': 0, 'disabled_reason': None}
        return True

    def disable(self, aid):
        self._lock(aid)
        self._turn_off(aid, 'disabled_by_user')
        self._repay(aid)                # refunds first, then debts
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

    def _refund(self, b, rid):
        """A failed batch's cost goes back where it came from: the owed part
        cancels its debt, each grant's part goes back to that grant; if the
        grant has expired, that part first pays what the account owes (it
        was in use, not idle, when the grant expired) and the rest lapses at
        once.  What the account still owes is repaid from the rest once the
        settlement call has refunded every batch it fails ("refunds first,
        then debts")."""
        aid = b['account']
        b['status'] = BATCH_FAILED
        if not self.grants_on:
            self._post(aid, b['cost'], 'refund', b['id'], rid)
            return
        # debited before 0.2.0: what neither grants nor the debt account for
        # was bought credits in 0.1, and comes back as a new purchase grant,
        # carried over (carried_over; no row names it).  The owed part and
        # that part come back in one refund row without a grant.
        legacy = b['cost'] - b['owed'] - sum(b['funding'].values()) if b['legacy'] else 0
        if b['owed'] or legacy > 0:
            x, b['owed'] = b['owed'], 0
            self._post(aid, x + max(legacy, 0), 'refund', b['id'], rid)
            if x:
                self._saw('refund: owed part cancelled')
        if legacy > 0:
            self._saw('refund of a batch debited before 0.2.0')
            self.grants.append(
                {'id': len(self.grants), 'account': aid, 'source': 'purchase',
                 'credits': legacy, 'remaining': legacy, 'priority': 50, 'expires_at': None,
                 'recharge': None, 'period_start': None, 'note': ('legacy refund', b['id']),
                 'refunded': 0, 'expired': 0, 'carried_over': legacy})
        for gid in sorted(b['funding']):
            x = b['funding'].pop(gid)
            g = self.grants[gid]
            g['remaining'] += x
            g['refunded'] += x
            self._post(aid, x, 'refund', b['id'], rid, grant=gid)
            self._saw('refund to a grant')
            if self._due(g):
                self._saw('refund to an expired grant')
                if self._repay(aid, g, x):
                    self._saw('refund to an expired grant repaid a debt first')
                if g['remaining']:
                    self._expire_grant(g, b['id'])  # the expire row names the batch

    def _settle_failed(self, r):
        """A failed or cancelled recharge's awaiting batches fail with a
        refund each, oldest first; then, while balance + in_flight is still
        negative, the account's newest awaiting batches too."""
        aid = r['account']
        for b in self.batches:
            if b['recharge'] == r['id'] and b['status'] == AWAITING:
                self._refund(b, r['id'])
                self._saw('own batch failed')
        acct = self.accounts[aid]
        while acct['balance'] + acct['in_flight'] < 0:
            awaiting = [b for b in self.batches
                        if b['account'] == aid and b['status'] == AWAITING]
            if not awaiting:
                break
            self._saw('dependent batch failed')
            self._refund(awaiting[-1], r['id'])
        if acct['balance'] + acct['in_flight'] < 0:
            # what verify() check 4 reports (seed 59 before 6f610c9)
            self._saw('balance + in_flight negative after refunds (verify check 4)')

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
        aid = r['account']
        self._lock(aid)                         # settlement locks the account first
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
        self.accounts[aid]['in_flight'] -= r['credits']
        if not self.grants_on:
            self._post(aid, r['credits'], 'recharge', None, r['id'])
        else:
            self._new_grant(aid, r['credits'], 'recharge', 'recharge', recharge=r['id'],
                            expires_at=(self.now + self.recharge_lifetime
                                        if self.recharge_lifetime else None))
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
        aid = r['account']
        self._lock(aid)                         # settlement locks the account first
        if r['status'] == FAILED and r['failure_reason'] == reason:
            return r['status']                  # a retry: nothing changes
        if r['status'] in SETTLED:
            raise ModelError('MC006')
        if r['status'] == PENDING:
            raise ModelError('MC015')
        self._saw('recharge failed')
        r['status'] = FAILED
        r['failure_reason'] = reason
        self.accounts[aid]['in_flight'] -= r['credits']
        self._settle_failed(r)
        p = self.policies.get(aid)
        if p is not None:
            p['payment_failures'] += 1
            if p['payment_failures'] >= self.max_payment_failures and p['enabled']:
                self._turn_off(aid, 'payment_failed')
        self._repay(aid)                # refunds first, then debts
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
        self._expire_due(aid, where='a debit')  # the account is locked: due grants lapse
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
        b = {'id': bid, 'account': aid, 'messages': messages, 'channel': channel,
             'key': key, 'cost': cost, 'owed': 0, 'funding': {}, 'legacy': False,
             'status': AWAITING if shortfall else READY, 'recharge': covering}
        self.batches.append(b)
        if not self.grants_on:          # 0.1.1: one debit row, no grant, no recharge
            self._post(aid, -cost, 'debit', bid)
            return bid
        # Draw-down: one "debit" row per grant drawn, one without a grant
        # for the part the batch owes.
        left = cost
        drawn = 0
        for g in self._open_grants(aid):
            x = min(g['remaining'], left)
            g['remaining'] -= x
            left -= x
            drawn += 1
            b['funding'][g['id']] = x
            self._post(aid, -x, 'debit', bid, covering, grant=g['id'])
            if left == 0:
                break
        if drawn > 1:
            self._saw('debit drew from %s grants' % ('2' if drawn == 2 else 'more'))
        if left:
            b['owed'] = left
            self._saw('debit owes' + (' in part' if drawn else ''))
            self._post(aid, -left, 'debit', bid, covering)
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
    # The grants mix: the same operations (open_account also with an
    # expiring signup grant) and grants, plans, expiry and the clock.
    GRANT_WEIGHTS = WEIGHTS + [
        ('grant_credits', 7), ('set_plan', 3), ('cancel_plan', 1), ('renew_plans', 3),
        ('expire_grants', 2), ('advance', 6), ('transaction', 4),
    ]

    def __init__(self, rng, mix='basic'):
        self.rng = rng
        self.mix = mix
        self.refs = 0
        self.keys = 0

    def next(self, m, in_transaction=False):
        table = self.WEIGHTS if self.mix == 'basic' or not m.grants_on else self.GRANT_WEIGHTS
        if in_transaction:      # the clock's SET would be undone by a ROLLBACK
            table = [(n, w) for n, w in table if n not in ('advance', 'transaction')]
        names = [n for n, _ in table]
        weights = [w for _, w in table]
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
        if self.mix == 'basic' or not m.grants_on or self.rng.random() < 0.4:
            return Op('open_account', 'SELECT balance FROM credits.open_account(%s, %s)',
                      (aid, initial), lambda mm: mm.open_account(aid, initial))
        # the 3-argument form: an expiring signup grant (or NULL: never)
        expires = self.rng.choice([None, self.later(m), self.later(m), self.later(m),
                                   self.earlier(m)])
        return Op('open_account', 'SELECT balance FROM credits.open_account(%s, %s, %s)',
                  (aid, initial, ts(expires)), lambda mm: mm.open_account(aid, initial, expires))

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
        balance = acct['balance'] - sum(g['remaining'] for g in m.grants    # after expiry
                                        if g['account'] == aid and m._due(g))
        if p is None or not p['enabled']:
            cost = balance + self.rng.choice([0, 1])
        else:
            # need = min_balance - (balance - cost + in_flight)
            base = balance + acct['in_flight'] - p['min_balance']
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


    # -- grants, plans, expiry and the clock (the grants mix)

    def later(self, m):
        """A whole hour after the model's now."""
        return floor_hour(m.now) + HOUR * self.rng.choice(
            [1, 1, 2, 5, 24, 24, 72, 24 * 10, 24 * 30, 24 * 45, 24 * 200])

    def earlier(self, m):
        """A whole hour not after the model's now (so not in the future)."""
        return floor_hour(m.now) - HOUR * self.rng.choice([0, 0, 1, 24])

    def op_grant_credits(self, m):
        rng = self.rng
        aid = self.account(m)
        credits = rng.randint(1, 300)
        if rng.random() < 0.05:
            credits = rng.choice([0, -7])
        source = rng.choices(['promo', 'purchase', 'signup', 'plan', 'recharge', 'gift'],
                             [50, 15, 15, 3, 3, 3])[0]
        r = rng.random()
        expires = None if r < 0.35 else self.earlier(m) if r < 0.4 else self.later(m)
        priority = None
        if rng.random() < 0.4:
            priority = rng.choice([0, 5, 10, 20, 30, 30, 50, 99, 100, -1, 101])
        note = rng.choice([None, 'model promo'])
        return Op('grant_credits', 'SELECT credits.grant_credits(%s, %s, %s, %s, %s, %s)',
                  (aid, credits, source, ts(expires), priority, note),
                  lambda mm: mm.grant_credits(aid, credits, source, expires, priority, note),
                  kind='grant_id')

    def plan_start(self, m):
        rng = self.rng
        r = rng.random()
        if r < 0.05:
            return floor_hour(m.now) + HOUR * rng.choice([1, 24])       # MC024
        if r < 0.35:
            return floor_hour(m.now)
        if r < 0.7:
            return floor_hour(m.now) - HOUR * rng.choice([1, 23, 24 * 20, 24 * 45, 24 * 400])
        # a month's last days, up to a year back: periods clamped to month ends
        d = to_dt(m.now)
        back = rng.randint(0, 12)
        y, mo = divmod(d.month - 1 - back, 12)
        y += d.year
        last = calendar.monthrange(y, mo + 1)[1]
        day = rng.choice([dd for dd in (29, 30, 31) if dd <= last] or [last])
        t = to_epoch(datetime.datetime(y, mo + 1, day, rng.choice([0, 9, 23]), tzinfo=UTC))
        return t if t <= m.now else floor_hour(m.now)

    def op_set_plan(self, m):
        aid = self.account(m)
        monthly = self.rng.choice([50, 100, 200, 300, 500])
        if self.rng.random() < 0.05:
            monthly = self.rng.choice([0, -10])
        starts = self.plan_start(m)
        return Op('set_plan',
                  'SELECT monthly_credits, period_start, period_end, anchored_at,'
                  ' cancelled_at IS NOT NULL FROM credits.set_plan(%s, %s, %s)',
                  (aid, monthly, ts(starts)), lambda mm: mm.set_plan(aid, monthly, starts),
                  kind='row')

    def op_cancel_plan(self, m):
        if m.plans and self.rng.random() < 0.8:
            aid = self.rng.choice(sorted(m.plans))
        else:
            aid = self.account(m)
        return Op('cancel_plan',
                  'SELECT monthly_credits, cancelled_at IS NOT NULL FROM credits.cancel_plan(%s)',
                  (aid,), lambda mm: mm.cancel_plan(aid), kind='row')

    def at(self, m):
        """renew_plans' and expire_grants' at: now (given, or the default:
        the extension's clock), the whole hour before it, days or weeks
        before it (a late run: periods already over, grants due since left
        alone), or (MC026) the whole hour after it."""
        r = self.rng.random()
        if r < 0.05:
            return floor_hour(m.now) + HOUR                             # MC026
        if r < 0.2:
            return None
        if r < 0.3:
            return floor_hour(m.now) - HOUR * self.rng.choice([24, 24 * 10, 24 * 40])
        return m.now if r < 0.55 else floor_hour(m.now)

    def op_renew_plans(self, m):
        at = self.at(m)
        if at is None:
            return Op('renew_plans', 'SELECT credits.renew_plans()', (),
                      lambda mm: mm.renew_plans(mm.now))
        return Op('renew_plans', 'SELECT credits.renew_plans(%s)', (ts(at),),
                  lambda mm: mm.renew_plans(at))

    def op_expire_grants(self, m):
        at = self.at(m)
        if at is None:
            return Op('expire_grants', 'SELECT credits.expire_grants()', (),
                      lambda mm: mm.expire_grants(mm.now))
        return Op('expire_grants', 'SELECT credits.expire_grants(%s)', (ts(at),),
                  lambda mm: mm.expire_grants(at))

    def op_upgrade(self, m):
        return Op('upgrade', 'ALTER EXTENSION credits UPDATE', (), lambda mm: mm.upgrade(),
                  kind='none')

    def op_transaction(self, m):
        """Operations in one transaction (drawn as it runs: Runner.transaction)."""
        count = self.rng.randint(2, 4)
        end = self.rng.choices(['commit', 'rollback'], [85, 15])[0]
        return Op('transaction', 'BEGIN', (count, end), None, kind='txn')

    def op_advance(self, m):
        """Moves the clock forward: by a while, or to just before or just
        after the next expiry or period end."""
        rng = self.rng
        instants = sorted(set(
            [g['expires_at'] for g in m.grants
             if g['expires_at'] is not None and g['remaining'] > 0]
            + [p['period_end'] for p in m.plans.values()]))
        instants = [t for t in instants if t > m.now]
        r = rng.random()
        if instants and r < 0.5:
            t = instants[0] if rng.random() < 0.7 else rng.choice(instants)
            after = floor_hour(t) + HOUR + HOUR // 2 if t % HOUR else t + HOUR // 2
            before = floor_hour(t) - HOUR // 2
            to = after if rng.random() < 0.7 or before <= m.now else before
        else:
            to = m.now + HOUR * rng.choice([1, 3, 24, 24, 24 * 7, 24 * 30])
        return Op('advance', 'SET credits.clock_offset = %s', (('clock', to),),
                  lambda mm: mm.advance(to), kind='none')
class Mismatch(Exception):
    pass


class Runner:
    def __init__(self, seed, steps, log, mix='basic', dry=False):
        self.seed = seed
        self.steps = steps
        self.log = log
        self.mix = mix
        self.dry = dry
        self.ignore = None      # --ignore: a verify() problem known already
        self.rng = random.Random(seed)
        self.max_failures = self.rng.choice([1, 2, 3, 3, 4])
        # The grants mix lives on the model's clock, from a start in the
        # next calendar year: month ends (periods clamped to them), a leap
        # February, a year's end.  The basic mix never moves the clock.
        year = datetime.datetime.now(UTC).year + 1
        self.timezone = 'UTC'
        self.lifetime = 0
        self.upgrade_at = None
        if mix == 'basic':
            start = floor_hour(int(time.time())) + HOUR // 2
        else:
            if mix == 'upgrade':    # a 0.1.1 database, updated part way
                self.upgrade_at = self.rng.randint(steps // 5, steps // 2) if steps > 1 else 1
            month, day, hour = self.rng.choice([(1, 31, 10), (1, 29, 22), (1, 30, 23),
                                                (3, 31, 0), (6, 15, 12), (12, 31, 23)])
            if (month, day) == (1, 30):
                year += (4 - year % 4) % 4      # a leap year's January 30
            start = to_epoch(datetime.datetime(year, month, day, hour, 30, tzinfo=UTC))
            # recharge grants expire at a quarter to an hour (see "time")
            self.lifetime = self.rng.choice([0, 0, 2 * HOUR + 900, 3 * DAY + 900,
                                             30 * DAY + 900])
            # periods are in UTC whatever the session's time zone
            self.timezone = self.rng.choice(['UTC', 'America/New_York', 'Australia/Sydney',
                                             'Asia/Kolkata'])
        self.start = start
        self.model = Model(self.max_failures, start, self.lifetime, mix != 'upgrade')
        self.gen = Generator(self.rng, mix)
        self.bid_map = {}       # model batch id -> db batch id
        self.rid_map = {}       # model recharge id -> db recharge id
        self.gid_map = {}       # model grant id -> db grant id
        self.last_rid = 0       # highest db recharge id mapped so far
        self.last_gid = 0       # highest db grant id mapped so far
        self.last_entry = 0     # highest db ledger entry id compared so far
        self.dbname = 'model_%d' % seed if mix == 'basic' else 'model_%s_%d' % (mix, seed)
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
            cur.execute("CREATE EXTENSION credits VERSION '0.1.1'" if self.mix == 'upgrade'
                        else 'CREATE EXTENSION credits')
            for channel, price in sorted(START_PRICES.items()):
                if channel != 'email':
                    cur.execute('INSERT INTO credits.prices VALUES (%s, %s)', (channel, price))
            cur.execute('SET credits.max_payment_failures = %s', (self.max_failures,))
            cur.execute('SET credits.recharge_expiry = 3600')
            cur.execute('SET TIME ZONE %s', (self.timezone,))
            if self.mix != 'basic':
                cur.execute('SET credits.recharge_credit_lifetime = %s', (self.lifetime,))
                cur.execute('SET credits.clock_offset = %s', (self.offset(self.model.now),))
                if self.log:
                    print("# setup: SET TIME ZONE '%s'; SET credits.recharge_credit_lifetime = %d;"
                          " SET credits.max_payment_failures = %d; clock at %s UTC"
                          % (self.timezone, self.lifetime, self.max_failures,
                             show(self.model.now)))
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

    def offset(self, to):
        """credits.clock_offset that puts the database's clock at `to`
        now, and a little after it from then on (never before it)."""
        return int(math.ceil(to - time.time())) + 1

    def db_params(self, op):
        out = []
        for p in op.params:
            if isinstance(p, tuple) and p[0] == 'rid':
                out.append(self.rid_map.get(p[1], NO_SUCH_RECHARGE) if p[1] is not None
                           else NO_SUCH_RECHARGE)
            elif isinstance(p, tuple) and p[0] == 'clock':
                out.append(self.offset(p[1]))
            else:
                out.append(p)
        return tuple(out)

    def dry_step(self, n):
        """--dry: the model alone, checking its own invariants."""
        if n == self.upgrade_at:
            op = self.gen.op_upgrade(self.model)
        else:
            op = self.gen.next(self.model)
        if op.kind == 'txn':
            txn = self.model.snapshot()
            for _ in range(op.params[0]):
                self.dry_statement(n, self.gen.next(self.model, in_transaction=True))
            if op.params[1] == 'rollback':
                self.model = txn.restore()
            self.stats[('transaction', op.params[1])] = \
                self.stats.get(('transaction', op.params[1]), 0) + 1
        else:
            self.dry_statement(n, op)
        self.model.check()

    def dry_statement(self, n, op):
        saved = self.model.snapshot()
        try:
            want = op.call(self.model)
            outcome = 'ok'
        except ModelError as e:
            self.model = saved.restore()
            want, outcome = None, e.sqlstate
        if self.log:
            print('# %4d %s %r -> %s %r' % (n, op.name, op.params, outcome, want))
        self.stats[(op.name, outcome)] = self.stats.get((op.name, outcome), 0) + 1

    # -- one step

    def step(self, n):
        if n == self.upgrade_at:
            op = self.gen.op_upgrade(self.model)
        else:
            op = self.gen.next(self.model)
        n_ledger = len(self.model.ledger)
        if op.kind == 'txn':
            return self.transaction(n, op, n_ledger)
        problems, sql_text, _ = self.statement(n, op)
        problems += self.compare_all(n, n_ledger)
        self.fail_on(n, op, sql_text, problems)

    def statement(self, n, op, where='', savepoint=False):
        """Runs one operation on the model and the database (in a savepoint
        if asked: rolled back to when it fails); returns the differences in
        what it returned, its SQL, and its SQLSTATE."""
        params = self.db_params(op)
        with self.conn.cursor() as cur:
            sql_text = where + cur.mogrify(op.sql, params).decode()

        saved = self.model.snapshot()         # a failing statement changes nothing
        n_recharges, n_grants = len(self.model.recharges), len(self.model.grants)
        try:
            want = op.call(self.model)
            want_state = None
        except ModelError as e:
            self.model = saved.restore()
            want, want_state = None, e.sqlstate

        got_state, rows, got_error = None, None, ''
        if savepoint:
            with self.conn.cursor() as cur:
                cur.execute('SAVEPOINT model')
        try:
            with self.conn.cursor() as cur:
                cur.execute(op.sql, params)
                rows = cur.fetchall() if cur.description else []
        except psycopg2.Error as e:
            got_state = e.pgcode or 'error'
            got_error = str(e).strip().split('\n')[0]
        if savepoint:
            with self.conn.cursor() as cur:
                cur.execute('ROLLBACK TO SAVEPOINT model' if got_state
                            else 'RELEASE SAVEPOINT model')

        if self.log:
            print('# %4d %s -> %s%s' % (n, sql_text, got_state or rows,
                                       ' (clock at %s UTC)' % show(self.model.now)
                                       if op.name == 'advance' else ''))
        outcome = got_state or 'ok'
        self.stats[(op.name, outcome)] = self.stats.get((op.name, outcome), 0) + 1

        problems = []
        if want_state != got_state:
            problems.append('outcome: model %s, database %s%s'
                            % (want_state or 'success', got_state or 'success',
                               ' (%s)' % got_error if got_error else ''))
            raise Mismatch(self.report(n, op, sql_text, problems))

        self.model.check()
        problems += self.map_recharges(n_recharges)
        if self.model.grants_on:
            problems += self.map_grants(n_grants)
        if got_state is None and not problems:
            problems += self.check_result(op, want, rows)
        return problems, sql_text, got_state

    def transaction(self, n, op, n_ledger):
        """BEGIN; a few operations, each in a savepoint (rolled back to when
        it fails, as psql's ON_ERROR_ROLLBACK does); COMMIT or ROLLBACK.
        Compared when it ends."""
        count, end = op.params
        with self.conn.cursor() as cur:
            cur.execute('BEGIN')
        if self.log:
            print('# %4d BEGIN' % n)
        saved = self.model.snapshot()
        problems = []
        for i in range(count):
            sub = self.gen.next(self.model, in_transaction=True)
            sub_problems, sql_text, _ = self.statement(
                n, sub, 'BEGIN; ... (statement %d of %d, then %s) ' % (i + 1, count, end.upper()),
                savepoint=True)
            problems += sub_problems
            if problems:
                self.fail_on(n, sub, sql_text, problems)
        with self.conn.cursor() as cur:
            cur.execute(end.upper())
        if self.log:
            print('# %4d %s' % (n, end.upper()))
        if end == 'rollback':
            self.model = saved.restore()
        self.stats[('transaction', end)] = self.stats.get(('transaction', end), 0) + 1
        self.fail_on(n, op, 'BEGIN; ... %s (%d statements)' % (end.upper(), count),
                     self.compare_all(n, n_ledger))

    def compare_all(self, n, n_ledger):
        problems = self.compare_state(n_ledger)
        if self.mix != 'basic' and self.model.grants_on:
            problems += self.compare_reports(n == self.steps or n % 25 == 0)
        return problems

    def fail_on(self, n, op, sql_text, problems):
        if self.ignore:
            problems = [p for p in problems if not re.search(self.ignore, p)]
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
        if op.kind == 'grant_id':
            want = self.gid_map.get(want)
        if op.kind == 'row':
            got = tuple(to_epoch(v) if isinstance(v, datetime.datetime) else v
                        for v in rows[0]) if rows else None
            if got != want:
                return ['returned: model %s, database %s'
                        % (tuple(show(v) if i and isinstance(v, int) and v > 10 ** 9 else v
                                 for i, v in enumerate(want)),
                           tuple(show(v) if i and isinstance(v, int) and v > 10 ** 9 else v
                                 for i, v in enumerate(got or ())))]
            return []
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

    def map_grants(self, n_before):
        """Maps new grants to the database's ids, and takes a recharge
        grant's expiry from the database: it is the clock when the recharge
        completed (the model's now plus the real time since the offset was
        set, less than a minute) plus the lifetime."""
        new_model = self.model.grants[n_before:]
        new_db = self.query(
            'SELECT grant_id, expires_at FROM credits.grants WHERE grant_id > %s ORDER BY 1',
            (self.last_gid,))
        if len(new_model) != len(new_db):
            return ['new grants: model %d, database %d (ids %s)'
                    % (len(new_model), len(new_db), [r[0] for r in new_db])]
        problems = []
        for g, (did, expires_at) in zip(new_model, new_db):
            self.gid_map[g['id']] = did
            self.last_gid = did
            if g['source'] == 'recharge' and g['expires_at'] is not None and expires_at:
                t = to_epoch(expires_at)
                if 0 <= t - g["expires_at"] < 600:
                    g['expires_at'] = t
                else:
                    problems.append("recharge grant %s expires at %s, not within 10 minutes"
                                    ' after %s' % (did, show(t), show(g['expires_at'])))
        return problems

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
                             b['status'], rid(b['recharge']) if b['recharge'] is not None else None,
                             b['owed'])
              for b in m.batches},
             {r[0]: tuple(r[1:]) for r in self.query(
                 'SELECT batch_id, account_id, messages, channel, idempotency_key, cost,'
                 ' status, recharge_id, %s FROM credits.send_batches'
                 % ('owed' if m.grants_on else '0'))})

        def grant_row(g):
            note = g['note']
            if isinstance(note, tuple):
                note = 'refund of batch %s, debited before version 0.2.0' % bid(note[1])
            return (g['account'], g['source'], g['credits'], g['remaining'], g['priority'],
                    show(g['expires_at']),
                    rid(g['recharge']) if g['recharge'] is not None else None,
                    show(g['period_start']), note, g['remaining'] == 0, g['carried_over'])

        def db_grant_row(r):
            r = list(r)
            for i in (5, 7):
                r[i] = None if r[i] is None else show(to_epoch(r[i]))
            return tuple(r)

        gid = self.gid_map.get
        diff('grant', {gid(g['id']): grant_row(g) for g in m.grants},
             {r[0]: db_grant_row(r[1:]) for r in self.query(
                 'SELECT grant_id, account_id, source, credits, remaining, priority, expires_at,'
                 ' recharge_id, period_start, note, closed_at IS NOT NULL, carried_over'
                 ' FROM credits.grants')} if m.grants_on else {})

        if m.grants_on:
            diff('plan',
               {a: (p['monthly_credits'], show(p['period_start']), show(p['period_end']),
                    show(p['anchored_at']), p['cancelled'], p['ended'])
                for a, p in m.plans.items()},
               {r[0]: (r[1], show(to_epoch(r[2])), show(to_epoch(r[3])), show(to_epoch(r[4])),
                       r[5], r[6]) for r in self.query(
                   'SELECT account_id, monthly_credits, period_start, period_end, anchored_at,'
                   ' cancelled_at IS NOT NULL, ended_at IS NOT NULL FROM credits.plans')})

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

        # New ledger rows, in order per account (balance_after runs per
        # account; the order between accounts in one statement is not a rule).
        want_ledger = [(a, d, ba, k, bid(b) if b is not None else None,
                        rid(r) if r is not None else None, gid(g) if g is not None else None,
                        note)
                       for a, d, ba, k, b, r, g, note in m.ledger[n_ledger:]]
        got = self.query('SELECT entry_id, account_id, delta, balance_after, kind, batch_id,'
                         ' recharge_id, %s, note FROM credits.ledger WHERE entry_id > %%s'
                         ' ORDER BY 1' % ('grant_id' if m.grants_on else 'NULL::bigint'),
                         (self.last_entry,))
        if got:
            self.last_entry = got[-1][0]
        got_ledger = [tuple(r[1:]) for r in got]
        for a in sorted(set(r[0] for r in want_ledger + got_ledger)):
            w = [r for r in want_ledger if r[0] == a]
            g = [r for r in got_ledger if r[0] == a]
            if w != g:
                problems.append('new ledger rows of account %s (delta, balance_after, kind,'
                                ' batch, recharge, grant, note):\n      model    %s\n'
                                '      database %s' % (a, [r[1:] for r in w], [r[1:] for r in g]))

        for a, problem in self.query('SELECT account_id, problem FROM credits.verify()'):
            problems.append('verify(): account %s: %s' % (a, problem))
        return problems

    def compare_reports(self, all_of_them):
        """What the reports say: account_overview's grant columns,
        balance_by_grant, and (every 25 steps) batch_funding() of every
        batch and expiring_credits()."""
        m = self.model
        gid = self.gid_map.get
        problems = []

        def diff(what, want, got):
            for k in sorted(set(want) | set(got), key=repr):
                if want.get(k) != got.get(k):
                    problems.append('%s %s: model %s, database %s'
                                    % (what, k, want.get(k, '(none)'), got.get(k, '(none)')))

        def db_time(t):
            return None if t is None else show(to_epoch(t))

        want = {}
        for aid in m.accounts:
            live = [g for g in m.grants if g['account'] == aid and g['remaining'] > 0]
            nxt = min((g['expires_at'] for g in live if g['expires_at'] is not None),
                      default=None)
            want[aid] = (sum(g['remaining'] for g in live if g['source'] == 'plan'),
                         sum(g['remaining'] for g in live if g['source'] == 'signup'),
                         sum(g['remaining'] for g in live if g['source'] == 'promo'),
                         sum(g['remaining'] for g in live
                             if g['source'] in ('purchase', 'recharge')),
                         m._owed(aid), nxt,
                         sum(g['remaining'] for g in live if g['expires_at'] == nxt
                             and nxt is not None))
        diff('account_overview (plan, free, promo, bought, owed, next_expiry, its credits)',
             {a: w[:5] + (show(w[5]), w[6]) for a, w in want.items()},
             {r[0]: tuple(r[1:6]) + (db_time(r[6]), r[7])
              for r in self.query(
                  'SELECT account_id, plan_credits, free_credits, promo_credits, bought_credits,'
                  ' owed, next_expiry, next_expiry_credits FROM credits.account_overview')})

        def state(g):
            # "due" is by the real clock, not the extension's (doc/grants.md,
            # "The clock offset is for the extension's decisions only")
            if g['remaining'] > 0:
                return 'due' if m._due(g, time.time()) else 'open'
            return 'expired' if g['expired'] else 'spent'

        diff('balance_by_grant (drawn, refunded, expired, remaining, state)',
             {gid(g['id']): (g['credits'] + g['refunded'] - g['expired'] - g['remaining'],
                             g['refunded'], g['expired'], g['remaining'], state(g))
              for g in m.grants},
             {r[0]: tuple(r[1:]) for r in self.query(
                 'SELECT grant_id, drawn, refunded, expired, remaining, state'
                 ' FROM credits.balance_by_grant')})
        if not all_of_them:
            return problems

        bid = self.bid_map.get

        def grantless(b):
            # what it owes; for a batch debited before 0.2.0, its whole cost
            # but what grants repaid (its one debit row has no grant)
            if b['legacy'] and b['status'] != BATCH_FAILED:
                return b['cost'] - sum(b['funding'].values())
            return b['owed']

        diff('batch_funding (grant: credits)',
             {bid(b['id']): sorted([(gid(g), x) for g, x in b['funding'].items() if x]
                                   + ([(None, grantless(b))] if grantless(b) else []), key=repr)
              for b in m.batches},
             {b: sorted(v, key=repr) for b, v in self._funding().items()})
        within = 7 * DAY
        diff('expiring_credits(7 days) (account, remaining, expires_at)',
             {gid(g['id']): (g['account'], g['remaining'], show(g['expires_at']))
              for g in m.grants if g['remaining'] > 0 and g['expires_at'] is not None
              and g['expires_at'] <= m.now + within},
             {r[0]: (r[1], r[2], db_time(r[3]))
              for r in self.query(
                  "SELECT grant_id, account_id, remaining, expires_at"
                  " FROM credits.expiring_credits('7 days')")})
        return problems

    def _funding(self):
        out = {b: [] for (b,) in self.query('SELECT batch_id FROM credits.send_batches')}
        for b, g, x in self.query(
                'SELECT b.batch_id, f.grant_id, f.credits FROM credits.send_batches b,'
                ' credits.batch_funding(b.batch_id) f'):
            out[b].append((g, x))
        return out

    def report(self, n, op, sql_text, problems):
        month = self.query("SELECT date_trunc('month', now() AT TIME ZONE 'UTC')"
                           " = date_trunc('month', %s::timestamp)", (self.started,))[0][0]
        lines = ['seed %d step %d (%s): %s' % (self.seed, n, op.name, sql_text)]
        lines += ['    ' + p for p in problems]
        if not month:
            lines.append('    (the calendar month changed during the run: monthly limits may differ)')
        lines.append('    replay: bash test/model/run.sh --seed %d --mix %s --steps %d --log'
                     % (self.seed, self.mix, n))
        return '\n'.join(lines)

    def run(self):
        if self.dry:
            for n in range(1, self.steps + 1):
                self.dry_step(n)
            return
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
    ap.add_argument('--mix', choices=['basic', 'grants', 'upgrade'], default='basic',
                    help='basic: the 0.1 operations; grants: also grants, plans, expiry,'
                         ' the clock and transactions; upgrade: basic on a 0.1.1 database,'
                         ' ALTER EXTENSION UPDATE part way, then grants')
    ap.add_argument('--dry', action='store_true',
                    help='run the model alone (no database): its own invariants only')
    ap.add_argument('--log', action='store_true', help='print every step as SQL')
    ap.add_argument('--stats', action='store_true',
                    help='print how often each operation had each outcome')
    ap.add_argument('--ignore', metavar='REGEX',
                    help='skip differences and verify() problems matching REGEX'
                         ' (to look past a known bug)')
    args = ap.parse_args()

    runner = Runner(args.seed, args.steps, args.log, args.mix, args.dry)
    runner.ignore = args.ignore
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
    print('ok - seed %d (%s%d steps, %s mix, max_payment_failures %d%s)'
          % (args.seed, 'dry, ' if args.dry else '', args.steps, args.mix, runner.max_failures,
             '' if args.mix == 'basic' else ', recharge_credit_lifetime %d, %s, from %s'
             % (runner.lifetime, runner.timezone, show(runner.start))))
    return 0


if __name__ == '__main__':
    sys.exit(main())

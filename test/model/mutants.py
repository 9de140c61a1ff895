#!/usr/bin/python3
"""test/model/mutants.py: do the fixed grants-mix seeds notice a wrong rule?

Each mutant below changes one rule of model.py's grants (draw-down order,
repayment, refunds to expired grants, expiry at a debit and at `at`, month
ends, skipped periods, ...).  For each, the seeds are run against the
database with the mutated model until one disagrees (or the model's own
invariants break); a mutant no seed catches means a rule the seeds do not
exercise.  Prints "mutant -> seed step (operation)" or "mutant -> NOT CAUGHT".

    mutants.py [--seeds "S S ..."] [--mix grants|upgrade] [MUTANT ...]

Needs a cluster with the extension installed, in the libpq environment
(PGHOST, PGPORT, PGUSER), as test/model/run.sh sets up; the default seeds
are run.sh's GRANT_SEEDS (for --mix upgrade, give UPGRADE_SEEDS; the two
update mutants mean something only there).
"""

import argparse
import importlib.util
import os
import sys

spec = importlib.util.spec_from_file_location(
    'model', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'model.py'))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
M = mod.Model
SEEDS = '20 85 6 7 171 123 39 70 5 72 4'


def patch(name, new):
    """Replaces Model.<name>, the original passed as new's first argument."""
    old = M.__dict__[name]
    setattr(M, name, lambda self, *a, **k: new(old, self, *a, **k))


def order(key):
    M._order = staticmethod(key)


def expire_due_by_id(old, self, aid, at=None, where='a lock'):
    n = 0
    for g in self.grants:
        if g['account'] == aid and g['remaining'] > 0 and self._due(g, at):
            self._expire_grant(g)
            n += 1
    return n


def repay_newest_first(old, self, aid):
    batches = self.batches
    self.batches = list(reversed(batches))
    try:
        old(self, aid)
    finally:
        self.batches = batches


def refund_owed_part_last(old, self, b, rid):
    owed, b['owed'] = b['owed'], 0
    old(self, b, rid)
    if owed:
        self._post(b['account'], owed, 'refund', b['id'], rid)


def refund_lapses_without_repaying(old, self, b, rid):
    repay = M.__dict__['_repay']
    M._repay = lambda self, aid, only=None, limit=None: 0 if only is not None else repay(self, aid)
    try:
        old(self, b, rid)
    finally:
        M._repay = repay


def set_plan_afresh_overlapping(old, self, aid, monthly, starts_at):
    p = self.plans.get(aid)
    if p is not None and (p['ended'] or (p['cancelled'] and p['period_end'] <= self.now)):
        p['period_end'] = min(p['period_end'], starts_at)      # no MC024 for an overlap
    return old(self, aid, monthly, starts_at)


def upgrade_owed_oldest_first(old, self):
    batches = self.batches
    self.batches = list(reversed(batches))
    try:
        old(self)
    finally:
        self.batches = batches


def legacy_refund_into_debt(old, self, b, rid):
    b['legacy'] = False         # the part not owed is not given back as a grant
    old(self, b, rid)


def refund_never_lapses(old, self, b, rid):
    due = M.__dict__['_due']
    M._due = lambda self, g, at=None: False
    try:
        old(self, b, rid)
    finally:
        M._due = due


def renew_to_next_period(old, self, at):
    if at > self.now:
        raise mod.ModelError('MC026')
    n = 0
    for aid in sorted(self.plans):
        p = self.plans[aid]
        if p['ended'] or p['period_end'] > at:
            continue
        self._expire_due(aid, where='renew_plans')
        if p['cancelled']:
            p['ended'] = True
        else:
            self._open_period(aid, p, p['period_end'])     # no periods skipped
        n += 1
    return n


def open_period_always_grants(old, self, aid, p, at):
    start, end = mod.period_of(p['anchored_at'], at)
    p['period_start'], p['period_end'] = start, end
    self._new_grant(aid, p['monthly_credits'], 'plan', 'plan', expires_at=end,
                    period_start=start)


def set_plan_grants_new_amount_now(old, self, aid, monthly, starts_at):
    p = self.plans.get(aid)
    running = (p is not None and not p['ended'] and p['period_end'] > self.now)
    row = old(self, aid, monthly, starts_at)
    if running:
        self._new_grant(aid, monthly, 'plan', 'plan', expires_at=p['period_end'],
                        period_start=p['period_start'])
    return row


def complete_without_lifetime(old, self, rid, ref):
    lifetime, self.recharge_lifetime = self.recharge_lifetime, 0
    try:
        return old(self, rid, ref)
    finally:
        self.recharge_lifetime = lifetime


MUTANTS = {
    'order without priority': lambda: order(
        lambda g: (g['expires_at'] is None, g['expires_at'] or 0, g['id'])),
    'order: never-expiring first': lambda: order(
        lambda g: (g['priority'], g['expires_at'] is not None, g['expires_at'] or 0, g['id'])),
    'order: newest grant first': lambda: order(
        lambda g: (g['priority'], g['expires_at'] is None, g['expires_at'] or 0, -g['id'])),
    'repay newest batch first': lambda: patch('_repay', repay_newest_first),
    'no repayment': lambda: patch('_repay', lambda old, self, aid: None),
    'repay after each refund': lambda: patch(
        '_refund', lambda old, self, b, rid: (old(self, b, rid), self._repay(b['account']))),
    'refund: owed part last': lambda: patch('_refund', refund_owed_part_last),
    'refund to an expired grant stays': lambda: patch('_refund', refund_never_lapses),
    'refund to an expired grant lapses without repaying': lambda: patch(
        '_refund', refund_lapses_without_repaying),
    'a fresh plan may overlap the last period': lambda: patch(
        'set_plan', set_plan_afresh_overlapping),
    'no expiry at a debit': lambda: patch(
        '_expire_due', lambda old, self, aid, at=None, where='a lock':
        0 if where == 'a debit' else old(self, aid, at, where)),
    'expiry in grant order': lambda: patch('_expire_due', expire_due_by_id),
    'due only after expires_at': lambda: setattr(
        M, '_due', lambda self, g, at=None: g['expires_at'] is not None
        and g['expires_at'] < (self.now if at is None else at)),
    'expire_grants by the clock': lambda: patch(
        'expire_grants', lambda old, self, at: old(self, self.now if at <= self.now else at)),
    'months of 30 days': lambda: setattr(mod, 'add_months', lambda t, k: t + k * 30 * 86400),
    'renew to the next period': lambda: patch('renew_plans', renew_to_next_period),
    'a period already over still grants': lambda: patch(
        '_open_period', open_period_always_grants),
    'set_plan grants the new amount now': lambda: patch(
        'set_plan', set_plan_grants_new_amount_now),
    'recharge grants never expire': lambda: patch('complete', complete_without_lifetime),
    'update: owed by the oldest awaiting batches': lambda: patch(
        'upgrade', upgrade_owed_oldest_first),
    'update: a legacy refund opens no grant': lambda: patch('_refund', legacy_refund_into_debt),
    'signup priority 50': lambda: mod.DEFAULT_PRIORITY.update(signup=50),
    'promo priority 50': lambda: mod.DEFAULT_PRIORITY.update(promo=50),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default=SEEDS)
    ap.add_argument('--mix', default='grants')
    ap.add_argument('mutant', nargs='*')
    args = ap.parse_args()
    names = args.mutant or list(MUTANTS)
    clean_model = dict(M.__dict__)
    clean_priority = dict(mod.DEFAULT_PRIORITY)
    clean_add_months = mod.add_months
    missed = 0
    for name in names:
        for k, v in clean_model.items():
            if not k.startswith('__'):
                setattr(M, k, v)
        mod.DEFAULT_PRIORITY.update(clean_priority)
        mod.add_months = clean_add_months
        MUTANTS[name]()
        caught = None
        for seed in args.seeds.split():
            runner = mod.Runner(int(seed), 500, False, args.mix)
            try:
                runner.run()
            except mod.Mismatch as e:
                caught = str(e).split(':')[0]
            except AssertionError:
                caught = 'seed %s: the model\'s own invariants' % seed
            if caught:
                break
        missed += caught is None
        print('%s -> %s' % (name, caught or 'NOT CAUGHT'), flush=True)
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())

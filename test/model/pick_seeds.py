#!/usr/bin/python3
"""test/model/pick_seeds.py: choose fixed seeds for test/model/run.sh.

Runs the model alone (model.py's --dry: no database) for seeds 1..N and
picks, greedily, the fewest seeds that together reach every event the model
counts (a rule's branch: "refund to an expired grant", "plan periods
skipped", ...) and every (operation, outcome) pair that any seed reached;
then, for each event reached by fewer than --depth chosen seeds, adds the
seed that reaches it most.  Prints the chosen seeds and what each one adds.

With --avoid REGEX (repeatable), seeds that reach a matching event (a
known bug's path, say) are left out of the cover; for each REGEX, the seed
that reaches the fewest avoided events along with it is printed, to be
added by hand as that bug's seed.

    pick_seeds.py [--mix grants] [--upto 300] [--steps 500] [--depth 2]
                  [--avoid REGEX ...]
"""

import argparse
import importlib.util
import os
import re
import sys


def load_model():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'model.py')
    spec = importlib.util.spec_from_file_location('model', path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules['psycopg2'] = type(sys)('psycopg2')     # not needed without a database
    spec.loader.exec_module(mod)
    return mod


def reach(mod, seed, mix, steps):
    runner = mod.Runner(seed, steps, False, mix, dry=True)
    runner.run()
    feats = dict(runner.model.events)
    for (name, outcome), count in runner.stats.items():
        feats['%s -> %s' % (name, outcome)] = count
    return feats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--mix', default='grants')
    ap.add_argument('--upto', type=int, default=300)
    ap.add_argument('--steps', type=int, default=500)
    ap.add_argument('--depth', type=int, default=2)
    ap.add_argument('--avoid', action='append', default=[])
    args = ap.parse_args()
    mod = load_model()
    reached = {s: reach(mod, s, args.mix, args.steps) for s in range(1, args.upto + 1)}

    def avoided(feats):
        return sorted(f for f in feats if any(re.search(a, f) for a in args.avoid))

    for a in args.avoid:
        hit = [s for s in reached if any(re.search(a, f) for f in reached[s])]
        best = min(hit, key=lambda s: (len(avoided(reached[s])), s)) if hit else None
        print('avoided %r: reached by %d seeds; for it alone: seed %s %s'
              % (a, len(hit), best, avoided(reached[best]) if best else ''))
    seeds = {s: f for s, f in reached.items() if not avoided(f)}
    every = set().union(*seeds.values())
    chosen, covered = [], set()
    while covered != every:
        best = max(seeds, key=lambda s: (len(set(seeds[s]) - covered), -s))
        new = set(seeds[best]) - covered
        chosen.append(best)
        covered |= new
        print('seed %d adds %d: %s' % (best, len(new), ', '.join(sorted(new)[:8])
                                       + (' ...' if len(new) > 8 else '')))
    for f in sorted(every):
        have = [s for s in chosen if f in seeds[s]]
        if len(have) < args.depth:
            extra = [s for s in seeds if s not in chosen and f in seeds[s]]
            if extra:
                best = max(extra, key=lambda s: (seeds[s][f], -s))
                chosen.append(best)
                print('seed %d for depth: %s' % (best, f))
    rare = sorted((sum(1 for s in seeds if f in seeds[s]), f) for f in every)[:16]
    print('rarest: ' + '; '.join('%s (%d seeds)' % (f, n) for n, f in rare))
    print('chosen: ' + ' '.join(str(s) for s in chosen))


if __name__ == '__main__':
    main()

"""Long fuzzing campaign: the op against the independent fp64 reference over the whole legal
input space, and illegal inputs against the contract (tests/fuzzing.py has the generators).

    python tests/fuzz_ops.py --cases 10000 --seed 0

Prints the counts by dtype and layout and every failure (with the case to reproduce it);
exits non-zero if any case failed.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time

from fuzzing import check_illegal, check_legal, draw_legal  # beside this script

import involution_ext  # noqa: F401  (registers the op)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000, help="legal cases; as many illegal ones follow, divided by 4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    failures = []
    counts = collections.Counter()
    start = time.perf_counter()
    for i in range(args.cases):
        case = draw_legal(rng)
        counts[(str(case.dtype).removeprefix("torch."), case.layout)] += 1
        try:
            check_legal(case)
        except AssertionError as e:
            failures.append(f"legal #{i}: {e}")
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} legal cases, {len(failures)} failures, {time.perf_counter() - start:.0f} s", flush=True)
    rules = collections.Counter()
    for i in range(max(1, args.cases // 4)):
        try:
            rules[check_illegal(rng)] += 1
        except AssertionError as e:
            failures.append(f"illegal #{i}: {e}")
    print(f"legal cases: {args.cases} ({', '.join(f'{d}/{l}: {n}' for (d, l), n in sorted(counts.items()))})")
    print(f"illegal cases: {sum(rules.values())} over {len(rules)} rules")
    print(f"failures: {len(failures)}; {time.perf_counter() - start:.0f} s")
    for f in failures[:20]:
        print(f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

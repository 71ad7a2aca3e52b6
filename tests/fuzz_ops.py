"""Long fuzzing campaign: the op against the independent fp64 reference over the whole legal
input space, and illegal inputs against the contract (tests/fuzzing.py has the generators).

    python tests/fuzz_ops.py --cases 10000 --seed 0
    python tests/fuzz_ops.py --fused --cases 2000     # involution::fused_forward / fused_backward

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
    parser.add_argument("--fused", action="store_true", help="fuzz the fused op (fp64, fp32, bf16; all gradients)")
    args = parser.parse_args(argv)
    if args.fused:
        return fuzz_fused(args.cases, args.seed)
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


def fuzz_fused(cases: int, seed: int) -> int:
    import torch
    from fused_cases import check_fused, random_fused_case

    rng = random.Random(seed)
    failures, start = [], time.perf_counter()
    for i in range(cases):
        case = random_fused_case(rng)
        dtype = rng.choice([torch.float64, torch.float32, torch.bfloat16])
        try:
            check_fused(case, dtype, i, "cpu")
        except AssertionError as e:
            failures.append(f"fused #{i} {dtype}: {e}")
    print(f"fused cases: {cases}; failures: {len(failures)}; {time.perf_counter() - start:.0f} s")
    for f in failures[:20]:
        print(f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

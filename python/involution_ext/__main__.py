"""``python -m involution_ext info`` prints the build facts; ``demo`` checks the op
against the reference on random inputs and times it against the unfold formulation."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _info() -> int:
    import involution_ext

    info = involution_ext.build_info()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _demo() -> int:
    import torch

    import involution_ext
    from involution_ext.reference import involution2d_unfold

    torch.manual_seed(0)
    B, C, H, G, K = 8, 64, 56, 4, 7
    x = torch.randn(B, C, H, H)
    w = torch.randn(B, G, K, K, H, H)
    y = involution_ext.involution2d(x, w, padding=3)
    ref = involution2d_unfold(x.double(), w.double(), padding=3)
    err = (y.double() - ref).abs().max().item()
    print(f"op vs fp64 unfold reference at {tuple(x.shape)}, K={K}: max abs error {err:.2e}")

    def bench(fn, reps=5):
        fn()
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return sorted(t)[len(t) // 2] * 1e3

    t_op = bench(lambda: involution_ext.involution2d(x, w, padding=3))
    t_unfold = bench(lambda: involution2d_unfold(x, w, padding=3), reps=3)
    print(f"forward: op {t_op:.2f} ms, unfold {t_unfold:.1f} ms ({t_unfold / t_op:.0f}x faster), "
          f"{torch.get_num_threads()} threads, CPU kernels: {involution_ext.cpu_isa()}")
    return 0 if err < 1e-3 else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m involution_ext")
    parser.add_argument("command", choices=["info", "demo"], nargs="?", default="info")
    args = parser.parse_args(argv)
    return {"info": _info, "demo": _demo}[args.command]()


if __name__ == "__main__":
    sys.exit(main())

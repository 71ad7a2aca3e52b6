"""``python -m involution_ext info`` prints the build facts; ``demo`` checks the op
against the reference on random inputs, times it against the unfold formulation and runs a
RedNet-50; ``heatmap`` draws the kernel heat maps of one involution layer (Fig. 3);
``cmake-prefix`` prints the folder to give CMake for ``find_package(involution_ext)``."""

from __future__ import annotations

import argparse
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
    ratio = t_unfold / t_op
    versus = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
    print(f"forward: op {t_op:.2f} ms, unfold {t_unfold:.1f} ms (the op is {versus}), "
          f"{torch.get_num_threads()} threads, CPU kernels: {involution_ext.cpu_isa()}")

    model = involution_ext.rednet50().eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        t_model = bench(lambda: model(image), reps=5)
        top5 = model(image).softmax(-1).topk(5)
    print(f"RedNet-50 ({params:.2f} M parameters, random weights): batch 1 at 224x224 in {t_model:.1f} ms; "
          f"top-5 classes {top5.indices[0].tolist()}")
    return 0 if err < 1e-3 else 1


def _heatmap(args) -> int:
    from involution_ext.visualize import heatmap_main

    layer = heatmap_main(args.image, args.out, args.checkpoint, args.layer, args.depth)
    print(f"wrote {args.out} (layer {layer})")
    return 0


def _cmake_prefix() -> int:
    from pathlib import Path

    import involution_ext

    # CMake finds <prefix>/share/cmake/involution_ext/involution_extConfig.cmake.
    print(Path(involution_ext.__file__).parent)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m involution_ext")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="build facts (default)")
    sub.add_parser("demo", help="op vs reference, op timing, RedNet-50 forward")
    heat = sub.add_parser("heatmap", help="kernel heat maps of one involution layer (Fig. 3)")
    heat.add_argument("--image", required=True)
    heat.add_argument("--out", required=True)
    heat.add_argument("--checkpoint", help="official RedNet checkpoint; random weights without it")
    heat.add_argument("--layer", help="involution layer name (default backbone.layer1.0.conv2)")
    heat.add_argument("--depth", type=int, default=50, choices=[26, 38, 50, 101, 152])
    sub.add_parser("cmake-prefix", help="folder for CMAKE_PREFIX_PATH (find_package(involution_ext))")
    args = parser.parse_args(argv)
    from involution_ext._optional import MissingDependencyError
    from involution_ext.checkpoint import CheckpointError

    try:
        if args.command == "heatmap":
            return _heatmap(args)
        return {"info": _info, "demo": _demo, "cmake-prefix": _cmake_prefix, None: _info}[args.command]()
    except (CheckpointError, MissingDependencyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # the message says it all: no traceback
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m involution_ext info`` prints the build facts; ``demo`` checks the op
against the reference on random inputs, times it against the unfold formulation and runs a
RedNet-50; ``heatmap`` draws the kernel heat maps of one involution layer (Fig. 3);
``convert --from paddle IN.pdparams OUT.pth`` converts a PaddleClas RedNet checkpoint to the
official layout; ``cmake-prefix`` prints the folder to give CMake for
``find_package(involution_ext)``."""

from __future__ import annotations

import argparse
import sys


def _info() -> int:
    import involution_ext

    info = involution_ext.build_info()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _demo() -> int:
    from involution_ext.apps.demo import main

    return main()


def _heatmap(args) -> int:
    from involution_ext.apps.heatmap import heatmap_main

    layer = heatmap_main(args.image, args.out, args.checkpoint, args.layer, args.depth)
    print(f"wrote {args.out} (layer {layer})")
    return 0


def _convert(args) -> int:
    from involution_ext.convert import convert_paddle_checkpoint

    depth = convert_paddle_checkpoint(args.src, args.dst, args.depth)
    print(f"wrote {args.dst}: RedNet-{depth} in the official layout (loads with load_official_checkpoint)")
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
    conv = sub.add_parser("convert", help="convert a PaddleClas RedNet .pdparams checkpoint to the official layout")
    conv.add_argument("--from", dest="source", choices=["paddle"], required=True, help="format of SRC")
    conv.add_argument("src", metavar="SRC")
    conv.add_argument("dst", metavar="DST")
    conv.add_argument("--depth", type=int, choices=[26, 38, 50, 101, 152],
                      help="expected depth (default: read from the file)")
    sub.add_parser("cmake-prefix", help="folder for CMAKE_PREFIX_PATH (find_package(involution_ext))")
    args = parser.parse_args(argv)
    from involution_ext._optional import MissingDependencyError
    from involution_ext.checkpoint import CheckpointError

    try:
        if args.command == "heatmap":
            return _heatmap(args)
        if args.command == "convert":
            return _convert(args)
        return {"info": _info, "demo": _demo, "cmake-prefix": _cmake_prefix, None: _info}[args.command]()
    except (CheckpointError, MissingDependencyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # the message says it all: no traceback
        return 1


if __name__ == "__main__":
    sys.exit(main())

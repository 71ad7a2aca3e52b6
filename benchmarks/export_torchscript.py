"""Saves TorchScript RedNet-50 and ResNet-50 (random weights, eval mode) for the C++
benchmark's end-to-end mode and examples/cpp/rednet_infer:

    python benchmarks/export_torchscript.py --out build/models
    build/dev/benchmarks/cpp/involution_bench --model rednet50=build/models/rednet50.pt \
        --model resnet50=build/models/resnet50.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_models import resnet50  # the script's folder

import involution_ext


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/models")
    parser.add_argument("--models", default="rednet50,resnet50", help="comma list: rednet26..152, resnet50")
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = resnet50(args.num_classes) if name == "resnet50" else involution_ext.models.rednet(
            int(name.removeprefix("rednet")), num_classes=args.num_classes)
        torch.jit.script(model.eval()).save(str(out / f"{name}.pt"))
        print(out / f"{name}.pt")


if __name__ == "__main__":
    main()

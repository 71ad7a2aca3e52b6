"""Detector sizes: parameters and multiply-adds of Faster R-CNN, Mask R-CNN and RetinaNet with
ResNet-50 + FPN (torchvision's), RedNet-50 + FPN and RedNet-50 + the involution FPN neck,
next to the paper's Table 3.

Counts are exact, not timed: parameters of the built models, and multiply-adds (GMACs, the
paper's "FLOPs") of one inference on a 1280×800 image — the size the paper's counts use —
through torch.utils.flop_counter (our ops count their own, span product included). COCO heads:
80 classes (+1 background for the R-CNNs). Needs torchvision (the CUDA-torch environment).
Writes <out>.json and .png under build/benchmarks/ (or --results-dir).

    python benchmarks/bench_detection.py
    python benchmarks/bench_detection.py --no-flops   # parameters only (seconds)
"""

from __future__ import annotations

import argparse

import torch
from common import machine, write_results  # the script's folder
from torch.utils.flop_counter import FlopCounterMode

from involution_ext.detection import fasterrcnn_rednet50_fpn, maskrcnn_rednet50_fpn, retinanet_rednet50_fpn

# The paper's Table 3 (mmdet, 1280×800): detector -> backbone/neck -> (params M, GFLOPs).
PAPER = {
    "Faster R-CNN": {"ResNet-50 / conv FPN": (41.5, 207.1), "RedNet-50 / conv FPN": (31.6, 177.9),
                     "RedNet-50 / involution FPN": (29.5, 135.0)},
    "Mask R-CNN": {"ResNet-50 / conv FPN": (44.2, 253.4), "RedNet-50 / conv FPN": (34.2, 224.2),
                   "RedNet-50 / involution FPN": (32.2, 181.3)},
    "RetinaNet": {"ResNet-50 / conv FPN": (37.7, 239.3), "RedNet-50 / conv FPN": (27.8, 210.1),
                  "RedNet-50 / involution FPN": (26.3, 199.9)},
}


def builders():
    from torchvision.models import resnet50
    from torchvision.models.detection import RetinaNet, fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    def retinanet_resnet50_fpn(num_classes):
        # P6/P7 from C5, as mmdet's RetinaNet (the paper's) and ours; torchvision's builder takes P5.
        backbone = _resnet_fpn_extractor(resnet50(), 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(2048, 256))
        return RetinaNet(backbone, num_classes)

    def resnet_rcnn(builder):
        return lambda num_classes, **kw: builder(num_classes=num_classes, weights=None, weights_backbone=None, **kw)

    # Every R-CNN box is kept (score threshold 0): the mask head runs on the 100 detections of an
    # image even with random weights, as the paper's counts assume.
    return {
        "Faster R-CNN": (81, resnet_rcnn(fasterrcnn_resnet50_fpn), fasterrcnn_rednet50_fpn, dict(box_score_thresh=0.0)),
        "Mask R-CNN": (81, resnet_rcnn(maskrcnn_resnet50_fpn), maskrcnn_rednet50_fpn, dict(box_score_thresh=0.0)),
        "RetinaNet": (80, lambda num_classes, **kw: retinanet_resnet50_fpn(num_classes), retinanet_rednet50_fpn, {}),
    }


def count(model, flops: bool) -> dict:
    row = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if flops:
        model.eval()
        image = torch.rand(3, 800, 1280)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model([image])
        row["gmacs"] = counter.get_total_flops() / 2e9  # the counter's FLOPs are 2 per multiply-add
    return row


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    detectors = list(PAPER)
    variants = list(PAPER["Faster R-CNN"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "params_m", "parameters (M)"), (axes[1], "gmacs", "GMACs at 1280×800")):
        for i, variant in enumerate(variants):
            values = [next((r.get(key, 0) for r in rows if r["detector"] == d and r["model"] == variant), 0)
                      for d in detectors]
            ax.bar([j + 0.27 * (i - 1) for j in range(len(detectors))], values, width=0.27, label=variant)
        ax.set_xticks(range(len(detectors)), detectors)
        ax.set_title(title)
    axes[0].legend(fontsize=8, loc="lower left", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-flops", action="store_true", help="parameters only")
    p.add_argument("--results-dir", default="", help="default build/benchmarks/")
    p.add_argument("--out", default="bench_detection")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    table = builders()
    rows = []
    print(f"{'detector':<13} {'backbone / neck':<27} {'params M':>9} {'paper':>6} {'GMACs':>8} {'paper':>6}")
    for detector, (classes, resnet_builder, rednet_builder, head_args) in table.items():
        models = {
            "ResNet-50 / conv FPN": lambda: resnet_builder(classes, **head_args),
            "RedNet-50 / conv FPN": lambda: rednet_builder(num_classes=classes, involution_neck=False, **head_args),
            "RedNet-50 / involution FPN": lambda: rednet_builder(num_classes=classes, **head_args),
        }
        for variant, build in models.items():
            row = {"detector": detector, "model": variant, **count(build(), not args.no_flops)}
            paper_params, paper_gflops = PAPER[detector][variant]
            row.update(paper_params_m=paper_params, paper_gflops=paper_gflops)
            rows.append(row)
            macs = f"{row['gmacs']:8.1f}" if "gmacs" in row else f"{'-':>8}"
            print(f"{detector:<13} {variant:<27} {row['params_m']:9.2f} {paper_params:6.1f} {macs} {paper_gflops:6.1f}")
    write_results(args.results_dir, args.out, {"machine": machine(torch.device("cpu")), "rows": rows},
                  lambda path: plot(rows, path))


if __name__ == "__main__":
    main()

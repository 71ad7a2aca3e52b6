"""ImageNet evaluation of a RedNet checkpoint: top-1 / top-5 over an ImageNet-style val folder.

``python -m involution_ext.evaluate --model rednet50 --checkpoint CKPT --data DIR``

``DIR`` holds one folder per class; sorted folder names give the class indices (the ImageNet
convention both the official mmcls and the PaddleClas weights were trained with, so the full
val set in its 1000 synset folders — ``n01440764`` … — scores as published). ``CKPT`` is an
official-layout torch checkpoint (e.g. converted with ``python -m involution_ext convert``) or
a PaddleClas ``.pdparams`` file, converted in memory.

Preprocessing as the checkpoints expect (PaddleClas's and mmcls's ImageNet test pipelines):
RGB, short side resized to 256 (bilinear), 224×224 centre crop, scaled to [0, 1], ImageNet
mean/std.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import nn

from .._optional import require
from ..checkpoint import load_state_into, read_state_dict
from ..models import rednet
from ._images import image_folder, load_image

MODELS = {f"rednet{d}": d for d in (26, 38, 50, 101, 152)}


class ImageFolderDataset(torch.utils.data.Dataset):
    """(normalised image, class index) pairs of an ImageNet-style folder."""

    def __init__(self, root, crop: int = 224, resize: int = 256, limit: Optional[int] = None):
        self.classes, self.samples = image_folder(root)
        if limit is not None:
            self.samples = self.samples[:limit]
        self.crop, self.resize = crop, resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_image(path, self.crop, self.resize)[0][0], label


def load_model(name: str, checkpoint, fused: bool = True) -> nn.Module:
    """``rednet<depth>`` with the checkpoint's weights (its class count read from
    ``head.fc.weight``), in eval mode."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    if str(checkpoint).endswith(".pdparams"):
        from ..convert import paddle_to_official, read_pdparams

        state, _ = paddle_to_official(read_pdparams(checkpoint), MODELS[name], source=str(checkpoint))
    else:
        state = read_state_dict(checkpoint)
    fc = state.get("head.fc.weight", state.get("module.head.fc.weight"))
    num_classes = fc.shape[0] if fc is not None else 1000
    return load_state_into(rednet(MODELS[name], num_classes=num_classes, fused=fused), state, checkpoint).eval()


def top_k_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[int]:
    """How many of the labels are among the k highest logits, for each k."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


def evaluate_folder(model: nn.Module, root, batch_size: int = 64, workers: int = 4, device: str = "cpu",
                    channels_last: bool = False, amp: Optional[str] = None, limit: Optional[int] = None,
                    crop: int = 224, resize: int = 256, progress: bool = True) -> dict:
    """Top-1 / top-5 accuracy (%) of ``model`` over the folder, with the counts and timing."""
    dataset = ImageFolderDataset(root, crop, resize, limit)
    num_outputs = model.head.fc.out_features
    if len(dataset.classes) > num_outputs:
        raise ValueError(f"{root} has {len(dataset.classes)} class folders but the model only {num_outputs} outputs")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    bar = None
    if progress:
        bar = require("tqdm", "eval", "the progress bar (or pass --no-progress)").tqdm(total=len(dataset), unit="img")
    correct, seen = [0, 0], 0
    start = time.perf_counter()
    with torch.inference_mode():
        for images, labels in loader:
            images = images.to(device=device, memory_format=memory_format)
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                logits = model(images)
            for i, hits in enumerate(top_k_correct(logits.float().cpu(), labels)):
                correct[i] += hits
            seen += len(labels)
            if bar is not None:
                bar.update(len(labels))
                bar.set_postfix(top1=f"{100 * correct[0] / seen:.2f}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    return {"top1": 100 * correct[0] / max(seen, 1), "top5": 100 * correct[1] / max(seen, 1), "images": seen,
            "classes": len(dataset.classes), "seconds": round(seconds, 3),
            "images_per_second": round(seen / seconds, 2) if seconds > 0 else None}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m involution_ext.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=list(MODELS))
    p.add_argument("--checkpoint", required=True, help="official-layout .pth (e.g. converted) or PaddleClas .pdparams")
    p.add_argument("--data", required=True, help="ImageNet-style val folder: one sub-folder of images per class")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loading processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    p.add_argument("--resize", type=int, default=256, help="short side before the centre crop")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--limit", type=int, help="evaluate only the first N images (a quick check)")
    p.add_argument("--unfused", action="store_true", help="Involution2d(fused=False)")
    p.add_argument("--out", help="JSON file for the results (default: evaluate-<model>.json)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Runs the evaluation; a user error (missing folder or file, unreadable checkpoint, missing
    extra) is printed as one line with exit status 1."""
    from .._optional import MissingDependencyError
    from ..checkpoint import CheckpointError

    args = parse_args(argv)
    try:
        model = load_model(args.model, args.checkpoint, fused=not args.unfused)
        result = evaluate_folder(model, args.data, args.batch_size, args.workers, args.device, args.channels_last,
                                 None if args.amp == "none" else args.amp, args.limit, args.crop, args.resize,
                                 progress=not args.no_progress)
    except (CheckpointError, MissingDependencyError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result.update(model=args.model, checkpoint=str(args.checkpoint), data=str(args.data), device=args.device,
                  amp=args.amp, channels_last=args.channels_last, resize=args.resize, crop=args.crop,
                  torch=torch.__version__)
    out = Path(args.out or f"evaluate-{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model}: top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} % on {result['images']} images "
          f"({result['classes']} classes), {result['images_per_second']} img/s; wrote {out}")
    if result["classes"] != model.head.fc.out_features:
        print(f"note: {result['classes']} class folders for {model.head.fc.out_features} outputs: labels are the "
              f"folders' sorted positions, which are the model's classes only for the full class set")
    return 0


if __name__ == "__main__":
    sys.exit(main())

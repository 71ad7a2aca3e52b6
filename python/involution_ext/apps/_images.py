"""Reading images for RedNet: short side resized, centre crop, ImageNet normalisation; and
listing an ImageNet-style folder (one folder per class). Shared by the heat-map tool, the
training recipe's image-folder reader and the ImageNet evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import torch

from .._optional import require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def image_folder(root) -> Tuple[List[str], List[Tuple[Path, int]]]:
    """The sorted class names (sub-folders of ``root``) and every (image path, class index),
    class index = position of the folder name in sorted order (the ImageNet convention the
    checkpoints were trained with)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders (it must hold one folder of images per class)")
    samples = [(path, label) for label, name in enumerate(classes) for path in sorted((root / name).iterdir())
               if path.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        raise FileNotFoundError(f"{root} has no images in its class folders")
    return classes, samples


def load_image(path, size: int = 224, resize: Optional[int] = None) -> Tuple[torch.Tensor, "object"]:
    """Reads an image, resizes its short side to ``resize`` (default ``size``; bilinear) and
    centre-crops ``size`` × ``size``; returns the normalised (1, 3, size, size) tensor and the
    cropped RGB array (H, W, 3) in [0, 1]."""
    import numpy as np
    Image = require("PIL.Image", "viz", "reading images")

    short = max(size, resize or size)
    img = Image.open(path).convert("RGB")
    scale = short / min(img.size)
    img = img.resize((max(short, round(img.width * scale)), max(short, round(img.height * scale))), Image.BILINEAR)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    x = (torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std
    return x.unsqueeze(0), rgb

"""Reading images for RedNet: short side resized to the model size, centre crop, ImageNet
normalisation. Shared by the heat-map tool and the training recipe's image-folder reader."""

from __future__ import annotations

from typing import Tuple

import torch

from .._optional import require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path, size: int = 224) -> Tuple[torch.Tensor, "object"]:
    """Reads an image, resizes its short side to ``size`` and centre-crops; returns the
    normalised (1, 3, size, size) tensor and the cropped RGB array (H, W, 3) in [0, 1]."""
    import numpy as np
    Image = require("PIL.Image", "viz", "reading images")

    img = Image.open(path).convert("RGB")
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BILINEAR)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    x = (torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std
    return x.unsqueeze(0), rgb

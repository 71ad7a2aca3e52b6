"""Heat maps of generated involution kernels (the paper's Fig. 3).

For a chosen :class:`~involution_ext.Involution2d` layer, the K×K kernel values are summed per
group at every output position, giving one (Ho, Wo) map per group, drawn over the input image.
Needs matplotlib and Pillow (``pip install involution_ext[viz]``).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from .._optional import require
from ..modules import Involution2d
from ._images import load_image

DEFAULT_LAYER = "backbone.layer1.0.conv2"


def involution_layers(model: nn.Module) -> List[str]:
    """Names of all :class:`Involution2d` modules in ``model``."""
    return [name for name, m in model.named_modules() if isinstance(m, Involution2d)]


@torch.no_grad()
def kernel_heatmaps(model: nn.Module, image: torch.Tensor, layer: Optional[str] = None) -> Tuple[torch.Tensor, str]:
    """Runs ``model`` on ``image`` (1, 3, H, W) and returns ((G, Ho, Wo) kernel sums per group
    at ``layer``, the layer's name). ``layer`` defaults to the first trunk involution."""
    names = involution_layers(model)
    if not names:
        raise ValueError("kernel_heatmaps: the model has no Involution2d layer")
    layer = layer or (DEFAULT_LAYER if DEFAULT_LAYER in names else names[0])
    if layer not in names:
        raise ValueError(f"kernel_heatmaps: {layer!r} is not an Involution2d layer; choose one of: {', '.join(names)}")
    module = model.get_submodule(layer)
    captured: List[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, args: captured.append(m.kernel(args[0]).float()))
    try:
        was_training = model.training
        model.eval()
        model(image)
        model.train(was_training)
    finally:
        handle.remove()
    kernels = captured[0][0]  # (G, K, K, Ho, Wo)
    return kernels.sum(dim=(1, 2)), layer


def plot_heatmaps(rgb, maps: torch.Tensor, title: str, out: str, max_groups: int = 8) -> None:
    """Writes a PNG: the image, then one heat map per group (up to ``max_groups``) overlaid."""
    import torch.nn.functional as F

    require("matplotlib", "viz", "drawing heat maps").use("Agg")
    import matplotlib.pyplot as plt

    groups = min(maps.shape[0], max_groups)
    size = rgb.shape[:2]
    up = F.interpolate(maps[:groups, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    fig, axes = plt.subplots(1, groups + 1, figsize=(2.6 * (groups + 1), 3.0))
    axes[0].imshow(rgb)
    axes[0].set_title("input")
    for g in range(groups):
        axes[g + 1].imshow(rgb)
        axes[g + 1].imshow(up[g].numpy(), cmap="jet", alpha=0.5)
        axes[g + 1].set_title(f"group {g}")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def heatmap_main(image: str, out: str, checkpoint: Optional[str] = None, layer: Optional[str] = None,
                 depth: int = 50) -> str:
    """The ``python -m involution_ext heatmap`` command; returns the layer drawn."""
    from ..checkpoint import load_official_checkpoint
    from ..models import rednet

    torch.manual_seed(0)
    model = rednet(depth)
    if checkpoint:
        # Only the backbone makes the kernels: a head for another number of classes is fine.
        load_official_checkpoint(model, checkpoint, ignore_prefixes=("head.",))
    x, rgb = load_image(image)
    maps, layer = kernel_heatmaps(model, x, layer)
    source = f"weights: {checkpoint}" if checkpoint else "RANDOM weights (no checkpoint given)"
    plot_heatmaps(rgb, maps, f"RedNet-{depth} {layer}: kernel sum per group — {source}", out)
    return layer

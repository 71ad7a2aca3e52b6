"""Detection with torchvision: RedNet backbones, the paper's involution FPN neck, and Faster
R-CNN / Mask R-CNN / RetinaNet builders (Li et al., CVPR 2021, Table 3).

The involution neck is torchvision's FPN with each 3×3 output conv replaced by a 7×7
:class:`~involution_ext.Involution2d` (16 channels per group, reduction 4), as in the paper's
detection code; the lateral 1×1 convs and the extra levels are unchanged. In the paper it gave
Faster R-CNN 39.5 → 40.2 box AP at 135 instead of 178 GFLOPs.

Needs torchvision (``pip install 'involution_ext[detection]'``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ._optional import require
from .checkpoint import load_official_checkpoint
from .models.rednet import RedNetBackbone
from .modules import Involution2d

require("torchvision", "detection", "involution_ext.detection")
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet  # noqa: E402
from torchvision.ops.feature_pyramid_network import (ExtraFPNBlock, FeaturePyramidNetwork,  # noqa: E402
                                                     LastLevelMaxPool, LastLevelP6P7)


class InvolutionFPN(FeaturePyramidNetwork):
    """torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` (same arguments, input and
    output) whose 3×3 output convs are ``Involution2d(out_channels, kernel_size)``.
    ``norm_layer`` applies to the lateral 1×1 convs; the involutions carry their own generator
    BatchNorm."""

    def __init__(self, in_channels_list: List[int], out_channels: int, extra_blocks: Optional[ExtraFPNBlock] = None,
                 norm_layer: Optional[Callable[..., nn.Module]] = None, kernel_size: int = 7,
                 group_channels: int = 16, reduction_ratio: int = 4, fused: bool = True):
        super().__init__(in_channels_list, out_channels, extra_blocks, norm_layer)
        self.layer_blocks = nn.ModuleList(
            Involution2d(out_channels, kernel_size, group_channels=group_channels, reduction_ratio=reduction_ratio,
                         fused=fused)
            for _ in in_channels_list)


class RedNetWithFPN(nn.Module):
    """A RedNet backbone with an FPN on top, as torchvision's detectors expect: ``forward``
    returns an ``OrderedDict`` of feature maps ("0", "1", … and the extra levels, e.g. "pool"),
    every one with ``out_channels`` channels."""

    def __init__(self, body: RedNetBackbone, fpn: FeaturePyramidNetwork, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def rednet_fpn_backbone(depth: int = 50, trainable_layers: int = 3, involution_neck: bool = True,
                        returned_layers: Optional[Sequence[int]] = None, extra_blocks: Optional[ExtraFPNBlock] = None,
                        out_channels: int = 256, norm_eval: bool = True, checkpoint: Optional[str] = None,
                        **backbone_args) -> RedNetWithFPN:
    """RedNet-``depth`` + FPN (the involution neck by default), like torchvision's
    ``resnet_fpn_backbone``.

    Args:
        trainable_layers: stages trained, counted from the last (0–5; 5 also trains the stem);
            the others are frozen (``frozen_stages = 4 - trainable_layers``: eval mode, no gradients).
        involution_neck: :class:`InvolutionFPN` (True) or torchvision's conv FPN (False).
        returned_layers: stages (1–4) fed to the FPN; default all four.
        extra_blocks: extra FPN levels; default ``LastLevelMaxPool`` ("pool").
        norm_eval: keep the backbone's BatchNorms in eval mode while training (the usual
            fine-tuning setting for small detection batches).
        checkpoint: an ImageNet RedNet checkpoint (official layout, e.g. converted from
            PaddleClas) loaded into the backbone.
        backbone_args: forwarded to :class:`~involution_ext.models.RedNetBackbone`.
    """
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"rednet_fpn_backbone: trainable_layers must be in 0..5, got {trainable_layers}")
    returned_layers = [1, 2, 3, 4] if returned_layers is None else list(returned_layers)
    if not returned_layers or min(returned_layers) < 1 or max(returned_layers) > 4:
        raise ValueError(f"rednet_fpn_backbone: returned_layers must be stages in 1..4, got {returned_layers}")
    body = RedNetBackbone(depth, out_indices=[i - 1 for i in returned_layers], frozen_stages=4 - trainable_layers,
                          norm_eval=norm_eval, **backbone_args)
    if checkpoint is not None:
        load_official_checkpoint(body, checkpoint)
    in_channels = [body.out_channels[i] for i in body.out_indices]
    fpn_class = InvolutionFPN if involution_neck else FeaturePyramidNetwork
    fpn = fpn_class(in_channels, out_channels, extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks)
    return RedNetWithFPN(body, fpn, out_channels)


def _detector(detector_class, weights, num_classes: int, backbone_checkpoint: Optional[str], trainable_layers: int,
              involution_neck: bool, detector_args: dict, **fpn_args):
    if weights is not None:
        raise ValueError("no pretrained RedNet detectors are published: pass weights=None (and an ImageNet "
                         "backbone with backbone_checkpoint=...)")
    backbone = rednet_fpn_backbone(50, trainable_layers, involution_neck, checkpoint=backbone_checkpoint, **fpn_args)
    return detector_class(backbone, num_classes=num_classes, **detector_args)


def fasterrcnn_rednet50_fpn(*, weights=None, num_classes: int = 91, backbone_checkpoint: Optional[str] = None,
                            trainable_backbone_layers: int = 3, involution_neck: bool = True, **kwargs) -> FasterRCNN:
    """Faster R-CNN with RedNet-50 + FPN (the involution neck by default); ``kwargs`` go to
    torchvision's ``FasterRCNN``."""
    return _detector(FasterRCNN, weights, num_classes, backbone_checkpoint, trainable_backbone_layers,
                     involution_neck, kwargs)


def maskrcnn_rednet50_fpn(*, weights=None, num_classes: int = 91, backbone_checkpoint: Optional[str] = None,
                          trainable_backbone_layers: int = 3, involution_neck: bool = True, **kwargs) -> MaskRCNN:
    """Mask R-CNN with RedNet-50 + FPN (the involution neck by default); ``kwargs`` go to
    torchvision's ``MaskRCNN``."""
    return _detector(MaskRCNN, weights, num_classes, backbone_checkpoint, trainable_backbone_layers,
                     involution_neck, kwargs)


def retinanet_rednet50_fpn(*, weights=None, num_classes: int = 91, backbone_checkpoint: Optional[str] = None,
                           trainable_backbone_layers: int = 3, involution_neck: bool = True, **kwargs) -> RetinaNet:
    """RetinaNet with RedNet-50 + FPN on stages 2–4 and P6/P7 computed from C5, as in mmdet's
    RetinaNet (the paper's; torchvision's own builder takes them from P5); ``kwargs`` go to
    torchvision's ``RetinaNet``."""
    return _detector(RetinaNet, weights, num_classes, backbone_checkpoint, trainable_backbone_layers,
                     involution_neck, kwargs, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(2048, 256))

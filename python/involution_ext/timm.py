"""RedNet in timm: ``import involution_ext.timm`` registers ``rednet26`` … ``rednet152``.

After the import, timm's own API builds them — and so does everything that reaches timm models
(mmdet / mmseg / mmpretrain through their ``TIMMBackbone`` wrappers)::

    import timm, involution_ext.timm
    model = timm.create_model("rednet50", pretrained=True,
                              pretrained_cfg_overlay=dict(file="rednet50.pth"))  # a converted checkpoint
    features = timm.create_model("rednet50", features_only=True, out_indices=(1, 2, 3, 4))

The models are :class:`~involution_ext.models.RedNet` with timm's model interface, so their
state dict is the official layout: checkpoints converted with ``python -m involution_ext convert``
(or the official mmcls files) load as they are. Feature taps (``feature_info``): the stem
(stride 2, 64 channels), then the four stages (strides 4–32); ``features_only`` wraps the model
in timm's ``FeatureGetterNet`` over :meth:`TimmRedNet.forward_intermediates`.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from ._optional import require
from .models.rednet import RedNet

require("timm", "timm", "the timm registry of RedNet")
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model  # noqa: E402
from timm.models._features import feature_take_indices  # noqa: E402

_STAGES = ("layer1", "layer2", "layer3", "layer4")


class TimmRedNet(RedNet):
    """:class:`~involution_ext.models.RedNet` with timm's model interface (``num_classes``,
    ``num_features``, ``feature_info``, ``get_classifier``/``reset_classifier``,
    ``forward_features``/``forward_head``, ``forward_intermediates``,
    ``prune_intermediate_layers``). ``num_classes=0`` returns the pooled features."""

    def __init__(self, depth: int = 50, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 **backbone_args):
        if global_pool not in ("avg", ""):
            raise ValueError(f"RedNet: global_pool must be 'avg' (or '' for none), got {global_pool!r}")
        super().__init__(depth, num_classes=max(num_classes, 1), in_channels=in_chans, **backbone_args)
        self.global_pool = global_pool
        channels = [self.backbone.stem[-1].conv.out_channels] + self.backbone.out_channels
        reductions = (1, 2, 4, 8, 16) if backbone_args.get("small_input") else (2, 4, 8, 16, 32)
        self.feature_info = [dict(num_chs=c, reduction=r, module=f"backbone.{m}")
                             for c, r, m in zip(channels, reductions, ("stem",) + _STAGES)]
        self.num_features = self.head_hidden_size = channels[-1]
        self.reset_classifier(num_classes)

    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return "head.fc" if name_only else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        fc = self.head.fc
        if not (isinstance(fc, nn.Linear) and fc.out_features == num_classes and fc.in_features == self.num_features):
            self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _stages(self, max_index: int = 4) -> List[nn.Module]:
        return [getattr(self.backbone, n) for n in _STAGES[:max_index]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.maxpool(self.backbone.stem(x))
        for stage in self._stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The features at ``indices`` of ``feature_info`` (timm's convention: an int takes the
        last n, None all five), and with ``intermediates_only=False`` the final features too."""
        if output_fmt != "NCHW":
            raise ValueError(f"RedNet: output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        x = self.backbone.stem(x)
        intermediates = [x] if 0 in take else []
        x = self.backbone.maxpool(x)
        for i, stage in enumerate(self._stages(max_index if stop_early else 4), start=1):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drops the stages after the last of ``indices`` (and the head); returns the indices."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        for name in _STAGES[max_index:]:
            setattr(self.backbone, name, nn.Sequential())
        if max_index < 4:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < 4:
            self.reset_classifier(0, "")
        return take


def _cfg(depth: int, top1: float) -> dict:
    return dict(
        url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, crop_mode="center",
        interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="backbone.stem.0.conv", classifier="head.fc", license="apache-2.0",
        notes=(f"PaddleClas RedNet{depth}_pretrained.pdparams (ImageNet top-1 {top1}), converted with "
               f"`python -m involution_ext convert --from paddle`; load it with "
               f"pretrained_cfg_overlay=dict(file=...)",),
    )


# PaddleClas's reported ImageNet top-1 for its RedNet weights.
PADDLE_TOP1 = {26: 75.95, 38: 77.47, 50: 78.33, 101: 78.94, 152: 79.17}

default_cfgs = generate_default_cfgs({f"rednet{d}.paddle_in1k": _cfg(d, top1) for d, top1 in PADDLE_TOP1.items()})


def _create(depth: int, pretrained: bool, **kwargs) -> TimmRedNet:
    return build_model_with_cfg(TimmRedNet, f"rednet{depth}", pretrained, depth=depth,
                                feature_cfg=dict(feature_cls="getter"), **kwargs)


@register_model
def rednet26(pretrained: bool = False, **kwargs) -> TimmRedNet:
    """RedNet-26 (9.23 M parameters)."""
    return _create(26, pretrained, **kwargs)


@register_model
def rednet38(pretrained: bool = False, **kwargs) -> TimmRedNet:
    """RedNet-38 (12.39 M parameters)."""
    return _create(38, pretrained, **kwargs)


@register_model
def rednet50(pretrained: bool = False, **kwargs) -> TimmRedNet:
    """RedNet-50 (15.54 M parameters)."""
    return _create(50, pretrained, **kwargs)


@register_model
def rednet101(pretrained: bool = False, **kwargs) -> TimmRedNet:
    """RedNet-101 (25.65 M parameters)."""
    return _create(101, pretrained, **kwargs)


@register_model
def rednet152(pretrained: bool = False, **kwargs) -> TimmRedNet:
    """RedNet-152 (33.99 M parameters)."""
    return _create(152, pretrained, **kwargs)


"""RedNet (Li et al., CVPR 2021): ResNet bottlenecks whose 3×3 conv is a 7×7 involution.

Module names reproduce the official mmcls layout — ``backbone.stem.*``, ``backbone.layerN.M.*``,
``head.fc.*`` — so :func:`involution_ext.load_official_checkpoint` loads the released weights
with a strict key-for-key match.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..modules import ConvBNAct, Involution2d

STAGE_DEPTHS: Dict[int, Tuple[int, int, int, int]] = {
    26: (1, 2, 4, 1),
    38: (2, 3, 5, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_STRIDES = (1, 2, 2, 2)
EXPANSION = 4


class Bottleneck(nn.Module):
    """1×1 conv → BN → ReLU → K×K involution (carries the stride) → BN → ReLU → 1×1 conv → BN,
    plus the shortcut (1×1 conv + BN where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **involution_args):
        super().__init__()
        mid = out_channels // EXPANSION
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = Involution2d(mid, stride=stride, **involution_args)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


def _make_stem(stem: str, stem_channels: int, stride: int, fused: bool = True, in_channels: int = 3) -> nn.Sequential:
    if stem == "involution":
        # Indices 0..4 as in the official code (3 is the parameter-free ReLU).
        half = stem_channels // 2
        return nn.Sequential(
            ConvBNAct(in_channels, half, 3, stride=stride, padding=1),
            Involution2d(half, kernel_size=3, stride=1, fused=fused),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            ConvBNAct(half, stem_channels, 3, stride=1, padding=1),
        )
    if stem == "conv7x7":
        return nn.Sequential(ConvBNAct(in_channels, stem_channels, 7, stride=stride, padding=3))
    raise ValueError(f"RedNet: stem must be 'involution' or 'conv7x7', got {stem!r}")


class RedNetBackbone(nn.Module):
    """Stem + four stages; returns the feature maps of ``out_indices`` (strides 4, 8, 16, 32).

    Args:
        depth: 26, 38, 50, 101 or 152.
        out_indices: stages whose outputs are returned (0..3).
        frozen_stages: -1 freezes nothing; 0 the stem; n the stem and stages 1..n (eval mode,
            no gradients), as in mmcls/mmdet backbones.
        norm_eval: keep every BatchNorm in eval mode during training (detection fine-tuning).
        stem: ``"involution"`` (the paper's default: 3×3 conv s2 → 3×3 involution → 3×3 conv)
            or ``"conv7x7"`` (the 7×7 conv stem of the ablations in Table 6).
        small_input: for tiny images (e.g. 32×32): the stem's first conv has stride 1 and there
            is no max-pool, so the feature strides are 1, 2, 4, 8.
        in_channels: image channels (3).
        involution_args: forwarded to every trunk :class:`Involution2d` (``kernel_size``,
            ``group_channels``, ``reduction_ratio``, ``generator``: the Table 6 ablations;
            ``fused``, which the stem's involution follows too).
    """

    def __init__(self, depth: int = 50, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, stem: str = "involution", stem_channels: int = 64,
                 base_channels: int = 64, small_input: bool = False, in_channels: int = 3, **involution_args):
        super().__init__()
        if depth not in STAGE_DEPTHS:
            raise ValueError(f"RedNet: depth must be one of {sorted(STAGE_DEPTHS)}, got {depth}")
        if any(i < 0 or i > 3 for i in out_indices) or len(out_indices) == 0:
            raise ValueError(f"RedNet: out_indices must be a non-empty subset of 0..3, got {list(out_indices)}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"RedNet: frozen_stages must be in -1..4, got {frozen_stages}")
        self.depth = depth
        self.out_indices: List[int] = sorted(set(out_indices))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.stem = _make_stem(stem, stem_channels, 1 if small_input else 2, involution_args.get("fused", True),
                               in_channels)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = stem_channels
        self.out_channels: List[int] = []
        for i, (blocks, stride) in enumerate(zip(STAGE_DEPTHS[depth], STAGE_STRIDES)):
            out_channels = base_channels * EXPANSION * 2**i
            layer = nn.Sequential(*[
                Bottleneck(in_channels if b == 0 else out_channels, out_channels, stride if b == 0 else 1, **involution_args)
                for b in range(blocks)
            ])
            self.add_module(f"layer{i + 1}", layer)
            self.out_channels.append(out_channels)
            in_channels = out_channels
        self._init_weights()
        self._freeze_stages()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # The last BN of each residual branch starts at zero (each block starts as identity),
        # which makes training from scratch stable.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.stem] + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "RedNetBackbone":
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.maxpool(self.stem(x))
        outs: List[torch.Tensor] = []
        x = self.layer1(x)
        if 0 in self.out_indices:
            outs.append(x)
        if self.out_indices[-1] >= 1:
            x = self.layer2(x)
            if 1 in self.out_indices:
                outs.append(x)
        if self.out_indices[-1] >= 2:
            x = self.layer3(x)
            if 2 in self.out_indices:
                outs.append(x)
        if self.out_indices[-1] >= 3:
            x = self.layer4(x)
            outs.append(x)
        return outs


class ClsHead(nn.Module):
    """Global average pooling + linear classifier (``head.fc`` in the official checkpoints)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x.mean(dim=(2, 3)), 1))


class RedNet(nn.Module):
    """RedNet classifier: :class:`RedNetBackbone` (last stage only) + :class:`ClsHead`."""

    def __init__(self, depth: int = 50, num_classes: int = 1000, **backbone_args):
        super().__init__()
        self.backbone = RedNetBackbone(depth, out_indices=(3,), **backbone_args)
        self.head = ClsHead(self.backbone.out_channels[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def rednet(depth: int, num_classes: int = 1000, features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
           **kwargs) -> nn.Module:
    """Builds a RedNet classifier, or with ``features_only=True`` the backbone returning the
    multi-scale feature maps of ``out_indices`` (default all four: strides 4, 8, 16, 32)."""
    if features_only:
        return RedNetBackbone(depth, out_indices=(0, 1, 2, 3) if out_indices is None else out_indices, **kwargs)
    if out_indices is not None:
        raise ValueError("RedNet: out_indices applies to features_only=True")
    return RedNet(depth, num_classes=num_classes, **kwargs)


def rednet26(num_classes: int = 1000, **kwargs) -> nn.Module:
    """RedNet-26 (Table 1: 9.23 M parameters, 1.73 G multiply-adds at 224×224)."""
    return rednet(26, num_classes, **kwargs)


def rednet38(num_classes: int = 1000, **kwargs) -> nn.Module:
    """RedNet-38 (Table 1: 12.39 M parameters, 2.22 G multiply-adds)."""
    return rednet(38, num_classes, **kwargs)


def rednet50(num_classes: int = 1000, **kwargs) -> nn.Module:
    """RedNet-50 (Table 1: 15.54 M parameters, 2.71 G multiply-adds)."""
    return rednet(50, num_classes, **kwargs)


def rednet101(num_classes: int = 1000, **kwargs) -> nn.Module:
    """RedNet-101 (Table 1: 25.65 M parameters, 4.74 G multiply-adds)."""
    return rednet(101, num_classes, **kwargs)


def rednet152(num_classes: int = 1000, **kwargs) -> nn.Module:
    """RedNet-152 (Table 1: 33.99 M parameters, 6.79 G multiply-adds)."""
    return rednet(152, num_classes, **kwargs)

"""``Involution2d``: involution with the paper's kernel generation (Eq. 6).

Attribute names follow the official mmcv/mmcls implementation (``conv1.conv``,
``conv1.bn``, ``conv2.conv``) so the official checkpoints load without renaming.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class ConvBNAct(nn.Module):
    """Conv2d [+ BatchNorm] [+ ReLU], named like mmcv's ``ConvModule`` (``conv``, ``bn``).

    The convolution has a bias only when there is no BatchNorm after it, as in ConvModule's
    ``bias='auto'``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.activate = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class Involution2d(nn.Module):
    r"""Involution (Li et al., CVPR 2021) with a kernel generated from each pixel.

    The kernel for output pixel (i, j) is :math:`\phi(X_{i,j}) = W_1\,\sigma(W_0 X_{i,j})`
    (Eq. 6): a 1×1 conv C → C/r without bias, BatchNorm and ReLU, then a 1×1 conv
    C/r → K²·G with bias. When ``stride > 1`` the input is average-pooled by the stride first,
    so the kernel map has the output's spatial size. The output has the input's shape for
    stride 1.

    With ``fused=True`` (the default) the last 1×1 conv (the "span", C/r → K²·G) runs inside
    ``torch.ops.involution.fused_forward`` together with the aggregation (Eq. 4), so the
    (B, G, K, K, Ho, Wo) kernel tensor is never stored and autograd keeps only the input and
    the generator's hidden features. ``fused=False`` runs the span conv, then
    ``torch.ops.involution.forward``. Both have the same parameters and state_dict keys and
    agree to rounding.

    Args:
        channels: C (input and output channels).
        kernel_size: K, odd (an even K is rejected: it cannot keep the output on the input's grid).
        stride: spatial stride of the aggregation.
        group_channels: channels sharing one kernel (C/G); ``None`` means all C (G = 1).
        reduction_ratio: r of the bottleneck generator.
        dilation: dilation of the aggregation window.
        generator: ``"bottleneck"`` (Eq. 6, the default) or ``"linear"``, a single 1×1
            conv C → K²·G with bias (the ``W`` row of the paper's Table 6c).
        fused: generate the kernels inside the op (see above).

    Shapes: input (B, C, H, W) → output (B, C, Ho, Wo); any memory format, kept.
    """

    def __init__(self, channels: int, kernel_size: int = 7, stride: int = 1,
                 group_channels: Optional[int] = 16, reduction_ratio: int = 4, dilation: int = 1,
                 generator: str = "bottleneck", fused: bool = True):
        super().__init__()
        group_channels = channels if group_channels is None else group_channels
        if kernel_size < 1 or kernel_size % 2 == 0:
            # With an even K, symmetric padding cannot keep the output on the input's grid (the
            # generated kernel map and the aggregation's output would differ in size).
            raise ValueError(f"Involution2d: kernel_size must be a positive odd number (e.g. 3, 5, 7), got "
                             f"{kernel_size}; for other windows call involution_ext.involution2d with "
                             f"your own kernels and padding")
        if stride < 1 or dilation < 1:
            raise ValueError(f"Involution2d: stride ({stride}) and dilation ({dilation}) must be >= 1")
        if group_channels <= 0 or channels % group_channels != 0:
            raise ValueError(f"Involution2d: channels ({channels}) must be a positive multiple of group_channels ({group_channels})")
        if generator not in ("bottleneck", "linear"):
            raise ValueError(f"Involution2d: generator must be 'bottleneck' or 'linear', got {generator!r}")
        if reduction_ratio <= 0 or channels // reduction_ratio == 0:
            raise ValueError(f"Involution2d: reduction_ratio ({reduction_ratio}) leaves no channels out of {channels}")
        self.channels = channels
        self.fused = fused
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.groups = channels // group_channels
        self.padding = dilation * (kernel_size - 1) // 2
        spans = kernel_size * kernel_size * self.groups
        if generator == "bottleneck":
            hidden = channels // reduction_ratio
            self.conv1 = ConvBNAct(channels, hidden, norm=True, act=True)
            self.conv2 = ConvBNAct(hidden, spans, norm=False, act=False)
        else:
            self.conv1 = nn.Identity()
            self.conv2 = ConvBNAct(channels, spans, norm=False, act=False)
        # ceil_mode makes the kernel map exactly (Ho, Wo) for odd sizes too (same result as
        # the official floor pooling for even sizes).
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The generated kernels, (B, G, K, K, Ho, Wo) — a view of the generator's output."""
        k = self.conv2(self.conv1(self.pool(x)))
        b, _, h, w = k.shape
        # Channel order of the generator output is (g, kh, kw), as in the official code; a
        # view (no copy) for NCHW and channels_last alike.
        return k.view(b, self.groups, self.kernel_size, self.kernel_size, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under autocast the ops' Autocast kernels cast their inputs to one dtype.
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        if not self.fused:
            return torch.ops.involution.forward(x, self.kernel(x), [s, s], [p, p], [d, d])
        hidden = self.conv1(self.pool(x))
        span = self.conv2.conv
        # The span conv's (K²·G, R, 1, 1) weight viewed as (K²·G, R): rows in (g, kh, kw) order.
        return torch.ops.involution.fused_forward(x, hidden, span.weight.flatten(1), span.bias, [k, k], [s, s],
                                                  [p, p], [d, d])

    def extra_repr(self) -> str:
        return (f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, groups={self.groups}, "
                f"dilation={self.dilation}, fused={self.fused}")

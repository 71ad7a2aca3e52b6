"""Slow, exact reference: the unfold formulation of the paper's Algorithm 1,
generalised to stride, padding and dilation. Used as the benchmark baseline and in
documentation; the tests check the op against an independent loop implementation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .functional import IntPair, _pair


def involution2d_unfold(
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """Same contract as :func:`involution_ext.involution2d`, via ``F.unfold``: it
    materialises a (B, C·Kh·Kw, Ho·Wo) buffer, K² times the input."""
    B, C, H, W = input.shape
    _, G, Kh, Kw, Ho, Wo = weight.shape
    cols = F.unfold(input, (Kh, Kw), dilation=_pair(dilation, "dilation"), padding=_pair(padding, "padding"), stride=_pair(stride, "stride"))
    cols = cols.view(B, G, C // G, Kh * Kw, Ho, Wo)
    out = (weight.reshape(B, G, 1, Kh * Kw, Ho, Wo) * cols).sum(dim=3)
    return out.view(B, C, Ho, Wo)

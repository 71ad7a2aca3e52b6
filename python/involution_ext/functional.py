"""Functional API over ``torch.ops.involution``."""

from __future__ import annotations

from typing import Tuple, Union

import torch

IntPair = Union[int, Tuple[int, int]]


def _pair(value: IntPair, name: str) -> list:
    if isinstance(value, int):
        return [value, value]
    value = list(value)
    if len(value) != 2:
        raise ValueError(f"involution2d: {name} must be an int or a pair, got {value}")
    return value


def involution2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    r"""Involution (Li et al., CVPR 2021, Eq. 4) with a given per-pixel kernel.

    .. math::
        Y_{b,c,i,j} = \sum_{u<K_h,\,v<K_w} W_{b,\,g(c),\,u,\,v,\,i,\,j}\;
                      X_{b,\,c,\,i s_h - p_h + u d_h,\,j s_w - p_w + v d_w}

    with :math:`g(c) = \lfloor c / (C/G) \rfloor` and zeros outside the input.

    Args:
        input: (B, C, H, W), float32/float64/float16/bfloat16; NCHW-contiguous, channels_last
            or any other strides (all read in place, no copies).
        weight: (B, G, Kh, Kw, Ho, Wo), same dtype and device; G divides C. Any strides.
        stride, padding, dilation: int or (h, w) pair.

    Returns:
        (B, C, Ho, Wo) in the input's memory format, with
        Ho = (H + 2 p_h - d_h (K_h - 1) - 1) // s_h + 1 (likewise Wo).
    """
    return torch.ops.involution.forward(
        input, weight, _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    )

"""FLOP formulas for ``torch.utils.flop_counter.FlopCounterMode``.

Counted like convolution there: 2 FLOPs per multiply-add. The forward does B·C·Ho·Wo·Kh·Kw
multiply-adds; each requested gradient of the backward does the same number again."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula


def multiply_adds(input_shape, weight_shape) -> int:
    B, C = input_shape[0], input_shape[1]
    _, _, Kh, Kw, Ho, Wo = weight_shape
    return B * C * Ho * Wo * Kh * Kw


def register() -> None:
    @register_flop_formula(torch.ops.involution.forward)
    def _forward_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * multiply_adds(input_shape, weight_shape)

    @register_flop_formula(torch.ops.involution.backward)
    def _backward_flops(grad_output_shape, input_shape, weight_shape, stride, padding, dilation, output_mask,
                        *args, out_shape=None, **kwargs) -> int:
        return 2 * multiply_adds(input_shape, weight_shape) * sum(bool(m) for m in output_mask)

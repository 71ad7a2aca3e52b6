"""FLOP formulas for ``torch.utils.flop_counter.FlopCounterMode``.

Counted like convolution there: 2 FLOPs per multiply-add. The forward does B·C·Ho·Wo·Kh·Kw
multiply-adds; each requested gradient of the backward does the same number again.

The fused op adds the span product, B·(G·Kh·Kw)·R·Ho·Wo multiply-adds, to the aggregation's.
Its backward: grad_input regenerates the kernel (span) and gathers (aggregation); the three
generator-side gradients share one kernel gradient (aggregation), then grad_hidden and
grad_span_weight each cost a span product (grad_span_bias is a sum, not counted)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula


def multiply_adds(input_shape, weight_shape) -> int:
    B, C = input_shape[0], input_shape[1]
    _, _, Kh, Kw, Ho, Wo = weight_shape
    return B * C * Ho * Wo * Kh * Kw


def fused_multiply_adds(input_shape, hidden_shape, span_weight_shape, kernel_size):
    """(aggregation, span) multiply-adds of one fused forward."""
    B, C = input_shape[0], input_shape[1]
    _, R, Ho, Wo = hidden_shape
    rows = span_weight_shape[0]
    return B * C * Ho * Wo * kernel_size[0] * kernel_size[1], B * rows * R * Ho * Wo


def register() -> None:
    @register_flop_formula(torch.ops.involution.forward)
    def _forward_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * multiply_adds(input_shape, weight_shape)

    @register_flop_formula(torch.ops.involution.backward)
    def _backward_flops(grad_output_shape, input_shape, weight_shape, stride, padding, dilation, output_mask,
                        *args, out_shape=None, **kwargs) -> int:
        return 2 * multiply_adds(input_shape, weight_shape) * sum(bool(m) for m in output_mask)

    @register_flop_formula(torch.ops.involution.fused_forward)
    def _fused_forward_flops(input_shape, hidden_shape, span_weight_shape, span_bias_shape, kernel_size, *args,
                             out_shape=None, **kwargs) -> int:
        return 2 * sum(fused_multiply_adds(input_shape, hidden_shape, span_weight_shape, kernel_size))

    @register_flop_formula(torch.ops.involution.fused_backward)
    def _fused_backward_flops(grad_output_shape, input_shape, hidden_shape, span_weight_shape, span_bias_shape,
                              kernel_size, stride, padding, dilation, output_mask, *args, out_shape=None,
                              **kwargs) -> int:
        aggregation, span = fused_multiply_adds(input_shape, hidden_shape, span_weight_shape, kernel_size)
        macs = (aggregation + span) if output_mask[0] else 0
        if output_mask[1] or output_mask[2] or (output_mask[3] and span_bias_shape is not None):
            macs += aggregation
        macs += span * (int(bool(output_mask[1])) + int(bool(output_mask[2])))
        return 2 * macs

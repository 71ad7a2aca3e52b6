"""Fake (meta) kernels: output shapes for torch.compile / torch.export, with the same
argument checks and messages as the C++ ``check_forward_args`` (csrc/shape_check.cpp)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch._prims_common import suggest_memory_format

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_pair(op: str, name: str, value: Sequence[int], min_value: int) -> None:
    torch._check(len(value) == 2, lambda: f"{op}: {name} must have 2 elements (h, w), got {len(value)} ({list(value)})")
    torch._check(
        value[0] >= min_value and value[1] >= min_value,
        lambda: f"{op}: {name} must be >= {min_value}, got {list(value)}",
    )


def conv_output_size(size, kernel, stride, pad, dil):
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def check_forward_args(op, input, weight, stride, padding, dilation):
    """Mirror of the C++ check; returns (Ho, Wo)."""
    torch._check(input.dim() == 4, lambda: f"{op}: input must be 4-D (B, C, H, W), got {input.dim()}-D with sizes {list(input.shape)}")
    torch._check(weight.dim() == 6, lambda: f"{op}: weight must be 6-D (B, G, Kh, Kw, Ho, Wo), got {weight.dim()}-D with sizes {list(weight.shape)}")
    for name, t in (("input", input), ("weight", weight)):
        torch._check(t.dtype in _FLOAT_DTYPES, lambda: f"{op}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
    torch._check(input.dtype == weight.dtype, lambda: f"{op}: input and weight must have the same dtype, got {input.dtype} and {weight.dtype}")
    torch._check(input.device == weight.device, lambda: f"{op}: input and weight must be on the same device, got {input.device} and {weight.device}")
    _check_pair(op, "stride", stride, 1)
    _check_pair(op, "padding", padding, 0)
    _check_pair(op, "dilation", dilation, 1)
    B, C, H, W = input.shape
    _, G, Kh, Kw, wHo, wWo = weight.shape
    torch._check(C > 0, lambda: f"{op}: input must have at least one channel, got sizes {list(input.shape)}")
    torch._check(G > 0, lambda: f"{op}: weight must have at least one group, got sizes {list(weight.shape)}")
    torch._check(C % G == 0, lambda: f"{op}: channels ({C}) must be divisible by groups ({G})")
    torch._check(weight.shape[0] == B, lambda: f"{op}: batch size of weight ({weight.shape[0]}) must equal batch size of input ({B})")
    torch._check(Kh >= 1 and Kw >= 1, lambda: f"{op}: kernel size must be >= 1, got ({Kh}, {Kw})")
    Ho = conv_output_size(H, Kh, stride[0], padding[0], dilation[0])
    Wo = conv_output_size(W, Kw, stride[1], padding[1], dilation[1])
    torch._check(Ho > 0 and Wo > 0, lambda: f"{op}: output size ({Ho}, {Wo}) is not positive for input spatial size ({H}, {W})")
    torch._check(
        wHo == Ho and wWo == Wo,
        lambda: f"{op}: weight spatial size ({wHo}, {wWo}) must equal the output size ({Ho}, {Wo})",
    )
    return Ho, Wo


def check_fused_args(op, input, hidden, span_weight, span_bias, kernel_size, stride, padding, dilation):
    """Mirror of the C++ ``check_fused_args``; returns (G, Ho, Wo)."""
    torch._check(input.dim() == 4, lambda: f"{op}: input must be 4-D (B, C, H, W), got {input.dim()}-D with sizes {list(input.shape)}")
    torch._check(hidden.dim() == 4, lambda: f"{op}: hidden must be 4-D (B, R, Ho, Wo), got {hidden.dim()}-D with sizes {list(hidden.shape)}")
    torch._check(span_weight.dim() == 2, lambda: f"{op}: span_weight must be 2-D (G*Kh*Kw, R), got {span_weight.dim()}-D with sizes {list(span_weight.shape)}")
    named = [("input", input), ("hidden", hidden), ("span_weight", span_weight)]
    if span_bias is not None:
        named.append(("span_bias", span_bias))
    for name, t in named:
        torch._check(t.dtype in _FLOAT_DTYPES, lambda: f"{op}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
        torch._check(t.dtype == input.dtype, lambda: f"{op}: {name} must have the input's dtype {input.dtype}, got {t.dtype}")
        torch._check(t.device == input.device, lambda: f"{op}: {name} must be on the input's device {input.device}, got {t.device}")
    _check_pair(op, "kernel_size", kernel_size, 1)
    _check_pair(op, "stride", stride, 1)
    _check_pair(op, "padding", padding, 0)
    _check_pair(op, "dilation", dilation, 1)
    B, C, H, W = input.shape
    Kh, Kw = kernel_size
    rows, R = span_weight.shape
    torch._check(C > 0, lambda: f"{op}: input must have at least one channel, got sizes {list(input.shape)}")
    torch._check(R > 0, lambda: f"{op}: span_weight must have at least one column (R), got sizes {list(span_weight.shape)}")
    torch._check(rows > 0 and rows % (Kh * Kw) == 0,
                 lambda: f"{op}: span_weight rows ({rows}) must be a positive multiple of Kh*Kw ({Kh * Kw})")
    G = rows // (Kh * Kw)
    torch._check(C % G == 0, lambda: f"{op}: channels ({C}) must be divisible by groups ({G} = {rows} span rows / {Kh * Kw} taps)")
    torch._check(hidden.shape[1] == R, lambda: f"{op}: hidden has {hidden.shape[1]} channels but span_weight has R = {R} columns")
    if span_bias is not None:
        torch._check(span_bias.dim() == 1 and span_bias.shape[0] == rows,
                     lambda: f"{op}: span_bias must have sizes ({rows},), got {list(span_bias.shape)}")
    Ho = conv_output_size(H, Kh, stride[0], padding[0], dilation[0])
    Wo = conv_output_size(W, Kw, stride[1], padding[1], dilation[1])
    torch._check(Ho > 0 and Wo > 0, lambda: f"{op}: output size ({Ho}, {Wo}) is not positive for input spatial size ({H}, {W})")
    torch._check(
        hidden.shape[0] == B and hidden.shape[2] == Ho and hidden.shape[3] == Wo,
        lambda: f"{op}: hidden must have sizes ({B}, {R}, {Ho}, {Wo}), got {list(hidden.shape)}",
    )
    return G, Ho, Wo


def _empty_like_format(shape, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=suggest_memory_format(like))


def register() -> None:
    @torch.library.register_fake("involution::forward")
    def _forward_fake(input, weight, stride, padding, dilation):
        Ho, Wo = check_forward_args("involution::forward", input, weight, stride, padding, dilation)
        return _empty_like_format((input.shape[0], input.shape[1], Ho, Wo), input)

    @torch.library.register_fake("involution::backward")
    def _backward_fake(grad_output, input, weight, stride, padding, dilation, output_mask):
        op = "involution::backward"
        Ho, Wo = check_forward_args(op, input, weight, stride, padding, dilation)
        expected = (input.shape[0], input.shape[1], Ho, Wo)
        torch._check(
            grad_output.dim() == 4 and all(a == b for a, b in zip(grad_output.shape, expected)),
            lambda: f"{op}: grad_output must have sizes {expected}, got {list(grad_output.shape)}",
        )
        torch._check(grad_output.dtype == input.dtype, lambda: f"{op}: grad_output must have the input's dtype {input.dtype}, got {grad_output.dtype}")
        grad_input = _empty_like_format(input.shape, input) if output_mask[0] else None
        grad_weight = torch.empty_like(weight) if output_mask[1] else None
        return grad_input, grad_weight

    @torch.library.register_fake("involution::fused_forward")
    def _fused_forward_fake(input, hidden, span_weight, span_bias, kernel_size, stride, padding, dilation):
        _, Ho, Wo = check_fused_args("involution::fused_forward", input, hidden, span_weight, span_bias,
                                     kernel_size, stride, padding, dilation)
        return _empty_like_format((input.shape[0], input.shape[1], Ho, Wo), input)

    @torch.library.register_fake("involution::fused_backward")
    def _fused_backward_fake(grad_output, input, hidden, span_weight, span_bias, kernel_size, stride, padding,
                             dilation, output_mask):
        op = "involution::fused_backward"
        _, Ho, Wo = check_fused_args(op, input, hidden, span_weight, span_bias, kernel_size, stride, padding,
                                     dilation)
        expected = (input.shape[0], input.shape[1], Ho, Wo)
        torch._check(
            grad_output.dim() == 4 and all(a == b for a, b in zip(grad_output.shape, expected)),
            lambda: f"{op}: grad_output must have sizes {expected}, got {list(grad_output.shape)}",
        )
        torch._check(grad_output.dtype == input.dtype, lambda: f"{op}: grad_output must have the input's dtype {input.dtype}, got {grad_output.dtype}")
        return (_empty_like_format(input.shape, input) if output_mask[0] else None,
                _empty_like_format(hidden.shape, hidden) if output_mask[1] else None,
                torch.empty_like(span_weight) if output_mask[2] else None,
                torch.empty_like(span_bias) if output_mask[3] and span_bias is not None else None)

"""Fuzzing core shared by tests/test_fuzz.py (hypothesis + a fixed-seed batch) and
tests/fuzz_ops.py (long runs).

A legal case draws every dimension of the op's input space — B (including 0), C, G, H, W,
Kh, Kw (including 1 and even sizes), stride, padding, dilation, dtype, memory format,
non-contiguous views, and which inputs require gradients — and checks the forward and the
requested gradients against the independent fp64 loop reference at per-dtype tolerances.
An illegal case breaks exactly one rule of the contract and must raise a RuntimeError
naming the op.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch._prims_common import suggest_memory_format

from helpers import Case, assert_close_scaled
from reference_loops import involution_loops

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass
class LegalCase(Case):
    dtype: torch.dtype
    layout: str  # "nchw", "channels_last", "strided" (a non-contiguous view)
    weight_view: bool  # weight is a non-contiguous view
    grad_input: bool
    grad_weight: bool
    seed: int


def draw_legal(rng: random.Random) -> LegalCase:
    while True:
        G = rng.choice([1, 1, 2, 3, 4, 8])
        case = LegalCase(
            B=rng.choice([0, 1, 1, 2, 3]), C=G * rng.choice([1, 2, 3, 4, 7, 8, 16, 17, 32]), G=G,
            H=rng.randint(1, 20), W=rng.randint(1, 24),
            K=(rng.randint(1, 7), rng.randint(1, 7)),
            stride=(rng.randint(1, 3), rng.randint(1, 3)), padding=(rng.randint(0, 4), rng.randint(0, 4)),
            dilation=(rng.randint(1, 3), rng.randint(1, 3)), dtype=rng.choice(DTYPES),
            layout=rng.choice(["nchw", "channels_last", "strided"]), weight_view=rng.random() < 0.3,
            grad_input=rng.random() < 0.6, grad_weight=rng.random() < 0.6, seed=rng.randrange(2**31),
        )
        if min(case.out) > 0 and case.B * case.C * case.H * case.W <= 40000:
            return case


def make_tensors(case: LegalCase):
    gen = torch.Generator().manual_seed(case.seed)
    Ho, Wo = case.out
    x64 = torch.randn(case.B, case.C, case.H, case.W, generator=gen, dtype=torch.float64)
    w64 = torch.randn(case.B, case.G, *case.K, Ho, Wo, generator=gen, dtype=torch.float64)
    x, w = x64.to(case.dtype), w64.to(case.dtype)
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif case.layout == "strided":  # every other column of a wider buffer, H and W swapped in memory
        big = torch.zeros(case.B, case.C, case.W * 2, case.H, dtype=case.dtype)
        big[:, :, ::2].copy_(x.transpose(2, 3))
        x = big[:, :, ::2].transpose(2, 3)
        assert torch.equal(x, x64.to(case.dtype))  # (degenerate sizes may still look contiguous)
    if case.weight_view:
        big = torch.zeros(case.B, case.G, *case.K, Ho, Wo, 2, dtype=case.dtype)
        big[..., 0].copy_(w)
        w = big[..., 0]
    return x, w


def check_legal(case: LegalCase) -> None:
    """Raises AssertionError (naming the case) when the op disagrees with the reference."""
    x, w = make_tensors(case)
    x.requires_grad_(case.grad_input)
    w.requires_grad_(case.grad_weight)
    args = (list(case.stride), list(case.padding), list(case.dilation))
    y = torch.ops.involution.forward(x, w, *args)
    Ho, Wo = case.out
    assert y.shape == (case.B, case.C, Ho, Wo), f"{case}: output shape {tuple(y.shape)}"
    assert y.dtype == case.dtype, f"{case}: output dtype {y.dtype}"
    # (A 1x1 channels_last tensor has NCHW strides too; torch then calls it NCHW, and so do we.)
    if suggest_memory_format(x) == torch.channels_last and y.numel() > 0:
        assert y.is_contiguous(memory_format=torch.channels_last), f"{case}: output lost channels_last"

    xr = x.detach().double().requires_grad_()
    wr = w.detach().double().requires_grad_()
    ref = involution_loops(xr, wr, *args)
    xa = x.detach().double().abs().requires_grad_()
    wa = w.detach().double().abs().requires_grad_()
    scale = involution_loops(xa, wa, *args)
    _assert_close(y, ref, scale, case, "forward")
    if not (case.grad_input or case.grad_weight) or case.B == 0:
        return
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(case.seed + 1), dtype=torch.float64)
    grads = torch.autograd.grad(y, [t for t in (x, w) if t.requires_grad], gy.to(case.dtype))
    ref.backward(gy.to(case.dtype).double())
    scale.backward(gy.to(case.dtype).double().abs())
    grads = list(grads)
    if case.grad_input:
        _assert_close(grads.pop(0), xr.grad, xa.grad, case, "grad_input")
    if case.grad_weight:
        _assert_close(grads.pop(0), wr.grad, wa.grad, case, "grad_weight")


def _assert_close(actual, expected, scale, case, what):
    assert actual.shape == expected.shape, f"{what} {case}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    assert actual.dtype == case.dtype, f"{what} {case}: dtype {actual.dtype}"
    assert_close_scaled(actual, expected, scale, case.dtype, f"{what} {case}")


def _good(rng, dtype):
    B, G = rng.randint(1, 2), rng.choice([1, 2])
    C, H, W, K = G * rng.randint(1, 4), rng.randint(3, 9), rng.randint(3, 9), rng.choice([1, 3])
    return torch.randn(B, C, H, W, dtype=dtype), torch.randn(B, G, K, K, H, W, dtype=dtype), [1, 1], [K // 2] * 2, [1, 1]


def _break(rng: random.Random):
    """Returns (rule broken, forward args) with exactly one rule broken."""
    dtype = rng.choice(DTYPES)
    x, w, s, p, d = _good(rng, dtype)
    B, C, H, W = x.shape
    G, K = w.shape[1], w.shape[2]
    rule = rng.choice(["input rank", "weight rank", "groups", "batch", "weight spatial", "non-positive output",
                       "kernel zero", "stride", "dilation", "padding", "pair length", "int dtype", "dtype mismatch",
                       "zero channels", "zero groups", "grad_output"])
    if rule == "input rank":
        x = x.reshape(B * C, H, W) if rng.random() < 0.5 else x.unsqueeze(0)
    elif rule == "weight rank":
        w = w.flatten(-2)
    elif rule == "groups":
        w = torch.randn(B, C + 1, K, K, H, W, dtype=dtype)
    elif rule == "batch":
        w = torch.randn(B + rng.randint(1, 3), G, K, K, H, W, dtype=dtype)
    elif rule == "weight spatial":
        w = torch.randn(B, G, K, K, H + rng.choice([-1, 1]), W, dtype=dtype)
    elif rule == "non-positive output":
        p = [0, 0]
        w = torch.randn(B, G, H + 1, 1, 1, W, dtype=dtype)
    elif rule == "kernel zero":
        w = torch.randn(B, G, 0, K, H, W, dtype=dtype)
    elif rule == "stride":
        s = [rng.choice([0, -1]), 1]
    elif rule == "dilation":
        d = [1, rng.choice([0, -2])]
    elif rule == "padding":
        p = [-rng.randint(1, 3), p[1]]
    elif rule == "pair length":
        s = [1] * rng.choice([0, 1, 3])
    elif rule == "int dtype":
        x, w = x.to(torch.int64), w.to(torch.int64)
    elif rule == "dtype mismatch":
        w = w.to(torch.float64 if dtype != torch.float64 else torch.float32)
    elif rule == "zero channels":
        x = torch.randn(B, 0, H, W, dtype=dtype)
    elif rule == "zero groups":
        w = torch.randn(B, 0, K, K, H, W, dtype=dtype)
    return rule, (x, w, s, p, d)


def check_illegal(rng: random.Random) -> str:
    """Draws one broken call (forward or backward) and asserts it raises a clear error."""
    rule, (x, w, s, p, d) = _break(rng)
    backward = rule == "grad_output" or rng.random() < 0.3
    try:
        if backward:
            if rule == "grad_output":
                gy = torch.randn(x.shape[0], x.shape[1], x.shape[2] + 1, x.shape[3], dtype=x.dtype)
            else:
                gy = torch.randn(x.shape, dtype=x.dtype if x.dtype.is_floating_point else torch.float32)
            torch.ops.involution.backward(gy, x, w, s, p, d, [True, True])
        else:
            torch.ops.involution.forward(x, w, s, p, d)
    except RuntimeError as e:
        assert "involution::" in str(e), f"{rule}: error does not name the op: {e}"
        return rule
    raise AssertionError(f"{rule}: accepted {'backward' if backward else 'forward'} with x {tuple(x.shape)} "
                         f"w {tuple(w.shape)} stride {s} padding {p} dilation {d}")

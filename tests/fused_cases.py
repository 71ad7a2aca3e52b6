"""Random cases of the fused op and their check against an independent fp64 composition (the
span product as an einsum, then the loop reference of Eq. 4; gradients by autograd through
it). Shared by tests/test_fused.py and the long fuzzing run (tests/fuzz_ops.py --fused)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from helpers import Case, assert_close_scaled, involution_loops


@dataclass
class FusedCase(Case):
    """An involution case plus the kernel generator's side: R hidden channels, the span rows
    (G*Kh*Kw, R) with or without bias, and the layouts of input and hidden. ``args()`` gives
    the fused op's hyper-parameters (kernel_size first)."""

    R: int
    bias: bool = True
    x_layout: str = "nchw"  # "nchw", "channels_last" or "strided" (a non-contiguous view)
    h_layout: str = "nchw"

    @property
    def rows(self):
        return self.G * self.K[0] * self.K[1]

    def args(self):
        return [list(self.K), list(self.stride), list(self.padding), list(self.dilation)]

    def tensors(self, dtype=torch.float64, seed=0):
        """(input, hidden, span_weight, span_bias or None), values rounded to dtype."""
        gen = torch.Generator().manual_seed(seed)
        Ho, Wo = self.out
        x = _layout(torch.randn(self.B, self.C, self.H, self.W, generator=gen, dtype=torch.float64), self.x_layout)
        h = _layout(torch.randn(self.B, self.R, Ho, Wo, generator=gen, dtype=torch.float64), self.h_layout)
        # The span rows scaled like a trained 1x1 conv's (kaiming), so outputs stay O(1).
        s = torch.randn(self.rows, self.R, generator=gen, dtype=torch.float64) / self.R ** 0.5
        b = torch.randn(self.rows, generator=gen, dtype=torch.float64) if self.bias else None
        return tuple(None if t is None else t.to(dtype) for t in (x, h, s, b))


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other channel of a twice-as-wide tensor: no dim contiguous but W
        wide = torch.zeros(t.shape[0], 2 * t.shape[1], *t.shape[2:], dtype=t.dtype)
        wide[:, ::2] = t
        return wide[:, ::2]
    return t


def span_reference(h, s, b, case):
    """The generated kernel, (B, G, Kh, Kw, Ho, Wo), in fp64: an einsum, not the op's matmul."""
    k = torch.einsum("or,brij->boij", s.double(), h.double())
    if b is not None:
        k = k + b.double()[None, :, None, None]
    Ho, Wo = case.out
    return k.reshape(case.B, case.G, case.K[0], case.K[1], Ho, Wo)


def reference(x, h, s, b, case):
    """Output and its scale (the same sums over absolute values) in fp64."""
    stride, padding, dilation = case.stride, case.padding, case.dilation
    y = involution_loops(x, span_reference(h, s, b, case), stride, padding, dilation)
    scale = involution_loops(x.abs(), span_reference(h.abs(), s.abs(), None if b is None else b.abs(), case),
                             stride, padding, dilation)
    return y, scale


def reference_grads(x, h, s, b, gy, case):
    """Gradients of the fp64 composition, and the same over absolute values (scales)."""
    def grads(tensors, g):
        leaves = [None if t is None else t.detach().double().clone().requires_grad_() for t in tensors]
        xr, hr, sr, br = leaves
        involution_loops(xr, span_reference(hr, sr, br, case), case.stride, case.padding, case.dilation).backward(g)
        return [None if t is None else t.grad for t in leaves]

    exact = grads((x, h, s, b), gy.double())
    scale = grads([None if t is None else t.abs() for t in (x, h, s, b)], gy.double().abs())
    return exact, scale


def random_fused_case(rng: random.Random) -> FusedCase:
    while True:
        G = rng.choice([1, 1, 2, 3, 4])
        cg = rng.choice([1, 2, 3, 5, 8, 16, 17])
        K = rng.choice([(1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (3, 5), (2, 3)])
        case = FusedCase(
            B=rng.choice([0, 1, 1, 2, 3]), C=G * cg, G=G, R=rng.choice([1, 2, 3, 5, 8, 13, 16, 31, 64]),
            H=rng.randint(1, 17), W=rng.randint(1, 21), K=K,
            stride=(rng.randint(1, 3), rng.randint(1, 3)), padding=(rng.randint(0, 3), rng.randint(0, 3)),
            dilation=(rng.randint(1, 2), rng.randint(1, 3)), bias=rng.random() < 0.8,
            x_layout=rng.choice(["nchw", "channels_last", "strided"]),
            h_layout=rng.choice(["nchw", "channels_last", "strided"]),
        )
        if min(case.out) > 0:
            return case


def check_fused(case, dtype, seed, device, backward=True):
    x, h, s, b = case.tensors(dtype, seed)
    args = [None if t is None else t.detach().to(device) for t in (x, h, s, b)]
    for t in args:
        if t is not None:
            t.requires_grad_(backward)
    y = torch.ops.involution.fused_forward(*args, *case.args())
    ref, scale = reference(x, h, s, b, case)
    assert y.shape == ref.shape and y.dtype == dtype and y.device.type == device
    want = torch.channels_last if case.x_layout == "channels_last" and case.C > 1 else torch.contiguous_format
    assert y.is_contiguous(memory_format=want) or y.numel() == 0
    assert_close_scaled(y.cpu(), ref, scale, dtype, f"fused forward {case} {dtype}")
    if not backward or y.numel() == 0:
        return
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 7)).to(dtype)
    y.backward(gy.to(device))
    exact, scales = reference_grads(x, h, s, b, gy, case)
    for name, got, want_grad, sc in zip(("input", "hidden", "span_weight", "span_bias"), args, exact, scales):
        if got is None:
            continue
        assert got.grad is not None and got.grad.dtype == dtype, name
        assert_close_scaled(got.grad.cpu(), want_grad, sc, dtype, f"fused grad {name} {case} {dtype}")

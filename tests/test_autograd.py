"""Gradients: backward vs the reference's autograd, gradcheck/gradgradcheck, output_mask,
determinism."""

from __future__ import annotations

import pytest
import torch

import involution_ext  # noqa: F401  (registers the op)
from conftest import Case, assert_close_scaled, involution_loops, random_cases

CASES = random_cases(80, seed=99)


def reference_grads(x, w, gy, case):
    xr = x.detach().double().requires_grad_()
    wr = w.detach().double().requires_grad_()
    involution_loops(xr, wr, *case.args()).backward(gy.double())
    # Scales for tolerances: the same sums over absolute values.
    xa = x.detach().double().abs().requires_grad_()
    wa = w.detach().double().abs().requires_grad_()
    involution_loops(xa, wa, *case.args()).backward(gy.double().abs())
    return xr.grad, wr.grad, xa.grad, wa.grad


def check_backward(case, dtype, channels_last, seed):
    x, w = case.tensors(dtype, channels_last, seed=seed, requires_grad=True)
    y = torch.ops.involution.forward(x, w, *case.args())
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    if channels_last:
        gy = gy.contiguous(memory_format=torch.channels_last)
    y.backward(gy)
    gx_ref, gw_ref, gx_scale, gw_scale = reference_grads(x, w, gy, case)
    assert x.grad.dtype == dtype and w.grad.dtype == dtype
    assert_close_scaled(x.grad, gx_ref, gx_scale, dtype, f"grad_input {case} {dtype}")
    assert_close_scaled(w.grad, gw_ref, gw_scale, dtype, f"grad_weight {case} {dtype}")


@pytest.mark.parametrize("idx", range(len(CASES)))
def test_backward_random_shapes(idx):
    check_backward(CASES[idx], torch.float64, bool(idx % 2), idx)
    check_backward(CASES[idx], torch.float32, not idx % 2, idx)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_dtypes_layouts(dtype, channels_last, cpu_isa):
    for i, case in enumerate(CASES[:16]):
        check_backward(case, dtype, channels_last, i)


def test_gradcheck_and_gradgradcheck():
    for case in [
        Case(B=2, C=4, G=2, H=5, W=6, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
        Case(B=1, C=6, G=3, H=7, W=5, K=(2, 3), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
        Case(B=1, C=3, G=1, H=6, W=6, K=(3, 3), stride=(3, 2), padding=(0, 1), dilation=(1, 2)),
    ]:
        x, w = case.tensors(torch.float64, requires_grad=True)
        fn = lambda x, w: torch.ops.involution.forward(x, w, *case.args())  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w))
        assert torch.autograd.gradgradcheck(fn, (x, w))


def test_backward_op_is_differentiable_in_all_inputs():
    """gradcheck of involution::backward itself (grad_output, input and weight)."""
    case = Case(B=1, C=4, G=2, H=5, W=5, K=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    x, w = case.tensors(torch.float64, requires_grad=True)
    gy = torch.randn(1, 4, *case.out, dtype=torch.float64, requires_grad=True)

    def fn(gy, x, w):
        return torch.ops.involution.backward(gy, x, w, *case.args(), [True, True])

    assert torch.autograd.gradcheck(fn, (gy, x, w))


def test_output_mask():
    case = Case(B=2, C=8, G=2, H=9, W=9, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    x, w = case.tensors(torch.float32)
    gy = torch.randn(2, 8, *case.out)
    gx, gw = torch.ops.involution.backward(gy, x, w, *case.args(), [True, True])
    gx_only, none_w = torch.ops.involution.backward(gy, x, w, *case.args(), [True, False])
    none_x, gw_only = torch.ops.involution.backward(gy, x, w, *case.args(), [False, True])
    assert none_w is None and none_x is None
    assert torch.equal(gx, gx_only) and torch.equal(gw, gw_only)
    # Autograd asks only for what is needed.
    xr = x.clone().requires_grad_()
    torch.ops.involution.forward(xr, w, *case.args()).backward(gy)
    assert torch.equal(xr.grad, gx) and w.grad is None


def test_backward_deterministic_across_runs_and_threads():
    case = Case(B=3, C=64, G=4, H=21, W=19, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = case.tensors(torch.float32)
    gy = torch.randn(3, 64, *case.out)
    threads = torch.get_num_threads()
    results = []
    for n in (threads, 1, threads):
        torch.set_num_threads(n)
        results.append(torch.ops.involution.backward(gy, x, w, *case.args(), [True, True]))
    torch.set_num_threads(threads)
    for gx, gw in results[1:]:
        assert torch.equal(gx, results[0][0]) and torch.equal(gw, results[0][1])


def test_expanded_grad_output():
    """y.sum().backward() feeds a zero-stride grad_output; it is read in place."""
    case = Case(B=2, C=6, G=3, H=8, W=8, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    x, w = case.tensors(torch.float64, requires_grad=True)
    torch.ops.involution.forward(x, w, *case.args()).sum().backward()
    gx_ref, gw_ref, _, _ = reference_grads(x, w, torch.ones(2, 6, *case.out, dtype=torch.float64), case)
    torch.testing.assert_close(x.grad, gx_ref)
    torch.testing.assert_close(w.grad, gw_ref)


@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_rednet_shape(channels_last, cpu_isa):
    """16 channels per group, K=7, stride 1 and 2, wide enough for the blocked
    channels_last staging path."""
    for stride in (1, 2):
        case = Case(B=2, C=32, G=2, H=20, W=21, K=(7, 7), stride=(stride, stride), padding=(3, 3), dilation=(1, 1))
        check_backward(case, torch.float32, channels_last, stride)

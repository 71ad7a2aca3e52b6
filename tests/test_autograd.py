"""Gradients on every device: backward vs the reference's autograd, gradcheck/gradgradcheck,
output_mask, determinism."""

from __future__ import annotations

import pytest
import torch

import involution_ext  # noqa: F401  (registers the op)
from helpers import (Case, assert_close_scaled, check_backward, cpu_and_cuda, flanked_by_non_finite,
                     random_cases, reference_grads, to_device)

CASES = random_cases(80, seed=99)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("idx", range(len(CASES)))
def test_backward_random_shapes(idx, device):
    check_backward(CASES[idx], torch.float64, bool(idx % 2), idx, device)
    check_backward(CASES[idx], torch.float32, not idx % 2, idx, device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_dtypes_layouts(dtype, channels_last, kernel_device):
    for i, case in enumerate(CASES[:16]):
        check_backward(case, dtype, channels_last, i, kernel_device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_backward_pixel_major_weight(dtype, kernel_device):
    """A pixel-major weight's gradient is pixel-major too: stored lane by lane, not as the
    contiguous rows the CPU kernel streams."""
    for i, case in enumerate(CASES[:16]):
        check_backward(case, dtype, bool(i % 2), i, kernel_device, pixel_major_weight=True)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grad_input_ignores_what_lies_beside_weight_rows(dtype, channels_last, kernel_device):
    """grad_input reads fp32/fp64 weight rows in place, whole vectors reaching past a row's
    ends, and must zero what it finds there: here every row of the weight is flanked by
    NaN and inf (a view into a wider buffer), which must not reach any gradient. Channels_last
    with 16 channels per group takes the gather with channels on the vector lanes, which
    copies a row's ends masked."""
    C = 32 if channels_last else 4
    cases = [Case(B=2, C=C, G=2, H=9, W=W, K=K, stride=(s, s), padding=(p, p), dilation=(d, d))
             for W, K, s, p, d in [(20, (3, 3), 1, 1, 1), (40, (7, 7), 1, 3, 1), (33, (5, 3), 2, 2, 1),
                                   (41, (3, 3), 2, 2, 2), (17, (7, 7), 1, 3, 1), (9, (3, 3), 1, 1, 1),
                                   (70, (7, 5), 1, 3, 1)]]
    for i, case in enumerate(cases):
        x, w = case.tensors(dtype, channels_last=channels_last, seed=i)
        Ho, Wo = case.out
        flanked = flanked_by_non_finite(w)
        gy = torch.randn(case.B, case.C, Ho, Wo, generator=torch.Generator().manual_seed(i), dtype=dtype)
        if channels_last:
            gy = gy.contiguous(memory_format=torch.channels_last)
        gx, _ = torch.ops.involution.backward(*to_device(kernel_device, gy, x, flanked), *case.args(),
                                              [True, False])
        assert gx.is_contiguous(memory_format=torch.channels_last) == channels_last
        gx_ref, _, gx_scale, _ = reference_grads(x, w, gy, case)
        assert_close_scaled(gx.cpu(), gx_ref, gx_scale, dtype, f"grad_input {case} {dtype}")


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_gradcheck_and_gradgradcheck(device):
    for case in [
        Case(B=2, C=4, G=2, H=5, W=6, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
        Case(B=1, C=6, G=3, H=7, W=5, K=(2, 3), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
        Case(B=1, C=3, G=1, H=6, W=6, K=(3, 3), stride=(3, 2), padding=(0, 1), dilation=(1, 2)),
    ]:
        x, w = to_device(device, *case.tensors(torch.float64, requires_grad=True))
        fn = lambda x, w: torch.ops.involution.forward(x, w, *case.args())  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w))
        assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_backward_op_is_differentiable_in_all_inputs(device):
    """gradcheck of involution::backward itself (grad_output, input and weight)."""
    case = Case(B=1, C=4, G=2, H=5, W=5, K=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    x, w = to_device(device, *case.tensors(torch.float64, requires_grad=True))
    gy = torch.randn(1, 4, *case.out, dtype=torch.float64, device=device, requires_grad=True)

    def fn(gy, x, w):
        return torch.ops.involution.backward(gy, x, w, *case.args(), [True, True])

    assert torch.autograd.gradcheck(fn, (gy, x, w))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_output_mask(device):
    case = Case(B=2, C=8, G=2, H=9, W=9, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    x, w = to_device(device, *case.tensors(torch.float32))
    gy = torch.randn(2, 8, *case.out, device=device)
    gx, gw = torch.ops.involution.backward(gy, x, w, *case.args(), [True, True])
    gx_only, none_w = torch.ops.involution.backward(gy, x, w, *case.args(), [True, False])
    none_x, gw_only = torch.ops.involution.backward(gy, x, w, *case.args(), [False, True])
    assert none_w is None and none_x is None
    assert torch.equal(gx, gx_only) and torch.equal(gw, gw_only)
    # Autograd asks only for what is needed.
    xr = x.clone().requires_grad_()
    torch.ops.involution.forward(xr, w, *case.args()).backward(gy)
    assert torch.equal(xr.grad, gx) and w.grad is None


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_backward_deterministic_across_runs_and_threads(device):
    """Bitwise the same gradients run to run (no atomics), and on the CPU for any thread count."""
    case = Case(B=3, C=64, G=4, H=21, W=19, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = to_device(device, *case.tensors(torch.float32))
    gy = torch.randn(3, 64, *case.out, device=device)
    threads = torch.get_num_threads()
    results = []
    for n in (threads, 1, threads):
        torch.set_num_threads(n)
        results.append(torch.ops.involution.backward(gy, x, w, *case.args(), [True, True]))
    torch.set_num_threads(threads)
    for gx, gw in results[1:]:
        assert torch.equal(gx, results[0][0]) and torch.equal(gw, results[0][1])


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_expanded_grad_output(device):
    """y.sum().backward() feeds a zero-stride grad_output; it is read in place."""
    case = Case(B=2, C=6, G=3, H=8, W=8, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    x, w = case.tensors(torch.float64, requires_grad=True)
    xd, wd = to_device(device, x, w)
    torch.ops.involution.forward(xd, wd, *case.args()).sum().backward()
    gx_ref, gw_ref, _, _ = reference_grads(x, w, torch.ones(2, 6, *case.out, dtype=torch.float64), case)
    torch.testing.assert_close(xd.grad.cpu(), gx_ref)
    torch.testing.assert_close(wd.grad.cpu(), gw_ref)


@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_rednet_shape(channels_last, kernel_device):
    """16 channels per group, K=7, stride 1 and 2, wide enough for the blocked
    channels_last staging path."""
    for stride in (1, 2):
        case = Case(B=2, C=32, G=2, H=20, W=21, K=(7, 7), stride=(stride, stride), padding=(3, 3), dilation=(1, 1))
        check_backward(case, torch.float32, channels_last, stride, kernel_device)

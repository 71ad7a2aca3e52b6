"""Forward of involution::forward against the independent fp64 loop reference, on every
device (CPU with each instruction set it runs, and CUDA where present)."""

from __future__ import annotations

import pytest
import torch

import involution_ext
from helpers import (ISAS, Case, assert_close_scaled, check_backward, check_forward, cpu_and_cuda,
                     flanked_by_non_finite, involution_loops, pixel_major, random_cases, to_device)

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
CASES = random_cases(240, seed=1234)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("idx", range(len(CASES)))
def test_forward_random_shapes(idx, device):
    """240 random shapes: K in {1,2,3,5,7,3x5,5x3}, stride/dilation 1-3, padding 0-3,
    G 1-4, 1-17 channels per group; fp64 and fp32, both memory formats."""
    case = CASES[idx]
    check_forward(case, torch.float64, channels_last=bool(idx % 2), seed=idx, device=device)
    check_forward(case, torch.float32, channels_last=not (idx % 2), seed=idx, device=device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_dtypes_layouts(dtype, channels_last, kernel_device):
    for i, case in enumerate(CASES[:24]):
        check_forward(case, dtype, channels_last, seed=i, device=kernel_device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rednet_stage_shape(dtype, kernel_device):
    """The shape RedNet uses: 16 channels per group, K=7, 'same' padding, and stride 2."""
    for stride in (1, 2):
        case = Case(B=2, C=64, G=4, H=20, W=21, K=(7, 7), stride=(stride, stride), padding=(3, 3), dilation=(1, 1))
        check_forward(case, dtype, channels_last=False, device=kernel_device)
        check_forward(case, dtype, channels_last=True, device=kernel_device)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_non_contiguous_inputs(dtype, device):
    """Sliced / transposed views and a pixel-major weight are read in place."""
    case = Case(B=2, C=12, G=3, H=9, W=11, K=(3, 3), stride=(1, 2), padding=(1, 1), dilation=(1, 1))
    x, w = case.tensors(dtype)
    x_big = torch.randn(2, 24, 9, 22, device=device, dtype=dtype)
    x_view = x_big[:, ::2, :, ::2]  # non-contiguous in every dim but H
    x_view.copy_(x)
    Ho, Wo = case.out
    # Weight laid out pixel-major, as a channels_last 1x1 conv would produce it.
    w_pm = pixel_major(w)
    assert not w_pm.is_contiguous()
    ref = involution_loops(x, w, *case.args())
    scale = involution_loops(x.abs(), w.abs(), *case.args())
    xd, wd, w_pm = to_device(device, x, w, w_pm)
    assert not w_pm.is_contiguous()
    for xi, wi in [(x_view, wd), (xd, w_pm), (x_view, w_pm), (xd.transpose(2, 3).contiguous().transpose(2, 3), wd)]:
        y = torch.ops.involution.forward(xi, wi, *case.args())
        assert_close_scaled(y.cpu(), ref, scale, dtype, f"non-contiguous {dtype}")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_ignores_what_lies_beside_weight_rows(dtype, channels_last, kernel_device):
    """The forward reads weight rows in place as whole vectors, past a row's end (fp16/bf16
    widened as they are loaded): here every row is flanked by NaN and inf (a view into a wider
    buffer), which may reach only output lanes that are never stored. 16 channels per group
    in channels_last take the gather with channels on the lanes; 4 take the column lanes."""
    for C, G in [(4, 1), (32, 2)]:
        cases = [Case(B=2, C=C, G=G, H=9, W=W, K=K, stride=(s, s), padding=(p, p), dilation=(1, 1))
                 for W, K, s, p in [(7, (3, 3), 1, 1), (14, (7, 7), 1, 3), (20, (3, 3), 1, 1), (28, (7, 7), 1, 3),
                                    (33, (5, 3), 2, 2), (41, (3, 3), 1, 1)]]
        for i, case in enumerate(cases):
            x, w = case.tensors(dtype, channels_last=channels_last, seed=i)
            flanked = flanked_by_non_finite(w)
            y = torch.ops.involution.forward(*to_device(kernel_device, x, flanked), *case.args())
            ref = involution_loops(x, w, *case.args())
            scale = involution_loops(x.abs(), w.abs(), *case.args())
            assert_close_scaled(y.cpu(), ref, scale, dtype, f"forward {case} {dtype}")


def test_isas_agree_bitwise_for_fp64():
    """All CPU builds compute the same sums in the same order per element... up to FMA
    contraction; check they agree to fp64 rounding."""
    case = Case(B=2, C=32, G=2, H=13, W=17, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = case.tensors(torch.float64)
    outs = []
    for isa in ISAS:
        involution_ext.cpu_isa(isa)
        outs.append(torch.ops.involution.forward(x, w, *case.args()))
    involution_ext.cpu_isa("auto")
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_empty_batch(device):
    x = torch.randn(0, 8, 10, 10, device=device)
    w = torch.randn(0, 2, 3, 3, 10, 10, device=device)
    y = torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1])
    assert y.shape == (0, 8, 10, 10)
    x.requires_grad_(), w.requires_grad_()
    torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1]).sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_zero_spatial_input_with_padding(device):
    """H = W = 0 with padding: a valid (all zero) output."""
    x = torch.randn(1, 4, 0, 0, device=device)
    w = torch.randn(1, 1, 1, 1, 2, 2, device=device)
    y = torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1])
    assert y.shape == (1, 4, 2, 2) and (y == 0).all()


def test_functional_api_matches_op():
    case = Case(B=2, C=8, G=2, H=10, W=10, K=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    x, w = case.tensors(torch.float32)
    a = involution_ext.involution2d(x, w, stride=2, padding=1)
    b = torch.ops.involution.forward(x, w, [2, 2], [1, 1], [1, 1])
    assert torch.equal(a, b)


def test_unfold_reference_matches_loops():
    from involution_ext.reference import involution2d_unfold

    for case in CASES[:30]:
        x, w = case.tensors(torch.float64)
        torch.testing.assert_close(
            involution2d_unfold(x, w, case.stride, case.padding, case.dilation),
            involution_loops(x, w, *case.args()),
        )


# Groups that fill whole vectors (8, 16, 24 and 40 channels per group: blocks of 4, 2 and 1
# vectors and their mixes) take the channels-on-lanes gathers when the output is
# channels_last, and the forward also in NCHW when its rows are at most one vector wide.
# Output widths 1-9 run every pixel-block size, the blocks that overlap at a row's end
# among them.
LANE_CASES = [
    Case(B=2, C=16, G=2, H=5, W=1, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
    Case(B=1, C=32, G=2, H=7, W=7, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1)),
    Case(B=2, C=48, G=2, H=6, W=9, K=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 1)),
    Case(B=1, C=80, G=2, H=9, W=8, K=(3, 3), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
    Case(B=2, C=64, G=8, H=5, W=3, K=(5, 5), stride=(1, 1), padding=(2, 2), dilation=(1, 1)),
    Case(B=1, C=32, G=1, H=11, W=12, K=(7, 7), stride=(3, 3), padding=(3, 0), dilation=(1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_on_lanes(dtype, channels_last, kernel_device):
    for i, case in enumerate(LANE_CASES):
        check_forward(case, dtype, channels_last, seed=i, device=kernel_device)
        check_backward(case, dtype, channels_last, seed=i, device=kernel_device)

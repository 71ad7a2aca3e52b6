"""Forward of involution::forward against the independent fp64 loop reference."""

from __future__ import annotations

import pytest
import torch

import involution_ext
from conftest import Case, assert_close_scaled, involution_loops, random_cases

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
CASES = random_cases(240, seed=1234)


def check_forward(case: Case, dtype, channels_last, seed=0):
    x, w = case.tensors(dtype, channels_last, seed=seed)
    y = torch.ops.involution.forward(x, w, *case.args())
    ref = involution_loops(x, w, *case.args())
    scale = involution_loops(x.abs(), w.abs(), *case.args())
    assert y.shape == ref.shape and y.dtype == dtype
    want = torch.channels_last if channels_last and x.shape[1] > 1 else torch.contiguous_format
    assert y.is_contiguous(memory_format=want)
    assert_close_scaled(y, ref, scale, dtype, f"{case} {dtype} channels_last={channels_last}")


@pytest.mark.parametrize("idx", range(len(CASES)))
def test_forward_random_shapes(idx):
    """240 random shapes: K in {1,2,3,5,7,3x5,5x3}, stride/dilation 1-3, padding 0-3,
    G 1-4, 1-17 channels per group; fp64 and fp32, both memory formats."""
    case = CASES[idx]
    check_forward(case, torch.float64, channels_last=bool(idx % 2), seed=idx)
    check_forward(case, torch.float32, channels_last=not (idx % 2), seed=idx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_dtypes_layouts(dtype, channels_last, cpu_isa):
    for i, case in enumerate(CASES[:24]):
        check_forward(case, dtype, channels_last, seed=i)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rednet_stage_shape(dtype, cpu_isa):
    """The shape RedNet uses: 16 channels per group, K=7, 'same' padding, and stride 2."""
    for stride in (1, 2):
        case = Case(B=2, C=64, G=4, H=20, W=21, K=(7, 7), stride=(stride, stride), padding=(3, 3), dilation=(1, 1))
        check_forward(case, dtype, channels_last=False)
        check_forward(case, dtype, channels_last=True)


def test_non_contiguous_inputs():
    """Sliced / transposed views and a pixel-major weight are read in place."""
    case = Case(B=2, C=12, G=3, H=9, W=11, K=(3, 3), stride=(1, 2), padding=(1, 1), dilation=(1, 1))
    x, w = case.tensors(torch.float32)
    x_big = torch.randn(2, 24, 9, 22)
    x_view = x_big[:, ::2, :, ::2]  # non-contiguous in every dim but H
    x_view.copy_(x)
    Ho, Wo = case.out
    # Weight laid out pixel-major, as a channels_last 1x1 conv would produce it.
    w_pm = w.permute(0, 4, 5, 1, 2, 3).contiguous().permute(0, 3, 4, 5, 1, 2)
    assert not w_pm.is_contiguous()
    ref = involution_loops(x, w, *case.args())
    scale = involution_loops(x.abs(), w.abs(), *case.args())
    for xi, wi in [(x_view, w), (x, w_pm), (x_view, w_pm), (x.transpose(2, 3).contiguous().transpose(2, 3), w)]:
        y = torch.ops.involution.forward(xi, wi, *case.args())
        assert_close_scaled(y, ref, scale, torch.float32, "non-contiguous")


def test_isas_agree_bitwise_for_fp64():
    """All CPU builds compute the same sums in the same order per element... up to FMA
    contraction; check they agree to fp64 rounding."""
    from conftest import ISAS

    case = Case(B=2, C=32, G=2, H=13, W=17, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = case.tensors(torch.float64)
    outs = []
    for isa in ISAS:
        involution_ext.cpu_isa(isa)
        outs.append(torch.ops.involution.forward(x, w, *case.args()))
    involution_ext.cpu_isa("auto")
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-13, atol=1e-13)


def test_empty_batch():
    x = torch.randn(0, 8, 10, 10)
    w = torch.randn(0, 2, 3, 3, 10, 10)
    y = torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1])
    assert y.shape == (0, 8, 10, 10)
    x.requires_grad_(), w.requires_grad_()
    torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1]).sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


def test_zero_spatial_input_with_padding():
    """H = W = 0 with padding: a valid (all zero) output."""
    x = torch.randn(1, 4, 0, 0)
    w = torch.randn(1, 1, 1, 1, 2, 2)
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

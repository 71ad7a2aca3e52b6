"""Involution2d: Eq. 4 with the Eq. 6 kernel generator written out in fp64, gradients to the
generator, and the options it rejects."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from involution_ext import Involution2d
from reference_loops import involution_loops


def eq6_kernel(module: Involution2d, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6 written out in fp64 from the module's parameters: pool, W0, BN (eval), ReLU, W1."""
    x = x.double()
    if module.stride > 1:
        x = F.avg_pool2d(x, module.stride, module.stride, ceil_mode=True)
    if isinstance(module.conv1, torch.nn.Identity):
        hidden = x
    else:
        bn = module.conv1.bn
        w0 = module.conv1.conv.weight.double()[:, :, 0, 0]
        hidden = torch.einsum("oc,bchw->bohw", w0, x)
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        hidden = (hidden - bn.running_mean.double()[:, None, None]) * scale[:, None, None] + bn.bias.double()[:, None, None]
        hidden = hidden.clamp_min(0)
    w1 = module.conv2.conv.weight.double()[:, :, 0, 0]
    k = torch.einsum("oc,bchw->bohw", w1, hidden) + module.conv2.conv.bias.double()[:, None, None]
    B, _, H, W = k.shape
    return k.view(B, module.groups, module.kernel_size, module.kernel_size, H, W)


@pytest.mark.parametrize(
    "channels,kernel_size,stride,group_channels,reduction,dilation,generator,size",
    [
        (32, 7, 1, 16, 4, 1, "bottleneck", (13, 11)),
        (32, 3, 2, 8, 4, 1, "bottleneck", (15, 10)),  # odd size with stride 2
        (16, 5, 1, None, 1, 2, "bottleneck", (9, 9)),
        (24, 3, 1, 4, 2, 1, "linear", (7, 12)),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_involution2d_matches_eq4_eq6(channels, kernel_size, stride, group_channels, reduction, dilation, generator,
                                      size, channels_last):
    torch.manual_seed(0)
    module = Involution2d(channels, kernel_size, stride, group_channels, reduction, dilation, generator)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):  # non-trivial statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    module = module.double().eval()
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        module = module.to(memory_format=torch.channels_last)
    y = module(x)
    kernel = eq6_kernel(module, x)
    pad = dilation * (kernel_size - 1) // 2
    expected = involution_loops(x, kernel, (stride, stride), (pad, pad), (dilation, dilation))
    assert y.shape == (2, channels, -(-size[0] // stride), -(-size[1] // stride))
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_involution2d_gradients_reach_generator():
    module = Involution2d(16, 3, stride=2, group_channels=4).double()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), fast_mode=True)
    module(x).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(channels=30, group_channels=16), "multiple of group_channels"),
        (dict(channels=16, generator="mlp"), "generator"),
        (dict(channels=4, group_channels=4, reduction_ratio=8), "reduction_ratio"),
        (dict(channels=64, kernel_size=4), "kernel_size must be a positive odd number .* got 4"),
        (dict(channels=64, kernel_size=0), "kernel_size must be a positive odd number"),
        (dict(channels=64, stride=0), "stride"),
        (dict(channels=64, dilation=0), "dilation"),
    ],
)
def test_involution2d_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Involution2d(**kwargs)

"""RedNet against the paper: Table 1 (parameters, multiply-adds per depth), Table 6 (the
ablations' parameters), and the op's FLOP formulas."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import involution_ext
from involution_ext.models import rednet, rednet50


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def multiply_adds(model, size=224):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 2  # FlopCounterMode counts 2 FLOPs per multiply-add


TABLE1 = {26: (9.23, 1.73), 38: (12.39, 2.22), 50: (15.54, 2.71), 101: (25.65, 4.74), 152: (33.99, 6.79)}


@pytest.mark.parametrize("depth", sorted(TABLE1))
def test_table1_params_and_multiply_adds(depth):
    params_m, gmacs = TABLE1[depth]
    model = rednet(depth)
    assert abs(n_params(model) / 1e6 / params_m - 1) < 0.005
    # The paper also counts BN and activations, which FlopCounterMode does not: within 4 %.
    assert abs(multiply_adds(model) / 1e9 / gmacs - 1) < 0.04


TABLE6 = [  # RedNet-50 with the 7x7 conv stem (the ablation setting), millions of parameters
    (dict(kernel_size=3), 14.7), (dict(kernel_size=5), 15.1), (dict(kernel_size=7), 15.5), (dict(kernel_size=9), 16.2),
    (dict(group_channels=1), 30.2), (dict(group_channels=4), 18.5), (dict(group_channels=16), 15.5),
    (dict(group_channels=None), 14.6),
    (dict(generator="linear"), 18.1), (dict(reduction_ratio=1), 19.4), (dict(reduction_ratio=4), 15.5),
    (dict(reduction_ratio=16), 14.6),
]


@pytest.mark.parametrize("kwargs,params_m", TABLE6, ids=[str(k) for k, _ in TABLE6])
def test_table6_params(kwargs, params_m):
    assert abs(n_params(rednet50(stem="conv7x7", **kwargs)) / 1e6 / params_m - 1) < 0.01


def test_flop_formulas_forward_and_backward():
    x = torch.randn(2, 8, 9, 10, requires_grad=True)
    w = torch.randn(2, 2, 3, 5, 5, 10, requires_grad=True)
    macs = 2 * 8 * 5 * 10 * 3 * 5
    with FlopCounterMode(display=False) as counter:
        y = involution_ext.involution2d(x, w, stride=(2, 1), padding=(1, 2))
    assert counter.get_total_flops() == 2 * macs
    with FlopCounterMode(display=False) as counter:
        y.sum().backward()
    assert counter.get_flop_counts()["Global"][torch.ops.involution.backward] == 2 * 2 * macs
    with FlopCounterMode(display=False) as counter:
        torch.autograd.grad(involution_ext.involution2d(x, w.detach(), stride=(2, 1), padding=(1, 2)).sum(), x)
    assert counter.get_flop_counts()["Global"][torch.ops.involution.backward] == 2 * macs


def test_fused_flop_formulas_count_the_span_product():
    from involution_ext.modules import Involution2d

    layer = Involution2d(32, kernel_size=7, group_channels=16, reduction_ratio=4)  # G=2, R=8
    x = torch.randn(2, 32, 10, 10, requires_grad=True)
    hidden = layer.conv1(x)
    span = layer.conv2.conv
    aggregation, span_macs = 2 * 32 * 100 * 49, 2 * (2 * 49) * 8 * 100
    args = ([7, 7], [1, 1], [3, 3], [1, 1])
    with FlopCounterMode(display=False) as counter:
        y = torch.ops.involution.fused_forward(x, hidden, span.weight.flatten(1), span.bias, *args)
    assert counter.get_flop_counts()["Global"][torch.ops.involution.fused_forward] == 2 * (aggregation + span_macs)
    with FlopCounterMode(display=False) as counter:
        y.sum().backward()
    # grad_input (span + aggregation) + the kernel gradient (aggregation) + grad_hidden and
    # grad_span_weight (a span product each).
    want = 2 * (span_macs + aggregation + aggregation + 2 * span_macs)
    assert counter.get_flop_counts()["Global"][torch.ops.involution.fused_backward] == want

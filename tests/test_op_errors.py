"""Every kind of bad input raises a clear error (never a crash or a wrong answer), from
eager on every device, and the same message from the fake kernel under torch.compile."""

from __future__ import annotations

import pytest
import torch

import involution_ext  # noqa: F401
from helpers import cpu_and_cuda, on_device

OK_ARGS = ([1, 1], [1, 1], [1, 1])


def good(dtype=torch.float32):
    return torch.randn(2, 8, 6, 6, dtype=dtype), torch.randn(2, 2, 3, 3, 6, 6, dtype=dtype)


BAD = {
    "input rank": (lambda: (torch.randn(8, 6, 6), good()[1], *OK_ARGS), "input must be 4-D"),
    "weight rank": (lambda: (good()[0], torch.randn(2, 2, 3, 3, 36), *OK_ARGS), "weight must be 6-D"),
    "groups do not divide channels": (lambda: (torch.randn(2, 8, 6, 6), torch.randn(2, 3, 3, 3, 6, 6), *OK_ARGS), "must be divisible by groups"),
    "batch mismatch": (lambda: (good()[0], torch.randn(3, 2, 3, 3, 6, 6), *OK_ARGS), "batch size of weight"),
    "weight spatial size": (lambda: (good()[0], torch.randn(2, 2, 3, 3, 5, 6), *OK_ARGS), r"weight spatial size \(5, 6\) must equal the output size \(6, 6\)"),
    "non-positive output": (lambda: (torch.randn(2, 8, 2, 2), torch.randn(2, 2, 5, 5, 1, 1), [1, 1], [0, 0], [1, 1]), "is not positive"),
    "kernel size zero": (lambda: (good()[0], torch.randn(2, 2, 0, 3, 6, 6), *OK_ARGS), "kernel size must be >= 1"),
    "stride zero": (lambda: (*good(), [0, 1], [1, 1], [1, 1]), "stride must be >= 1"),
    "dilation zero": (lambda: (*good(), [1, 1], [1, 1], [1, 0]), "dilation must be >= 1"),
    "negative padding": (lambda: (*good(), [1, 1], [-1, 1], [1, 1]), "padding must be >= 0"),
    "stride length": (lambda: (*good(), [1, 1, 1], [1, 1], [1, 1]), "stride must have 2 elements"),
    "padding length": (lambda: (*good(), [1, 1], [1], [1, 1]), "padding must have 2 elements"),
    "integer dtype": (lambda: (torch.ones(2, 8, 6, 6, dtype=torch.int32), torch.ones(2, 2, 3, 3, 6, 6, dtype=torch.int32), *OK_ARGS), "must be float32, float64, float16 or bfloat16"),
    "bool dtype": (lambda: (torch.ones(2, 8, 6, 6, dtype=torch.bool), torch.ones(2, 2, 3, 3, 6, 6, dtype=torch.bool), *OK_ARGS), "must be float32, float64, float16 or bfloat16"),
    "dtype mismatch": (lambda: (good()[0], good()[1].double(), *OK_ARGS), "must have the same dtype"),
    "device mismatch": (lambda: (good()[0], good()[1].to("meta"), *OK_ARGS), "same device"),
    "zero channels": (lambda: (torch.randn(2, 0, 6, 6), torch.randn(2, 1, 3, 3, 6, 6), *OK_ARGS), "at least one channel"),
    "zero groups": (lambda: (good()[0], torch.randn(2, 0, 3, 3, 6, 6), *OK_ARGS), "at least one group"),
}


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("name", list(BAD))
def test_forward_rejects(name, device):
    make, message = BAD[name]
    with pytest.raises(RuntimeError, match=message):
        torch.ops.involution.forward(*on_device(make(), device))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("name", [n for n in BAD if n != "device mismatch"])
def test_backward_rejects(name, device):
    make, message = BAD[name]
    args = on_device(make(), device)
    gy = torch.randn(2, 8, 6, 6, dtype=args[0].dtype if args[0].dtype.is_floating_point else torch.float32,
                     device=device)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.involution.backward(gy, *args, [True, True])


@pytest.mark.parametrize("name", ["groups do not divide channels", "weight spatial size", "stride zero", "dtype mismatch"])
def test_fake_kernel_rejects_with_same_message(name):
    from torch._subclasses.fake_tensor import FakeTensorMode

    make, message = BAD[name]
    args = make()
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(Exception, match=message):
            torch.ops.involution.forward(*fake)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_backward_rejects_bad_grad_output(device):
    x, w = on_device(good(), device)
    with pytest.raises(RuntimeError, match=r"grad_output must have sizes \(2, 8, 6, 6\)"):
        torch.ops.involution.backward(torch.randn(2, 8, 5, 6, device=device), x, w, *OK_ARGS, [True, True])
    with pytest.raises(RuntimeError, match="grad_output must have the input's dtype"):
        torch.ops.involution.backward(torch.randn(2, 8, 6, 6, dtype=torch.float64, device=device), x, w, *OK_ARGS,
                                      [True, True])


def test_functional_rejects_bad_pair():
    x, w = good()
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        involution_ext.involution2d(x, w, stride=(1, 1, 1))


def test_errors_do_not_leak_or_crash():
    """Many failing calls in a row leave the process healthy."""
    x, w = good()
    for _ in range(2000):
        with pytest.raises(RuntimeError):
            torch.ops.involution.forward(x, w[:, :, :, :, :5], *OK_ARGS)
    assert torch.ops.involution.forward(x, w, *OK_ARGS).shape == (2, 8, 6, 6)


def test_unsupported_isa_name():
    with pytest.raises(RuntimeError, match="unknown CPU instruction set"):
        involution_ext.cpu_isa("sse9")

"""involution::fused_forward / fused_backward (kernel generation inside the op) on every
device, against an independent fp64 composition (tests/fused_cases.py)."""

from __future__ import annotations

import random
import textwrap

import pytest
import torch

import involution_ext
from fused_cases import FusedCase, check_fused, random_fused_case, span_reference
from helpers import REL_TOL, cpu_and_cuda, on_device, run_in_fresh_process, to_device


CASES = [random_fused_case(random.Random(1000 + i)) for i in range(200)]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("idx", range(len(CASES)))
def test_fused_random_shapes(idx, device):
    """200 random shapes (R 1..64, K up to 7 incl. even and non-square, stride, padding,
    dilation, G 1..4 with 1-17 channels each, B 0..3, any layout of input and hidden, with and
    without bias): output and all four gradients in fp64 and fp32."""
    check_fused(CASES[idx], torch.float64, idx, device)
    check_fused(CASES[idx], torch.float32, idx, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_half_types(dtype, kernel_device):
    for i, case in enumerate(CASES[:30]):
        check_fused(case, dtype, i, kernel_device)


def test_fused_rednet_shapes(kernel_device):
    """RedNet's stage shapes in miniature: 16 channels per group, K=7, R = C/4, stride 2 too."""
    for C, H, stride in [(64, 12, 1), (128, 7, 1), (64, 13, 2)]:
        case = FusedCase(B=2, C=C, G=C // 16, R=C // 4, H=H, W=H + 1, K=(7, 7), stride=(stride, stride),
                         padding=(3, 3), dilation=(1, 1))
        check_fused(case, torch.float32, C, kernel_device)
        case.x_layout = case.h_layout = "channels_last"
        check_fused(case, torch.float32, C + 1, kernel_device)


def test_fused_large_map_splits_into_row_blocks(kernel_device):
    """A map too large for one block of kernel rows: the CPU grad_input splits it into blocks
    that each generate their halo rows again (and a stride-2 map likewise)."""
    for stride in (1, 2):
        case = FusedCase(B=2, C=16, G=1, R=4, H=72, W=73, K=(7, 7), stride=(stride, stride),
                         padding=(3, 3), dilation=(1, 1))
        check_fused(case, torch.float32, stride, kernel_device)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fused_equals_unfused_composition(device):
    """fused_forward(x, h, S, b) == forward(x, (S h + b).view(...)) to fp32 rounding."""
    case = FusedCase(B=2, C=32, G=2, R=8, H=11, W=9, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, h, s, b = to_device(device, *case.tensors(torch.float32, 3))
    kernel = span_reference(h, s, b, case).float()
    unfused = torch.ops.involution.forward(x, kernel, *case.args()[1:])
    fused = torch.ops.involution.fused_forward(x, h, s, b, *case.args())
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fused_gradcheck_and_gradgradcheck(device):
    """First and second order in fp64. Second order runs the differentiable composition
    (the fused kernels are first-order)."""
    case = FusedCase(B=2, C=4, G=2, R=3, H=5, W=6, K=(3, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    tensors = [t.to(device).requires_grad_() for t in case.tensors(torch.float64, 5)]
    fn = lambda x, h, s, b: torch.ops.involution.fused_forward(x, h, s, b, *case.args())  # noqa: E731
    assert torch.autograd.gradcheck(fn, tensors)
    assert torch.autograd.gradgradcheck(fn, tensors)
    no_bias = lambda x, h, s: torch.ops.involution.fused_forward(x, h, s, None, *case.args())  # noqa: E731
    assert torch.autograd.gradcheck(no_bias, tensors[:3])


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fused_opcheck(device):
    for case in [FusedCase(B=2, C=8, G=2, R=4, H=7, W=9, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
                 FusedCase(B=1, C=6, G=3, R=5, H=9, W=8, K=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1),
                           bias=False, x_layout="channels_last", h_layout="channels_last")]:
        tensors = to_device(device, *[t for t in case.tensors(torch.float32, 1) if t is not None])
        x, h, s = (t.requires_grad_() for t in tensors[:3])
        b_arg = tensors[3].requires_grad_() if case.bias else None
        torch.library.opcheck(torch.ops.involution.fused_forward.default, (x, h, s, b_arg, *case.args()))
        gy = torch.randn(case.B, case.C, *case.out, device=device)
        plain = [t.detach() for t in (x, h, s)]
        for mask in ([True, True, True, True], [True, False, False, False], [False, True, True, False],
                     [False, False, False, True]):
            torch.library.opcheck(torch.ops.involution.fused_backward.default,
                                  (gy, *plain, None if b_arg is None else b_arg.detach(), *case.args(), mask))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fused_output_mask(device):
    case = FusedCase(B=2, C=8, G=2, R=4, H=9, W=9, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    x, h, s, b = to_device(device, *case.tensors(torch.float32, 2))
    gy = torch.randn(2, 8, *case.out, device=device)
    full = torch.ops.involution.fused_backward(gy, x, h, s, b, *case.args(), [True] * 4)
    for k in range(4):
        mask = [i == k for i in range(4)]
        part = torch.ops.involution.fused_backward(gy, x, h, s, b, *case.args(), mask)
        assert all((p is None) == (i != k) for i, p in enumerate(part))
        assert torch.equal(part[k], full[k])
    no_bias = torch.ops.involution.fused_backward(gy, x, h, s, None, *case.args(), [True] * 4)
    assert no_bias[3] is None


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fused_backward_deterministic_across_runs_and_threads(device):
    case = FusedCase(B=3, C=64, G=4, R=16, H=21, W=19, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, h, s, b = to_device(device, *case.tensors(torch.float32, 4))
    gy = torch.randn(3, 64, *case.out, device=device)
    threads = torch.get_num_threads()
    results = []
    for n in (threads, 1, threads, 3):
        torch.set_num_threads(n)
        results.append(torch.ops.involution.fused_backward(gy, x, h, s, b, *case.args(), [True] * 4))
    torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(results[0], other))


def test_fused_autograd_saves_no_kernel():
    """Autograd keeps input, hidden and the span parameters — never a tensor the size of the
    generated kernel."""
    case = FusedCase(B=2, C=32, G=2, R=8, H=10, W=10, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, h, s, b = (t.requires_grad_() for t in case.tensors(torch.float32, 6))
    kernel_numel = case.B * case.rows * case.out[0] * case.out[1]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        torch.ops.involution.fused_forward(x, h, s, b, *case.args())
    assert saved and max(t.numel() for t in saved) < kernel_numel
    assert sorted(t.numel() for t in saved) == sorted(t.numel() for t in (x, h, s, b))


# ---------------------------------------------------------------- bad inputs

def _good():
    case = FusedCase(B=2, C=8, G=2, R=4, H=6, W=6, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    return case.tensors(torch.float32, 0)


OK = ([3, 3], [1, 1], [1, 1], [1, 1])


def _with(**changes):
    x, h, s, b = _good()
    parts = {"x": x, "h": h, "s": s, "b": b, "hyper": OK}
    parts.update(changes)
    return (parts["x"], parts["h"], parts["s"], parts["b"], *parts["hyper"])


BAD = {
    "input rank": (lambda: _with(x=torch.randn(8, 6, 6)), "input must be 4-D"),
    "hidden rank": (lambda: _with(h=torch.randn(2, 4, 36)), "hidden must be 4-D"),
    "span_weight rank": (lambda: _with(s=torch.randn(18, 4, 1, 1)), r"span_weight must be 2-D \(G\*Kh\*Kw, R\)"),
    "R mismatch": (lambda: _with(s=torch.randn(18, 5)), "hidden has 4 channels but span_weight has R = 5 columns"),
    "span rows not a multiple of taps": (lambda: _with(s=torch.randn(17, 4), b=torch.randn(17)),
                                         r"span_weight rows \(17\) must be a positive multiple of Kh\*Kw \(9\)"),
    "groups do not divide channels": (lambda: _with(s=torch.randn(27, 4), b=torch.randn(27)),
                                      r"channels \(8\) must be divisible by groups \(3"),
    "bias length": (lambda: _with(b=torch.randn(17)), r"span_bias must have sizes \(18,\), got \[17\]"),
    "hidden spatial size": (lambda: _with(h=torch.randn(2, 4, 5, 6)), r"hidden must have sizes \(2, 4, 6, 6\), got \[2, 4, 5, 6\]"),
    "hidden batch": (lambda: _with(h=torch.randn(3, 4, 6, 6)), r"hidden must have sizes \(2, 4, 6, 6\)"),
    "dtype mismatch": (lambda: _with(h=_good()[1].double()), "hidden must have the input's dtype"),
    "bias dtype": (lambda: _with(b=_good()[3].half()), "span_bias must have the input's dtype"),
    "integer dtype": (lambda: _with(x=torch.ones(2, 8, 6, 6, dtype=torch.int32)), "input must be float32, float64, float16 or bfloat16"),
    "device mismatch": (lambda: _with(s=_good()[2].to("meta")), "span_weight must be on the input's device"),
    "kernel size zero": (lambda: _with(hyper=([0, 3], [1, 1], [1, 1], [1, 1])), "kernel_size must be >= 1"),
    "stride zero": (lambda: _with(hyper=([3, 3], [0, 1], [1, 1], [1, 1])), "stride must be >= 1"),
    "negative padding": (lambda: _with(hyper=([3, 3], [1, 1], [-1, 1], [1, 1])), "padding must be >= 0"),
    "kernel_size length": (lambda: _with(hyper=([3, 3, 3], [1, 1], [1, 1], [1, 1])), "kernel_size must have 2 elements"),
    "non-positive output": (lambda: _with(x=torch.randn(2, 8, 1, 1), h=torch.randn(2, 4, 1, 1),
                                          hyper=([3, 3], [1, 1], [0, 0], [1, 1])), "is not positive"),
}


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("name", list(BAD))
def test_fused_forward_rejects(name, device):
    make, message = BAD[name]
    with pytest.raises(RuntimeError, match=message):
        torch.ops.involution.fused_forward(*on_device(make(), device))


@pytest.mark.parametrize("name", [n for n in BAD if n != "device mismatch"])
def test_fused_backward_rejects(name):
    make, message = BAD[name]
    args = make()
    gy = torch.randn(2, 8, 6, 6)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.involution.fused_backward(gy, *args, [True] * 4)


def test_fused_backward_rejects_bad_grad_output():
    args = _with()
    with pytest.raises(RuntimeError, match=r"grad_output must have sizes \(2, 8, 6, 6\)"):
        torch.ops.involution.fused_backward(torch.randn(2, 8, 5, 6), *args, [True] * 4)


@pytest.mark.parametrize("name", ["R mismatch", "bias length", "hidden spatial size", "dtype mismatch",
                                  "span rows not a multiple of taps"])
def test_fused_fake_kernel_rejects_with_same_message(name):
    from torch._subclasses.fake_tensor import FakeTensorMode

    make, message = BAD[name]
    args = make()
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(Exception, match=message):
            torch.ops.involution.fused_forward(*fake)


# ---------------------------------------------------------------- Involution2d(fused=True)

@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("generator,stride,channels_last", [("bottleneck", 1, False), ("bottleneck", 2, True),
                                                            ("linear", 1, True)])
def test_module_fused_matches_unfused(generator, stride, channels_last, device):
    torch.manual_seed(0)
    fused = involution_ext.Involution2d(32, 7, stride, group_channels=8, generator=generator).to(device)
    unfused = involution_ext.Involution2d(32, 7, stride, group_channels=8, generator=generator, fused=False).to(device)
    unfused.load_state_dict(fused.state_dict())
    assert fused.state_dict().keys() == unfused.state_dict().keys()
    x = torch.randn(2, 32, 13, 15, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), unfused(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    assert ya.is_contiguous(memory_format=torch.channels_last) == channels_last
    gy = torch.randn_like(ya)
    ya.backward(gy), yb.backward(gy)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    for (name, pa), pb in zip(fused.named_parameters(), unfused.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=1e-3, msg=name)
    assert fused.kernel(x).shape == (2, 4, 7, 7, *ya.shape[2:])  # still there for visualisation


def test_module_fused_compile_export_script(tmp_path):
    torch.manual_seed(0)
    module = involution_ext.Involution2d(16, 3, stride=2, group_channels=4).eval()
    x = torch.randn(2, 16, 12, 12)
    want = module(x)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, dynamic=True)
    torch.testing.assert_close(compiled(x), want)
    torch.testing.assert_close(compiled(torch.randn(3, 16, 10, 14)).shape, torch.Size([3, 16, 5, 7]))
    program = torch.export.export(module, (x,), dynamic_shapes={"x": {0: torch.export.Dim("b", min=1, max=8)}})
    assert any("fused_forward" in str(n.target) for n in program.graph.nodes)
    torch.testing.assert_close(program.module()(x), want)
    scripted = torch.jit.script(module)
    path = tmp_path / "m.pt"
    scripted.save(str(path))
    torch.save((x, want), tmp_path / "io.pt")
    run_in_fresh_process(textwrap.dedent(f"""
        import torch
        torch.ops.load_library({str(involution_ext.library_path())!r})
        m = torch.jit.load({str(path)!r})
        x, want = torch.load({str(tmp_path / 'io.pt')!r})
        x.requires_grad_()
        y = m(x)
        torch.testing.assert_close(y, want)
        y.sum().backward()  # the fused op's C++ autograd
        assert x.grad is not None and x.grad.abs().sum() > 0
        print('ok')
        """), tmp_path)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_module_fused_autocast(device):
    half = torch.bfloat16 if device == "cpu" else torch.float16
    torch.manual_seed(0)
    module = involution_ext.Involution2d(32, 7, group_channels=16).to(device).eval()
    x = torch.randn(2, 32, 9, 9, device=device)
    with torch.no_grad():
        want = module(x)
        with torch.autocast(device, dtype=half):
            y = module(x)
    assert y.dtype == half
    assert ((y.float() - want).norm() / want.norm()).item() < 2 * REL_TOL[half] ** 0.5

"""The op under torch.library.opcheck, torch.compile, TorchScript (also from a fresh
process that loads only torch and the op library), torch.export and autocast, on every
device."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import involution_ext
from helpers import Case, cpu_and_cuda, run_in_fresh_process, to_device

SAMPLES = [
    Case(B=2, C=8, G=2, H=7, W=9, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
    Case(B=1, C=6, G=3, H=9, W=8, K=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    Case(B=2, C=4, G=4, H=6, W=6, K=(2, 2), stride=(1, 2), padding=(0, 1), dilation=(1, 1)),
]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("idx", range(len(SAMPLES)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(idx, dtype, channels_last, device):
    case = SAMPLES[idx]
    x, w = to_device(device, *case.tensors(dtype, channels_last, requires_grad=True))
    torch.library.opcheck(torch.ops.involution.forward.default, (x, w, *case.args()))
    gy = torch.randn(case.B, case.C, *case.out, dtype=dtype, device=device)
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(
            torch.ops.involution.backward.default, (gy, x.detach(), w.detach(), *case.args(), mask)
        )


class Block(torch.nn.Module):
    """Generates the kernel from the input (Eq. 6 in miniature) and applies involution."""

    def __init__(self, channels=8, groups=2, k=3, stride=1):
        super().__init__()
        self.k, self.groups, self.stride = k, groups, stride
        self.gen = torch.nn.Conv2d(channels, groups * k * k, 1)
        self.pool = torch.nn.AvgPool2d(stride) if stride > 1 else torch.nn.Identity()

    def forward(self, x):
        w = self.gen(self.pool(x))
        b, _, h, wd = w.shape
        w = w.view(b, self.groups, self.k, self.k, h, wd)
        p = (self.k - 1) // 2
        return torch.ops.involution.forward(x, w, [self.stride, self.stride], [p, p], [1, 1])


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_compile_fullgraph_dynamic_forward_backward(device):
    torch._dynamo.reset()
    model = Block(stride=2).to(device)
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for shape in [(2, 8, 12, 12), (3, 8, 10, 14), (1, 8, 16, 8)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        y_ref = model(x)
        (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
        x2 = x.detach().clone().requires_grad_()
        y = compiled(x2)
        (g,) = torch.autograd.grad(y.square().sum(), x2)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_torchscript_save_load_fresh_process(tmp_path, device):
    model = torch.jit.script(Block().to(device))
    path = tmp_path / "block.pt"
    model.save(str(path))
    x = torch.randn(2, 8, 10, 10, device=device)
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x), tmp_path / "y.pt")
    script = textwrap.dedent(
        f"""
        import torch
        torch.ops.load_library({str(involution_ext.library_path())!r})
        m = torch.jit.load({str(path)!r})
        x = torch.load({str(tmp_path / 'x.pt')!r}).requires_grad_()
        y = m(x)
        assert torch.equal(y, torch.load({str(tmp_path / 'y.pt')!r}))
        y.sum().backward()  # C++ autograd: gradients without the Python package
        assert x.grad is not None and x.grad.abs().sum() > 0
        import sys
        assert 'involution_ext' not in sys.modules
        print('ok')
        """
    )
    run_in_fresh_process(script, tmp_path)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_torch_export(device):
    model = Block(stride=2).to(device).eval()
    x = torch.randn(2, 8, 12, 12, device=device)
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    assert any("involution.forward" in str(n.target) for n in ep.graph.nodes)
    for b in (2, 5):
        xb = torch.randn(b, 8, 12, 12, device=device)
        torch.testing.assert_close(ep.module()(xb), model(xb))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_autocast_runs_in_the_autocast_dtype(device):
    """Under autocast the op runs in the autocast dtype (bf16 on CPU, fp16 on CUDA), whatever
    mix of dtypes it is given."""
    half = torch.bfloat16 if device == "cpu" else torch.float16
    case = SAMPLES[0]
    x, w = to_device(device, *case.tensors(torch.float32))
    with torch.autocast(device, dtype=half):
        y = torch.ops.involution.forward(x, w.to(half), *case.args())
    assert y.dtype == half
    ref = torch.ops.involution.forward(x.to(half), w.to(half), *case.args())
    assert torch.equal(y, ref)


def test_build_info_cli():
    out = subprocess.run([sys.executable, "-m", "involution_ext", "info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for key in ("torch_version", "openmp", "cpu_isas", "cuda", "cpu_isa_active"):
        assert key in out.stdout
    info = involution_ext.build_info()
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]

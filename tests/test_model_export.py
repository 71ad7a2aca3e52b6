"""RedNet under TorchScript (saved and loaded in a fresh process without the package),
torch.compile, torch.export with a dynamic batch, and CPU bf16 autocast."""

from __future__ import annotations

import textwrap

import torch

import involution_ext
from helpers import SMALL, run_in_fresh_process
from involution_ext.models import rednet26, rednet50


def test_rednet50_torchscript_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = torch.jit.script(rednet50(num_classes=10).eval())
    x = torch.randn(1, 3, SMALL, SMALL)
    model.save(str(tmp_path / "rednet50.pt"))
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x), tmp_path / "y.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        torch.ops.load_library({str(involution_ext.library_path())!r})
        m = torch.jit.load({str(tmp_path / 'rednet50.pt')!r})
        y = m(torch.load({str(tmp_path / 'x.pt')!r}))
        torch.testing.assert_close(y, torch.load({str(tmp_path / 'y.pt')!r}))
        assert 'involution_ext' not in sys.modules
        print('ok')
        """)
    run_in_fresh_process(script, tmp_path)


def test_rednet26_compile_fullgraph():
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_rednet26_export_dynamic_batch():
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    batch = torch.export.Dim("batch", min=1, max=32)
    program = torch.export.export(model, (torch.randn(2, 3, SMALL, SMALL),), dynamic_shapes={"x": {0: batch}})
    x = torch.randn(3, 3, SMALL, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_rednet26_cpu_bf16_autocast():
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    for m in model.modules():  # the zero-initialised last BNs would hide the residual branches
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.0)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    assert y.dtype == torch.bfloat16
    err = (y.float() - expected).norm() / expected.norm()
    assert err < 0.05, err

"""ONNX export (dynamo exporter + involution_ext.onnx's translation) run with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript", reason="onnxscript is needed for ONNX export")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported model")

import involution_ext  # noqa: E402
import involution_ext.onnx  # noqa: E402
from involution_ext import Involution2d  # noqa: E402

# fp32 through a different summation order: max |diff| <= 1e-4 * max |output| (+1e-6).
RTOL = 1e-4


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def assert_matches(out, ref):
    ref = ref.detach().numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= RTOL * np.abs(ref).max() + 1e-6, np.abs(out - ref).max()


@pytest.mark.parametrize("stride,dilation,group_channels,size", [(1, 1, 4, (9, 11)), (2, 1, 8, (12, 10)), (1, 2, None, (8, 8))])
def test_involution2d_layer(tmp_path, stride, dilation, group_channels, size):
    torch.manual_seed(0)
    layer = Involution2d(16, kernel_size=5, stride=stride, group_channels=group_channels, dilation=dilation).eval()
    x = torch.randn(2, 16, *size)
    involution_ext.onnx.export(layer, (x,), tmp_path / "layer.onnx")
    assert_matches(run_onnx(tmp_path / "layer.onnx", x), layer(x))


def test_rednet26_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = involution_ext.rednet26(num_classes=10).eval()
    for m in model.modules():  # non-zero residual branches, so every involution matters
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.0)
    path = tmp_path / "rednet26.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    involution_ext.onnx.export(model, (torch.randn(2, 3, 64, 64),), path, dynamic_shapes={"x": {0: batch}})
    for b in (1, 3):
        x = torch.randn(b, 3, 64, 64)
        with torch.no_grad():
            assert_matches(run_onnx(path, x), model(x))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("generator", ["bottleneck", "linear"])
def test_fused_and_unfused_layers_export_alike(tmp_path, fused, generator):
    """Involution2d(fused=True) exports involution::fused_forward (MatMul + the aggregation);
    both paths give the PyTorch output in ONNX Runtime."""
    torch.manual_seed(0)
    layer = Involution2d(16, kernel_size=3, stride=2, group_channels=4, generator=generator, fused=fused).eval()
    x = torch.randn(2, 16, 11, 9)
    involution_ext.onnx.export(layer, (x,), tmp_path / "layer.onnx")
    assert_matches(run_onnx(tmp_path / "layer.onnx", x), layer(x))

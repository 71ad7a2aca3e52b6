"""ONNX export of models that contain ``involution::forward`` or ``involution::fused_forward``.

``torch.onnx.export(..., dynamo=True)`` needs a translation of our custom op into standard
ONNX operators; this module provides it (needs the ``onnxscript`` package):

    import involution_ext.onnx
    involution_ext.onnx.export(model, (x,), "model.onnx", dynamic_shapes=...)

or pass ``custom_translation_table=involution_ext.onnx.translation_table()`` to
``torch.onnx.export`` yourself.

The translation: zero-pad the input, view it as (B, G, C/G, Hp, Wp), and for each of the Kh·Kw
kernel offsets take the strided window (Slice), multiply by that offset's kernel plane
(B, G, 1, Ho, Wo) and add up — Eq. 4 in Pad / Reshape / Slice / Mul / Add. The batch size and
spatial sizes stay symbolic; the kernel size and stride/padding/dilation are baked in.
``fused_forward`` first forms the kernel the way the op generates it — MatMul of the span rows
with the hidden features, plus the bias — and then aggregates the same way.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch

from ._optional import require


def _int(value) -> int:
    if value is None or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise ValueError(
            "involution_ext.onnx: the kernel size (weight dims 2 and 3) must be static to export, got "
            f"{value!r}")
    return int(value)


def _make_translations():
    op = require("onnxscript", "onnx", "ONNX export").opset18

    def aggregate(input, weight, kh: int, kw: int, stride, padding, dilation):
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        padded = op.Pad(input, op.Constant(value_ints=[0, 0, ph, pw, 0, 0, ph, pw]))
        groups = op.Shape(weight, start=1, end=2)
        out_hw = op.Shape(weight, start=4)  # [Ho, Wo]
        grouped = op.Reshape(padded, op.Concat(op.Constant(value_ints=[0]), groups, op.Constant(value_ints=[-1]),
                                               op.Shape(padded, start=2), axis=0))
        # Window extent per offset: (Ho - 1) * s + 1 rows (columns), from the offset's start.
        extent = op.Add(op.Mul(op.Sub(out_hw, op.Constant(value_ints=[1, 1])), op.Constant(value_ints=[sh, sw])),
                        op.Constant(value_ints=[1, 1]))
        axes = op.Constant(value_ints=[3, 4])
        steps = op.Constant(value_ints=[sh, sw])
        total = None
        for u in range(kh):
            for v in range(kw):
                start = op.Constant(value_ints=[u * dh, v * dw])
                window = op.Slice(grouped, start, op.Add(start, extent), axes, steps)  # (B, G, C/G, Ho, Wo)
                plane = op.Slice(weight, op.Constant(value_ints=[u, v]), op.Constant(value_ints=[u + 1, v + 1]),
                                 op.Constant(value_ints=[2, 3]))  # (B, G, 1, 1, Ho, Wo)
                term = op.Mul(window, op.Squeeze(plane, op.Constant(value_ints=[3])))
                total = term if total is None else op.Add(total, term)
        return op.Reshape(total, op.Concat(op.Constant(value_ints=[0, -1]), out_hw, axis=0))

    def involution_forward(input, weight, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]):
        return aggregate(input, weight, _int(weight.shape[2]), _int(weight.shape[3]), stride, padding, dilation)

    def involution_fused_forward(input, hidden, span_weight, span_bias, kernel_size: Sequence[int],
                                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]):
        kh, kw = kernel_size
        groups = _int(span_weight.shape[0]) // (kh * kw)
        flat = op.Reshape(hidden, op.Concat(op.Shape(hidden, start=0, end=2), op.Constant(value_ints=[-1]), axis=0))
        kernel = op.MatMul(span_weight, flat)  # (B, G*Kh*Kw, Ho*Wo)
        if span_bias is not None:
            kernel = op.Add(kernel, op.Unsqueeze(span_bias, op.Constant(value_ints=[1])))
        kernel = op.Reshape(kernel, op.Concat(op.Constant(value_ints=[0, groups, kh, kw]),
                                              op.Shape(hidden, start=2), axis=0))
        return aggregate(input, kernel, kh, kw, stride, padding, dilation)

    return involution_forward, involution_fused_forward


def translation_table() -> Dict[Any, Any]:
    """``custom_translation_table`` entry for ``torch.onnx.export(..., dynamo=True)``."""
    forward, fused_forward = _make_translations()
    return {torch.ops.involution.forward.default: forward,
            torch.ops.involution.fused_forward.default: fused_forward}


def export(model: torch.nn.Module, args: tuple, path, **kwargs):
    """``torch.onnx.export`` with the dynamo exporter and our op's translation; other keyword
    arguments (``dynamic_shapes``, ``opset_version``, ...) pass through. Returns the
    ONNXProgram.

    ``optimize`` defaults to False here: the exporter's graph optimizer takes ~6x longer than
    the export itself on a RedNet (it folds the per-offset constants), and ONNX Runtime applies
    the same folding when it loads the model. Pass ``optimize=True`` for a smaller file."""
    table = dict(kwargs.pop("custom_translation_table", None) or {})
    table.update(translation_table())
    kwargs.setdefault("opset_version", 18)
    kwargs.setdefault("optimize", False)
    return torch.onnx.export(model, args, path, dynamo=True, custom_translation_table=table, **kwargs)

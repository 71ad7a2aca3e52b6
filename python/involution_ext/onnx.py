"""ONNX export of models that contain ``involution::forward``.

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


def _make_translation():
    op = require("onnxscript", "onnx", "ONNX export").opset18

    def involution_forward(input, weight, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]):
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        kh, kw = _int(weight.shape[2]), _int(weight.shape[3])
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

    return involution_forward


def translation_table() -> Dict[Any, Any]:
    """``custom_translation_table`` entry for ``torch.onnx.export(..., dynamo=True)``."""
    return {torch.ops.involution.forward.default: _make_translation()}


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

"""Converting the PaddleClas RedNet checkpoints (``RedNet{26,38,50,101,152}_pretrained.pdparams``)
to the official mmcls layout that :func:`involution_ext.load_official_checkpoint` loads.

A ``.pdparams`` file is a pickle of a dict of numpy arrays (``paddle.save``), sometimes with a
``StructuredToParameterName@@`` entry mapping names to Paddle's internal parameter names. It is
read with an unpickler that may only rebuild numpy arrays: any other global in the file (code
a pickle could run) is refused before it is imported. Paddle is not needed.

PaddleClas's RedNet names its modules as the official code does (``stem.*``, ``layerN.M.*``),
so the mapping is small: ``backbone.`` in front; ``fc.*`` → ``head.fc.*`` with the weight
transposed (Paddle's ``Linear`` stores it as [in, out]); BatchNorm ``_mean``/``_variance`` →
``running_mean``/``running_var`` plus ``num_batches_tracked``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from .checkpoint import CheckpointError
from .models.rednet import STAGE_DEPTHS

# The globals a pickle of numpy arrays uses, for numpy 1.x (numpy.core) and 2.x (numpy._core)
# writers; protocol 5 writes arrays through _frombuffer, protocol 2 writes bytes through
# _codecs.encode.
_NUMPY_GLOBALS = {
    (core, name)
    for core in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
     ("numpy._core.numeric", "_frombuffer"), ("collections", "OrderedDict"),
     ("_codecs", "encode")}
_STRUCTURED_NAMES = "StructuredToParameterName@@"
_BN_STATS = {"_mean": "running_mean", "_variance": "running_var"}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise CheckpointError(
                f"refusing to load {self._path}: unpickling it would call {module}.{name}; a .pdparams "
                f"file holds only numpy arrays")
        import importlib

        return getattr(importlib.import_module(module), name)


def read_pdparams(path: Union[str, os.PathLike]) -> Dict[str, "object"]:
    """The arrays of a ``.pdparams`` file, name -> numpy array, read without paddle and without
    running code from the file (see the module docstring). Raises :class:`CheckpointError` for
    a missing, truncated or non-pickle file, one that would run code, and one whose values are
    not numeric arrays."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    with open(path, "rb") as f:
        if f.read(1) != b"\x80":
            raise CheckpointError(f"{path} is not a .pdparams file (not a pickle)")
        f.seek(0)
        try:
            obj = _ArraysOnlyUnpickler(f, path).load()
        except CheckpointError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise CheckpointError(f"{path} is truncated or damaged ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a dict of arrays (found {type(obj).__name__})")
    if "UnpackBigParamInfor@@" in obj:
        raise CheckpointError(f"{path} holds parameters split by paddle.save (over 4 GB); RedNet's are not: "
                              f"this is not a RedNet checkpoint")
    arrays = {k: v for k, v in obj.items() if k != _STRUCTURED_NAMES}
    bad = sorted(k for k, v in arrays.items()
                 if not isinstance(k, str) or not isinstance(v, np.ndarray) or v.dtype.hasobject)
    if bad:
        raise CheckpointError(f"{path}: entries that are not numeric arrays: {', '.join(map(str, bad[:5]))}")
    return arrays


def _stage_blocks(names) -> Tuple[int, ...]:
    """Blocks per stage, counted from the ``layerN.M.conv1.weight`` names."""
    counts = [0, 0, 0, 0]
    for name in names:
        parts = name.split(".")
        if len(parts) == 4 and parts[0] in ("layer1", "layer2", "layer3", "layer4") and parts[2:] == ["conv1", "weight"]:
            counts[int(parts[0][-1]) - 1] += 1
    return tuple(counts)


def paddle_to_official(arrays: Dict[str, "object"], depth: Optional[int] = None,
                       source: str = "the checkpoint") -> Tuple[Dict[str, torch.Tensor], int]:
    """Maps PaddleClas RedNet arrays to the official (mmcls) state dict; returns it and the
    depth. ``depth`` None infers it from the blocks per stage; a given depth that the arrays do
    not match raises :class:`CheckpointError`."""
    blocks = _stage_blocks(arrays)
    found = next((d for d, b in STAGE_DEPTHS.items() if b == blocks), None)
    if depth is not None and depth not in STAGE_DEPTHS:
        raise CheckpointError(f"depth must be one of {sorted(STAGE_DEPTHS)}, got {depth}")
    if found is None or (depth is not None and depth != found):
        what = f"RedNet-{found}" if found else "no RedNet depth"
        want = f"RedNet-{depth} ({STAGE_DEPTHS[depth]})" if depth else f"any of {sorted(STAGE_DEPTHS)}"
        raise CheckpointError(f"{source} has {blocks} blocks per stage ({what}), expected {want}")
    state: Dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        value = torch.from_numpy(array.copy())
        stem, _, leaf = name.rpartition(".")
        if name == "fc.weight":
            state["head.fc.weight"] = value.t().contiguous()  # Paddle's Linear weight is [in, out]
        elif name == "fc.bias":
            state["head.fc.bias"] = value
        elif leaf in _BN_STATS:
            state[f"backbone.{stem}.{_BN_STATS[leaf]}"] = value
            state[f"backbone.{stem}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        else:
            state[f"backbone.{name}"] = value
    return state, found


def convert_paddle_checkpoint(src: Union[str, os.PathLike], dst: Union[str, os.PathLike],
                              depth: Optional[int] = None) -> int:
    """Converts a PaddleClas ``.pdparams`` RedNet checkpoint to a torch checkpoint in the official
    layout (``{"state_dict": ..., "meta": ...}``) at ``dst``, checks that it loads strictly into
    ``rednet(depth)``, and returns the depth."""
    from .checkpoint import load_official_checkpoint
    from .models import rednet

    state, depth = paddle_to_official(read_pdparams(src), depth, source=str(src))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {"source": "PaddleClas", "depth": depth, "converted_from": Path(src).name}},
               dst)
    num_classes = state["head.fc.weight"].shape[0] if "head.fc.weight" in state else 1000
    load_official_checkpoint(rednet(depth, num_classes=num_classes), dst)  # strict: raises on any mismatch
    return depth

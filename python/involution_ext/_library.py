"""Loads the op library (``libinvolution_ops.so``) into ``torch.ops.involution``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

LIBRARY_NAME = "libinvolution_ops.so"


def _build_info() -> dict:
    try:
        from . import _C  # build facts only; imports even when the op library cannot load
    except ImportError:
        return {}
    return dict(_C.build_info)


def library_path() -> Path:
    """Path of the op library: $INVOLUTION_EXT_LIBRARY, else beside the ``_C`` module
    (that is where an editable install puts it), else beside this file."""
    env = os.environ.get("INVOLUTION_EXT_LIBRARY")
    if env:
        return Path(env).resolve()
    candidates = [Path(__file__).with_name(LIBRARY_NAME)]
    try:
        from . import _C

        candidates.insert(0, Path(_C.__file__).with_name(LIBRARY_NAME))
    except ImportError:
        pass
    for path in candidates:
        if path.exists():
            return path
    return candidates[-1]


def load_library() -> Path:
    path = library_path()
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as exc:
        info = _build_info()
        built_for = info.get("torch_version", "unknown")
        built_cuda = info.get("torch_cuda_version") or "none"
        raise ImportError(
            f"involution_ext: could not load the op library {path}: {exc}\n"
            f"  built against torch {built_for} (CUDA {built_cuda}); "
            f"installed torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}).\n"
            "  The op library is tied to the torch it was built with: reinstall involution_ext "
            "for the installed torch (pip install --no-build-isolation --force-reinstall .) "
            "or install the torch it was built for."
        ) from exc
    return path

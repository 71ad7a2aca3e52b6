"""Loads the op library (``libinvolution_ops.so``) into ``torch.ops.involution``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

LIBRARY_NAME = "libinvolution_ops.so"


def _build_info() -> dict:
    """The facts the op library was built with (``_build_facts.py``, written by the build);
    empty when running from a source tree that was never built."""
    try:
        from ._build_facts import BUILD_INFO
    except ImportError:
        return {}
    return dict(BUILD_INFO)


def library_path() -> Path:
    """Path of the op library: $INVOLUTION_EXT_LIBRARY, else beside the generated
    ``_build_facts.py`` (that is where an editable install puts both), else beside this file."""
    env = os.environ.get("INVOLUTION_EXT_LIBRARY")
    if env:
        return Path(env).resolve()
    candidates = [Path(__file__).with_name(LIBRARY_NAME)]
    try:
        from . import _build_facts

        candidates.insert(0, Path(_build_facts.__file__).with_name(LIBRARY_NAME))
    except ImportError:
        pass
    for path in candidates:
        if path.exists():
            return path
    return candidates[-1]


def _release(version: str) -> tuple:
    """'2.13.0+cpu' -> (2, 13): the part of torch's version that fixes its C++ ABI."""
    parts = version.split("+")[0].split(".")
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts[:2])


def check_torch_version(built_for: str, installed: str) -> None:
    """The op library uses torch's C++ API, whose ABI changes between torch releases: a
    library built for torch 2.X must run under torch 2.X.*, or it may fail to load with an
    undefined symbol — or load and crash. Raises ImportError naming both versions and the fix
    (INVOLUTION_EXT_SKIP_TORCH_CHECK=1 tries anyway)."""
    if not built_for or built_for == "unknown" or os.environ.get("INVOLUTION_EXT_SKIP_TORCH_CHECK") == "1":
        return
    if _release(built_for) != _release(installed):
        want = ".".join(map(str, _release(built_for)))
        raise ImportError(
            f"involution_ext was built against torch {built_for}, but torch {installed} is installed. "
            f"Its op library only works with torch {want}.*: install that (pip install 'torch=={want}.*'), "
            "or build involution_ext for the installed torch (pip install --no-build-isolation --force-reinstall "
            "--no-binary involution_ext involution_ext, or from a source checkout). "
            "Set INVOLUTION_EXT_SKIP_TORCH_CHECK=1 to try loading it anyway."
        )


def load_library() -> Path:
    path = library_path()
    if not os.environ.get("INVOLUTION_EXT_LIBRARY"):  # a library given by hand is the user's call
        check_torch_version(_build_info().get("torch_version", ""), torch.__version__)
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

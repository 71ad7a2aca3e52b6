"""involution_ext: fast involution (Li et al., CVPR 2021) for PyTorch.

``import involution_ext`` loads the C++ op library, which registers
``torch.ops.involution.forward`` and ``torch.ops.involution.backward`` (with C++ autograd,
autocast and fake kernels for torch.compile / torch.export).
"""

from __future__ import annotations

from ._library import _build_info, library_path, load_library


def _version() -> str:
    """The installed distribution's version (with a wheel's +torch tag), else the version
    the op library was built with; pyproject.toml is the one source of both."""
    from importlib import metadata

    try:
        return metadata.version("involution_ext")
    except metadata.PackageNotFoundError:
        return _build_info().get("version", "unknown")


__version__ = _version()

_LIBRARY_PATH = load_library()

from . import _flops, _meta  # noqa: E402

_meta.register()
_flops.register()

from . import functional, models, reference  # noqa: E402
from .checkpoint import load_official_checkpoint  # noqa: E402
from .functional import involution2d  # noqa: E402
from .models import rednet26, rednet38, rednet50, rednet101, rednet152  # noqa: E402
from .modules import Involution2d  # noqa: E402


def build_info() -> dict:
    """Build facts: package and torch versions built against, OpenMP, CPU instruction
    sets compiled in (and the one in use), CUDA (compiled, and registered by the loaded
    library)."""
    from ._library import _build_info

    info = _build_info()
    info["library"] = str(_LIBRARY_PATH)
    info["cpu_isa_active"] = cpu_isa()
    import torch

    # What the loaded library registered, beside what the build says it compiled.
    info["cuda_kernels_registered"] = all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"involution::{op}", "CUDA")
        for op in ("forward", "backward", "fused_forward", "fused_backward"))
    info["torch_runtime_version"] = torch_version()
    return info


def cpu_isa(requested: str = "") -> str:
    """Returns the instruction set the CPU kernels use; ``requested`` ("auto", "default",
    "avx2", "avx512") selects one first. The environment variable INVOLUTION_CPU_ISA sets
    the initial choice."""
    import torch

    return torch.ops.involution._cpu_isa(requested)


def torch_version() -> str:
    import torch

    return torch.__version__


__all__ = ["involution2d", "Involution2d", "functional", "models", "reference", "rednet26", "rednet38", "rednet50",
           "rednet101", "rednet152", "load_official_checkpoint", "build_info", "cpu_isa", "library_path"]

"""Optional dependencies: imported where needed, with an error that names the extra that
installs them instead of a bare ModuleNotFoundError."""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> the distribution pip installs it from
_DISTRIBUTIONS = {"PIL": "Pillow", "sklearn": "scikit-learn"}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says which extra provides it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Imports ``module`` or raises :class:`MissingDependencyError` saying that ``purpose``
    needs it and that ``pip install 'involution_ext[extra]'`` installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} needs {_DISTRIBUTIONS.get(top, top)}, which is not installed: "
            f"pip install 'involution_ext[{extra}]'") from e

"""Loading the official RedNet checkpoints (mmcls state dicts) into our models.

Our module names reproduce the official layout, so loading is a strict key-for-key match after
unwrapping: ``{"state_dict": {...}, "meta": ...}``; ``backbone.*`` for the backbone and
``head.fc.*`` for the classifier.
"""

from __future__ import annotations

import os
import pickle
from typing import Dict, List, Sequence, Union

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded: unreadable, unsafe, or not matching the model."""


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Reads a checkpoint with ``weights_only=True`` (no code runs while unpickling) and returns
    its tensors, unwrapped from a ``state_dict`` / ``model`` entry if present."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain weights file (loading it would need to run code "
            f"from the pickle, which weights_only=True forbids). Details: {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a torch checkpoint?): {e}") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__})")
    return obj


def load_official_checkpoint(model: nn.Module, path: Union[str, os.PathLike],
                             ignore_prefixes: Sequence[str] = ()) -> nn.Module:
    """Loads an official RedNet checkpoint into ``model`` strictly and returns the model.

    ``model`` is a classifier (:class:`~involution_ext.models.RedNet`, whose keys are the
    checkpoint's) or a backbone from ``features_only=True`` (then ``backbone.`` is stripped and
    ``head.*`` dropped). Keys starting with one of ``ignore_prefixes`` (e.g. ``"head."`` to
    fine-tune with a new classifier) are neither loaded nor reported. Any other missing,
    unexpected or shape-mismatched key raises :class:`CheckpointError` listing them all.
    """
    state = read_state_dict(path)
    if any(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    if not any(k.startswith("backbone.") for k in own) and any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}

    def kept(key: str) -> bool:
        return not any(key.startswith(p) for p in ignore_prefixes)

    state = {k: v for k, v in state.items() if kept(k)}
    missing = sorted(k for k in own if kept(k) and k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items() if k in own and v.shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        lines: List[str] = [f"checkpoint {path} does not match {type(model).__name__}:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=not ignore_prefixes)
    return model

"""Loading the official RedNet checkpoints (mmcls state dicts) into our models.

Our module names reproduce the official layout, so loading is a strict key-for-key match after
unwrapping: ``{"state_dict": {...}, "meta": ...}``; ``backbone.*`` for the backbone and
``head.fc.*`` for the classifier.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded: unreadable, unsafe, or not matching the model."""


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # first byte of a pickle (protocol >= 2): torch's legacy format
# Modules whose imports a plain weights file may hold (tensor rebuilds, OrderedDict).
_WEIGHT_MODULES = ("torch", "collections")


def _pickle_imports(data: bytes) -> List[str]:
    """``module.name`` of every global the pickles in ``data`` import, read without running
    them (pickletools only decodes opcodes)."""
    names: List[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):  # genops stops after each pickle's STOP: go on to the next
        strings: List[str] = []
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except (ValueError, EOFError):  # truncated or not a pickle: stop where it breaks
            break
    return names


def _describe_non_torch_file(head: bytes, path: Path) -> str:
    try:  # the head may end inside a multi-byte character
        text = head.decode("utf-8") if len(head) < 512 else head[:-3].decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or not all(c.isprintable() or c in "\t\n\r" for c in text):
        return f"a binary file that is not a torch checkpoint (it starts with {head[:8]!r})"
    if text.lstrip().startswith(("{", "[")):
        try:
            json.loads(path.read_text())
            return "a JSON file, not a torch checkpoint"
        except (ValueError, UnicodeDecodeError):
            pass
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file, not a torch checkpoint (it starts with {first!r})"


def _data_pkl(z: zipfile.ZipFile) -> Optional[str]:
    """The name of a torch zip checkpoint's pickle (``<archive>/data.pkl``), or None."""
    return next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)


def _pickle_bytes(path: Path, is_zip: bool) -> bytes:
    """The pickled part of a checkpoint: data.pkl of a zip checkpoint, else the whole file."""
    if not is_zip:
        return path.read_bytes()
    with zipfile.ZipFile(path) as z:
        return z.read(_data_pkl(z))


def _refused_pickle(path: Path, is_zip: bool, err: Exception) -> CheckpointError:
    """The error for a pickle that torch's weights-only loader refused: code it would run
    (named), else objects that are not tensors."""
    imports = _pickle_imports(_pickle_bytes(path, is_zip))
    code = sorted({n for n in imports if n.split(".")[0] not in _WEIGHT_MODULES})
    if code:
        return CheckpointError(
            f"refusing to load {path}: unpickling it would run code ({', '.join(code[:5])}); only files "
            f"of plain tensors are loaded")
    detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if str(err) else ""
    kind = "a torch file" if is_zip else "a pickle file"
    return CheckpointError(f"{path} is {kind} but not a checkpoint of plain tensors (the weights-only "
                           f"loader stopped at: {detail or type(err).__name__})")


def load_checkpoint_file(path: Union[str, os.PathLike]) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear
    :class:`CheckpointError` that names the file and what it is for anything that is not a
    readable torch checkpoint: a missing path, a directory, an empty, text, JSON or other
    file, a zip that is not a torch file, a truncated file, or one that would run code."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes), not a torch checkpoint")
    is_zip = head.startswith(_ZIP_MAGIC)
    if is_zip:
        try:
            with zipfile.ZipFile(path) as z:
                has_data = _data_pkl(z) is not None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"checkpoint {path} is truncated or damaged (its zip archive cannot be "
                                  f"read: {e})") from None
        if not has_data:
            raise CheckpointError(f"{path} is a zip archive but not a torch checkpoint (no data.pkl inside)")
    elif head[0] != _PICKLE_PROTO:
        raise CheckpointError(f"{path} is {_describe_non_torch_file(head, path)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "truncated" in str(e):
            raise CheckpointError(f"checkpoint {path} is truncated ({e})") from None
        raise _refused_pickle(path, is_zip, e) from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, EOFError) or "EOF" in message or "corrupt" in message or "failed finding" in message:
            raise CheckpointError(f"checkpoint {path} is truncated or damaged ({message})") from None
        raise CheckpointError(f"{path} cannot be read as a torch checkpoint ({message})") from None


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Reads a checkpoint with :func:`load_checkpoint_file` (no code runs while unpickling)
    and returns its tensors, unwrapped from a ``state_dict`` / ``model`` entry if present."""
    obj = load_checkpoint_file(path)
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
    return load_state_into(model, read_state_dict(path), path, ignore_prefixes)


def load_state_into(model: nn.Module, state: Dict[str, torch.Tensor], source: object = "state dict",
                    ignore_prefixes: Sequence[str] = ()) -> nn.Module:
    """:func:`load_official_checkpoint` for a state dict in memory (``source`` names it in
    errors)."""
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
        lines: List[str] = [f"checkpoint {source} does not match {type(model).__name__}:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=not ignore_prefixes)
    return model

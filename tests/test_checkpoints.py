"""Loading the official checkpoints: the layout of every depth, classifier / backbone /
fine-tuning loads, every mismatch reported, and one clear error for each kind of file that is
not a loadable checkpoint."""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import pytest
import torch

from helpers import SMALL
from involution_ext.checkpoint import CheckpointError, load_official_checkpoint
from involution_ext.models import rednet, rednet26
from official_checkpoints import DEPTHS, official_checkpoint, official_layout


@pytest.mark.parametrize("depth", DEPTHS)
def test_official_layout_matches_model_keys(depth):
    ours = {k: tuple(v.shape) for k, v in rednet(depth).state_dict().items()}
    assert ours == official_layout(depth)


def test_load_official_checkpoint_classifier_and_backbone(tmp_path):
    path = tmp_path / "rednet26.pth"
    state = official_checkpoint(path)
    model = load_official_checkpoint(rednet26(), path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    backbone = load_official_checkpoint(rednet26(features_only=True), path)
    assert torch.equal(backbone.layer3[2].conv2.conv2.conv.bias, state["backbone.layer3.2.conv2.conv2.conv.bias"])
    # Fine-tuning: a new head of another size, head keys ignored.
    tuned = load_official_checkpoint(rednet26(num_classes=10), path, ignore_prefixes=("head.",))
    assert torch.equal(tuned.backbone.stem[0].conv.weight, state["backbone.stem.0.conv.weight"])
    assert tuned(torch.randn(1, 3, SMALL, SMALL)).shape == (1, 10)


def test_load_official_checkpoint_reports_every_mismatch(tmp_path):
    path = tmp_path / "bad.pth"
    official_checkpoint(path, drop=("backbone.layer2.1.bn2.running_var",), extra=("backbone.layer9.weight",),
                        reshape={"head.fc.weight": (10, 2048)})
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(rednet26(), path)
    text = str(err.value)
    assert "missing (1): backbone.layer2.1.bn2.running_var" in text
    assert "unexpected (1): backbone.layer9.weight" in text
    assert "head.fc.weight: checkpoint (10, 2048) vs model (1000, 2048)" in text
    official_checkpoint(path, depth=50)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_official_checkpoint(rednet26(), path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _torch_file_that_runs_code(path):
    """A torch zip checkpoint whose data.pkl imports os.system."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    items[next(n for n in items if n.endswith("data.pkl"))] = pickle.dumps({"x": _RunsCode()}, protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items.items():
            z.writestr(name, data)


def _truncated(path, legacy=False):
    torch.save({"w": torch.randn(4096)}, path, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zip_without_torch_data(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


NOT_CHECKPOINTS = {
    "text": (lambda p: p.write_text("notes about the run\nepoch 1\n"), "a text file, not a torch checkpoint"),
    "text with digits": (lambda p: p.write_text("101 102\n"), "a text file, not a torch checkpoint"),
    "json": (lambda p: p.write_text('{"epochs": 8, "lr": 0.1}'), "a JSON file, not a torch checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "binary": (lambda p: p.write_bytes(bytes(range(7, 64))), "binary file that is not a torch checkpoint"),
    "truncated zip": (_truncated, "truncated"),
    "truncated legacy": (lambda p: _truncated(p, legacy=True), "truncated"),
    "zip, not torch": (_zip_without_torch_data, "zip archive but not a torch checkpoint"),
    "plain pickle": (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "pickle file but not a checkpoint of plain tensors"),
    "pickle that runs code": (lambda p: p.write_bytes(pickle.dumps({"x": _RunsCode()})), r"would run code \(posix\.system\)"),
    "torch file that runs code": (_torch_file_that_runs_code, r"would run code \(posix\.system\)"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "missing": (lambda p: None, "no such file"),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_non_checkpoint_gives_one_clear_error(tmp_path, kind):
    """Each kind of file that is not a loadable checkpoint: a CheckpointError naming the file
    and what it is, never a raw IndexError/KeyError nor torch's advice to drop weights_only."""
    make, what = NOT_CHECKPOINTS[kind]
    path = tmp_path / "model.pth"
    make(path)
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(rednet26(), path)
    text = str(err.value)
    assert re.search(what, text), text
    assert str(path) in text and "weights_only` set to `False" not in text and "weights_only=False" not in text
    assert err.value.__cause__ is None  # torch's own message (with that advice) is not chained either


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "cut.pth"
    official_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_official_checkpoint(rednet26(), path)

"""The PaddleClas converter: .pdparams files written from Paddle's naming rules convert, load
strictly and give the logits of a model holding the same values; unsafe, truncated and
wrong-depth files give clear errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from helpers import SMALL
from involution_ext.__main__ import main as cli
from involution_ext.checkpoint import CheckpointError, load_official_checkpoint, read_state_dict
from involution_ext.convert import convert_paddle_checkpoint, read_pdparams
from involution_ext.models import rednet
from official_checkpoints import DEPTHS, official_layout, write_pdparams


def _model_given_paddle_values(depth, arrays):
    """A model whose parameters and buffers are set from the Paddle arrays by name, directly
    (Paddle's module names are ours under ``backbone.``)."""
    model = rednet(depth, num_classes=arrays["fc.bias"].shape[0])
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.startswith("head.fc."):
                value = arrays[name[len("head."):]]
                value = value.T if name.endswith("weight") else value
            else:
                key = name[len("backbone."):].replace("running_mean", "_mean").replace("running_var", "_variance")
                value = arrays[key]
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return model.eval()


@pytest.mark.parametrize("depth", DEPTHS)
def test_convert_every_depth_loads_strictly_and_matches(tmp_path, depth):
    src, dst = tmp_path / f"RedNet{depth}_pretrained.pdparams", tmp_path / "out" / f"rednet{depth}.pth"
    arrays = write_pdparams(src, depth, num_classes=10, protocol=2 if depth == 26 else 4, seed=depth)
    assert convert_paddle_checkpoint(src, dst) == depth
    state = read_state_dict(dst)
    assert {k: tuple(v.shape) for k, v in state.items()} == official_layout(depth, num_classes=10)
    converted = load_official_checkpoint(rednet(depth, num_classes=10), dst).eval()
    direct = _model_given_paddle_values(depth, arrays)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), direct(x), rtol=0, atol=0)
    # A random model's logits differ: the check above sees the loaded values.
    with torch.no_grad():
        assert not torch.allclose(rednet(depth, num_classes=10).eval()(x), direct(x))


def test_convert_command_line_and_protocol5(tmp_path, capsys):
    src, dst = tmp_path / "RedNet26_pretrained.pdparams", tmp_path / "rednet26.pth"
    write_pdparams(src, 26, protocol=5)
    assert cli(["convert", "--from", "paddle", str(src), str(dst), "--depth", "26"]) == 0
    assert "RedNet-26" in capsys.readouterr().out
    load_official_checkpoint(rednet(26), dst)
    assert len(read_pdparams(src)) == len(official_layout(26)) - sum(k.endswith("num_batches_tracked")
                                                                       for k in official_layout(26))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_convert_refuses_code_running_pickle(tmp_path, capsys):
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"fc.bias": np.zeros(3, np.float32), "x": _RunsCode()}, protocol=4))
    with pytest.raises(CheckpointError, match=r"refusing to load .*would call (posix|os)\.system"):
        read_pdparams(path)
    assert cli(["convert", "--from", "paddle", str(path), str(tmp_path / "o.pth")]) == 1
    assert "would call" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()


def test_convert_refuses_truncated_and_non_pickle_files(tmp_path):
    src = tmp_path / "RedNet50_pretrained.pdparams"
    write_pdparams(src, 50)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        read_pdparams(src)
    text = tmp_path / "notes.pdparams"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a pickle"):
        read_pdparams(text)
    with pytest.raises(CheckpointError, match="no such file"):
        read_pdparams(tmp_path / "missing.pdparams")
    objects = tmp_path / "objects.pdparams"
    objects.write_bytes(pickle.dumps({"fc.bias": np.array([1, "a"], dtype=object)}, protocol=4))
    with pytest.raises(CheckpointError, match="not numeric arrays: fc.bias"):
        read_pdparams(objects)


def test_convert_refuses_wrong_depth(tmp_path):
    src = tmp_path / "RedNet38_pretrained.pdparams"
    write_pdparams(src, 38)
    with pytest.raises(CheckpointError, match=r"\(2, 3, 5, 2\) blocks per stage \(RedNet-38\), expected RedNet-50"):
        convert_paddle_checkpoint(src, tmp_path / "o.pth", depth=50)
    # A file missing a block is no RedNet at all.
    arrays = read_pdparams(src)
    broken = {k: v for k, v in arrays.items() if not k.startswith("layer3.4.")}
    with open(src, "wb") as f:
        pickle.dump(broken, f, protocol=4)
    with pytest.raises(CheckpointError, match=r"\(2, 3, 4, 2\) blocks per stage \(no RedNet depth\)"):
        convert_paddle_checkpoint(src, tmp_path / "o.pth")
    # The right block counts with a wrong shape: the strict load reports it.
    arrays["fc.weight"] = np.zeros((1024, 1000), np.float32)
    with open(src, "wb") as f:
        pickle.dump(arrays, f, protocol=4)
    with pytest.raises(CheckpointError, match=r"head.fc.weight: checkpoint \(1000, 1024\) vs model \(1000, 2048\)"):
        convert_paddle_checkpoint(src, tmp_path / "o.pth")

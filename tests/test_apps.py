"""The applications' user-facing behaviour: kernel heat maps (values and the CLI), one-line
errors from the CLIs, and a missing optional dependency naming its extra. (The training
recipe has tests/test_train.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import SMALL, run_in_fresh_process
from involution_ext.models import rednet26
from official_checkpoints import official_checkpoint


def test_heatmap_sums_kernel_per_group():
    from involution_ext.apps.heatmap import kernel_heatmaps

    torch.manual_seed(0)
    model = rednet26().eval()
    x = torch.randn(1, 3, SMALL, SMALL)
    maps, layer = kernel_heatmaps(model, x, "backbone.layer2.0.conv2")
    module = model.get_submodule(layer)
    captured = []
    module.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        model(x)
        expected = module.kernel(captured[0])[0].sum(dim=(1, 2))
    assert maps.shape == (128 // 16, 8, 8)  # stride-2 layer: 16x16 -> 8x8
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ValueError, match="not an Involution2d layer"):
        kernel_heatmaps(model, x, "backbone.layer2.0.conv1")


def test_heatmap_cli_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (96, 80), (200, 30, 30)).save(image)
    out = tmp_path / "heat.png"
    # A checkpoint fine-tuned for 10 classes: the heat map needs only the backbone.
    checkpoint = tmp_path / "tuned.pth"
    official_checkpoint(checkpoint, depth=26, num_classes=10)
    result = subprocess.run([sys.executable, "-m", "involution_ext", "heatmap", "--image", str(image), "--out", str(out),
                             "--depth", "26", "--checkpoint", str(checkpoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights\n")
    for cmd in (["-m", "involution_ext", "heatmap", "--image", str(notes), "--out", str(tmp_path / "h.png"),
                 "--checkpoint", str(notes), "--depth", "26"],
                ["-m", "involution_ext.apps.train", "--pretrained", str(notes), "--out", str(tmp_path / "run"),
                 "--max-steps", "1", "--no-progress", "--no-plot"]):
        result = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
        assert result.returncode == 1, result.stderr[-2000:]
        assert result.stderr.strip() == f"error: {notes} is a text file, not a torch checkpoint (it starts with 'not weights')"


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    from involution_ext.apps._images import load_image
    from involution_ext._optional import MissingDependencyError

    for module in ("PIL", "PIL.Image"):  # None in sys.modules: importing it fails as if absent
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=r"reading images needs Pillow.*pip install 'involution_ext\[viz\]'"):
        load_image("any.png")


def test_library_never_imports_the_applications(tmp_path):
    """op -> functional -> modules -> models -> checkpoints stand alone: importing them pulls in
    neither involution_ext.apps nor the applications' dependencies, nor timm or torchvision
    (only involution_ext.timm / .detection import those)."""
    run_in_fresh_process(
        "import sys, torch\n"
        "before = set(sys.modules)\n"  # torch itself may import some of them (tqdm)
        "import involution_ext, involution_ext.functional, involution_ext.modules, involution_ext.models\n"
        "import involution_ext.checkpoint, involution_ext.reference, involution_ext.convert\n"
        "loaded = [m for m in set(sys.modules) - before\n"
        "          if m.startswith(('involution_ext.apps', 'involution_ext.timm', 'involution_ext.detection',\n"
        "                           'sklearn', 'matplotlib', 'PIL', 'tqdm', 'timm', 'torchvision'))]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n", tmp_path)

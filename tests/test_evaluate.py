"""ImageNet evaluation on a tiny generated folder: the reported top-1/top-5 equal an
independent computation (own preprocessing, own ranking), the JSON is written, PaddleClas
files are read directly, and user errors are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from involution_ext.apps.evaluate import load_model, top_k_correct  # noqa: E402
from involution_ext.evaluate import evaluate_folder, main  # noqa: E402
from involution_ext.models import rednet26  # noqa: E402
from official_checkpoints import write_pdparams  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _folder(root, classes=("n02", "n01", "n03"), per_class=3):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = 30 + 7 * i, 44 - 5 * c
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    (root / "n01" / "notes.txt").write_text("not an image")  # ignored
    return root


def _reference_batch(root, resize, crop):
    """Images preprocessed here (PIL bilinear short-side resize, centre crop, mean/std), labels
    from sorted folder names."""
    xs, ys = [], []
    for label, folder in enumerate(sorted(p for p in root.iterdir())):
        for path in sorted(folder.glob("*.png")):
            img = Image.open(path).convert("RGB")
            s = resize / min(img.size)
            img = img.resize((max(resize, round(img.width * s)), max(resize, round(img.height * s))), Image.BILINEAR)
            a = np.asarray(img, dtype=np.float64) / 255
            top, left = (a.shape[0] - crop) // 2, (a.shape[1] - crop) // 2
            a = (a[top:top + crop, left:left + crop] - MEAN) / STD
            xs.append(torch.from_numpy(a).permute(2, 0, 1).float())
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def test_top_k_correct_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.5], [0.2, 0.3, 0.1]])
    assert top_k_correct(logits, torch.tensor([1, 2, 2]), ks=(1, 2)) == [1, 2]


def test_evaluate_matches_independent_computation(tmp_path, capsys):
    root = _folder(tmp_path / "val")
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    ckpt = tmp_path / "rednet26.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    x, y = _reference_batch(root, resize=40, crop=32)
    with torch.no_grad():
        logits = model(x)
    assert torch.isfinite(logits).all() and len(set(logits.argmax(1).tolist())) > 1
    ranked = logits.argsort(dim=1, descending=True)
    top1 = 100 * (ranked[:, 0] == y).double().mean().item()
    top5 = 100 * (ranked[:, :5] == y[:, None]).any(dim=1).double().mean().item()
    loaded = load_model("rednet26", ckpt)
    result = evaluate_folder(loaded, root, batch_size=4, workers=0, resize=40, crop=32, progress=False)
    assert (result["images"], result["classes"]) == (9, 3)
    assert result["top1"] == pytest.approx(top1) and result["top5"] == pytest.approx(top5)
    # The command line (channels_last, a worker process, the JSON file) gives the same.
    out = tmp_path / "eval.json"
    assert main(["--model", "rednet26", "--checkpoint", str(ckpt), "--data", str(root), "--resize", "40", "--crop",
                 "32", "--batch-size", "5", "--workers", "1", "--channels-last", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["top1"] == pytest.approx(top1) and written["top5"] == pytest.approx(top5)
    assert written["model"] == "rednet26" and written["images"] == 9
    assert "top-1" in capsys.readouterr().out


def test_evaluate_reads_paddle_checkpoint_and_limits(tmp_path):
    root = _folder(tmp_path / "val")
    src = tmp_path / "RedNet26_pretrained.pdparams"
    write_pdparams(src, 26, num_classes=1000)
    model = load_model("rednet26", src)
    assert model.head.fc.out_features == 1000
    result = evaluate_folder(model, root, batch_size=2, workers=0, resize=36, crop=32, limit=5, progress=False,
                             amp="bf16")
    assert result["images"] == 5 and 0 <= result["top1"] <= result["top5"] <= 100


def test_evaluate_user_errors(tmp_path, capsys):
    ckpt = tmp_path / "rednet26.pth"
    torch.save(rednet26(num_classes=2).state_dict(), ckpt)
    assert main(["--model", "rednet26", "--checkpoint", str(ckpt), "--data", str(tmp_path / "nowhere")]) == 1
    assert "no such folder" in capsys.readouterr().err
    root = _folder(tmp_path / "val")
    assert main(["--model", "rednet26", "--checkpoint", str(ckpt), "--data", str(root), "--no-progress"]) == 1
    assert "3 class folders but the model only 2 outputs" in capsys.readouterr().err
    assert main(["--model", "rednet50", "--checkpoint", str(ckpt), "--data", str(root)]) == 1
    assert "does not match" in capsys.readouterr().err
    assert main(["--model", "rednet26", "--checkpoint", str(tmp_path / "missing.pth"), "--data", str(root)]) == 1
    assert "no such file" in capsys.readouterr().err

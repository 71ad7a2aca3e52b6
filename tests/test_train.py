"""The training recipe: 2-process DDP (gloo) under torchrun, exact resume, checkpoint safety,
and a real learning check on the embedded digits data."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")

from involution_ext.apps import train  # noqa: E402
from involution_ext.checkpoint import CheckpointError  # noqa: E402

FAST = ["--image-size", "16", "--batch-size", "16", "--no-progress", "--no-plot", "--threads", "1",
        "--epochs", "4", "--warmup-epochs", "0.2"]


def read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun, 2 CPU processes: identical weights, SyncBN statistics identical across ranks
    (with broadcast_buffers off, unsynchronised BNs would differ: each rank sees other images),
    finite and falling loss."""
    out = tmp_path / "ddp"
    script = (
        "import sys, torch, torch.distributed as dist\n"
        "from involution_ext.apps import train\n"
        "args = train.parse_args(sys.argv[1:])\n"
        "result = train.train(args)\n"
        "state = {k: v for k, v in result['model'].state_dict().items()}\n"
        f"torch.save(state, r'{out}/rank%d.pt' % dist.get_rank())\n"
        "dist.destroy_process_group()\n"
    )
    (tmp_path / "run.py").write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(tmp_path / "run.py"), "--out", str(out), *FAST, "--epochs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    bn = "backbone.layer1.0.bn1.running_mean"
    assert a[bn].abs().sum() > 0  # statistics were updated
    rows = read_log(out / "log.csv")
    losses = [float(r["train_loss"]) for r in rows]
    assert all(map(lambda v: v == v and abs(v) != float("inf"), losses))
    assert losses[-1] < losses[0], losses


def test_distributed_batchnorm_matches_one_big_batch():
    """The CPU SyncBN in one process (world size 1 falls back to BatchNorm) and its math."""
    bn = train.DistributedBatchNorm2d(4)
    x = torch.randn(6, 4, 3, 3)
    ref = torch.nn.BatchNorm2d(4)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)


def test_resume_is_exact(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train.main(["--out", str(straight), "--max-steps", "12", *FAST])
    train.main(["--out", str(split), "--max-steps", "6", "--save-every", "6", *FAST])
    train.main(["--out", str(split), "--max-steps", "12", "--resume", str(split / "last.pt"), *FAST])
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["step_in_epoch"] == b["step_in_epoch"] and a["epoch"] == b["epoch"]
    for key in a["model"]:  # bitwise: the CPU kernels and the data order are deterministic
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_truncated_checkpoint_clear_error_and_previous_intact(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--max-steps", "3", *FAST])
    last = out / "last.pt"
    good = last.read_bytes()

    def crash_mid_write(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(good[: len(good) // 3])
        raise OSError("disk full")

    monkeypatch.setattr(train.torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        train.atomic_save({"x": 1}, last)
    monkeypatch.undo()
    assert last.read_bytes() == good  # the previous checkpoint survived the failed write
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp file left
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        train.main(["--out", str(out), "--resume", str(cut), *FAST])
    not_training = tmp_path / "weights.pt"
    torch.save({"model": {}}, not_training)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        train.main(["--out", str(out), "--resume", str(not_training), *FAST])


def test_weight_decay_skips_bn_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    decay, no_decay = train.param_groups(model, 1e-4)
    assert [p.ndim for p in decay["params"]] == [4, 2]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0


@pytest.mark.slow
def test_digits_learning_check(tmp_path):
    """RedNet-26 (standard stem) from random initialisation reaches >= 90 % test accuracy on the
    digits split: 32x32 up-sampled images, batch 32, the paper's LR rule (0.1 per 256), 8
    epochs with 1 of warm-up (~50 s on 2 cores)."""
    out = tmp_path / "digits"
    train.main(["--out", str(out), "--epochs", "8", "--warmup-epochs", "1", "--no-progress"])
    assert (out / "curves.png").exists() and (out / "best.pt").exists()
    rows = read_log(out / "log.csv")
    assert float(rows[-1]["test_acc"]) >= 0.90, rows[-1]


def test_finetune_from_official_checkpoint_with_new_head(tmp_path):
    from official_checkpoints import official_checkpoint

    ckpt = tmp_path / "rednet26_official.pth"
    state = official_checkpoint(ckpt, depth=26, num_classes=1000)
    out = tmp_path / "ft"
    # LR 0: the weights stay those loaded, so the check sees exactly what --pretrained did.
    train.main(["--out", str(out), "--pretrained", str(ckpt), "--base-lr", "0", "--max-steps", "1", *FAST])
    model = torch.load(out / "last.pt", weights_only=True)["model"]
    assert torch.equal(model["backbone.stem.0.conv.weight"], state["backbone.stem.0.conv.weight"])
    assert torch.equal(model["backbone.layer4.0.conv2.conv2.conv.bias"], state["backbone.layer4.0.conv2.conv2.conv.bias"])
    assert model["head.fc.weight"].shape == (10, 2048)  # digits head, not the checkpoint's 1000 classes


def test_amp_bf16_channels_last_clip_run(tmp_path):
    out = tmp_path / "amp"
    train.main(["--out", str(out), "--max-steps", "3", "--amp", "bf16", "--channels-last", "--clip-grad", "5", *FAST])
    rows = read_log(out / "log.csv")
    assert float(rows[-1]["train_loss"]) == float(rows[-1]["train_loss"])  # finite, not NaN


def test_image_folder_data(tmp_path):
    from PIL import Image

    root = tmp_path / "folder"
    colors = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for split, n in (("train", 16), ("val", 4)):
        for name, rgb in colors.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20 + i, 18), rgb).save(root / split / name / f"{i}.png")
    x_train, y_train, x_test, y_test, classes = train.image_folder_split(str(root), 16)
    assert classes == 2 and x_train.shape == (32, 3, 16, 16) and x_test.shape == (8, 3, 16, 16)
    assert y_train.tolist() == [0] * 16 + [1] * 16  # classes in sorted folder order: blue, red
    assert x_train[0, 2].mean() > x_train[0, 0].mean()  # blue image: blue channel brighter
    out = tmp_path / "run"
    train.main(["--data", str(root), "--out", str(out), "--max-steps", "2", "--flip", *FAST])
    model = torch.load(out / "last.pt", weights_only=True)["model"]
    assert model["head.fc.weight"].shape == (2, 2048)
    with pytest.raises(FileNotFoundError, match="must hold train/ and val/"):
        train.image_folder_split(str(tmp_path / "empty_root"), 16)


def test_default_schedule_follows_the_data():
    digits = train.parse_args([])
    assert (digits.epochs, digits.warmup_epochs) == (8, 1.0)  # fits digits: ~96 % in about a minute
    folder = train.parse_args(["--data", "/some/imagefolder"])
    assert (folder.epochs, folder.warmup_epochs) == (130, 5.0)  # the paper's ImageNet schedule
    assert train.parse_args(["--epochs", "3"]).epochs == 3


def test_resume_uses_the_stored_arguments_and_prints_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--max-steps", "2", "--base-lr", "0.05", "--seed", "3", *FAST])
    printed = capsys.readouterr().out
    assert "epoch 0/4 (step 2): train loss" in printed and "test loss" in printed and "images/s" in printed
    args = train.parse_args(["--resume", str(out / "last.pt"), "--epochs", "6", "--no-plot"])
    assert args.base_lr == 0.05 and args.seed == 3 and args.image_size == 16 and args.out == str(out)
    assert args.epochs == 6 and args.warmup_epochs == 0.2 and args.max_steps == 0  # not taken: stop points
    printed = capsys.readouterr().out
    assert f"resuming from {out / 'last.pt'} with the arguments stored in it" in printed
    assert "changed on the command line: --epochs 6 (checkpoint: 4)" in printed

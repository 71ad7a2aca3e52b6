"""Training recipe for RedNet on PyTorch's own distributed engine.

    python -m involution_ext.apps.train --out runs/digits                     # one process
    torchrun --nproc-per-node 2 -m involution_ext.apps.train --out runs/ddp   # DDP, gloo on CPU / nccl on GPU

Defaults follow the paper (SGD momentum 0.9, weight decay 1e-4 not on BN or biases, cosine LR
with linear warm-up, label smoothing 0.1, LR 0.1 per 256 images of global batch). The embedded
default data set is scikit-learn's ``digits`` (1797 real 8×8 images, shipped with the package,
no download), up-sampled, with a fixed 75/25 split; ``--data DIR`` reads an image folder
(``DIR/train/<class>/*`` and ``DIR/val/<class>/*``).

Checkpoints (``last.pt`` every ``--save-every`` steps and at the end of each epoch, ``best.pt``
on a better test accuracy) are written atomically and hold the model, optimizer, scheduler,
AMP scaler, position in the epoch and RNG states; ``--resume`` continues exactly where the
checkpoint was taken. ``--pretrained`` starts from an official RedNet checkpoint with a new head.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._optional import MissingDependencyError, require
from ..checkpoint import CheckpointError, load_checkpoint_file, load_official_checkpoint
from ..models import rednet
from ._images import image_folder, load_image


# ---------------------------------------------------------------- data


def digits_split(image_size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """scikit-learn's digits up-sampled to image_size, 3 channels, normalised; a fixed split
    (permutation with seed 0: 1348 train, 449 test)."""
    datasets = require("sklearn.datasets", "train", "the embedded digits data set")

    digits = datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images - 0.5) / 0.5
    images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 4
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test], 10


def image_folder_split(root: str, image_size: int):
    """``root/train/<class>/*`` and ``root/val/<class>/*``, resized to image_size (short side,
    centre crop) and held in memory as normalised tensors."""
    root_path = Path(root)
    if not (root_path / "train").is_dir() or not (root_path / "val").is_dir():
        raise FileNotFoundError(f"{root} must hold train/ and val/ folders with one folder per class")
    classes, _ = image_folder(root_path / "train")

    def load(split: str):
        split_classes, samples = image_folder(root_path / split)
        if split_classes != classes:
            raise FileNotFoundError(f"{root}/{split} has other class folders than {root}/train")
        xs = [load_image(path, image_size)[0][0] for path, _ in samples]
        return torch.stack(xs), torch.tensor([label for _, label in samples])

    x_train, y_train = load("train")
    x_test, y_test = load("val")
    return x_train, y_train, x_test, y_test, len(classes)


def augment(x: torch.Tensor, gen: torch.Generator, max_shift: int, flip: bool) -> torch.Tensor:
    """Random translation (zero fill) by up to max_shift pixels, optional horizontal flip; the
    generator is seeded from (seed, epoch, step, rank), so a resumed run draws the same."""
    if max_shift > 0:
        b = x.shape[0]
        padded = F.pad(x, [max_shift] * 4)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        h, w = x.shape[2:]
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if flip:
        mask = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


# ---------------------------------------------------------------- distributed pieces


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """Synchronised BatchNorm for CPU process groups: ``nn.SyncBatchNorm`` only runs on GPUs.
    The batch sum and sum of squares are all-reduced with ``torch.distributed.nn``'s
    autograd-aware all_reduce, so statistics and gradients match one big batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), xf.square().sum(dim=(0, 2, 3)), count])
        stats = all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean.square()).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
            unbiased = var.detach() * (n / (n - 1).clamp_min(1))
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)
        y = (xf - mean[None, :, None, None]) * scale[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = DistributedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def setup_distributed() -> Tuple[int, int, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


# ---------------------------------------------------------------- checkpoints


def atomic_save(obj, path: Path) -> None:
    """Writes to a temporary file in the same folder and renames it over ``path``: a crash
    mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_training_checkpoint(path: str) -> Dict:
    try:
        state = load_checkpoint_file(path)
    except CheckpointError as e:
        raise CheckpointError(f"cannot resume: {e}") from None
    missing = {"model", "optimizer", "scheduler", "epoch", "step_in_epoch"} - set(state if isinstance(state, dict) else {})
    if missing:
        raise CheckpointError(f"cannot resume from {path}: not a training checkpoint (missing {sorted(missing)})")
    return state


# ---------------------------------------------------------------- the recipe


# Schedules by data set: the paper's ImageNet one, and one that fits digits (94-96 % test
# accuracy in 8 epochs over seeds and over rounding-level changes, 2-3 minutes on 2 CPU cores;
# batch 64 made it depend on them: anywhere from 55 % to 96 %).
SCHEDULES = {"imagenet": {"epochs": 130, "warmup_epochs": 5.0, "batch_size": 64},
             "digits": {"epochs": 8, "warmup_epochs": 1.0, "batch_size": 32}}
# Arguments a resumed run does not take from its checkpoint: where to resume from, when to stop
# early, and the initial weights (the checkpoint holds newer ones).
NOT_RESUMED = {"resume", "max_steps", "pretrained"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m involution_ext.apps.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", help="'digits' (embedded) or an image-folder root")
    p.add_argument("--depth", type=int, default=26, choices=[26, 38, 50, 101, 152])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--small-input", action="store_true",
                   help="stem without downsampling (stride-1 first conv, no max-pool), for tiny images")
    p.add_argument("--epochs", type=int, help="default: 8 for digits, 130 (the paper's) for an image folder")
    p.add_argument("--batch-size", type=int, help="per process; default: 32 for digits, 64 for an image folder")
    p.add_argument("--base-lr", type=float, default=0.1, help="LR per 256 images; scaled by global batch / 256")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, help="default: 1 for digits, 5 for an image folder")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                   help="autocast dtype (fp16 uses a GradScaler; CPU supports bf16)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm (0: off)")
    p.add_argument("--max-shift", type=int, default=2, help="random translation in pixels")
    p.add_argument("--flip", action="store_true", help="random horizontal flips (not for digits)")
    p.add_argument("--pretrained", help="official RedNet checkpoint; the head is replaced")
    p.add_argument("--resume", help="training checkpoint to continue from (e.g. OUT/last.pt), with the arguments "
                                    "stored in it unless given again here")
    p.add_argument("--out", default="runs/rednet", help="folder for checkpoints, CSV log and plot")
    p.add_argument("--save-every", type=int, default=0, help="also write last.pt every N steps")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this global step (schedule unchanged)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--no-plot", action="store_true")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, completed: with ``--resume``, every argument not given on the command
    line is taken from the checkpoint (and the differences printed); then unset schedule
    arguments get the data set's defaults (:data:`SCHEDULES`)."""
    args = _parser().parse_args(argv)
    if args.resume:
        explicit_parser = _parser()
        for action in explicit_parser._actions:  # no defaults: only what the command line gives
            action.default = argparse.SUPPRESS
        given = set(vars(explicit_parser.parse_args(argv)))
        stored = load_training_checkpoint(args.resume).get("args", {})
        overridden = []
        for key, value in stored.items():
            if key in NOT_RESUMED or not hasattr(args, key):
                continue
            if key not in given:
                setattr(args, key, value)
            elif getattr(args, key) != value:
                overridden.append(f"--{key.replace('_', '-')} {getattr(args, key)} (checkpoint: {value})")
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"resuming from {args.resume} with the arguments stored in it"
                  + (f"; changed on the command line: {', '.join(overridden)}" if overridden else ""))
    schedule = SCHEDULES["digits" if args.data == "digits" else "imagenet"]
    for key, value in schedule.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and conv/linear biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class Run:
    """Everything one training run holds: what :func:`setup` builds, and the position
    (epoch, step in it, best accuracy) that a checkpoint saves and :func:`restore` sets."""

    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    out: Path
    data: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    model: nn.Module  # the bare model (checkpoints and evaluation)
    run_model: nn.Module  # what the step calls: DDP- and compile-wrapped as asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    amp_dtype: Optional[torch.dtype]
    steps_per_epoch: int
    total_steps: int
    epoch: int = 0
    step_in_epoch: int = 0
    best_acc: float = 0.0

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.args.channels_last else x


def setup(args: argparse.Namespace) -> Run:
    """Process group, seeds, data, model (official weights if asked, synchronised BN under
    DDP), optimizer, LR schedule, AMP scaler, and the DDP / compile wrappers."""
    rank, world, device = setup_distributed()
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)  # same initial weights on every rank (DDP also broadcasts them)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    if args.data == "digits":
        *data, num_classes = digits_split(args.image_size)
    else:
        *data, num_classes = image_folder_split(args.data, args.image_size)

    model = rednet(args.depth, num_classes=num_classes, small_input=args.small_input)
    if args.pretrained:
        load_official_checkpoint(model, args.pretrained, ignore_prefixes=("head.",))
    if world > 1:
        model = convert_sync_batchnorm(model, device)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    global_batch = args.batch_size * world
    train_size = len(data[1])
    steps_per_epoch = train_size // global_batch  # drop the last partial batch: equal steps on every rank
    if steps_per_epoch == 0:
        raise ValueError(f"global batch {global_batch} is larger than the training set ({train_size} images)")
    total_steps = steps_per_epoch * args.epochs
    lr = args.base_lr * global_batch / 256
    optimizer = torch.optim.SGD(param_groups(model, args.weight_decay), lr=lr, momentum=args.momentum, nesterov=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, round(args.warmup_epochs * steps_per_epoch)))
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16" and device.type == "cuda")

    run_model = model
    if world > 1:
        # broadcast_buffers=False: BN statistics are synchronised by the BN layers themselves.
        run_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    if args.compile:
        run_model = torch.compile(run_model)
    return Run(args=args, rank=rank, world=world, device=device, out=out, data=tuple(data), model=model,
               run_model=run_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
               criterion=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
               amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp),
               steps_per_epoch=steps_per_epoch, total_steps=total_steps)


# ---------------------------------------------------------------- saving and resuming a run


def checkpoint_state(run: Run) -> Dict:
    return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "epoch": run.epoch,
            "step_in_epoch": run.step_in_epoch, "best_acc": run.best_acc,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}, "args": dict(vars(run.args))}


def restore(run: Run, path: str) -> None:
    """Sets ``run`` to where the training checkpoint at ``path`` was taken: weights,
    optimizer, schedule, scaler, position in the epoch and RNG states."""
    state = load_training_checkpoint(path)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step_in_epoch, run.best_acc = state["epoch"], state["step_in_epoch"], state["best_acc"]
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])


def evaluate(run: Run) -> Tuple[float, float]:
    """Loss and accuracy over the whole test split, each rank taking a shard (no padding)."""
    x, y = run.data[2], run.data[3]
    batch_size = run.args.batch_size
    run.model.eval()
    idx = torch.arange(run.rank, len(y), run.world)
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            sel = idx[start:start + batch_size]
            xb, yb = run.to_device(x[sel]), y[sel].to(run.device)
            with run.autocast():
                logits = run.model(xb)
            totals[0] += F.cross_entropy(logits.float(), yb, reduction="sum").item()
            totals[1] += (logits.argmax(1) == yb).sum().item()
            totals[2] += len(sel)
    if run.world > 1:
        dist.all_reduce(totals)
    run.model.train()
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def save_end_of_epoch(run: Run, test_acc: float) -> None:
    """``best.pt`` on a better test accuracy (weights only), then ``last.pt`` (the whole run)."""
    if test_acc > run.best_acc:
        run.best_acc = test_acc
        atomic_save({"model": run.model.state_dict(), "test_acc": test_acc, "epoch": run.epoch}, run.out / "best.pt")
    atomic_save(checkpoint_state(run), run.out / "last.pt")


# ---------------------------------------------------------------- the loop


def train_step(run: Run, xb: torch.Tensor, yb: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns (loss, logits)."""
    args = run.args
    with run.autocast():
        logits = run.run_model(xb)
        loss = run.criterion(logits.float(), yb)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if args.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), args.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss, logits


def train_epoch(run: Run, progress) -> Tuple[torch.Tensor, int, bool]:
    """Runs the rest of the current epoch (all of it unless resumed mid-epoch) or up to
    ``--max-steps``; returns the summed (loss, correct, images) of this rank, the images seen
    by all ranks, and whether ``--max-steps`` stopped it."""
    args = run.args
    x_train, y_train = run.data[0], run.data[1]
    # The DistributedSampler permutation for this epoch, as a list, so a resumed run can
    # skip the batches already done.
    sampler = torch.utils.data.DistributedSampler(range(len(y_train)), num_replicas=run.world, rank=run.rank,
                                                  shuffle=True, seed=args.seed, drop_last=True)
    sampler.set_epoch(run.epoch)
    order = torch.tensor(list(sampler))
    sums = torch.zeros(3, dtype=torch.float64)
    t0 = time.perf_counter()
    images = 0
    while run.step_in_epoch < run.steps_per_epoch:
        step = run.step_in_epoch
        sel = order[step * args.batch_size:(step + 1) * args.batch_size]
        gen = torch.Generator().manual_seed(((args.seed * 100_003 + run.epoch) * 100_003 + step) * 1_009 + run.rank)
        xb = run.to_device(augment(x_train[sel], gen, args.max_shift, args.flip))
        yb = y_train[sel].to(run.device)
        loss, logits = train_step(run, xb, yb)
        run.step_in_epoch += 1
        images += len(sel) * run.world
        sums += torch.tensor([loss.item() * len(sel), (logits.argmax(1) == yb).sum().item(), len(sel)],
                             dtype=torch.float64)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}",
                                 img_s=f"{images / (time.perf_counter() - t0):.0f}")
        if run.rank == 0 and args.save_every and run.global_step % args.save_every == 0:
            atomic_save(checkpoint_state(run), run.out / "last.pt")
        if args.max_steps and run.global_step >= args.max_steps:
            return sums, images, True
    return sums, images, False


LOG_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_s"]


def train(args: argparse.Namespace) -> Dict:
    """The recipe: :func:`setup`, :func:`restore` with ``--resume``, then per epoch
    :func:`train_epoch`, evaluation on the test split, a CSV log line and the checkpoints."""
    run = setup(args)
    if args.resume:
        restore(run, args.resume)
    log_path = run.out / "log.csv"
    if run.rank == 0 and not (args.resume and log_path.exists()):
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_COLUMNS)
    progress = None
    if run.rank == 0 and not args.no_progress:
        tqdm = require("tqdm", "train", "the progress bar (or pass --no-progress)").tqdm
        progress = tqdm(total=(args.max_steps or run.total_steps), initial=run.global_step, unit="step",
                        dynamic_ncols=True)
    test_accs = []
    run.model.train()
    stop = False
    while run.epoch < args.epochs and not stop:
        t0 = time.perf_counter()
        sums, images, stop = train_epoch(run, progress)
        seconds = time.perf_counter() - t0
        if run.world > 1:
            dist.all_reduce(sums)
        if run.step_in_epoch >= run.steps_per_epoch:
            run.epoch, run.step_in_epoch = run.epoch + 1, 0
        test_loss, test_acc = evaluate(run)
        train_loss, train_acc = (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()
        test_accs.append(test_acc)
        if run.rank == 0:
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([run.epoch, run.global_step, f"{run.scheduler.get_last_lr()[0]:.6f}",
                                        f"{train_loss:.5f}", f"{train_acc:.4f}", f"{test_loss:.5f}",
                                        f"{test_acc:.4f}", f"{images / seconds:.1f}"])
            line = (f"epoch {run.epoch}/{args.epochs} (step {run.global_step}): train loss {train_loss:.4f} acc "
                    f"{train_acc:.4f}, test loss {test_loss:.4f} acc {test_acc:.4f}, {images / seconds:.1f} images/s")
            (progress.write if progress is not None else print)(line)
            save_end_of_epoch(run, test_acc)
    if progress is not None:
        progress.close()
    if run.rank == 0 and not args.no_plot:
        plot_log(log_path, run.out / "curves.png")
    result = {"test_acc": test_accs[-1] if test_accs else float("nan"), "best_acc": run.best_acc,
              "global_step": run.global_step, "model": run.model}
    if run.world > 1:
        dist.barrier()
    return result


def plot_log(log_path: Path, png: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, [float(r["train_loss"]) for r in rows], label="train")
    a.plot(steps, [float(r["test_loss"]) for r in rows], label="test")
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.legend()
    b.plot(steps, [float(r["train_acc"]) for r in rows], label="train")
    b.plot(steps, [float(r["test_acc"]) for r in rows], label="test")
    b.set_xlabel("step")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = train(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final test accuracy {result['test_acc']:.4f} (best {result['best_acc']:.4f}) after "
              f"{result['global_step']} steps; checkpoints in {args.out}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def cli() -> int:
    """``python -m involution_ext.apps.train``: :func:`main` with the user's mistakes (a bad
    checkpoint, a missing extra, a missing data folder) printed as one line, no traceback."""
    try:
        return main()
    except (CheckpointError, MissingDependencyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(cli())

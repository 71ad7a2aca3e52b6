"""Whole-model benchmark: RedNet-26/38/50/101 against a plain ResNet-50 (built here, since
torchvision does not install beside our torch build), against RedNet-50 with the unfused op
(``rednet50_unfused``: the span conv, then the aggregation) and against RedNet-50 whose
aggregation runs the unfold reference instead of the op; with --compile, ResNet-50 and
RedNet-50 under torch.compile too (inference).

Also the activation memory of training: the bytes autograd keeps for backward in one forward
at batch 8 (distinct storages, counted through saved_tensors_hooks), against ResNet-50's.

CPU: inference at batch 1 and 16 (fp32, NCHW and channels_last) and one training step
(forward, backward, SGD update) at batch 16. CUDA: inference at batch 1 and 64 and a
training step at batch 64, both layouts, optionally under autocast (--amp fp16|bf16; fp16
steps use a GradScaler). Prints times, images/s and ratios to ResNet-50 measured in this
run, writes <out>.json and .png under build/benchmarks/ (or --results-dir). Never asserts.

    python benchmarks/bench_models.py            # full run
    python benchmarks/bench_models.py --quick    # batch 1 only, fewer repetitions
    python benchmarks/bench_models.py --compile  # plus both models under torch.compile
    python benchmarks/bench_models.py --device cuda --amp fp16
"""

from __future__ import annotations

import argparse
import contextlib
import types

import torch
import torch.nn.functional as F
from common import (copy_bandwidth_gbps, machine, median_and_spread, noisy, rate,  # the script's folder
                    ratio_side_by_side, report_disturbance, saved_activation_bytes, timeit_side_by_side,
                    until_stopped, versus, write_results)
from torch import nn

import involution_ext
from involution_ext.models import rednet
from involution_ext.modules import Involution2d
from involution_ext.reference import involution2d_unfold


class ResNetBottleneck(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        mid = cout // 4
        self.branch = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


def resnet50(num_classes=1000):
    """torchvision's ResNet-50 (v1.5: stride in the 3x3 conv), 25.6 M parameters."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, n in enumerate((3, 4, 6, 3)):
        cout = 256 * 2**i
        for b in range(n):
            layers.append(ResNetBottleneck(cin, cout, (1 if i == 0 else 2) if b == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes)]
    return nn.Sequential(*layers)


def _unfold_forward(self, x):
    return involution2d_unfold(x, self.kernel(x), self.stride, self.padding, self.dilation)


def with_unfold_aggregation(model):
    """The same model, its involutions aggregated by the unfold reference (the official code's
    CPU path) instead of the op."""
    for m in model.modules():
        if isinstance(m, Involution2d):
            m.forward = types.MethodType(_unfold_forward, m)
    return model


def build(name):
    if name.endswith("_compiled"):
        return torch.compile(build(name.removesuffix("_compiled")))
    if name == "resnet50":
        return resnet50()
    if name == "rednet50_unfold":
        return with_unfold_aggregation(rednet(50, fused=False))
    if name.endswith("_unfused"):
        return rednet(int(name.removeprefix("rednet").removesuffix("_unfused")), fused=False)
    return rednet(int(name.removeprefix("rednet")))


def saved_mib(model, batch, device):
    """MiB of activations a training forward keeps for backward (common.saved_activation_bytes)."""
    x = torch.randn(batch, 3, 224, 224, device=device)
    return saved_activation_bytes(model.to(device).train(), x) / 2**20


def measure_memory(names, device, rows, batch=8):
    base = None
    for name in names:
        if name == "rednet50_unfold" or name.endswith("_compiled"):
            continue
        torch.manual_seed(0)
        mib = saved_mib(build(name), batch, device)
        base = mib if name == "resnet50" else base
        rows.append({"setting": f"saved for backward b{batch}", "model": name, "mib": mib,
                     "ratio_to_resnet50": mib / base})
        print(f"{'saved for backward b' + str(batch):<30}{name:<18}{mib:10.0f} MiB{mib / base:24.2f}x", flush=True)


def prepare(model, batch, channels_last, train, device, amp=None):
    """The callable that one timed repetition runs: an inference, or a training step."""
    model = model.to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    if not train:
        model.eval()

        def infer():
            with torch.no_grad(), autocast():
                return model(x)

        return infer
    model.train()
    target = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def measure_all(args, settings, names, reps, budget, device, amp, rows):
    """Appends one row per (setting, model) to `rows`, a setting at a time. The models of a
    setting are timed side by side (common.timeit_side_by_side), and each ratio to ResNet-50 is
    the median of the per-round ratios, so a load that changes during the run does not bias it."""
    for mode, batch, cl in settings:
        setting = f"{mode} b{batch} {'channels_last' if cl else 'NCHW'}"
        runs = {}
        for name in names:
            if args.quick and name in ("rednet38", "rednet101"):
                continue
            if name == "rednet50_unfold" and (batch > 1 and mode == "train step"):
                continue  # the unfold buffers of a batched training step take minutes on CPU
            if name.endswith("_compiled") and mode == "train step":
                continue
            torch.manual_seed(0)
            runs[name] = prepare(build(name), batch, cl, mode == "train step", device, amp)
        times = timeit_side_by_side(runs, device, reps, budget * len(runs))
        del runs
        for name, ms in times.items():
            median, spread = median_and_spread(ms)
            ratio = ratio_side_by_side(ms, times["resnet50"])
            rows.append({"setting": setting, "model": name, "ms": median, "spread_ms": spread,
                         "images_per_s": batch / (median * 1e-3), "ratio_to_resnet50": ratio})
            print(f"{setting:<30}{name:<18}{median:10.1f}{spread:9.1f}{rate(batch / (median * 1e-3)):>10}"
                  f"{ratio:13.2f}x", flush=True)


# RedNet-50 / ResNet-50 targets: equal efficiency would give 0.65x the time (2.65 vs 4.1
# GMACs); training activation memory below ResNet-50's.
TARGETS = {"inference": 0.75, "train step": 0.85, "saved for backward": 0.8}


def verdicts(rows, disturbed):
    """One line per setting: RedNet-50 against ResNet-50 and its target, and against RedNet-50
    with the unfused op and with unfold aggregation. Timings from noisy measurements or a
    disturbed run get the ratios without a verdict (memory counts are exact)."""
    lines = []
    for r in rows:
        if r["model"] != "rednet50":
            continue
        setting = r["setting"]
        kind = next(k for k in TARGETS if setting.startswith(k))
        same = {u["model"]: u for u in rows if u["setting"] == setting}
        ratio, target = r["ratio_to_resnet50"], TARGETS[kind]
        if kind == "saved for backward":
            what = f"keeps {ratio:.2f}x ResNet-50's activation memory"
            shaky = []
        else:
            what = f"takes {ratio:.2f}x ResNet-50's time ({versus(1.0, ratio)})"
            shaky = [m for m in ("rednet50", "resnet50") if noisy(same[m]["ms"], same[m]["spread_ms"])]
        if shaky or (disturbed and kind != "saved for backward"):
            verdict = "no verdict: " + ("disturbed run" if disturbed else f"noisy {', '.join(shaky)}")
        else:
            verdict = "meets" if ratio <= target else "MISSES"
        text = f"{setting}: RedNet-50 {what} (target <= {target}x: {verdict})"
        for other, label in (("rednet50_unfused", "the unfused op"), ("rednet50_unfold", "unfold aggregation")):
            if other in same and "ms" in r:
                text += f"; {versus(same[other]['ratio_to_resnet50'], ratio)} than RedNet-50 with {label}"
            elif other in same:
                text += f"; {same[other]['mib'] / r['mib']:.2f}x less than RedNet-50 with {label}"
        if "rednet50_compiled" in same and "resnet50_compiled" in same:
            compiled = same["rednet50_compiled"]["ratio_to_resnet50"] / same["resnet50_compiled"]["ratio_to_resnet50"]
            text += (f"; under torch.compile {compiled:.2f}x"
                     " ResNet-50's time")
        lines.append(text)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="", help="result file stem (default bench_models_<device>)")
    parser.add_argument("--results-dir", default="", help="folder for JSON + PNG (default build/benchmarks)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "fp16", "bf16"], default="none", help="autocast dtype")
    parser.add_argument("--budget", type=float, default=0.0, help="seconds of timing per model, spent in rounds that time "
                        "a setting's models side by side (default 4, quick 1)")
    parser.add_argument("--models", default="",
                        help="comma list (default: resnet50, rednet26/38/50/101, rednet50_unfused, rednet50_unfold)")
    parser.add_argument("--compile", action="store_true",
                        help="also ResNet-50 and RedNet-50 under torch.compile (inference settings; "
                             "compilation happens in the warm-up, outside the timings)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.amp]
    out = args.out or f"bench_models_{device.type}"
    info = machine(device)
    info["amp"] = args.amp
    print(f"# {info['device']} | torch {info['torch']} | {info['threads']} threads | amp {args.amp} | "
          f"involution_ext {involution_ext.__version__}")
    names = ["resnet50", "rednet26", "rednet38", "rednet50", "rednet101", "rednet50_unfused", "rednet50_unfold"]
    if args.models:
        names = ["resnet50"] + [n for n in args.models.split(",") if n != "resnet50"]  # the baseline first
    if args.compile:
        names += ["resnet50_compiled", "rednet50_compiled"]
    big = 16 if device.type == "cpu" else 64
    settings = [("inference", 1, False), ("inference", 1, True)]
    if not args.quick:
        settings += [("inference", big, False), ("inference", big, True), ("train step", big, False)]
        if device.type == "cuda":
            settings.append(("train step", big, True))
    reps, budget = (3, 1.0) if args.quick else (5, 4.0)
    budget = args.budget or budget
    rows = []
    print(f"{'setting':<30}{'model':<18}{'ms':>10}{'spread':>9}{'images/s':>10}{'time / ResNet-50':>18}")
    bandwidth_before = copy_bandwidth_gbps(device)
    with until_stopped(info, rows):
        measure_memory([n for n in names if not (args.quick and n in ("rednet38", "rednet101"))], device, rows)
        measure_all(args, settings, names, reps, budget, device, amp, rows)
    if not rows:
        return
    print()
    disturbed = report_disturbance(info, bandwidth_before, copy_bandwidth_gbps(device))
    print("\n".join(verdicts(rows, disturbed)))
    write_results(args.results_dir, out, {"machine": info, "rows": rows},
                  lambda path: plot(rows, path, f"{info['device']} | {info['threads']} threads | amp {args.amp}"))


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(settings)), 4.5))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        xs, ys = [], []
        for i, s in enumerate(settings):
            hit = [r["ratio_to_resnet50"] for r in rows if r["setting"] == s and r["model"] == model]
            if hit:
                xs.append(i + k * width)
                ys.append(hit[0])
        ax.bar(xs, ys, width, label=model)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(settings))], settings, fontsize=8, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("/ ResNet-50 (time; memory for saved rows), log")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

"""Fused kernel generation: one ``Involution2d`` with ``fused=True`` (the span conv inside
``involution::fused_forward``) against ``fused=False`` (the span conv, then
``involution::forward``), side by side in one run, at RedNet's four stage shapes (K=7, 16
channels per group, r=4), batch 1 and 8, NCHW and channels_last. The two are timed in
alternation (common.timeit_side_by_side); a speed-up is the median of the per-round ratios.

Prints forward and forward+backward times and the fused path's speed-up, and the activation
bytes autograd keeps for backward (storages counted once, through saved_tensors_hooks;
parameters not counted) with the ratio; writes JSON and a PNG plot under build/benchmarks/ (or --results-dir). Never asserts.

    python benchmarks/bench_fused.py            # full run
    python benchmarks/bench_fused.py --quick    # batch 8 only, shorter timing
"""

from __future__ import annotations

import argparse

import torch
from common import (copy_bandwidth_gbps, machine, median_and_spread, noisy,  # the script's folder
                    ratio_side_by_side, report_disturbance, saved_activation_bytes, timeit_side_by_side,
                    until_stopped, versus, write_results)

import involution_ext
from involution_ext import Involution2d

STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]
TARGET_FWD, TARGET_FWD_BWD, TARGET_MEMORY = 1.5, 1.3, 3.0


def prepare(module, x, train):
    """The callable that one timed repetition runs: a forward, or a forward and backward."""
    if not train:
        def run():
            with torch.no_grad():
                module(x)
        return run
    xg = x.detach().requires_grad_()

    def run():
        module(xg).sum().backward()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=0.0, help="seconds of timing per layer and pass")
    parser.add_argument("--out", default="", help="result file stem (default bench_fused_<device>)")
    parser.add_argument("--results-dir", default="", help="folder for JSON + PNG (default build/benchmarks)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine(device)
    out = args.out or f"bench_fused_{device.type}"
    reps, budget = (3, 0.4) if args.quick else (5, 1.5)
    budget = args.budget or budget
    batches = [8] if args.quick else [1, 8]
    print(f"# {info['device']} | torch {info['torch']} | {info['threads']} threads | involution_ext "
          f"{involution_ext.__version__} | CPU kernels: {involution_ext.cpu_isa()}")
    print(f"{'shape':<20}{'layout':<14}{'pass':<9}{'unfused ms':>11}{'fused ms':>10}{'speed-up':>10}"
          f"{'saved MiB unfused':>19}{'fused':>7}{'ratio':>7}")
    rows = []
    bandwidth_before = copy_bandwidth_gbps(device)
    with until_stopped(info, rows):
        for batch in batches:
            for channels, size in STAGES:
                for channels_last in (False, True):
                    torch.manual_seed(0)
                    fused = Involution2d(channels, 7, group_channels=16, reduction_ratio=4).to(device)
                    unfused = Involution2d(channels, 7, group_channels=16, reduction_ratio=4, fused=False).to(device)
                    unfused.load_state_dict(fused.state_dict())
                    x = torch.randn(batch, channels, size, size, device=device)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                        fused, unfused = (m.to(memory_format=torch.channels_last) for m in (fused, unfused))
                    xg = x.detach().requires_grad_()
                    mem_unfused, mem_fused = saved_activation_bytes(unfused, xg), saved_activation_bytes(fused, xg)
                    for train in (False, True):
                        times = timeit_side_by_side({"unfused": prepare(unfused, x, train),
                                                     "fused": prepare(fused, x, train)}, device, reps, 2 * budget)
                        t_unfused, t_fused = median_and_spread(times["unfused"]), median_and_spread(times["fused"])
                        row = {"batch": batch, "channels": channels, "size": size,
                               "layout": "channels_last" if channels_last else "NCHW",
                               "pass": "fwd+bwd" if train else "fwd", "unfused_ms": t_unfused[0],
                               "unfused_spread_ms": t_unfused[1], "fused_ms": t_fused[0],
                               "fused_spread_ms": t_fused[1],
                               "speedup": ratio_side_by_side(times["unfused"], times["fused"]),
                               "saved_mib_unfused": mem_unfused / 2**20, "saved_mib_fused": mem_fused / 2**20}
                        rows.append(row)
                        shape = f"B={batch} C={channels} H={size}"
                        print(f"{shape:<20}{row['layout']:<14}{row['pass']:<9}{t_unfused[0]:11.2f}{t_fused[0]:10.2f}"
                              f"{row['speedup']:9.2f}x{row['saved_mib_unfused']:19.2f}{row['saved_mib_fused']:7.2f}"
                              f"{mem_unfused / mem_fused:6.1f}x", flush=True)
    if not rows:
        return
    print()
    disturbed = report_disturbance(info, bandwidth_before, copy_bandwidth_gbps(device))
    for r in rows:
        target = TARGET_FWD if r["pass"] == "fwd" else TARGET_FWD_BWD
        shaky = noisy(r["unfused_ms"], r["unfused_spread_ms"]) or noisy(r["fused_ms"], r["fused_spread_ms"])
        verdict = ("no verdict: " + ("disturbed run" if disturbed else "noisy")) if disturbed or shaky else (
            "meets" if r["speedup"] >= target else "MISSES")
        print(f"B={r['batch']} C={r['channels']} H={r['size']} {r['layout']} {r['pass']}: fused is "
              f"{versus(r['speedup'], 1.0)} than unfused (target >= {target}x faster: {verdict}); "
              f"saves {r['saved_mib_unfused'] / r['saved_mib_fused']:.2f}x less for backward (target >= "
              f"{TARGET_MEMORY}x: {'meets' if r['saved_mib_unfused'] >= TARGET_MEMORY * r['saved_mib_fused'] else 'MISSES'})")
    write_results(args.results_dir, out, {"machine": info, "rows": rows},
                  lambda path: plot(rows, path, f"{info['device']} | {info['threads']} threads"))


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, kind in zip(axes, ("fwd", "fwd+bwd")):
        sel = [r for r in rows if r["pass"] == kind]
        labels = [f"B{r['batch']} C{r['channels']}\n{r['size']}² {'CL' if r['layout'] != 'NCHW' else 'NCHW'}" for r in sel]
        ax.bar(range(len(sel)), [r["speedup"] for r in sel])
        ax.axhline(TARGET_FWD if kind == "fwd" else TARGET_FWD_BWD, color="r", lw=0.8, ls="--", label="target")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(sel)), labels, fontsize=6)
        ax.set_ylabel("unfused time / fused time")
        ax.set_title(f"{kind}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

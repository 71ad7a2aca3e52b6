"""Op benchmark: involution vs the unfold formulation, a depthwise 7x7 conv and a dense
3x3 conv, at RedNet's stage shapes, measured side by side in one run.

Prints a table of times and ratios (never asserts), the achieved bandwidth against a
copy measured in the same run, and the peak extra memory; writes JSON and a PNG plot
under build/benchmarks/ (--results-dir benchmarks/results updates the committed results).

    python benchmarks/bench_ops.py                 # CPU, fp32 + bf16, both layouts
    python benchmarks/bench_ops.py --quick         # fewer repetitions, fp32 only
    python benchmarks/bench_ops.py --device cuda   # + fp16, bwd alone, the per-element baseline

On the CPU our op is also timed, side by side, with the kernels of every other instruction
set the machine runs (--isas): on an AVX-512 machine, the AVX2 and the baseline kernels; and
once more with every cache flushed before each repetition ("cold", --no-cold skips it): timed
back to back, a 28x28 or smaller stage's operands stay in the last-level cache, which a layer
in a network (and the copy the bandwidth is measured with) does not see.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from common import (available_cpu_isas, cache_evictor, copy_bandwidth_gbps, cpu_isa_selected,  # the script's folder
                    machine, noisy, peak_extra_mb, report_disturbance, timeit, until_stopped, versus,
                    write_results)

import involution_ext
from involution_ext.reference import involution2d_unfold

# RedNet stages: (channels, spatial size, stride); 16 channels per group, K=7.
STAGES = [(64, 56, 1), (128, 28, 1), (256, 14, 1), (512, 7, 1), (128, 56, 2)]
GROUP_CHANNELS = 16
K = 7


@dataclass
class Row:
    shape: str
    layout: str
    dtype: str
    pass_: str
    times_ms: dict = field(default_factory=dict)
    spread_ms: dict = field(default_factory=dict)
    peak_extra_mb: dict = field(default_factory=dict)
    gbps: float = 0.0
    cold_ms: float = 0.0  # ours with every cache flushed before each repetition (CPU)


def make_inputs(C, H, stride, dtype, channels_last, device, batch, requires_grad=False):
    G = C // GROUP_CHANNELS
    Ho = (H + 2 * (K // 2) - (K - 1) - 1) // stride + 1
    x = torch.randn(batch, C, H, H, device=device, dtype=dtype)
    w = torch.randn(batch, G, K, K, Ho, Ho, device=device, dtype=dtype) * 0.1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dense = torch.randn(C, C, 3, 3, device=device, dtype=dtype) * 0.05
    depthwise = torch.randn(C, 1, K, K, device=device, dtype=dtype) * 0.1
    if channels_last:
        dense = dense.contiguous(memory_format=torch.channels_last)
        depthwise = depthwise.contiguous(memory_format=torch.channels_last)
    for t in (x, w, dense, depthwise):
        t.requires_grad_(requires_grad)
    return x, w, dense, depthwise, Ho


# Our op under a further CPU instruction set: method "involution_ext@<isa>".
ISA_METHOD = "involution_ext@"


def isa_of(method):
    return method[len(ISA_METHOD):] if method.startswith(ISA_METHOD) else None


def methods(x, w, dense, depthwise, stride, isas=()):
    p = K // 2
    ours = lambda: involution_ext.involution2d(x, w, stride, p, 1)  # noqa: E731
    out = {
        "involution_ext": ours,
        **{ISA_METHOD + isa: ours for isa in isas},
        "unfold": lambda: involution2d_unfold(x, w, stride, p, 1),
        "depthwise7x7": lambda: F.conv2d(x, depthwise, None, stride, p, 1, x.shape[1]),
        "dense3x3": lambda: F.conv2d(x, dense, None, stride, 1),
    }
    if x.is_cuda and per_element_baseline_available():
        from cuda_baseline import involution2d_per_element

        out["per_element"] = lambda: involution2d_per_element(x, w, stride, p, 1)
    return out


@functools.lru_cache(maxsize=None)
def per_element_baseline_available():
    """Builds the per-element CUDA baseline once; without it the benchmark runs on."""
    try:
        import cuda_baseline

        cuda_baseline._module()
        return True
    except Exception as e:  # noqa: BLE001 - any build failure: report and go on
        print(f"# per-element baseline unavailable: {str(e).strip().splitlines()[-1][:200]}")
        return False


def timed_call(fn, pass_, x, second_leaf):
    """The callable timed for one method and pass: the forward; the backward alone (both
    gradients, graph kept); or forward + backward."""
    if pass_ == "fwd":
        return fn
    y = fn()
    gy = torch.randn_like(y)
    if pass_ == "bwd":
        return lambda: torch.autograd.grad(y, (x, second_leaf), gy, retain_graph=True)

    def fwd_bwd(leaves=(x, second_leaf)):
        for t in leaves:
            t.grad = None
        fn().backward(gy)

    return fwd_bwd


def run(args, result):
    """Measures every configuration into `result` (copy bandwidth, batches, then a Row
    appended to result["rows"] as each completes, so an interrupted run keeps its rows)."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")] if args.batch else ([8] if device.type == "cpu" else [8, 32, 64])
    if args.dtypes:
        dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    else:
        dtypes = [torch.float32] if args.quick else [torch.float32, torch.bfloat16]
        if device.type == "cuda" and not args.quick:
            dtypes.append(torch.float16)
    passes = args.passes.split(",") if args.passes else (
        ["fwd", "bwd", "fwd+bwd"] if device.type == "cuda" else ["fwd", "fwd+bwd"])
    reps, budget = (3, 0.3) if args.quick else (7, 1.5)
    if args.budget:
        budget = args.budget
    result["batches"] = batches
    if device.type != "cpu" or args.isas == "none":
        isas = []
    elif args.isas:
        isas = args.isas.split(",")
    else:
        isas = available_cpu_isas()[1:]
    result["isas"] = isas
    bandwidth = result["bandwidth"] = copy_bandwidth_gbps(device)
    evict = cache_evictor(device) if args.cold else None
    rows = result["rows"]
    for batch, dtype in [(b, d) for b in batches for d in dtypes]:
        for channels_last in (False, True):
            for C, H, stride in STAGES:
                shape = f"B={batch} C={C} H={H}" + (f" s={stride}" if stride > 1 else "")
                layout = "channels_last" if channels_last else "NCHW"
                for pass_ in passes:
                    grad = pass_ != "fwd"
                    x, w, dense, dw, Ho = make_inputs(C, H, stride, dtype, channels_last, device, batch, grad)
                    row = Row(shape, layout, str(dtype).replace("torch.", ""), pass_)
                    second = {"depthwise7x7": dw, "dense3x3": dense}
                    for name, fn in methods(x, w, dense, dw, stride, isas).items():
                        with torch.no_grad() if not grad else torch.enable_grad(), cpu_isa_selected(isa_of(name)):
                            call = timed_call(fn, pass_, x, second.get(name, w))
                            slow = name == "unfold"
                            t, spread = timeit(call, device, 3 if slow else reps, budget / 3 if slow else budget)
                            row.times_ms[name], row.spread_ms[name] = t, spread
                            row.peak_extra_mb[name] = peak_extra_mb(call, device)
                            if name == "involution_ext" and evict is not None:
                                # In a network, other layers have run since the op's operands
                                # were written; the copy bandwidth is measured from memory too.
                                row.cold_ms, _ = timeit(call, device, reps, budget, before=evict)
                    # Minimum traffic: fwd reads x, w and writes y; bwd reads gy, x, w and
                    # writes grad_input, grad_weight.
                    y_numel = batch * C * Ho * Ho
                    elems = {"fwd": x.numel() + w.numel() + y_numel,
                             "bwd": y_numel + 2 * x.numel() + 2 * w.numel()}.get(pass_)
                    if elems:
                        row.gbps = elems * x.element_size() / (row.times_ms["involution_ext"] * 1e-3) / 1e9
                    rows.append(row)
                    print_row(row, bandwidth)
    result["bandwidth_after"] = copy_bandwidth_gbps(device)


HEADER = (
    f"{'shape':<21}{'layout':<14}{'dtype':<9}{'pass':<8}{'ours ms':>9}{'unfold ms':>11}{'dw7x7 ms':>10}"
    f"{'3x3 ms':>9}{'x unfold':>10}{'/ 3x3':>8}{'/ dw7x7':>9}{'GB/s':>7}{'%copy':>7}{'MB ours':>9}{'MB unfold':>10}"
)


def copy_share(row: Row, ms: float, bandwidth: float) -> float:
    """Percent of the copy bandwidth our op's bytes (row.gbps at its warm time) reach in ms."""
    return 100 * row.gbps * row.times_ms["involution_ext"] / ms / bandwidth


def print_row(row: Row, bandwidth: float):
    if print_row.first:
        print(HEADER)
        print_row.first = False
    t = row.times_ms
    ours = t["involution_ext"]
    bw = f"{row.gbps:7.1f}{100 * row.gbps / bandwidth:7.0f}" if row.gbps else f"{'':7}{'':7}"
    print(
        f"{row.shape:<21}{row.layout:<14}{row.dtype:<9}{row.pass_:<8}{ours:9.2f}{t['unfold']:11.1f}"
        f"{t['depthwise7x7']:10.2f}{t['dense3x3']:9.2f}{t['unfold'] / ours:10.1f}{ours / t['dense3x3']:8.2f}"
        f"{ours / t['depthwise7x7']:9.2f}{bw}{row.peak_extra_mb['involution_ext']:9.1f}{row.peak_extra_mb['unfold']:10.1f}",
        flush=True,
    )
    if row.cold_ms:
        pct = f", {copy_share(row, row.cold_ms, bandwidth):.0f} % of copy" if row.gbps else ""
        print(f"{'':<21}{'':<14}{'':<9}{'  cold':<8}{row.cold_ms:9.2f}{'':11}{'':10}{'':9}{t['unfold'] / row.cold_ms:10.1f}"
              f"   ({row.cold_ms / ours:.2f}x the time with warm caches{pct})", flush=True)
    for name, ms in t.items():
        if isa_of(name):
            pct = f", {copy_share(row, ms, bandwidth):.0f} % of copy" if row.gbps else ""
            print(f"{'':<21}{'':<14}{'':<9}{'  ' + isa_of(name):<8}{ms:9.2f}{'':11}{'':10}{'':9}{t['unfold'] / ms:10.1f}"
                  f"   ({ms / ours:.2f}x the time of {involution_ext.cpu_isa()}{pct})", flush=True)


print_row.first = True


def summarize(rows, bandwidth, device_type):
    """The issues' targets, as ratios measured in this run (printed, never asserted)."""
    lines = []
    for r in rows:
        t = r.times_ms
        head = f"{r.shape:<21}{r.layout:<14}{r.dtype:<9}{r.pass_:<8}"
        if noisy(t["involution_ext"], r.spread_ms["involution_ext"]):
            head += f"[noisy: spread {100 * r.spread_ms['involution_ext'] / t['involution_ext']:.0f} % of median] "
        if device_type == "cuda":
            parts = [f"{versus(t['unfold'], t['involution_ext']):>12} than unfold (target >= 10x faster)"]
            if r.gbps:
                parts.append(f"{100 * r.gbps / bandwidth:4.0f}% of copy bandwidth (>= {70 if r.pass_ == 'fwd' else 50})")
            if "per_element" in t:
                parts.append(f"{versus(t['per_element'], t['involution_ext'])} than the per-element kernel"
                             + (" (target >= 3x faster)" if r.pass_ == "fwd+bwd" else ""))
            mem = r.peak_extra_mb
            if mem["involution_ext"] > 0:
                parts.append(f"{mem['unfold'] / mem['involution_ext']:5.1f}x less peak memory than unfold (>= 10)")
            lines.append(head + ", ".join(parts))
        elif r.dtype == "float32" and r.pass_ in ("fwd", "fwd+bwd"):
            others = "".join(f", {isa_of(n)} {t['unfold'] / ms:.1f}x" for n, ms in t.items() if isa_of(n))
            if r.pass_ == "fwd":
                cold = f", from cold caches {copy_share(r, r.cold_ms, bandwidth):.0f} %" if r.cold_ms else ""
                lines.append(f"{head}{versus(t['unfold'], t['involution_ext']):>12} than unfold{others} (target >= 40x faster), "
                             f"{t['involution_ext'] / t['dense3x3']:.2f}x the dense 3x3 conv's time (target <= 0.6), "
                             f"{100 * r.gbps / bandwidth:.0f} % of copy bandwidth{cold} (target >= 40 %)")
            else:
                lines.append(f"{head}{versus(t['unfold'], t['involution_ext']):>12} than unfold{others} (target >= 30x faster)")
    return lines


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r.dtype, r.pass_) for r in rows})
    ncols = 2
    nrows = (len(groups) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 4.2 * nrows), squeeze=False)
    names = [n for n in ["involution_ext", *(n for n in rows[0].times_ms if isa_of(n)), "per_element", "unfold",
                         "depthwise7x7", "dense3x3"] if n in rows[0].times_ms]
    for ax, (dtype, pass_) in zip(axes.flat, groups):
        sel = [r for r in rows if r.dtype == dtype and r.pass_ == pass_]
        labels = [f"{r.shape.split(' ', 1)[1]}\n{'CL' if r.layout == 'channels_last' else 'NCHW'}" for r in sel]
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            ax.bar([i + k * width for i in range(len(sel))], [r.times_ms[name] for r in sel], width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sel))], labels, fontsize=7, rotation=45, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"{dtype} {pass_}", fontsize=10)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", default="", help="comma list; default 8 on CPU, 8,32,64 on CUDA")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dtypes", default="", help="comma list, e.g. float32,float16 (default by device)")
    parser.add_argument("--passes", default="", help="comma list of fwd,bwd,fwd+bwd (default by device)")
    parser.add_argument("--budget", type=float, default=0.0, help="seconds of timing per method (default 1.5)")
    parser.add_argument("--isas", default="", help="CPU: comma list of further instruction sets to time our op with "
                        "(default: every other one this machine runs; none: only the active one)")
    parser.add_argument("--no-cold", dest="cold", action="store_false",
                        help="CPU: skip timing our op a second time from cold caches")
    parser.add_argument("--out", default="", help="result file stem (default bench_ops_<device>)")
    parser.add_argument("--results-dir", default="", help="folder for JSON + PNG (default build/benchmarks)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    info = machine(device)
    print(f"# {info['device']} | torch {info['torch']} | {info['threads']} threads | involution_ext {involution_ext.__version__}")
    result = {"rows": []}
    with until_stopped(info, result["rows"]):
        run(args, result)
    rows = result["rows"]
    if not rows:
        return
    bandwidth, batch = result["bandwidth"], result["batches"]
    extra = [r for r in rows if "per_element" in r.times_ms]
    for r in extra:
        t = r.times_ms
        print(f"{r.shape:<21}{r.layout:<14}{r.dtype:<9}{r.pass_:<8} per-element baseline {t['per_element']:.3f} ms: "
              f"ours {versus(t['per_element'], t['involution_ext'])}; peak MB ours {r.peak_extra_mb['involution_ext']:.1f} "
              f"vs unfold {r.peak_extra_mb['unfold']:.1f}")
    print(f"\ncopy bandwidth measured in this run: {bandwidth:.1f} GB/s (read + write)")
    report_disturbance(info, bandwidth, result.get("bandwidth_after", bandwidth))
    print("\n".join(summarize(rows, bandwidth, device.type)))
    payload = {"machine": info, "isas_compared": result["isas"], "batch": batch, "kernel": K, "group_channels": GROUP_CHANNELS,
               "copy_bandwidth_gbps": bandwidth, "rows": [asdict(r) for r in rows]}
    title = f"{info['device']} | B={','.join(map(str, batch))}, K={K}, {GROUP_CHANNELS} ch/group"
    write_results(args.results_dir, args.out or f"bench_ops_{device.type}", payload,
                  lambda path: plot(rows, path, title))


if __name__ == "__main__":
    main()

"""Draws the JSON written by involution_bench (benchmarks/cpp) as a PNG beside it: per dtype and
pass, involution vs dense 3x3 and depthwise 7x7 convolution at each shape (log scale), plus the
TorchScript end-to-end times if present.

    python tools/plot_cpp_bench.py benchmarks/results/cpp_bench_cpu.json [--out PNG]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    out = args.out or args.json.with_suffix(".png")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    groups = list(dict.fromkeys((r["dtype"], r["pass"]) for r in rows if r["pass"] != "bwd"))
    panels = len(groups) + (1 if data.get("models") else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    methods = ["involution", "dense3x3", "depthwise7x7"]
    for ax, (dtype, pass_) in zip(axes[0], groups):
        sel = [r for r in rows if r["dtype"] == dtype and r["pass"] == pass_]
        width = 0.8 / len(methods)
        for k, m in enumerate(methods):
            ax.bar([i + k * width for i in range(len(sel))], [r["times_ms"][m][0] for r in sel], width, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sel))], [r["shape"] for r in sel], fontsize=8, rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median, log)")
        ax.set_title(f"{dtype} {pass_}", fontsize=10)
        ax.legend(fontsize=8)
    if data.get("models"):
        ax = axes[0][-1]
        labels = [f"{m['name']}\nb{m['batch']}" for m in data["models"]]
        ax.bar(range(len(labels)), [m["median_ms"] for m in data["models"]])
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("ms (median)")
        ax.set_title("TorchScript end to end", fontsize=10)
    fig.suptitle(f"involution_bench | {data['device']} | batch {data['batch']} | {data['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

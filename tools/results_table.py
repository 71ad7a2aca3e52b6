"""Prints a bench_ops JSON result as the Markdown table the README shows.

    python tools/results_table.py benchmarks/results/bench_ops_cpu.json [--dtype float32]
        [--batch 32] [--layout NCHW]

CUDA results also get the per-element baseline kernel's time and our speed-up over it; CPU
results get our op's time from cold caches (its ratio to the warm time, and its share of the
copy bandwidth for the forward) and, when timed under further instruction sets (bench_ops
--isas), a column per set with its time and its ratio to the active set's.
"""

from __future__ import annotations

import argparse
import json


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, help="only this batch size (default: all measured)")
    parser.add_argument("--layout", choices=["NCHW", "channels_last"], help="only this layout (default: both)")
    args = parser.parse_args(argv)
    data = json.load(open(args.path))
    bw = data["copy_bandwidth_gbps"]
    print(f"Copy bandwidth in the same run: {bw:.1f} GB/s. {data['machine']['device']}, "
          f"{data['machine']['threads']} threads, torch {data['machine']['torch']}, dtype {args.dtype}.\n")
    rows = [r for r in data["rows"] if r["dtype"] == args.dtype
            and (args.batch is None or r["shape"].startswith(f"B={args.batch} "))
            and (args.layout is None or r["layout"] == args.layout)]
    per_element = any("per_element" in r["times_ms"] for r in rows)
    extra_head = " per-element ms | × faster than per-element |" if per_element else ""
    isas = data.get("isas_compared", [])
    active = data["machine"].get("cpu_isa", "ours")
    cold = any(r.get("cold_ms") for r in rows)
    extra_head += " cold caches ms (/ warm), % copy |" if cold else ""
    extra_head += "".join(f" {isa} ms (/ {active}) |" for isa in isas)
    print("| shape | layout | pass | ours ms | unfold ms | depthwise 7×7 ms | dense 3×3 ms | × faster than unfold "
          f"| ours / dense 3×3 | GB/s (% copy) | peak extra MB ours / unfold |{extra_head}")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if per_element else "")
          + "---:|" * (len(isas) + cold))
    for r in rows:
        t, m = r["times_ms"], r["peak_extra_mb"]
        ours = t["involution_ext"]
        gbps = f"{r['gbps']:.1f} ({100 * r['gbps'] / bw:.0f} %)" if r["gbps"] else ""
        extra = f" {t['per_element']:.3f} | {t['per_element'] / ours:.1f} |" if "per_element" in t else (" | |" if per_element else "")
        if cold:
            c = r.get("cold_ms")
            pct = f", {100 * r['gbps'] * ours / c / bw:.0f} %" if c and r["gbps"] else ""
            extra += f" {c:.2f} ({c / ours:.2f}){pct} |" if c else " |"
        for isa in isas:
            ms = t.get(f"involution_ext@{isa}")
            extra += f" {ms:.2f} ({ms / ours:.2f}) |" if ms else " |"
        print(f"| {r['shape']} | {r['layout']} | {r['pass_']} | {ours:.2f} | {t['unfold']:.1f} | {t['depthwise7x7']:.2f} "
              f"| {t['dense3x3']:.2f} | {t['unfold'] / ours:.1f} | {ours / t['dense3x3']:.2f} | {gbps} "
              f"| {m['involution_ext']:.1f} / {m['unfold']:.0f} |{extra}")


if __name__ == "__main__":
    main()

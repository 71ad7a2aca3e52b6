"""The benchmarks' verdicts: ratios phrased the right way round, throughput with its digits,
and no verdict from a disturbed or noisy run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_models import verdicts  # noqa: E402
from common import (bandwidth_drift, last_level_cache_bytes, median_and_spread, noisy, rate,  # noqa: E402
                    ratio_side_by_side, timeit, timeit_side_by_side, versus)

import torch  # noqa: E402


def test_versus_says_faster_or_slower():
    assert versus(10.0, 2.0) == "5.0x faster"
    assert versus(8.0, 10.0) == "1.2x slower"  # not "0.8x faster"
    assert versus(3.0, 3.0) == "1.0x faster"


def test_rate_keeps_the_digits_that_matter():
    assert rate(9291.4) == "9291" and rate(28.44) == "28.4" and rate(0.734) == "0.73"


def test_disturbance_checks():
    assert bandwidth_drift(30.0, 29.0) == ""
    assert "busy" in bandwidth_drift(30.0, 20.0)
    assert noisy(10.0, 2.5) and not noisy(10.0, 1.0)


def rows(rednet_ms, resnet_ms, unfold_ms, spread=0.1, setting="inference b1 NCHW"):
    def row(model, ms):
        return {"setting": setting, "model": model, "ms": ms, "spread_ms": spread, "ratio_to_resnet50": ms / resnet_ms}

    return [row("resnet50", resnet_ms), row("rednet50", rednet_ms), row("rednet50_unfold", unfold_ms)]


def test_verdicts():
    (line,) = verdicts(rows(50.0, 70.0, 40.0), disturbed=False)
    assert line == ("inference b1 NCHW: RedNet-50 takes 0.71x ResNet-50's time (1.4x faster) (target <= 0.75x: "
                    "meets); 1.2x slower than RedNet-50 with unfold aggregation")
    (line,) = verdicts(rows(90.0, 70.0, 300.0), disturbed=False)
    assert "takes 1.29x ResNet-50's time (1.3x slower)" in line and "MISSES" in line
    assert "3.3x faster than RedNet-50 with unfold" in line
    (line,) = verdicts(rows(90.0, 70.0, 300.0), disturbed=True)
    assert "no verdict: disturbed run" in line and "MISSES" not in line
    (line,) = verdicts(rows(90.0, 70.0, 300.0, spread=30.0), disturbed=False)
    assert "no verdict: noisy rednet50, resnet50" in line
    (line,) = verdicts(rows(60.0, 70.0, 300.0, setting="train step b16 NCHW"), disturbed=False)
    assert "(target <= 0.85x: MISSES)" in line  # 0.86x


def test_memory_verdict_is_exact():
    memory = [{"setting": "saved for backward b8", "model": m, "mib": mib, "ratio_to_resnet50": mib / 656}
              for m, mib in (("resnet50", 656), ("rednet50", 500), ("rednet50_unfused", 873))]
    (line,) = verdicts(memory, disturbed=True)
    assert line == ("saved for backward b8: RedNet-50 keeps 0.76x ResNet-50's activation memory (target <= 0.8x: "
                    "meets); 1.75x less than RedNet-50 with the unfused op")


def test_timeit_runs_before_ahead_of_every_timed_call():
    calls = []
    timeit(lambda: calls.append("fn"), torch.device("cpu"), 4, 0.0, before=lambda: calls.append("before"))
    assert calls[:2] == ["fn", "fn"]  # the warm-up, with nothing before it
    timed = calls[2:]
    assert len(timed) >= 8 and timed == ["before", "fn"] * (len(timed) // 2)


def test_side_by_side_timing_alternates_the_callables():
    calls = []
    times = timeit_side_by_side({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                torch.device("cpu"), 3, 0.0)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3  # two warm-ups each, then rounds in turn
    assert list(times) == ["a", "b"] and len(times["a"]) == len(times["b"]) == 3


def test_side_by_side_ratio_is_the_median_of_per_round_ratios():
    # Per-round ratios 0.25, 2/3, 1.5: their median, not the ratio of the medians (2 / 4).
    assert ratio_side_by_side([1.0, 2.0, 6.0], [4.0, 3.0, 4.0]) == 2.0 / 3.0
    assert median_and_spread([5.0, 1.0, 3.0, 2.0, 4.0]) == (3.0, 2.0)  # middle half: 2, 3, 4


def test_last_level_cache_is_the_largest_reported(monkeypatch, tmp_path):
    import glob

    for i, size in enumerate(["48K", "2048K", "32M"]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    monkeypatch.setattr(glob, "glob", lambda pattern: sorted(str(p) for p in tmp_path.glob("index*/size")))
    assert last_level_cache_bytes() == 32 * 2**20
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    assert last_level_cache_bytes() == 32 * 2**20  # nothing reported: the fallback


def test_results_table_shows_the_cold_cache_column(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import json

    import results_table

    times = {"involution_ext": 2.0, "unfold": 100.0, "depthwise7x7": 1.0, "dense3x3": 4.0}
    row = {"shape": "B=8 C=64 H=56", "layout": "NCHW", "dtype": "float32", "pass_": "fwd", "times_ms": times,
           "peak_extra_mb": {"involution_ext": 1.0, "unfold": 50.0}, "gbps": 10.0, "cold_ms": 4.0}
    data = {"copy_bandwidth_gbps": 25.0, "machine": {"device": "cpu", "threads": 2, "torch": "x"},
            "rows": [row, {**row, "pass_": "fwd+bwd", "gbps": 0.0, "cold_ms": 5.0}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    results_table.main([str(path)])
    out = capsys.readouterr().out
    assert "cold caches ms (/ warm), % copy" in out
    assert "| 4.00 (2.00), 20 % |" in out  # 10 GB/s warm is 40 % of 25; twice the time, 20 %
    assert "| 5.00 (2.50) |" in out

"""What the benchmarks share: timing, copy bandwidth, peak memory, the machine's description,
how ratios are phrased and when a run counts as disturbed, where results go, and stopping a
run early without losing what it measured. Imported by the benchmark scripts (their folder is
on sys.path when they run) and by tests/test_benchmarks.py."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import time
from pathlib import Path

import torch

import involution_ext

ROOT = Path(__file__).resolve().parent.parent
# Runs write here unless told otherwise; benchmarks/results/ holds the committed results,
# updated on purpose only (--results-dir benchmarks/results).
DEFAULT_RESULTS = ROOT / "build" / "benchmarks"


def results_dir(parser_value: str) -> Path:
    return Path(parser_value) if parser_value else DEFAULT_RESULTS


def write_results(parser_value: str, stem: str, payload: dict, draw) -> None:
    """Writes <stem>.json (the payload) and <stem>.png (``draw(path)``) into the results
    folder (``results_dir(parser_value)``) and says where."""
    folder = results_dir(parser_value)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    draw(folder / f"{stem}.png")
    print(f"wrote {folder / stem}.json and .png")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, min_reps, budget_s, before=None):
    """Median and spread (max - min of the middle half) in ms after a warm-up; `before`, if
    given, runs untimed ahead of every repetition."""
    return median_and_spread(timeit_side_by_side({"fn": fn}, device, min_reps, budget_s, before)["fn"])


def median_and_spread(times_ms):
    """Median and spread (max - min of the middle half) of repeated timings, in ms."""
    times = sorted(times_ms)
    q = len(times) // 4
    mid = times[q : len(times) - q] or times
    return statistics.median(times), mid[-1] - mid[0]


def timeit_side_by_side(fns, device, min_rounds, budget_s, before=None):
    """Times several callables side by side, so that their ratios are not biased by a machine
    load that drifts during the run: two warm-up calls of each, then rounds in which each runs
    once, in turn, until there are `min_rounds` rounds and `budget_s` seconds (all of them
    together) are spent, 200 rounds at most; `before`, if given, runs untimed ahead of every
    timed call. Returns {name: [ms in each round]}."""
    for fn in fns.values():
        fn()
        fn()
    sync(device)
    times = {name: [] for name in fns}
    start, rounds = time.perf_counter(), 0
    while rounds < min_rounds or (time.perf_counter() - start < budget_s and rounds < 200):
        for name, fn in fns.items():
            if before is not None:
                before()
                sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    return times


def ratio_side_by_side(times_ms, reference_ms):
    """The median over rounds of time / reference time, both from timeit_side_by_side."""
    return statistics.median(t / r for t, r in zip(times_ms, reference_ms))


# A measurement whose spread (middle half) exceeds this fraction of its median, or copy
# bandwidths before and after a run that differ by more, mark the run as disturbed: its
# ratios are printed but no verdict is drawn from them.
NOISE_LIMIT = 0.2


def versus(reference_ms, ours_ms):
    """Ours against a reference, phrased the right way round: '3.2x faster' or '1.4x slower'."""
    ratio = reference_ms / ours_ms
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def rate(per_second):
    """A throughput with the digits it needs: 9291, 28.4, 0.73."""
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.1f}" if per_second >= 10 else f"{per_second:.2f}"


def noisy(median_ms, spread_ms):
    return spread_ms > NOISE_LIMIT * median_ms


def bandwidth_drift(before_gbps, after_gbps):
    """The reason a run counts as disturbed by its copy-bandwidth checks, or ''."""
    change = abs(after_gbps - before_gbps) / max(before_gbps, after_gbps)
    if change > NOISE_LIMIT:
        return (f"copy bandwidth {before_gbps:.1f} GB/s before and {after_gbps:.1f} GB/s after the run "
                f"({100 * change:.0f} % apart): the machine was busy with something else")
    return ""


def report_disturbance(info, before_gbps, after_gbps):
    """Records in info["disturbed"] why the run counts as disturbed ('' if it does not) and
    says so; returns whether it was."""
    info["disturbed"] = bandwidth_drift(before_gbps, after_gbps)
    if info["disturbed"]:
        print(f"DISTURBED RUN: {info['disturbed']}. No verdict is drawn from the ratios below; "
              "run again on a quiet machine.")
    return bool(info["disturbed"])


def _rss_kb(field_name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name):
                return int(line.split()[1])
    return 0


def peak_extra_mb(fn, device):
    """Peak memory the call adds on top of what was resident before it, in MB."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:  # Linux: writing 5 to clear_refs resets the peak-RSS mark (VmHWM).
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed pages back, so reuse shows up
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    base = _rss_kb("VmRSS:")
    fn()
    return max(0, _rss_kb("VmHWM:") - base) / 1024


def last_level_cache_bytes() -> int:
    """The largest CPU cache Linux reports (sysfs), or 32 MiB when it reports none."""
    import glob

    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=32 * 2**20)


def cache_evictor(device):
    """A callable that pushes the op's operands out of every CPU cache (a read sweep over 4x
    the last-level cache: lines read stay clean, so no write-back lands in the next timing),
    for timings that start from memory the way a layer's inputs do when other layers ran
    since they were written. On CUDA devices, None (the L2 is not what limits there)."""
    if device.type != "cpu":
        return None
    sweep_bytes = 4 * last_level_cache_bytes()
    sweep = torch.ones(sweep_bytes // 4, dtype=torch.float32)
    return lambda: sweep.sum()


def copy_bandwidth_gbps(device, nbytes=256 * 2**20):
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t, _ = timeit(lambda: dst.copy_(src), device, 10, 1.0)
    return 2 * nbytes / (t * 1e-3) / 1e9  # read + write


def machine(device):
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name()
    else:
        model = platform.processor()
        try:
            with open("/proc/cpuinfo") as f:
                model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        info["device"] = f"{model}, {os.cpu_count()} logical cores"
        info["cpu_isa"] = involution_ext.cpu_isa()
    return info


def available_cpu_isas() -> list[str]:
    """The CPU instruction sets this build and this CPU can run, the active one first."""
    active = involution_ext.cpu_isa()
    found = [active]
    for name in ("avx512", "avx2", "default"):
        if name == active:
            continue
        try:
            involution_ext.cpu_isa(name)
            found.append(name)
        except RuntimeError:
            pass
    involution_ext.cpu_isa(active)
    return found


@contextlib.contextmanager
def cpu_isa_selected(name: str | None):
    """Runs the block with the CPU kernels of instruction set `name` (None: unchanged)."""
    if name is None:
        yield
        return
    previous = involution_ext.cpu_isa()
    involution_ext.cpu_isa(name)
    try:
        yield
    finally:
        involution_ext.cpu_isa(previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def until_stopped(info, rows):
    """Runs the measurements in the block; a time limit (timeout's SIGTERM) or Ctrl-C stops
    them early and the rows measured so far are kept. info["complete"] says which."""
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    info["complete"] = False
    try:
        yield
        info["complete"] = True
    except KeyboardInterrupt:
        print(f"\ninterrupted: writing the {len(rows)} rows measured so far")
    finally:
        signal.signal(signal.SIGTERM, previous)


def saved_activation_bytes(module, *inputs) -> int:
    """Bytes of the distinct storages autograd keeps for backward in one forward of `module`:
    activations only (the parameters, which autograd also references, exist either way)."""
    storages = {}
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*inputs)
    return sum(storages.values())

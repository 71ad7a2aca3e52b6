"""Reliability: inputs past 2^31 elements, concurrent callers, thread counts, and leaks."""

from __future__ import annotations

import ctypes
import gc
import threading

import pytest
import torch

import involution_ext  # noqa: F401
from helpers import Case, assert_close_scaled, involution_loops, run_in_fresh_process


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def settle() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_mb()


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- > 2^31 elements

HUGE_C, HUGE_H, HUGE_W = 32800, 256, 256  # 2,149,580,800 elements > 2^31 = 2,147,483,648


@pytest.mark.slow
@pytest.mark.skipif(available_mb() < 14000, reason="needs ~13 GB of free memory")
def test_input_over_2_31_elements_sampled_outputs():
    """fp16 input of 2.15e9 elements (4.3 GB), one group, 3x3 kernel: the forward and
    grad_weight index past 2^31; outputs are checked at sampled positions, including the
    last channel, against fp64 sums written out here."""
    assert HUGE_C * HUGE_H * HUGE_W > 2**31
    gen = torch.Generator().manual_seed(0)
    x = torch.empty(1, HUGE_C, HUGE_H, HUGE_W, dtype=torch.float16)
    # Values depend on the channel, so reading the wrong channel (32-bit wrap) shows.
    x.copy_((torch.arange(HUGE_C, dtype=torch.float32) % 61 - 30).div_(16).view(1, HUGE_C, 1, 1).expand_as(x))
    x[0, :, 100, 200] = 2.0  # one pixel differs in every channel
    w = torch.randn(1, 1, 3, 3, HUGE_H, HUGE_W, generator=gen).to(torch.float16)
    y = torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1])
    assert y.shape == x.shape
    rows = [0, 1, 100, 101, 255]
    cols = [0, 199, 200, 201, 255]
    for c in [0, 1, 12345, HUGE_C // 2 + 7, HUGE_C - 2, HUGE_C - 1]:
        for i in rows:
            for j in cols:
                expected = 0.0
                for u in range(3):
                    for v in range(3):
                        r, s = i - 1 + u, j - 1 + v
                        if 0 <= r < HUGE_H and 0 <= s < HUGE_W:
                            expected += float(w[0, 0, u, v, i, j]) * float(x[0, c, r, s])
                assert abs(float(y[0, c, i, j]) - expected) <= 2e-3 * (abs(expected) + 1), (c, i, j)
    # grad_weight sums over all 32800 channels. y / 64 serves as grad_output (scaled in place to
    # save 4 GB, and so the sums stay inside fp16's range of 65504).
    y.mul_(1 / 64)
    _, gw = torch.ops.involution.backward(y, x, w, [1, 1], [1, 1], [1, 1], [False, True])
    for i, j, u, v in [(0, 0, 1, 1), (100, 200, 0, 0), (255, 255, 2, 2), (101, 201, 0, 0)]:
        r, s = i - 1 + u, j - 1 + v
        if not (0 <= r < HUGE_H and 0 <= s < HUGE_W):
            continue
        expected = torch.dot(y[0, :, i, j].double(), x[0, :, r, s].double()).item()
        got = float(gw[0, 0, u, v, i, j])
        assert abs(got - expected) <= 2e-3 * abs(expected) + 1e-2, (i, j, u, v, got, expected)


# ---------------------------------------------------------------- concurrency and threads

CONCURRENT = [
    Case(B=2, C=32, G=2, H=17, W=19, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1)),
    Case(B=3, C=16, G=4, H=12, W=9, K=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    Case(B=1, C=48, G=3, H=20, W=20, K=(5, 5), stride=(2, 2), padding=(2, 2), dilation=(1, 1)),
]


def forward_backward(case, dtype, channels_last, seed):
    x, w = case.tensors(dtype, channels_last, seed=seed, requires_grad=True)
    y = torch.ops.involution.forward(x, w, *case.args())
    gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    return x, w, y.detach(), gx, gw


def test_concurrent_python_threads_give_correct_identical_results():
    jobs = [(case, dtype, cl, seed) for seed, case in enumerate(CONCURRENT)
            for dtype in (torch.float32, torch.bfloat16) for cl in (False, True)]
    expected = [forward_backward(*job) for job in jobs]
    results = {}
    errors = []

    def worker(tid):
        try:
            for rep in range(4):
                for k, job in enumerate(jobs):
                    if (k + tid + rep) % 2 == 0:
                        results[(tid, rep, k)] = forward_backward(*job)[2:]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 6 * 4 * len(jobs) // 2
    for (tid, rep, k), got in results.items():
        for a, b in zip(got, expected[k][2:]):
            assert torch.equal(a, b), (tid, rep, jobs[k][:3])
    for (case, dtype, cl, seed), (x, w, y, _, _) in zip(jobs, expected):
        ref = involution_loops(x.detach(), w.detach(), *case.args())
        scale = involution_loops(x.detach().abs(), w.detach().abs(), *case.args())
        assert_close_scaled(y, ref, scale, dtype, f"{case} {dtype}")


def test_thread_count_does_not_change_results():
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, before):
            torch.set_num_threads(threads)
            runs.append([forward_backward(case, torch.float32, cl, 3)[2:] for case in CONCURRENT for cl in (False, True)])
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert all(torch.equal(p, q) for p, q in zip(a, b))


# ---------------------------------------------------------------- leaks

LEAK_CALLS = 10_000
# Resident-memory growth allowed over 10k calls after a warm-up: allocator noise stays under a
# few MB, while leaking the error message (~200 B) or a call's tensors (~60 KB) would not.
FAILING_TOLERANCE_MB = 4
FORWARD_BACKWARD_TOLERANCE_MB = 16


def test_no_leak_over_10k_failing_calls():
    x = torch.randn(2, 8, 6, 6)
    bad_w = torch.randn(2, 2, 3, 3, 5, 6)  # wrong spatial size
    gy = torch.randn(2, 8, 6, 6)

    def failing_calls(n):
        for i in range(n):
            try:
                if i % 2:
                    torch.ops.involution.forward(x, bad_w, [1, 1], [1, 1], [1, 1])
                else:
                    torch.ops.involution.backward(gy, x, bad_w, [1, 1], [1, 1], [1, 1], [True, True])
            except RuntimeError:
                pass
            else:  # pragma: no cover
                raise AssertionError("bad call accepted")

    failing_calls(1000)  # warm-up: first-use allocations, error-message caches
    start = settle()
    failing_calls(LEAK_CALLS)
    growth = settle() - start
    assert growth < FAILING_TOLERANCE_MB, f"RSS grew {growth:.1f} MB over {LEAK_CALLS} failing calls"


def test_no_leak_over_10k_forward_backward_calls():
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, 12, 12, requires_grad=True)

    def calls(n):
        for _ in range(n):
            y = torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1])
            y.sum().backward()
        x.grad = None
        w.grad = None

    calls(1000)
    start = settle()
    calls(LEAK_CALLS)
    growth = settle() - start
    # Each call allocates ~60 KB (output + two gradients); leaking them would add ~600 MB.
    assert growth < FORWARD_BACKWARD_TOLERANCE_MB, f"RSS grew {growth:.1f} MB over {LEAK_CALLS} forward+backward calls"


GUARD_PAGE_SCRIPT = r"""
import ctypes, itertools, mmap
import torch, involution_ext

libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE
buffers = []

def guarded(shape, dtype, order=None):
    # A tensor whose last element ends right before a PROT_NONE page (``order``: its dims in
    # memory, outermost first).
    order = order or list(range(len(shape)))
    stored = [shape[d] for d in order]
    nbytes = torch.Size(stored).numel() * torch.empty(0, dtype=dtype).element_size()
    pages = nbytes // PAGE + 2
    buf = mmap.mmap(-1, pages * PAGE)
    buffers.append(buf)
    end = ctypes.addressof(ctypes.c_char.from_buffer(buf)) + (pages - 1) * PAGE
    assert libc.mprotect(end, PAGE, 0) == 0
    raw = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=(pages - 1) * PAGE - nbytes)
    t = raw.view(dtype).view(stored).permute([order.index(d) for d in range(len(shape))])
    t.copy_(torch.randn(shape))
    return t

op = torch.ops.involution
names = involution_ext.build_info()["cpu_isas"].split(",")
for isa, dtype, s, W, K, cl in itertools.product(
        names, (torch.float32, torch.float64, torch.float16, torch.bfloat16), (1, 2),
        (1, 5, 8, 17, 30), (3, 7), (False, True)):
    try:
        involution_ext.cpu_isa(isa)
    except RuntimeError:
        continue
    p, C, G, R, H = K // 2, 16, 1, 4, 6
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    order = [0, 2, 3, 1] if cl else None
    x = guarded((2, C, H, W), dtype, order)
    w = guarded((2, G, K, K, Ho, Wo), dtype)
    gy = guarded((2, C, Ho, Wo), dtype, order)
    h = guarded((2, R, Ho, Wo), dtype, order)
    span = guarded((G * K * K, R), dtype)
    bias = guarded((G * K * K,), dtype)
    geometry = ([s, s], [p, p], [1, 1])
    y = op.forward(x, w, *geometry)
    gx, gw = op.backward(gy, x, w, *geometry, [True, True])
    yf = op.fused_forward(x, h, span, bias, [K, K], *geometry)
    grads = op.fused_backward(gy, x, h, span, bias, [K, K], *geometry, [True, True, True, True])
    assert all(t.isfinite().all() for t in (y, gx, gw, yf, *grads)), (isa, dtype, s, W, K, cl)
print("ok")
"""


def test_no_reads_past_the_end_of_any_tensor(tmp_path):
    """Every CPU kernel build, dtype, stride, layout and row width, with input, weight,
    grad_output and the fused op's operands each ending right before an unreadable page: the
    kernels read whole vectors past row ends where the tensor continues, and a read past the
    tensor itself would fault."""
    run_in_fresh_process(GUARD_PAGE_SCRIPT, tmp_path)

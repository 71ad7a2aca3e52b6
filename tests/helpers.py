"""Shared test helpers: random op cases, the tolerance rule, the device axis and a fresh-process
runner. A normal module: pytest puts tests/ on sys.path (no __init__.py there), so test files
and conftest.py import it as ``from helpers import ...``."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

import involution_ext
from reference_loops import involution_loops, out_size

# Max error allowed relative to sum_{u,v} |w| |x| (the scale of each output), per dtype:
# input/output rounding of the dtype plus fp32 (fp64) accumulation.
REL_TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
KERNELS = [(1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (3, 5)]


@dataclass
class Case:
    B: int
    C: int
    G: int
    H: int
    W: int
    K: tuple
    stride: tuple
    padding: tuple
    dilation: tuple

    @property
    def out(self):
        return (
            out_size(self.H, self.K[0], self.stride[0], self.padding[0], self.dilation[0]),
            out_size(self.W, self.K[1], self.stride[1], self.padding[1], self.dilation[1]),
        )

    def tensors(self, dtype=torch.float64, channels_last=False, seed=0, requires_grad=False):
        gen = torch.Generator().manual_seed(seed)
        Ho, Wo = self.out
        x = torch.randn(self.B, self.C, self.H, self.W, generator=gen, dtype=torch.float64)
        w = torch.randn(self.B, self.G, *self.K, Ho, Wo, generator=gen, dtype=torch.float64)
        x, w = x.to(dtype), w.to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.requires_grad_(requires_grad), w.requires_grad_(requires_grad)

    def args(self):
        return list(self.stride), list(self.padding), list(self.dilation)


def random_case(rng: random.Random) -> Case:
    while True:
        G = rng.choice([1, 1, 2, 3, 4])
        cg = rng.choice([1, 2, 3, 4, 5, 8, 16, 17])
        K = rng.choice(KERNELS)
        if rng.random() < 0.2:
            K = K[::-1]
        case = Case(
            B=rng.randint(1, 3), C=G * cg, G=G, H=rng.randint(1, 19), W=rng.randint(1, 23), K=K,
            stride=(rng.randint(1, 3), rng.randint(1, 3)),
            padding=(rng.randint(0, 3), rng.randint(0, 3)),
            dilation=(rng.randint(1, 3), rng.randint(1, 3)),
        )
        if min(case.out) > 0:
            return case


def random_cases(n: int, seed: int):
    rng = random.Random(seed)
    return [random_case(rng) for _ in range(n)]


def assert_close_scaled(actual, expected, scale, dtype, what=""):
    """|actual - expected| <= REL_TOL[dtype] * (scale + 1e-3), elementwise (a NaN is off)."""
    err = (actual.double() - expected.double()).abs()
    bound = REL_TOL[dtype] * (scale.double() + 1e-3)
    bad = ~(err <= bound)  # NaN fails too
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {err.numel()} elements off; max err {err.max().item():.3e}, "
        f"max err/scale {(err / (scale.double() + 1e-3)).max().item():.3e}, tol {REL_TOL[dtype]:.1e}"
    )


def run_in_fresh_process(script: str, cwd) -> None:
    """Runs ``script`` in a new interpreter that sees only the installed packages (no
    PYTHONPATH), and asserts it exits cleanly after printing ``ok``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def available_isas():
    names = []
    for name in involution_ext.build_info()["cpu_isas"].split(","):
        try:
            involution_ext.cpu_isa(name)
            names.append(name)
        except RuntimeError:
            pass
    involution_ext.cpu_isa("auto")
    return names


ISAS = available_isas()
HAS_CUDA = torch.cuda.is_available() and involution_ext.build_info().get("cuda", False)
CUDA_SKIP_REASON = ("no CUDA device" if not torch.cuda.is_available()
                    else "the op library was built without CUDA kernels")
CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)]


def cpu_and_cuda():
    """The device axis (as torchvision's tests have it): ``cpu``, then ``cuda`` marked
    ``cuda`` and skipped with the reason where there is no GPU or no CUDA build."""
    return ("cpu", pytest.param("cuda", marks=CUDA_MARKS))


def to_device(device, *tensors):
    """Copies of ``tensors`` on ``device`` as fresh leaves with the same requires_grad."""
    return [t.detach().to(device).requires_grad_(t.requires_grad) for t in tensors]


def on_device(args, device):
    """An argument list with its tensors moved to ``device``; a meta tensor stays where it is
    (the bad-input tables use one as the device mismatch)."""
    return [a.to(device) if isinstance(a, torch.Tensor) and not a.is_meta else a for a in args]


def reference_grads(x, w, gy, case):
    """Gradients of the fp64 loop reference, and the same sums over absolute values (the
    scale of each element, for the tolerance). Fresh leaves: x.double() is x itself in fp64."""
    xr, wr = (t.detach().double().clone().requires_grad_() for t in (x, w))
    involution_loops(xr, wr, *case.args()).backward(gy.double())
    xa, wa = (t.detach().double().abs().requires_grad_() for t in (x, w))
    involution_loops(xa, wa, *case.args()).backward(gy.double().abs())
    return xr.grad, wr.grad, xa.grad, wa.grad


def check_forward(case: Case, dtype, channels_last, seed=0, device="cpu"):
    """involution::forward on ``device`` against the fp64 loop reference: value, dtype, layout."""
    x, w = case.tensors(dtype, channels_last, seed=seed)
    y = torch.ops.involution.forward(*to_device(device, x, w), *case.args())
    assert y.device.type == device
    y = y.cpu()
    ref = involution_loops(x, w, *case.args())
    scale = involution_loops(x.abs(), w.abs(), *case.args())
    assert y.shape == ref.shape and y.dtype == dtype
    want = torch.channels_last if channels_last and x.shape[1] > 1 else torch.contiguous_format
    assert y.is_contiguous(memory_format=want)
    assert_close_scaled(y, ref, scale, dtype, f"{case} {dtype} channels_last={channels_last}")


def pixel_major(w: torch.Tensor) -> torch.Tensor:
    """The weight laid out pixel-major, as a channels_last 1x1 conv's output viewed 6-D."""
    return w.permute(0, 4, 5, 1, 2, 3).contiguous().permute(0, 3, 4, 5, 1, 2)


def flanked_by_non_finite(w: torch.Tensor) -> torch.Tensor:
    """A copy of ``w`` whose rows lie in a wider buffer, each flanked by NaN and +-inf (what the
    kernels must never let reach a result when they read whole vectors past a row's ends)."""
    Wo = w.shape[-1]
    wide = torch.full((*w.shape[:-1], Wo + 40), float("nan"), dtype=w.dtype)
    wide[..., :20:2] = float("inf")
    wide[..., Wo + 21::2] = -float("inf")
    flanked = wide[..., 20:20 + Wo]
    flanked.copy_(w)
    return flanked


def check_backward(case: Case, dtype, channels_last, seed, device="cpu", pixel_major_weight=False):
    """Both gradients through autograd on ``device`` against the fp64 reference's; with
    pixel_major_weight, the weight (and so its gradient) is laid out pixel-major."""
    x, w = case.tensors(dtype, channels_last, seed=seed, requires_grad=True)
    if pixel_major_weight:
        w = pixel_major(w.detach()).requires_grad_()
    xd, wd = to_device(device, x, w)
    y = torch.ops.involution.forward(xd, wd, *case.args())
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    if channels_last:
        gy = gy.contiguous(memory_format=torch.channels_last)
    y.backward(gy.to(device))
    gx_ref, gw_ref, gx_scale, gw_scale = reference_grads(x, w, gy, case)
    assert xd.grad.dtype == dtype and wd.grad.dtype == dtype and xd.grad.device.type == device
    assert wd.grad.stride() == wd.stride(), "grad_weight keeps the weight's layout"
    assert_close_scaled(xd.grad.cpu(), gx_ref, gx_scale, dtype, f"grad_input {case} {dtype}")
    assert_close_scaled(wd.grad.cpu(), gw_ref, gw_scale, dtype, f"grad_weight {case} {dtype}")


SMALL = 64  # input size for the fast whole-model checks: feature maps 16, 8, 4, 2


REQUIRE_ECOSYSTEM = os.environ.get("INVOLUTION_EXT_REQUIRE_ECOSYSTEM") == "1"


def import_or_skip(module: str):
    """``pytest.importorskip``, except where INVOLUTION_EXT_REQUIRE_ECOSYSTEM=1 (CI's second
    environment, which installs timm and torchvision: there these tests must run, so a
    missing or broken module fails them)."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as e:  # torchvision's wheels fail to load beside the CPU-only torch
        if REQUIRE_ECOSYSTEM:
            raise
        pytest.skip(f"{module} does not import here ({type(e).__name__}: {str(e).splitlines()[0][:120]}); CI "
                    f"runs these tests in its CUDA-torch environment", allow_module_level=True)

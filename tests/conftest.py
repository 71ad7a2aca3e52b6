from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import involution_ext

sys.path.insert(0, str(Path(__file__).parent))
from reference_loops import involution_loops, out_size  # noqa: E402

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
    """|actual - expected| <= REL_TOL[dtype] * (scale + 1e-3), elementwise."""
    err = (actual.double() - expected.double()).abs()
    bound = REL_TOL[dtype] * (scale.double() + 1e-3)
    bad = err > bound
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


@pytest.fixture(params=ISAS)
def cpu_isa(request):
    """Runs a test with each CPU kernel build this machine supports."""
    involution_ext.cpu_isa(request.param)
    yield request.param
    involution_ext.cpu_isa("auto")


__all__ = ["Case", "random_cases", "involution_loops", "assert_close_scaled", "REL_TOL"]

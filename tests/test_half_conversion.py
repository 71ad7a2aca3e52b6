"""The CPU kernels convert fp16/bf16 to fp32 and back eight values at a time where the kernel
build has the instructions (csrc/cpu/kernel_common.h: convert_to_acc / convert_from_acc).
tests/cpp/half_conversion.cpp checks them bit for bit against c10's scalar conversions, built
with the flags of each kernel build this machine runs (as cmake/CpuIsa.cmake compiles them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import ISAS

ROOT = Path(__file__).resolve().parents[1]
TORCH_INCLUDE = Path(torch.utils.cmake_prefix_path).parents[1] / "include"
# (vector bytes, compiler flags) per kernel build, as in cmake/CpuIsa.cmake.
BUILDS = {
    "default": (16, []),
    "avx2": (32, ["-mavx2", "-mfma", "-mf16c"]),
    "avx512": (64, ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
                    "-mprefer-vector-width=512"]),
}


@pytest.mark.parametrize("isa", ISAS)
def test_vector_half_conversions_match_c10(isa, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    vec_bytes, flags = BUILDS[isa]
    exe = tmp_path / "half_conversion"
    subprocess.run([cxx, "-std=c++20", "-O2", f"-DINVOLUTION_ISA={isa}", f"-DINVOLUTION_VEC_BYTES={vec_bytes}",
                    *flags, f"-I{ROOT / 'csrc'}", f"-I{TORCH_INCLUDE}",
                    str(ROOT / "tests" / "cpp" / "half_conversion.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ok "), out.stdout[-3000:] + out.stderr[-3000:]

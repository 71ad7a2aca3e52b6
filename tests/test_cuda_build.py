"""CUDA code checked without a GPU: the kernels' index plan simulated on the CPU over
every block and thread; the kernels themselves (csrc/cuda/kernels.cuh) run on the CPU by
an emulated launch, one std::thread per CUDA thread, against an fp64 reference, under
AddressSanitizer + UndefinedBehaviorSanitizer and under ThreadSanitizer (data races
between a block's threads); and every .cu file compiled by nvcc against the installed
torch headers (a shim stands in for c10/cuda/impl/cuda_cmake_macros.h, which CPU wheels
lack)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import involution_ext

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CU_FILES = sorted(CSRC.rglob("*.cu"))


def test_cuda_index_plan_simulated_on_cpu(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the simulation")
    exe = tmp_path / "cuda_index_sim"
    subprocess.run([cxx, "-std=c++17", "-O2", f"-I{CSRC}", str(ROOT / "tests" / "cpp" / "cuda_index_sim.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe), "150"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok ")


TORCH_INCLUDE = Path(torch.utils.cmake_prefix_path).parents[1] / "include"
# Sanitizer runtimes that cannot start on this kernel (e.g. GCC 12's TSan with 32-bit mmap
# randomisation) say so with these; that is the machine, not the code.
SANITIZER_CANNOT_RUN = ("unexpected memory mapping", "Shadow memory range interleaves", "cannot find -l")


@pytest.mark.parametrize(
    "sanitizer, args",
    [("address,undefined", ["12"]), ("thread", ["6", "7", "quick"])],
    ids=["asan-ubsan", "tsan"],
)
def test_cuda_kernels_emulated_on_cpu(sanitizer, args, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the emulation")
    exe = tmp_path / "cuda_emulation"
    build = subprocess.run(
        [cxx, "-std=c++20", "-O1", "-g", "-pthread", f"-fsanitize={sanitizer}", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", f"-I{CSRC}", f"-I{TORCH_INCLUDE}", str(ROOT / "tests" / "cpp" / "cuda_emulation.cpp"),
         "-o", str(exe)],
        capture_output=True, text=True)
    if build.returncode != 0 and any(m in build.stderr for m in SANITIZER_CANNOT_RUN):
        pytest.skip(f"-fsanitize={sanitizer} unavailable: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr[-4000:]
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=0")
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=900, env=env)
    if out.returncode != 0 and any(m in out.stderr for m in SANITIZER_CANNOT_RUN):
        pytest.skip(f"-fsanitize={sanitizer} cannot run here: {out.stderr.strip()[-200:]}")
    assert out.returncode == 0 and out.stdout.startswith("ok "), (out.stdout + out.stderr)[-6000:]
    assert "WARNING" not in out.stderr, out.stderr[-6000:]


def _nvcc():
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    return str(nvcc) if nvcc and Path(nvcc).exists() else None


@pytest.mark.parametrize("cu", CU_FILES, ids=[str(p.relative_to(ROOT)) for p in CU_FILES])
def test_cu_file_compiles_with_nvcc(cu, tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    include = TORCH_INCLUDE
    flags = [f"-I{CSRC}", f"-I{include}", f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}"]
    if not (include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
        shim.mkdir(parents=True)
        (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        flags.insert(0, f"-I{tmp_path / 'shim'}")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [nvcc, "-std=c++20", "-arch=sm_90", "-O3", "--resource-usage", "--expt-relaxed-constexpr",
           f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *flags, "-c", str(cu), "-o", str(tmp_path / "out.o")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stderr[-4000:]}"
    assert (tmp_path / "out.o").stat().st_size > 0
    # ptxas's resource report: a kernel whose 16 per-channel accumulators fell out of
    # registers into local memory (e.g. indexed by a runtime value) is a silent slowdown.
    # A few spilled words are tolerated; a whole accumulator array (>= 64 bytes) is not.
    frames = re.findall(r"Function properties for (\S+)\s+(\d+) bytes stack frame", out.stdout + out.stderr)
    assert frames, "ptxas printed no resource usage"
    heavy = [(name, int(size)) for name, size in frames if int(size) >= 64]
    assert not heavy, f"kernels with large local-memory frames: {heavy}"


def test_build_reports_cuda_state():
    info = involution_ext.build_info()
    if torch.version.cuda is None:
        assert info["cuda"] is False and "CPU-only" in info["cuda_note"]
    assert isinstance(info["cuda_archs"], str)
    assert info["cuda_kernels_registered"] is info["cuda"]  # every op has a CUDA kernel, or none has
    if os.environ.get("INVOLUTION_EXT_EXPECT_CUDA_BUILD") == "1":  # CI's CUDA-torch environment
        assert info["cuda"] and info["cuda_archs"], info["cuda_note"]

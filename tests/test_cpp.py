"""The C++ side, built against the installed package through its CMake config
(find_package(involution_ext)): the benchmark binary and the LibTorch RedNet example. Their
results must equal the Python op's on the same seeded inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import involution_ext

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / f"cpp-tests-{Path(sys.prefix).name}"  # one per environment (each has its own torch)
pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


def cmake_build(source: Path, build: Path) -> None:
    prefix = subprocess.run([sys.executable, "-m", "involution_ext", "cmake-prefix"], capture_output=True, text=True,
                            check=True).stdout.strip()
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = subprocess.run(["cmake", "-S", str(source), "-B", str(build), *generator, f"-DCMAKE_PREFIX_PATH={prefix}",
                                "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-3000:]
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    built = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]


@pytest.fixture(scope="module")
def bench_binary():
    cmake_build(ROOT / "benchmarks" / "cpp", BUILD / "bench")
    return BUILD / "bench" / "involution_bench"


@pytest.fixture(scope="module")
def example_binary():
    cmake_build(ROOT / "examples" / "cpp", BUILD / "example")
    return BUILD / "example" / "rednet_infer"


def test_bench_result_equals_python_op(bench_binary, tmp_path):
    out = tmp_path / "check.bin"
    subprocess.run([str(bench_binary), "--check", str(out)], check=True, capture_output=True)
    torch.manual_seed(0)  # the binary's torch::manual_seed(0) + torch::randn draws these values
    x = torch.randn(2, 32, 14, 14, requires_grad=True)
    w = torch.randn(2, 2, 7, 7, 14, 14, requires_grad=True)
    y = involution_ext.involution2d(x, w, padding=3)
    gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    expected = torch.cat([t.detach().flatten() for t in (y, gx, gw)]).numpy()
    got = np.fromfile(out, dtype=np.float32)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # same kernels, same inputs: bitwise


def test_bench_tiny_table_and_json(bench_binary, tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([str(bench_binary), "--tiny", "--reps", "3", "--warmup", "1", "--batch", "2", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "dense3x3" in run.stdout and "fwd+bwd" in run.stdout
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 2 * 3  # 2 shapes x (fwd, bwd, fwd+bwd)
    assert all(r["times_ms"]["involution"][0] > 0 for r in data["rows"])
    if __import__("importlib").util.find_spec("matplotlib"):
        subprocess.run([sys.executable, str(ROOT / "tools" / "plot_cpp_bench.py"), str(out)], check=True,
                       capture_output=True)
        assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_bench_help_and_usage_errors(bench_binary):
    helped = subprocess.run([str(bench_binary), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: involution_bench")
    for option in ("--device", "--batch", "--threads", "--reps", "--warmup", "--dtypes", "--tiny", "--json", "--model",
                   "--model-batches", "--check", "--help"):
        assert re.search(rf"^\s+(-h, )?{option}\s", helped.stdout, re.MULTILINE), option
    for args, message in ((["--bogus"], "unknown option '--bogus'"), (["--batch", "x"], "--batch wants an integer"),
                          (["--reps"], "--reps needs a value"), (["--dtypes", "float8"], "unknown dtype 'float8'"),
                          (["--device", "tpu"], "--device wants cpu or cuda")):
        bad = subprocess.run([str(bench_binary), *args], capture_output=True, text=True)
        assert bad.returncode == 2, (args, bad.stderr)
        assert message in bad.stderr and "usage: involution_bench" in bad.stderr, bad.stderr
        assert "Exception raised from" not in bad.stderr  # no C++ stack trace


def test_cpp_torchscript_rednet_matches_python(example_binary, tmp_path):
    torch.manual_seed(0)
    model = involution_ext.rednet26(num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.0)
    path = tmp_path / "rednet26.pt"
    torch.jit.script(model).save(str(path))
    logits_path = tmp_path / "logits.bin"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([str(example_binary), str(path), "--size", "64", "--seed", "3", "--reps", "2",
                          "--logits", str(logits_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "top-5 classes:" in run.stdout and "latency batch 1" in run.stdout
    torch.manual_seed(3)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    got = torch.from_numpy(np.fromfile(logits_path, dtype=np.float32)).view(1, 10)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    missing = subprocess.run([str(example_binary), str(tmp_path / "nope.pt")], capture_output=True, text=True)
    assert missing.returncode == 1 and "rednet_infer:" in missing.stderr

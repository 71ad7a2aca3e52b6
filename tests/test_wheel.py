"""Distribution: the wheel (scripts/build_wheel.sh: pip wheel + torch pin + auditwheel)
installs into a fresh venv and works from outside the source tree; the torch-version guard."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import involution_ext
from involution_ext._library import _release, check_torch_version

ROOT = Path(__file__).resolve().parent.parent

SMOKE = textwrap.dedent("""
    import subprocess, sys, torch
    import involution_ext
    from pathlib import Path
    pkg = Path(involution_ext.__file__).parent
    assert str(pkg).startswith(sys.prefix), pkg  # the installed copy, not the source tree
    info = involution_ext.build_info()
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0], info

    # op vs an fp64 loop written out here
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    w = torch.randn(2, 2, 3, 3, 9, 7, dtype=torch.float64)
    y = involution_ext.involution2d(x, w, padding=1)
    ref = torch.zeros_like(y)
    xp = torch.nn.functional.pad(x, [1, 1, 1, 1])
    for u in range(3):
        for v in range(3):
            ref += w[:, :, u, v].repeat_interleave(4, dim=1) * xp[:, :, u:u + 9, v:v + 7]
    assert torch.allclose(y, ref, atol=1e-12), (y - ref).abs().max()

    model = involution_ext.rednet26(num_classes=10).eval()
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(img)
    assert out.shape == (1, 10)
    scripted = torch.jit.script(model)
    scripted.save("rednet26.pt")
    loaded = torch.jit.load("rednet26.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(img), out, atol=1e-5)

    config = pkg / "share" / "cmake" / "involution_ext" / "involution_extConfig.cmake"
    assert config.exists() and (pkg / "include" / "involution_ext" / "involution.h").exists()
    prefix = subprocess.run([sys.executable, "-m", "involution_ext", "cmake-prefix"], capture_output=True, text=True)
    assert prefix.stdout.strip() == str(pkg)
    print("smoke ok", involution_ext.__version__, info["torch_version"])
""")


def test_torch_version_guard_names_both_versions(monkeypatch):
    monkeypatch.delenv("INVOLUTION_EXT_SKIP_TORCH_CHECK", raising=False)
    check_torch_version("2.13.0+cpu", "2.13.1+cpu")  # same release: fine
    with pytest.raises(ImportError) as err:
        check_torch_version("2.11.0+cu130", "2.13.0+cpu")
    text = str(err.value)
    assert "built against torch 2.11.0+cu130" in text and "torch 2.13.0+cpu is installed" in text
    assert "torch==2.11.*" in text
    monkeypatch.setenv("INVOLUTION_EXT_SKIP_TORCH_CHECK", "1")
    check_torch_version("2.11.0", "2.13.0")


def test_one_version_source():
    """pyproject.toml's version is the package's, the op library's and the CMake package's."""
    declared = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert involution_ext.build_info()["version"] == declared
    assert involution_ext.__version__.split("+")[0] == declared


# Mangled names of libstdc++ internals (std::locale, std::codecvt, ostream's number
# insertion) that only a bundled copy of the C++ runtime would define.
CXX_RUNTIME_SYMBOLS = ("_ZNSt6locale", "_ZNKSt7codecvt", "_ZNSo9_M_insert")


def test_op_library_uses_the_shared_cxx_runtime():
    """The op library must import libstdc++ from the process (torch's), not carry a copy
    (-static-libstdc++): the two copies' locales mix, and an error message that formats a
    number comes out truncated or crashes the process. CMakeLists.txt drops the flag."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("needs nm (binutils)")
    library = involution_ext.build_info()["library"]
    listed = subprocess.run([nm, "-D", "--defined-only", library], capture_output=True, text=True, check=True)
    bundled = [line.split()[-1] for line in listed.stdout.splitlines()
               if line.split() and line.split()[-1].startswith(CXX_RUNTIME_SYMBOLS)]
    assert not bundled, f"{library} defines {len(bundled)} libstdc++ symbols, e.g. {bundled[:3]}"


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_works(tmp_path):
    dist = tmp_path / "dist"
    # The wheel of this environment, from its own build tree (see scripts/setup_cuda_torch.sh).
    env = dict(os.environ, VENV=sys.prefix)
    if involution_ext.build_info()["cuda"]:
        env["BUILD_DIR"] = str(ROOT / "build" / "cuda-torch")
    built = subprocess.run(["bash", str(ROOT / "scripts" / "build_wheel.sh"), str(dist)], capture_output=True,
                           text=True, cwd=ROOT, env=env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(dist.glob("involution_ext-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    release = ".".join(map(str, _release(torch.__version__)))
    variant = f"cu{torch.version.cuda.replace('.', '')}" if involution_ext.build_info()["cuda"] else "cpu"
    assert f"+torch{release}{variant}" in wheel.name and "manylinux" in wheel.name, wheel.name
    assert "-py3-none-" in wheel.name, f"one wheel for every Python version: {wheel.name}"
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        names = z.namelist()
    assert f"Requires-Dist: torch=={release}.*" in metadata
    assert "involution_ext/_build_facts.py" in names and not any("/_C." in n for n in names), names
    assert not any("libtorch" in n or "libc10" in n for n in names), "torch's libraries must not be vendored"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "INVOLUTION_EXT_LIBRARY")}
    if torch.version.cuda:
        # PyPI's CUDA torch takes 5.5 GB: a second copy is more than a CI disk may hold. The
        # fresh venv sees this environment's packages through a .pth line, which site appends
        # after the venv's own site-packages (so the wheel's copy of involution_ext is the one
        # imported, as SMOKE checks), and pip resolves the wheel's torch pin against it.
        site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        Path(site, "shared_torch.pth").write_text(str(Path(torch.__file__).parent.parent) + "\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              f"torch=={torch.__version__.split('+')[0]}", "numpy", str(wheel)],
                             capture_output=True, text=True, env=env)
    assert install.returncode == 0, install.stderr[-3000:]
    if torch.version.cuda:
        assert not Path(site, "torch").exists(), "pip installed a second torch instead of using the shared one"
    work = tmp_path / "elsewhere"
    work.mkdir()
    smoke = subprocess.run([str(py), "-c", SMOKE], capture_output=True, text=True, env=env, cwd=work)
    assert smoke.returncode == 0 and "smoke ok" in smoke.stdout, smoke.stdout + smoke.stderr[-3000:]


def test_pin_wheel_reads_the_build_facts_as_data(tmp_path):
    """scripts/pin_wheel.py takes the torch version from the wheel's _build_facts.py with
    ast.literal_eval: a wheel whose facts file would run code is read, never executed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pin_wheel", ROOT / "scripts" / "pin_wheel.py")
    pin_wheel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pin_wheel)
    marker = tmp_path / "ran"
    facts = ('import pathlib; pathlib.Path(%r).touch()\n'
             'BUILD_INFO = {"torch_version": "2.13.0+cpu", "torch_cuda_version": "", "cuda": False}\n' % str(marker))
    wheel = tmp_path / "involution_ext-0.1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("involution_ext/_build_facts.py", facts)
    assert pin_wheel.build_facts(wheel)["torch_version"] == "2.13.0+cpu"
    assert not marker.exists()

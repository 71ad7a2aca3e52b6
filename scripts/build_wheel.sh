#!/usr/bin/env bash
# Builds the wheel for the installed torch (after scripts/setup.sh): pip wheel (reusing the
# CMake build tree), pins it to this torch release (scripts/pin_wheel.py: version
# 0.1.0+torch2.13cpu, Requires-Dist torch==2.13.*), and repairs it with auditwheel to a
# manylinux tag. torch's own libraries (libtorch*, libc10*, its libgomp, the CUDA runtime) are
# excluded: they come from the torch wheel at run time, found through the op library's RPATH.
# Usage: bash scripts/build_wheel.sh [OUT_DIR=dist]. VENV and BUILD_DIR pick the environment
# and its build tree as for scripts/setup.sh (.venv-cuda-torch + build/cuda-torch give the
# +torch2.14cu130 wheel with the CUDA kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# shellcheck disable=SC1091
. "$VENV/bin/activate"
OUT=${1:-dist}
rm -rf "$OUT/raw" "$OUT/pinned"
mkdir -p "$OUT"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
build_dir=()
if [ -n "${BUILD_DIR:-}" ]; then
  build_dir=(-C "build-dir=$BUILD_DIR")
fi
python -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps "${build_dir[@]}" -w "$OUT/raw" .
python scripts/pin_wheel.py "$OUT"/raw/involution_ext-*.whl --out "$OUT/pinned" >/dev/null
EXCLUDES=()
for lib in libtorch.so libtorch_cpu.so libtorch_cuda.so libc10.so libc10_cuda.so libgomp.so.1 \
           'libcudart.so.*' 'libnvrtc.so.*' 'libnvToolsExt.so.*'; do
  EXCLUDES+=(--exclude "$lib")
done
auditwheel repair "${EXCLUDES[@]}" -w "$OUT" "$OUT"/pinned/involution_ext-*.whl >"$OUT/auditwheel.log" 2>&1 || { cat "$OUT/auditwheel.log"; exit 1; }
rm -rf "$OUT/raw" "$OUT/pinned"
ls "$OUT"/involution_ext-*.whl

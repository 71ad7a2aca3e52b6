#!/usr/bin/env bash
# Builds the wheel for the installed torch (after scripts/setup.sh): pip wheel (reusing the
# CMake build tree), pins it to this torch release (scripts/pin_wheel.py: version
# 0.1.0+torch2.13cpu, Requires-Dist torch==2.13.*), and repairs it with auditwheel to a
# manylinux tag. torch's own libraries (libtorch*, libc10*, its libgomp, the CUDA runtime) are
# excluded: they come from the torch wheel at run time, found through the op library's RPATH.
# Usage: bash scripts/build_wheel.sh [OUT_DIR=dist]
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${1:-dist}
rm -rf "$OUT/raw" "$OUT/pinned"
mkdir -p "$OUT"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
python -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps -w "$OUT/raw" .
python scripts/pin_wheel.py "$OUT"/raw/involution_ext-*.whl --out "$OUT/pinned" >/dev/null
EXCLUDES=()
for lib in libtorch.so libtorch_cpu.so libtorch_cuda.so libc10.so libc10_cuda.so libgomp.so.1 \
           'libcudart.so.*' 'libnvrtc.so.*' 'libnvToolsExt.so.*'; do
  EXCLUDES+=(--exclude "$lib")
done
auditwheel repair "${EXCLUDES[@]}" -w "$OUT" "$OUT"/pinned/involution_ext-*.whl >"$OUT/auditwheel.log" 2>&1 || { cat "$OUT/auditwheel.log"; exit 1; }
rm -rf "$OUT/raw" "$OUT/pinned"
ls "$OUT"/involution_ext-*.whl

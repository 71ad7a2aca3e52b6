#!/usr/bin/env bash
# Builds the op library with AddressSanitizer + UBSan (CMake option INVOLUTION_SANITIZE) into
# build/asan and runs the CPU test suite against it, the sanitizer runtimes preloaded into
# Python. Any report fails the run (UBSan halts on error; ASan aborts on the first error).
# Usage: bash scripts/sanitize.sh [extra pytest args]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
TORCH_PREFIX=$(python -c "import torch.utils; print(torch.utils.cmake_prefix_path)")
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINVOLUTION_SANITIZE=ON \
  -DINVOLUTION_CUDA=OFF -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" >/dev/null
cmake --build build/asan --target involution_ops
# detect_leaks=0: CPython and torch hold allocations until exit by design (leaks are checked
# by tests/test_reliability.py instead). Slow-marked tests (the 4 GB input) are skipped: ASan
# doubles their memory.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
INVOLUTION_EXT_LIBRARY="$PWD/build/asan/libinvolution_ops.so" \
  python -m pytest tests -q -p no:cacheprovider -m "not slow" \
  --ignore=tests/test_cuda_build.py --ignore=tests/test_onnx.py --ignore=tests/test_cpp.py \
  --ignore=tests/test_wheel.py "$@"

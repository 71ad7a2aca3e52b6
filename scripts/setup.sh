#!/usr/bin/env bash
# Creates the venv (once; .venv unless VENV says otherwise), installs the pinned build/test
# dependencies (requirements-dev.txt, or REQUIREMENTS) and builds and installs involution_ext
# into it. Idempotent: re-running rebuilds incrementally (scikit-build-core keeps its CMake
# build tree under build/, or BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
REQUIREMENTS=${REQUIREMENTS:-requirements-dev.txt}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
build_dir=()
if [ -n "${BUILD_DIR:-}" ]; then
  build_dir=(-C "build-dir=$BUILD_DIR")
fi
python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps "${build_dir[@]}" .
python -m involution_ext info

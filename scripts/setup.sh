#!/usr/bin/env bash
# Creates .venv (once), installs the pinned build/test dependencies and builds and
# installs involution_ext into it. Idempotent: re-running rebuilds incrementally
# (scikit-build-core keeps its CMake build tree under build/).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps .
python -m involution_ext info

#!/usr/bin/env bash
# The main job: set up, check the op against the reference, run RedNet-50, print the op and
# model benchmark tables (quick settings; drop --quick for the full runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m involution_ext demo
python benchmarks/bench_ops.py --quick --out bench_ops_demo
python benchmarks/bench_models.py --quick --out bench_models_demo

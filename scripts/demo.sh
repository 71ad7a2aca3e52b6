#!/usr/bin/env bash
# The main job: set up, check the op against the reference, print the op benchmark table
# (quick settings; `python benchmarks/bench_ops.py` for the full run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m involution_ext demo
python benchmarks/bench_ops.py --quick --out bench_ops_demo

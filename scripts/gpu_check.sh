#!/usr/bin/env bash
# Checks the CUDA build on a machine with a GPU (CI has none: there the CUDA code is checked
# by compilation, index simulation and CPU emulation, see docs/design.md). Two stages, each
# under 10 minutes:
#
#   bash scripts/gpu_check.sh test    # build, CUDA test suite, the op benchmark
#                                     # (bench_ops --device cuda), compute-sanitizer memcheck
#                                     # (unfused and fused kernels)
#   bash scripts/gpu_check.sh more    # racecheck, model benchmark + training throughput
#                                     # (fp16 autocast), fused vs unfused Involution2d,
#                                     # the C++ benchmark's CUDA mode,
#                                     # an Nsight Compute profile of the kernels
#
# Results go to $OUT (or build/gpu-results when unset), at most 8 files per stage:
# gpu_<stage>.log plus the benchmarks' JSON/PNG. Every step has its own time limit and the
# stage stops starting steps once its deadline (STAGE_SECONDS, default 540 for test and 300
# for more: with a machine's start, both fit a 15-minute lease) is near, so a slow step
# still leaves the others' results; a benchmark stopped by its limit writes the rows it
# measured (marked "complete": false). Steps run most important first. Python packages
# missing on the machine can come as wheels in .whl/ (installed into /tmp/site first).
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-test}
out=${OUT:-build/gpu-results}
mkdir -p "$out"
exec > >(tee "$out/gpu_$stage.log") 2>&1
default_seconds=540
[ "$stage" = more ] && default_seconds=300
deadline=$((SECONDS + ${STAGE_SECONDS:-$default_seconds}))
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # H100/H200: one target builds fastest
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
PY=${PYTHON:-python3}
command -v nvcc >/dev/null || export PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH"
# torch.utils.cpp_extension (the benchmark's per-element baseline) links the CUDA runtime
# from CUDA_HOME; without it, it guesses from nvcc's folder, which a wrapper defeats.
[ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda/lib64 ] && export CUDA_HOME=/usr/local/cuda
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi

status=()
# step NAME LIMIT_S COMMAND...: runs COMMAND with the smaller of LIMIT_S and the time left.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS))
  if ((left < 20)); then
    status+=("$name: skipped (stage deadline)")
    return
  fi
  ((limit > left)) && limit=$left
  echo
  echo "=== $name (limit ${limit}s) $(date +%T)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  status+=("$name: rc=$rc in $((SECONDS - t0))s")
}

copy_results() {  # benchmark outputs into $out
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$out/"; done
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
env | grep -E '^(CFLAGS|CXXFLAGS|LDFLAGS|CUDAFLAGS|TORCH_CUDA_ARCH_LIST|CUDA_HOME)=' || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

# The build is reused by the second stage when the machine is still the same.
if ! $PY -c "import involution_ext, sys; sys.exit(0 if involution_ext.build_info()['cuda'] else 1)" 2>/dev/null; then
  step build 400 env INVOLUTION_EXT_CUDA=ON $PY -m pip install -q --no-build-isolation --no-deps \
    -C build-dir=build/gpu-{wheel_tag} .
fi
(cd /tmp && $PY -m involution_ext info)

case $stage in
test)
  # The benchmark's per-element baseline kernel compiles at first use (about a minute):
  # build it beside the tests.
  (cd benchmarks && $PY -c "import cuda_baseline; cuda_baseline._module()" >/tmp/baseline_build.txt 2>&1) &
  baseline_build=$!
  # The error tests format numbers into messages, which breaks when the build bundles its own
  # libstdc++ (flags such as -static-libstdc++ from the environment); the wheel test checks it.
  # -m cuda: the CUDA side of every device-parametrised test plus tests/test_cuda_only.py.
  step cuda-tests 240 $PY -m pytest -q -p no:cacheprovider --maxfail=20 -rs -m cuda tests \
    tests/test_wheel.py::test_op_library_uses_the_shared_cxx_runtime
  wait $baseline_build || echo "per-element baseline did not build: $(tail -5 /tmp/baseline_build.txt)"
  step bench-ops 200 $PY benchmarks/bench_ops.py --device cuda --dtypes float32,float16 --budget 0.1
  copy_results build/benchmarks/bench_ops_cuda.json build/benchmarks/bench_ops_cuda.png
  step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    $PY -m pytest -q -p no:cacheprovider -x tests/test_cuda_only.py::test_special_paths \
    "tests/test_op_correctness.py::test_forward_random_shapes[0-cuda]" \
    "tests/test_autograd.py::test_backward_random_shapes[1-cuda]" \
    "tests/test_fused.py::test_fused_rednet_shapes[cuda]" "tests/test_fused.py::test_fused_random_shapes[1-cuda]"
  ;;
more)
  step racecheck 70 compute-sanitizer --tool racecheck --error-exitcode 9 --print-limit 20 \
    $PY -m pytest -q -p no:cacheprovider -x tests/test_cuda_only.py::test_special_paths \
    "tests/test_fused.py::test_fused_rednet_shapes[cuda]"
  step bench-models 100 $PY benchmarks/bench_models.py --device cuda --amp fp16 --budget 0.5 \
    --models rednet26,rednet50,rednet50_unfold
  copy_results build/benchmarks/bench_models_cuda.json build/benchmarks/bench_models_cuda.png
  step bench-fused 60 $PY benchmarks/bench_fused.py --device cuda --quick --budget 0.2
  copy_results build/benchmarks/bench_fused_cuda.json build/benchmarks/bench_fused_cuda.png
  step train 50 $PY -m involution_ext.apps.train --amp fp16 --channels-last --epochs 3 --batch-size 128 \
    --out /tmp/gpu-train --no-progress --no-plot
  [ -f /tmp/gpu-train/log.csv ] && cat /tmp/gpu-train/log.csv
  prefix="$($PY -m involution_ext cmake-prefix)"
  # torch's CMake config finds the CUDA toolkit beside the nvcc on PATH unless told.
  toolkit=${CUDA_HOME:+-DCUDA_TOOLKIT_ROOT_DIR=$CUDA_HOME}
  step cpp-bench-build 120 bash -c "cmake -S benchmarks/cpp -B build/gpu-cpp -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH='$prefix' $toolkit >/dev/null && cmake --build build/gpu-cpp"
  step cpp-bench 120 build/gpu-cpp/involution_bench --device cuda --json "$out/cpp_bench_cuda.json"
  step profile 90 bash -c "ncu --set full -k regex:'gather|grad_weight|span_grads' -c 6 $PY benchmarks/profile_cuda.py \
    >'$out/ncu_cuda_fwd_bwd.txt' 2>&1"
  ;;
*)
  echo "unknown stage '$stage' (test or more)"
  exit 2
  ;;
esac

echo
echo "=== summary ($stage, ${SECONDS}s)"
printf '%s\n' "${status[@]}"

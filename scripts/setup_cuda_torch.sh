#!/usr/bin/env bash
# The second environment, .venv-cuda-torch: PyPI's default torch (the CUDA build, which also
# runs on a CPU), torchvision and timm (requirements-cuda-torch.txt), and involution_ext built
# with its CUDA kernels (nvcc needed; one architecture, TORCH_CUDA_ARCH_LIST, default 9.0, to
# keep the build short). This is what most users run, and the only torch beside which
# torchvision's and timm's wheels load. Fails if the CUDA kernels are not built and registered.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=.venv-cuda-torch REQUIREMENTS=requirements-cuda-torch.txt BUILD_DIR=build/cuda-torch
export INVOLUTION_EXT_CUDA=ON TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
bash scripts/setup.sh
.venv-cuda-torch/bin/python -c "
import involution_ext
info = involution_ext.build_info()
assert info['cuda'] and info['cuda_kernels_registered'], info
print('CUDA kernels registered:', info['cuda_note'])"

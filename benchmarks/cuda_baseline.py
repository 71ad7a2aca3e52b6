"""Per-element CUDA baseline for the GPU benchmark (not shipped in the package): one
thread per output element, every weight and input read from global memory by every
thread that needs it — the approach of the official CuPy kernels. Compiled at first
use with torch.utils.cpp_extension.load_inline (needs nvcc and a CUDA build of torch)."""

from __future__ import annotations

import functools

import torch

_CUDA_SRC = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>

template <typename T>
__global__ void fwd(const T* x, const T* w, T* y, int B, int C, int G, int H, int W, int K,
                    int Ho, int Wo, int s, int p, int d, long n) {
  long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (idx >= n) return;
  int j = idx % Wo, i = (idx / Wo) % Ho, c = (idx / ((long)Wo * Ho)) % C, b = idx / ((long)Wo * Ho * C);
  int g = c / (C / G);
  float acc = 0.f;
  for (int u = 0; u < K; ++u)
    for (int v = 0; v < K; ++v) {
      int h = i * s - p + u * d, ww = j * s - p + v * d;
      if (h >= 0 && h < H && ww >= 0 && ww < W)
        acc += (float)w[((((long)b * G + g) * K + u) * K + v) * Ho * Wo + i * Wo + j] *
               (float)x[(((long)b * C + c) * H + h) * W + ww];
    }
  y[idx] = (T)acc;
}

template <typename T>
__global__ void grad_in(const T* gy, const T* w, T* gx, int B, int C, int G, int H, int W, int K,
                        int Ho, int Wo, int s, int p, int d, long n) {
  long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (idx >= n) return;
  int ww = idx % W, h = (idx / W) % H, c = (idx / ((long)W * H)) % C, b = idx / ((long)W * H * C);
  int g = c / (C / G);
  float acc = 0.f;
  for (int u = 0; u < K; ++u)
    for (int v = 0; v < K; ++v) {
      int nh = h + p - u * d, nw = ww + p - v * d;
      if (nh < 0 || nw < 0 || nh % s || nw % s) continue;
      int i = nh / s, j = nw / s;
      if (i >= Ho || j >= Wo) continue;
      acc += (float)w[((((long)b * G + g) * K + u) * K + v) * Ho * Wo + i * Wo + j] *
             (float)gy[(((long)b * C + c) * Ho + i) * Wo + j];
    }
  gx[idx] = (T)acc;
}

template <typename T>
__global__ void grad_w(const T* gy, const T* x, T* gw, int B, int C, int G, int H, int W, int K,
                       int Ho, int Wo, int s, int p, int d, long n) {
  long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (idx >= n) return;
  int j = idx % Wo, i = (idx / Wo) % Ho, v = (idx / ((long)Wo * Ho)) % K;
  int u = (idx / ((long)Wo * Ho * K)) % K, g = (idx / ((long)Wo * Ho * K * K)) % G;
  int b = idx / ((long)Wo * Ho * K * K * G);
  int h = i * s - p + u * d, ww = j * s - p + v * d, cg = C / G;
  float acc = 0.f;
  if (h >= 0 && h < H && ww >= 0 && ww < W)
    for (int c = g * cg; c < (g + 1) * cg; ++c)
      acc += (float)gy[(((long)b * C + c) * Ho + i) * Wo + j] * (float)x[(((long)b * C + c) * H + h) * W + ww];
  gw[idx] = (T)acc;
}

#define LAUNCH(kernel, out, a, b2)                                                       \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), #kernel, [&] { \
    long n = out.numel();                                                                \
    kernel<scalar_t><<<(n + 255) / 256, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(     \
        a.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, G, H, \
        W, K, Ho, Wo, s, p, d, n);                                                       \
  })

torch::Tensor forward(torch::Tensor x, torch::Tensor w, int64_t s, int64_t p, int64_t d) {
  x = x.contiguous(); w = w.contiguous();
  int B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), G = w.size(1), K = w.size(2), Ho = w.size(4), Wo = w.size(5);
  auto y = torch::empty({B, C, Ho, Wo}, x.options());
  LAUNCH(fwd, y, x, w);
  return y;
}

std::vector<torch::Tensor> backward(torch::Tensor gy, torch::Tensor x, torch::Tensor w, int64_t s, int64_t p, int64_t d) {
  gy = gy.contiguous(); x = x.contiguous(); w = w.contiguous();
  int B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), G = w.size(1), K = w.size(2), Ho = w.size(4), Wo = w.size(5);
  auto gx = torch::empty_like(x);
  auto gw = torch::empty_like(w);
  LAUNCH(grad_in, gx, gy, w);
  LAUNCH(grad_w, gw, gy, x);
  return {gx, gw};
}
"""

_CPP_SRC = r"""
#include <torch/extension.h>
torch::Tensor forward(torch::Tensor x, torch::Tensor w, int64_t s, int64_t p, int64_t d);
std::vector<torch::Tensor> backward(torch::Tensor gy, torch::Tensor x, torch::Tensor w, int64_t s, int64_t p, int64_t d);
"""


@functools.lru_cache(maxsize=None)
def _module():
    from torch.utils.cpp_extension import load_inline

    return load_inline("involution_per_element_baseline", _CPP_SRC, cuda_sources=_CUDA_SRC,
                       functions=["forward", "backward"], verbose=False)


class _PerElement(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, s, p, d):
        ctx.save_for_backward(x, w)
        ctx.args = (s, p, d)
        return _module().forward(x, w, s, p, d)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx, gw = _module().backward(gy, x, w, *ctx.args)
        return gx, gw, None, None, None


def involution2d_per_element(x, w, stride=1, padding=0, dilation=1):
    """Square kernels, equal stride/padding/dilation in both dimensions."""
    return _PerElement.apply(x, w, stride, padding, dilation)

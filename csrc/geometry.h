// The sizes and hyper-parameters of one involution call and the integer helpers every
// backend and test driver shares. Torch-free and usable in CUDA device code, so the shape
// check, the CPU kernels, the CUDA tiling (cuda/tiling.h) and the C++ test drivers speak of
// one Geometry. (tests/reference_loops.py keeps its own output-size formula on purpose: an
// independent check.)
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define INVOLUTION_HD __host__ __device__ __forceinline__
#else
#define INVOLUTION_HD inline
#endif

namespace involution {

// Input (B, C, H, W), kernel window Kh x Kw, output Ho x Wo, G groups; all int64.
struct Geometry {
  int64_t B, C, G, H, W;
  int64_t Kh, Kw, Ho, Wo;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  INVOLUTION_HD int64_t channels_per_group() const { return C / G; }
  INVOLUTION_HD int64_t taps() const { return Kh * Kw; }
};

INVOLUTION_HD int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
INVOLUTION_HD int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }  // b > 0

// Output extent of a convolution-style window; may be <= 0 for impossible shapes.
INVOLUTION_HD int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                       int64_t dil) {
  return (in + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
}

}  // namespace involution

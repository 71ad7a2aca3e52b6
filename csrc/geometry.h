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

// Input (B, C, H, W), kernel window Kh x Kw, output Ho x Wo, G groups. Index type I:
// int64 everywhere on the host; the CUDA kernels run on an int32 copy (as<int32_t>()) when
// every offset of a call fits (cuda/tiling.h: int32_indexing_fits), since 64-bit integer
// multiplies and divisions cost a GPU several instructions each.
template <typename I>
struct BasicGeometry {
  I B, C, G, H, W;
  I Kh, Kw, Ho, Wo;
  I stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  INVOLUTION_HD I channels_per_group() const { return C / G; }
  INVOLUTION_HD I taps() const { return Kh * Kw; }
  // Input rows (columns) that n consecutive output rows (columns) read, halo included.
  INVOLUTION_HD I input_rows(I n) const { return (n - 1) * stride_h + (Kh - 1) * dil_h + 1; }
  INVOLUTION_HD I input_cols(I n) const { return (n - 1) * stride_w + (Kw - 1) * dil_w + 1; }
  template <typename J>
  INVOLUTION_HD BasicGeometry<J> as() const {
    return {J(B), J(C), J(G), J(H), J(W), J(Kh), J(Kw), J(Ho), J(Wo),
            J(stride_h), J(stride_w), J(pad_h), J(pad_w), J(dil_h), J(dil_w)};
  }
};
using Geometry = BasicGeometry<int64_t>;

// Not deduced from (std::type_identity, C++20): the divisor's type follows the dividend's.
template <typename T>
struct same_type {
  using type = T;
};

template <typename I>
INVOLUTION_HD I floor_div(I a, typename same_type<I>::type b) {  // b > 0
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
template <typename I>
INVOLUTION_HD I ceil_div(I a, typename same_type<I>::type b) { return -floor_div(-a, b); }

// Output extent of a convolution-style window; may be <= 0 for impossible shapes.
INVOLUTION_HD int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                       int64_t dil) {
  return (in + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
}

}  // namespace involution

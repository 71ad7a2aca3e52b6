// One argument check shared by every backend (and mirrored by the Python fake kernel
// in python/involution_ext/_meta.py), so errors read the same everywhere.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>

namespace involution {

// Sizes and hyper-parameters of one involution call, all as int64.
struct Geometry {
  int64_t B, C, G, H, W;
  int64_t Kh, Kw, Ho, Wo;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t channels_per_group() const { return C / G; }
};

// Output extent of a convolution-style window; may be <= 0 for impossible shapes.
inline int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                int64_t dil) {
  return (in + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
}

// Validates input/weight/hyper-parameters and returns the geometry. `op` names the
// calling op in messages.
Geometry check_forward_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation);

// As above, plus grad_output must be (B, C, Ho, Wo) with the same dtype and device.
Geometry check_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& weight, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation);

}  // namespace involution

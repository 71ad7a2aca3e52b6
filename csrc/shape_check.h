// One argument check shared by every backend (and mirrored by the Python fake kernel
// in python/involution_ext/_meta.py), so errors read the same everywhere.
#pragma once

#include "geometry.h"

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>

namespace involution {

// Validates input/weight/hyper-parameters and returns the geometry. `op` names the
// calling op in messages.
Geometry check_forward_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation);

// As above, plus grad_output must be (B, C, Ho, Wo) with the same dtype and device.
Geometry check_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& weight, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation);

// The geometry of a fused call (G, Kh, Kw from kernel_size and the span rows) plus the
// generator's hidden width R and the span rows G*Kh*Kw.
struct FusedGeometry {
  Geometry g;
  int64_t R, rows;
};

// Validates the arguments of involution::fused_forward (input, hidden, span_weight,
// span_bias, hyper-parameters); `op` names the calling op in messages.
FusedGeometry check_fused_args(const char* op, const at::Tensor& input, const at::Tensor& hidden,
                               const at::Tensor& span_weight,
                               const std::optional<at::Tensor>& span_bias,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation);

// As above for involution::fused_backward, plus grad_output (B, C, Ho, Wo).
FusedGeometry check_fused_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& hidden, const at::Tensor& span_weight,
                                        const std::optional<at::Tensor>& span_bias,
                                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation);

}  // namespace involution

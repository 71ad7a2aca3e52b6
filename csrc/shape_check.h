// One argument check shared by every backend (and mirrored by the Python fake kernel
// in python/involution_ext/_meta.py), so errors read the same everywhere.
#pragma once

#include "geometry.h"

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

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

}  // namespace involution

// Host-side helpers shared by the CPU and CUDA backends: tensor -> raw view, and the
// output allocation (mirrored by the fake kernels in python/involution_ext/_meta.py).
#pragma once

#include "shape_check.h"
#include "views.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <array>
#include <tuple>

namespace involution {

template <typename T>
View4<T> view4(const at::Tensor& t) {
  return {static_cast<T*>(t.data_ptr()), {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}};
}
template <typename T>
View6<T> view6(const at::Tensor& t) {
  return {static_cast<T*>(t.data_ptr()),
          {t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4), t.stride(5)}};
}

// (B, C, Ho, Wo) in the input's memory format.
inline at::Tensor empty_output(const at::Tensor& input, const Geometry& g) {
  return at::empty({g.B, g.C, g.Ho, g.Wo},
                   input.options().memory_format(input.suggest_memory_format()));
}

// The gradients output_mask asks for (undefined otherwise): grad_input like the input's
// memory format, grad_weight with the weight's strides.
inline std::tuple<at::Tensor, at::Tensor> empty_grads(const at::Tensor& input,
                                                      const at::Tensor& weight,
                                                      std::array<bool, 2> output_mask) {
  at::Tensor grad_input, grad_weight;
  if (output_mask[0])
    grad_input = at::empty(input.sizes(),
                           input.options().memory_format(input.suggest_memory_format()));
  if (output_mask[1]) grad_weight = at::empty_like(weight);
  return {grad_input, grad_weight};
}

}  // namespace involution

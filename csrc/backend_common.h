// Host-side helpers shared by the CPU and CUDA backends: tensor -> raw view, and the
// output allocation (mirrored by the fake kernels in python/involution_ext/_meta.py).
#pragma once

#include "shape_check.h"
#include "views.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <ATen/ops/zeros_like.h>

#include <array>
#include <optional>
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

template <typename T>
SpanArgs<T> span_args(const FusedGeometry& f, const at::Tensor& hidden,
                      const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias) {
  const bool has_bias = span_bias.has_value() && span_bias->defined();
  return {view4<const T>(hidden),
          span_weight.const_data_ptr<T>(),
          span_weight.stride(0),
          span_weight.stride(1),
          has_bias ? span_bias->const_data_ptr<T>() : nullptr,
          has_bias ? span_bias->stride(0) : 0,
          f.R};
}

// The gradients of fused_backward that output_mask asks for (undefined otherwise, and
// grad_span_bias without a bias): grad_input and grad_hidden in their tensors' memory
// formats, the span gradients zero (their sums over an empty batch).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> empty_fused_grads(
    const at::Tensor& input, const at::Tensor& hidden, const at::Tensor& span_weight,
    const std::optional<at::Tensor>& span_bias, std::array<bool, 4> output_mask) {
  at::Tensor grad_input, grad_hidden, grad_span_weight, grad_span_bias;
  if (output_mask[0])
    grad_input = at::empty(input.sizes(),
                           input.options().memory_format(input.suggest_memory_format()));
  if (output_mask[1])
    grad_hidden = at::empty(hidden.sizes(),
                            hidden.options().memory_format(hidden.suggest_memory_format()));
  if (output_mask[2]) grad_span_weight = at::zeros_like(span_weight);
  if (output_mask[3] && span_bias.has_value() && span_bias->defined())
    grad_span_bias = at::zeros_like(*span_bias);
  return {grad_input, grad_hidden, grad_span_weight, grad_span_bias};
}

}  // namespace involution

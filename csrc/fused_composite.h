// The fused ops composed of ATen ops and the unfused involution ops (fused_composite.cpp):
// autograd's differentiable path for double backward.
#pragma once

#include "shape_check.h"

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace involution {

// The generated kernel tensor (B, G, Kh, Kw, Ho, Wo) = span_weight @ hidden + span_bias.
at::Tensor span_kernel(const FusedGeometry& f, const at::Tensor& hidden,
                       const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias);

at::Tensor fused_forward_composite(const at::Tensor& input, const at::Tensor& hidden,
                                   const at::Tensor& span_weight,
                                   const std::optional<at::Tensor>& span_bias,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward_composite(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& hidden,
    const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 4> output_mask);

}  // namespace involution

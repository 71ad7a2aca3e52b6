// Public C++ entry points of the involution op library. They call through the
// dispatcher, so autograd, autocast and every backend apply exactly as they do from
// Python's torch.ops.involution.*.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <array>
#include <optional>
#include <tuple>

namespace involution {

// Y[b,c,i,j] = sum_{u,v} weight[b, c/(C/G), u, v, i, j] * input[b, c, i*s-p+u*d, j*s-p+v*d]
// input (B, C, H, W); weight (B, G, Kh, Kw, Ho, Wo); returns (B, C, Ho, Wo) in the
// input's memory format.
at::Tensor forward(const at::Tensor& input, const at::Tensor& weight,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation);

// Gradients of forward(); output_mask = {want grad_input, want grad_weight}. A gradient
// that is not asked for is returned undefined.
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight, at::IntArrayRef stride,
                                            at::IntArrayRef padding, at::IntArrayRef dilation,
                                            std::array<bool, 2> output_mask);

// Involution with the kernel generated inside the op (RedNet's "span" 1x1 conv fused in):
// exactly forward(input, kernel) with
//   kernel[b, g, u, v, i, j] = span_bias[(g*Kh + u)*Kw + v]
//                              + sum_r span_weight[(g*Kh + u)*Kw + v, r] * hidden[b, r, i, j],
// but the (B, G, Kh, Kw, Ho, Wo) kernel tensor is never stored. input (B, C, H, W); hidden
// (B, R, Ho, Wo): the generator's features before the span conv; span_weight (G*Kh*Kw, R);
// span_bias (G*Kh*Kw) or undefined. Returns (B, C, Ho, Wo) in the input's memory format.
at::Tensor fused_forward(const at::Tensor& input, const at::Tensor& hidden,
                         const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation);

// Gradients of fused_forward(): output_mask = {grad_input, grad_hidden, grad_span_weight,
// grad_span_bias}; a gradient not asked for (or grad_span_bias without a bias) is undefined.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& hidden,
    const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 4> output_mask);

// Version of the op library (e.g. "0.1.0"). Calling anything here also makes the linker keep
// the library, whose load registers the ops for TorchScript models that use them.
const char* version();

}  // namespace involution

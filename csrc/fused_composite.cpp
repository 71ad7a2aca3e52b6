// involution::fused_forward / fused_backward composed of ATen ops and the unfused
// involution ops: the kernel tensor is formed with one matmul, used, and dropped at the end
// of the call. Autograd uses it for double backward, where it is differentiable (the fused
// kernels are not).
#include "fused_composite.h"

#include <involution_ext/involution.h>

#include <ATen/ops/add.h>
#include <ATen/ops/matmul.h>

namespace involution {

at::Tensor span_kernel(const FusedGeometry& f, const at::Tensor& hidden,
                       const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias) {
  const Geometry& g = f.g;
  // (rows, R) @ (B, R, Ho*Wo) -> (B, rows, Ho*Wo); rows are (group, kh, kw).
  at::Tensor k = at::matmul(span_weight, hidden.reshape({g.B, f.R, g.Ho * g.Wo}));
  if (span_bias.has_value() && span_bias->defined()) k = at::add(k, span_bias->unsqueeze(-1));
  return k.view({g.B, g.G, g.Kh, g.Kw, g.Ho, g.Wo});
}

at::Tensor fused_forward_composite(const at::Tensor& input, const at::Tensor& hidden,
                                   const at::Tensor& span_weight,
                                   const std::optional<at::Tensor>& span_bias,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation) {
  const FusedGeometry f = check_fused_args("involution::fused_forward", input, hidden,
                                           span_weight, span_bias, kernel_size, stride, padding,
                                           dilation);
  return involution::forward(input, span_kernel(f, hidden, span_weight, span_bias), stride,
                             padding, dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward_composite(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& hidden,
    const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 4> output_mask) {
  const FusedGeometry f = check_fused_backward_args(grad_output, input, hidden, span_weight,
                                                    span_bias, kernel_size, stride, padding,
                                                    dilation);
  const Geometry& g = f.g;
  const bool has_bias = span_bias.has_value() && span_bias->defined();
  const bool want_kernel_grad = output_mask[1] || output_mask[2] || (output_mask[3] && has_bias);
  const at::Tensor kernel = span_kernel(f, hidden, span_weight, span_bias);
  auto [grad_input, grad_kernel] = involution::backward(
      grad_output, input, kernel, stride, padding, dilation, {output_mask[0], want_kernel_grad});
  at::Tensor grad_hidden, grad_span_weight, grad_span_bias;
  if (want_kernel_grad) {
    const at::Tensor gk = grad_kernel.reshape({g.B, f.rows, g.Ho * g.Wo});
    if (output_mask[1])
      grad_hidden = at::matmul(span_weight.t(), gk)
                        .view({g.B, f.R, g.Ho, g.Wo})
                        .contiguous(hidden.suggest_memory_format());
    if (output_mask[2])
      grad_span_weight =
          at::matmul(gk, hidden.reshape({g.B, f.R, g.Ho * g.Wo}).transpose(1, 2)).sum(0);
    if (output_mask[3] && has_bias) grad_span_bias = gk.sum({0, 2});
  }
  return {grad_input, grad_hidden, grad_span_weight, grad_span_bias};
}

}  // namespace involution

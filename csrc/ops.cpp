// The op schemas (the public contract) and the C++ entry points that call them
// through the dispatcher. Backends register kernels for these schemas in cpu/ and
// cuda/; autograd.cpp and autocast.cpp wrap them. Nothing here depends on a backend.
#include <involution_ext/involution.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace involution {

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("involution::forward", "")
                       .typed<decltype(forward)>();
  return op.call(input, weight, stride, padding, dilation);
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight, at::IntArrayRef stride,
                                            at::IntArrayRef padding, at::IntArrayRef dilation,
                                            std::array<bool, 2> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("involution::backward", "")
                       .typed<decltype(backward)>();
  return op.call(grad_output, input, weight, stride, padding, dilation, output_mask);
}

at::Tensor fused_forward(const at::Tensor& input, const at::Tensor& hidden,
                         const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("involution::fused_forward", "")
                       .typed<decltype(fused_forward)>();
  return op.call(input, hidden, span_weight, span_bias, kernel_size, stride, padding, dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& hidden,
    const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 4> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("involution::fused_backward", "")
                       .typed<decltype(fused_backward)>();
  return op.call(grad_output, input, hidden, span_weight, span_bias, kernel_size, stride, padding,
                 dilation, output_mask);
}

const char* version() { return INVOLUTION_EXT_VERSION; }

TORCH_LIBRARY(involution, m) {
  m.def(
      "forward(Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] dilation) "
      "-> Tensor");
  m.def(
      "backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[2] padding, "
      "int[2] dilation, bool[2] output_mask) -> (Tensor grad_input, Tensor grad_weight)");
  m.def(
      "fused_forward(Tensor input, Tensor hidden, Tensor span_weight, Tensor? span_bias, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  m.def(
      "fused_backward(Tensor grad_output, Tensor input, Tensor hidden, Tensor span_weight, "
      "Tensor? span_bias, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool[4] output_mask) -> (Tensor grad_input, Tensor grad_hidden, Tensor grad_span_weight, "
      "Tensor grad_span_bias)");
}

}  // namespace involution

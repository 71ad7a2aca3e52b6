// Autocast: like a convolution, involution runs in the autocast dtype (bf16 on CPU by
// default, fp16 on CUDA), so a RedNet under torch.autocast needs no manual casts.
#include <involution_ext/involution.h>

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace involution {
namespace {

template <c10::DeviceType device, c10::DispatchKey key>
at::Tensor forward_autocast(const at::Tensor& input, const at::Tensor& weight,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  const auto dtype = at::autocast::get_autocast_dtype(device);
  return involution::forward(at::autocast::cached_cast(dtype, input, device),
                             at::autocast::cached_cast(dtype, weight, device), stride, padding,
                             dilation);
}

template <c10::DeviceType device, c10::DispatchKey key>
at::Tensor fused_forward_autocast(const at::Tensor& input, const at::Tensor& hidden,
                                  const at::Tensor& span_weight,
                                  const std::optional<at::Tensor>& span_bias,
                                  at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  const auto dtype = at::autocast::get_autocast_dtype(device);
  std::optional<at::Tensor> bias;
  if (span_bias.has_value() && span_bias->defined())
    bias = at::autocast::cached_cast(dtype, *span_bias, device);
  return involution::fused_forward(at::autocast::cached_cast(dtype, input, device),
                                   at::autocast::cached_cast(dtype, hidden, device),
                                   at::autocast::cached_cast(dtype, span_weight, device), bias,
                                   kernel_size, stride, padding, dilation);
}

}  // namespace

TORCH_LIBRARY_IMPL(involution, AutocastCPU, m) {
  m.impl("forward", &forward_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
  m.impl("fused_forward",
         &fused_forward_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
}
TORCH_LIBRARY_IMPL(involution, AutocastCUDA, m) {
  m.impl("forward", &forward_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
  m.impl("fused_forward",
         &fused_forward_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
}

}  // namespace involution

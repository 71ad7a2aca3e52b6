// CUDA backend of involution::forward / backward / fused_forward / fused_backward: argument
// checks, dtype dispatch and registration. The kernels and their launch recipes are in
// kernels.cuh.
#include "cuda/kernels.cuh"
#include "shape_check.h"
#include "backend_common.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <optional>
#include <tuple>
#include <type_traits>
#include <limits>
#include <utility>

namespace involution::cuda {
namespace {

bool channels_inner(const at::Tensor& t) { return std::abs(t.stride(1)) < std::abs(t.stride(3)); }

// Launches on the current stream (the caller holds the device guard).
struct StreamLaunch {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), int64_t blocks, int64_t threads, int64_t smem_bytes,
                  Args&&... args) const {
    TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "involution (CUDA): ", blocks,
                " blocks exceed the grid limit");
    kernel<<<static_cast<unsigned>(blocks), static_cast<unsigned>(threads),
             static_cast<size_t>(smem_bytes), stream>>>(std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

template <typename T>
void launch_grad_weight(const Geometry& s, const at::Tensor& grad_out, const at::Tensor& input,
                        at::Tensor& grad_w) {
  const auto gy = view4<const T>(grad_out);
  const auto x = view4<const T>(input);
  const bool cf = channels_inner(input);
  const Plan p = grad_weight_plan<T>(s);
  if (grad_weight_needs_fp32_scratch<T>(s, p)) {
    at::Tensor scratch = at::empty(grad_w.sizes(), grad_w.options().dtype(at::kFloat));
    run_grad_weight<T, float>(StreamLaunch{}, s, p, gy, x, view6<float>(scratch), cf);
    grad_w.copy_(scratch);
  } else {
    run_grad_weight<T, T>(StreamLaunch{}, s, p, gy, x, view6<T>(grad_w), cf);
  }
}

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = check_forward_args("involution::forward", input, weight, stride, padding,
                                        dilation);
  TORCH_CHECK(input.is_cuda(), "involution::forward: CUDA kernel got a ", input.device(),
              " tensor");
  c10::cuda::CUDAGuard device_guard(input.device());
  at::Tensor out = empty_output(input, g);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_forward_cuda", [&] {
    run_gather<scalar_t, ForwardMap>(StreamLaunch{}, g, view4<const scalar_t>(input), g.H, g.W,
                                     KernelTensor<scalar_t>{view6<const scalar_t>(weight)},
                                     view4<scalar_t>(out), g.Ho, g.Wo, channels_inner(input));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_output,
                                                 const at::Tensor& input, const at::Tensor& weight,
                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation,
                                                 std::array<bool, 2> output_mask) {
  const Geometry g = check_backward_args(grad_output, input, weight, stride, padding, dilation);
  TORCH_CHECK(input.is_cuda(), "involution::backward: CUDA kernel got a ", input.device(),
              " tensor");
  c10::cuda::CUDAGuard device_guard(input.device());
  auto [grad_input, grad_weight] = empty_grads(input, weight, output_mask);
  if (g.B == 0) return {grad_input, grad_weight};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_backward_cuda", [&] {
    if (grad_input.defined() && grad_input.numel() > 0)
      run_gather<scalar_t, GradInputMap>(StreamLaunch{}, g, view4<const scalar_t>(grad_output),
                                         g.Ho, g.Wo,
                                         KernelTensor<scalar_t>{view6<const scalar_t>(weight)},
                                         view4<scalar_t>(grad_input), g.H, g.W,
                                         channels_inner(grad_output));
    if (grad_weight.defined()) launch_grad_weight<scalar_t>(g, grad_output, input, grad_weight);
  });
  return {grad_input, grad_weight};
}

at::Tensor fused_forward_cuda(const at::Tensor& input, const at::Tensor& hidden,
                              const at::Tensor& span_weight,
                              const std::optional<at::Tensor>& span_bias,
                              at::IntArrayRef kernel_size, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation) {
  const FusedGeometry f = check_fused_args("involution::fused_forward", input, hidden,
                                           span_weight, span_bias, kernel_size, stride, padding,
                                           dilation);
  TORCH_CHECK(input.is_cuda(), "involution::fused_forward: CUDA kernel got a ", input.device(),
              " tensor");
  c10::cuda::CUDAGuard device_guard(input.device());
  at::Tensor out = empty_output(input, f.g);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_fused_forward_cuda", [&] {
    using T = scalar_t;
    run_gather<T, ForwardMap>(StreamLaunch{}, f.g, view4<const T>(input), f.g.H, f.g.W,
                              SpanKernel<T>{span_args<T>(f, hidden, span_weight, span_bias)},
                              view4<T>(out), f.g.Ho, f.g.Wo, channels_inner(input));
  });
  return out;
}

template <typename T>
void launch_span_grads(const FusedGeometry& f, const at::Tensor& grad_output,
                       const at::Tensor& input, const SpanArgs<T>& span, at::Tensor& grad_hidden,
                       at::Tensor& grad_span_weight, at::Tensor& grad_span_bias) {
  using A = acc_t<T>;
  const Geometry& g = f.g;
  const SpanGradsPlan sp = span_grads_plan(g, sizeof(T), sizeof(A));
  at::Tensor partials;
  if (grad_span_weight.defined() || grad_span_bias.defined())
    partials = at::empty({span_partials_elems(g, sp, f.R)},
                         input.options().dtype(c10::CppTypeToScalarType<A>::value));
  A* partials_data = partials.defined() ? partials.data_ptr<A>() : nullptr;
  T* gw = grad_span_weight.defined() ? grad_span_weight.data_ptr<T>() : nullptr;
  const int64_t gw_row = gw ? grad_span_weight.stride(0) : 0;
  const int64_t gw_col = gw ? grad_span_weight.stride(1) : 0;
  T* gb = grad_span_bias.defined() ? grad_span_bias.data_ptr<T>() : nullptr;
  const int64_t gb_s = gb ? grad_span_bias.stride(0) : 0;
  const auto gy = view4<const T>(grad_output);
  const auto x = view4<const T>(input);
  const bool cf = channels_inner(input);
  // grad_hidden is summed over the groups in the accumulator type: for half types in an fp32
  // scratch copy.
  const bool scratch = !std::is_same_v<T, A> && grad_hidden.defined();
  const at::Tensor gh =
      scratch ? at::empty_like(grad_hidden, grad_hidden.options().dtype(at::kFloat)) : grad_hidden;
  run_span_grads<T>(StreamLaunch{}, g, sp, gy, x, span,
                    gh.defined() ? view4<A>(gh) : View4<A>{nullptr, {}}, partials_data, gw,
                    gw_row, gw_col, gb, gb_s, cf);
  if (scratch) grad_hidden.copy_(gh);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& hidden,
    const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 4> output_mask) {
  const FusedGeometry f = check_fused_backward_args(grad_output, input, hidden, span_weight,
                                                    span_bias, kernel_size, stride, padding,
                                                    dilation);
  TORCH_CHECK(input.is_cuda(), "involution::fused_backward: CUDA kernel got a ", input.device(),
              " tensor");
  c10::cuda::CUDAGuard device_guard(input.device());
  at::Tensor grad_input, grad_hidden, grad_span_weight, grad_span_bias;
  std::tie(grad_input, grad_hidden, grad_span_weight, grad_span_bias) =
      empty_fused_grads(input, hidden, span_weight, span_bias, output_mask);
  if (f.g.B == 0) return {grad_input, grad_hidden, grad_span_weight, grad_span_bias};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_fused_backward_cuda", [&] {
    using T = scalar_t;
    const SpanArgs<T> span = span_args<T>(f, hidden, span_weight, span_bias);
    if (grad_input.defined() && grad_input.numel() > 0)
      run_gather<T, GradInputMap>(StreamLaunch{}, f.g, view4<const T>(grad_output), f.g.Ho,
                                  f.g.Wo, SpanKernel<T>{span}, view4<T>(grad_input), f.g.H,
                                  f.g.W, channels_inner(grad_output));
    if (grad_hidden.defined() || grad_span_weight.defined() || grad_span_bias.defined())
      launch_span_grads<T>(f, grad_output, input, span, grad_hidden, grad_span_weight,
                           grad_span_bias);
  });
  return {grad_input, grad_hidden, grad_span_weight, grad_span_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(involution, CUDA, m) {
  m.impl("forward", &forward_cuda);
  m.impl("backward", &backward_cuda);
  m.impl("fused_forward", &fused_forward_cuda);
  m.impl("fused_backward", &fused_backward_cuda);
}

}  // namespace involution::cuda

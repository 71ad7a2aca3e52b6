// CUDA backend of involution::forward / involution::backward: argument checks, dtype
// dispatch and registration. The kernels and their launch recipes are in kernels.cuh.
#include "cuda/kernels.cuh"
#include "shape_check.h"
#include "backend_common.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <tuple>
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
                                     view6<const scalar_t>(weight), view4<scalar_t>(out), g.Ho,
                                     g.Wo, channels_inner(input));
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
                                         g.Ho, g.Wo, view6<const scalar_t>(weight),
                                         view4<scalar_t>(grad_input), g.H, g.W,
                                         channels_inner(grad_output));
    if (grad_weight.defined()) launch_grad_weight<scalar_t>(g, grad_output, input, grad_weight);
  });
  return {grad_input, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(involution, CUDA, m) {
  m.impl("forward", &forward_cuda);
  m.impl("backward", &backward_cuda);
}

}  // namespace involution::cuda

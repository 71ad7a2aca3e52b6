// CPU backend: picks the kernel build for this CPU, allocates outputs in the input's
// memory format and hands raw pointers + strides to the kernels (forward.cpp, grad_input.cpp,
// grad_weight.cpp).
#include "cpu/kernels.h"
#include "shape_check.h"
#include "backend_common.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <tuple>

namespace involution::cpu {
namespace {

enum class Isa : int { Default = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "default";
  }
}

bool isa_available(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::Avx512:
#ifdef INVOLUTION_HAVE_ISA_AVX512
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
      return false;
#endif
    case Isa::Avx2:
#ifdef INVOLUTION_HAVE_ISA_AVX2
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
#else
      return false;
#endif
    default: return true;
  }
#else
  return isa == Isa::Default;
#endif
}

Isa best_isa() {
  for (Isa isa : {Isa::Avx512, Isa::Avx2})
    if (isa_available(isa)) return isa;
  return Isa::Default;
}

Isa parse_isa(const std::string& name) {
  if (name == "auto") return best_isa();
  for (Isa isa : {Isa::Default, Isa::Avx2, Isa::Avx512}) {
    if (name == isa_name(isa)) {
      TORCH_CHECK(isa_available(isa), "involution: CPU instruction set '", name,
                  "' is not available (not compiled in, or not supported by this CPU)");
      return isa;
    }
  }
  TORCH_CHECK(false, "involution: unknown CPU instruction set '", name,
              "'; expected auto, default, avx2 or avx512");
}

Isa initial_isa() {
  const char* env = std::getenv("INVOLUTION_CPU_ISA");
  return env != nullptr && env[0] != '\0' ? parse_isa(env) : best_isa();
}

std::atomic<int>& active_isa() {
  static std::atomic<int> isa{static_cast<int>(initial_isa())};
  return isa;
}

// The kernels of one instruction-set build for dtype T.
template <typename T>
struct KernelTable {
  void (*forward)(const Geometry&, View4<const T>, View6<const T>, View4<T>);
  void (*grad_input)(const Geometry&, View4<const T>, View6<const T>, View4<T>);
  void (*grad_weight)(const Geometry&, View4<const T>, View4<const T>, View6<T>);
  void (*fused_forward)(const Geometry&, View4<const T>, const SpanArgs<T>&, View4<T>);
  void (*fused_backward)(const Geometry&, View4<const T>, View4<const T>, const SpanArgs<T>&,
                         View4<T>, const SpanGrads<T>&);
};

#define INVOLUTION_KERNEL_TABLE(ns)                                                  \
  KernelTable<T> {                                                                   \
    &ns::forward<T>, &ns::grad_input<T>, &ns::grad_weight<T>, &ns::fused_forward<T>, \
        &ns::fused_backward<T>                                                       \
  }

// The kernels of the active instruction set: one table per build, made once (a build not
// compiled in is never active, see isa_available).
template <typename T>
const KernelTable<T>& kernels() {
  static const KernelTable<T> tables[] = {
      INVOLUTION_KERNEL_TABLE(isa_default),
#ifdef INVOLUTION_HAVE_ISA_AVX2
      INVOLUTION_KERNEL_TABLE(isa_avx2),
#else
      INVOLUTION_KERNEL_TABLE(isa_default),
#endif
#ifdef INVOLUTION_HAVE_ISA_AVX512
      INVOLUTION_KERNEL_TABLE(isa_avx512),
#else
      INVOLUTION_KERNEL_TABLE(isa_default),
#endif
  };
  static_assert(static_cast<int>(Isa::Avx2) == 1 && static_cast<int>(Isa::Avx512) == 2);
  return tables[active_isa().load()];
}
#undef INVOLUTION_KERNEL_TABLE

at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = check_forward_args("involution::forward", input, weight, stride, padding,
                                        dilation);
  TORCH_CHECK(input.is_cpu(), "involution::forward: CPU kernel got a ", input.device(),
              " tensor");
  at::Tensor out = empty_output(input, g);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_forward_cpu", [&] {
    kernels<scalar_t>().forward(g, view4<const scalar_t>(input), view6<const scalar_t>(weight),
                                view4<scalar_t>(out));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_output,
                                                const at::Tensor& input, const at::Tensor& weight,
                                                at::IntArrayRef stride, at::IntArrayRef padding,
                                                at::IntArrayRef dilation,
                                                std::array<bool, 2> output_mask) {
  const Geometry g = check_backward_args(grad_output, input, weight, stride, padding, dilation);
  TORCH_CHECK(input.is_cpu(), "involution::backward: CPU kernel got a ", input.device(),
              " tensor");
  auto [grad_input, grad_weight] = empty_grads(input, weight, output_mask);
  if (g.B == 0) return {grad_input, grad_weight};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_backward_cpu", [&] {
    if (grad_input.defined() && grad_input.numel() > 0)
      kernels<scalar_t>().grad_input(g, view4<const scalar_t>(grad_output),
                                     view6<const scalar_t>(weight), view4<scalar_t>(grad_input));
    if (grad_weight.defined())
      kernels<scalar_t>().grad_weight(g, view4<const scalar_t>(grad_output),
                                      view4<const scalar_t>(input), view6<scalar_t>(grad_weight));
  });
  return {grad_input, grad_weight};
}

at::Tensor fused_forward_cpu(const at::Tensor& input, const at::Tensor& hidden,
                             const at::Tensor& span_weight,
                             const std::optional<at::Tensor>& span_bias,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation) {
  const FusedGeometry f = check_fused_args("involution::fused_forward", input, hidden,
                                           span_weight, span_bias, kernel_size, stride, padding,
                                           dilation);
  TORCH_CHECK(input.is_cpu(), "involution::fused_forward: CPU kernel got a ", input.device(),
              " tensor");
  at::Tensor out = empty_output(input, f.g);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_fused_forward_cpu", [&] {
    kernels<scalar_t>().fused_forward(f.g, view4<const scalar_t>(input),
                                      span_args<scalar_t>(f, hidden, span_weight, span_bias),
                                      view4<scalar_t>(out));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& hidden,
    const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 4> output_mask) {
  const FusedGeometry f = check_fused_backward_args(grad_output, input, hidden, span_weight,
                                                    span_bias, kernel_size, stride, padding,
                                                    dilation);
  TORCH_CHECK(input.is_cpu(), "involution::fused_backward: CPU kernel got a ", input.device(),
              " tensor");
  at::Tensor grad_input, grad_hidden, grad_span_weight, grad_span_bias;
  std::tie(grad_input, grad_hidden, grad_span_weight, grad_span_bias) =
      empty_fused_grads(input, hidden, span_weight, span_bias, output_mask);
  if (f.g.B == 0) return {grad_input, grad_hidden, grad_span_weight, grad_span_bias};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_fused_backward_cpu", [&] {
    using T = scalar_t;
    SpanGrads<T> grads{grad_hidden.defined() ? view4<T>(grad_hidden) : View4<T>{nullptr, {}},
                       grad_span_weight.defined() ? grad_span_weight.data_ptr<T>() : nullptr,
                       grad_span_weight.defined() ? grad_span_weight.stride(0) : 0,
                       grad_span_weight.defined() ? grad_span_weight.stride(1) : 0,
                       grad_span_bias.defined() ? grad_span_bias.data_ptr<T>() : nullptr,
                       grad_span_bias.defined() ? grad_span_bias.stride(0) : 0};
    View4<T> gx = grad_input.defined() && grad_input.numel() > 0 ? view4<T>(grad_input)
                                                                 : View4<T>{nullptr, {}};
    kernels<T>().fused_backward(f.g, view4<const T>(grad_output), view4<const T>(input),
                                span_args<T>(f, hidden, span_weight, span_bias), gx, grads);
  });
  return {grad_input, grad_hidden, grad_span_weight, grad_span_bias};
}

// Returns the instruction set the CPU kernels run with. A non-empty `requested` ("auto",
// "default", "avx2", "avx512") selects one first; asking for one that this build or this CPU
// lacks is an error. The initial choice is "auto", overridable with INVOLUTION_CPU_ISA.
std::string cpu_isa(const std::string& requested) {
  if (!requested.empty()) active_isa().store(static_cast<int>(parse_isa(requested)));
  return isa_name(static_cast<Isa>(active_isa().load()));
}

}  // namespace

TORCH_LIBRARY_IMPL(involution, CPU, m) {
  m.impl("forward", &forward_cpu);
  m.impl("backward", &backward_cpu);
  m.impl("fused_forward", &fused_forward_cpu);
  m.impl("fused_backward", &fused_backward_cpu);
}

// A process-wide setting, like torch.backends' flags, registered by the CPU backend itself so
// the schema in ops.cpp does not depend on a backend: involution_ext.cpu_isa() reads or sets it
// (tests run every instruction set; users can pin one, e.g. to compare them).
TORCH_LIBRARY_FRAGMENT(involution, m) {
  m.def("_cpu_isa(str requested='') -> str", &cpu_isa);
}

}  // namespace involution::cpu

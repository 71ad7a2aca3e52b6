// Autograd for the ops, in C++ so TorchScript and LibTorch programs get gradients
// without Python. The op is bilinear in (input, weight), so the derivatives of the
// backward op are again forward/backward calls — double backward comes for free. The fused
// op saves only its inputs (never the generated kernel); its double backward runs the
// differentiable composition of fused_composite.cpp.
#include "fused_composite.h"

#include <involution_ext/involution.h>

#include <ATen/ops/add.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace involution {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void save_hyper_params(AutogradContext* ctx, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation) {
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["padding"] = padding.vec();
  ctx->saved_data["dilation"] = dilation.vec();
}

struct HyperParams {
  std::vector<int64_t> stride, padding, dilation;
  explicit HyperParams(AutogradContext* ctx)
      : stride(ctx->saved_data["stride"].toIntVector()),
        padding(ctx->saved_data["padding"].toIntVector()),
        dilation(ctx->saved_data["dilation"].toIntVector()) {}
};

class InvolutionFunction : public torch::autograd::Function<InvolutionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor out = involution::forward(input, weight, stride, padding, dilation);
    ctx->save_for_backward({input, weight});
    save_hyper_params(ctx, stride, padding, dilation);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const HyperParams hp(ctx);
    const at::Tensor& grad_out = grads[0];
    at::Tensor grad_input, grad_weight;
    if (grad_out.defined()) {
      std::tie(grad_input, grad_weight) =
          involution::backward(grad_out, saved[0], saved[1], hp.stride, hp.padding, hp.dilation,
                               {ctx->needs_input_grad(0), ctx->needs_input_grad(1)});
    }
    return {grad_input, grad_weight, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// y = F(x, w) is bilinear. With gx = dF/dx^T gy and gw = dF/dw^T gy, and incoming
// gradients ggx (like x) and ggw (like w):
//   d/d gy = F(ggx, w) + F(x, ggw)
//   d/d x  = grad_input of F(x, ggw)   = backward(gy, x, ggw).grad_input
//   d/d w  = grad_weight of F(ggx, w)  = backward(gy, ggx, w).grad_weight
class InvolutionBackwardFunction
    : public torch::autograd::Function<InvolutionBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_out,
                               const at::Tensor& input, const at::Tensor& weight,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, std::array<bool, 2> output_mask) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_input, grad_weight] = involution::backward(grad_out, input, weight, stride,
                                                          padding, dilation, output_mask);
    ctx->save_for_backward({grad_out, input, weight});
    save_hyper_params(ctx, stride, padding, dilation);
    ctx->saved_data["output_mask"] = std::vector<bool>{output_mask[0], output_mask[1]};
    // A custom Function cannot output undefined tensors: return only the computed ones.
    variable_list outputs;
    if (output_mask[0]) outputs.push_back(grad_input);
    if (output_mask[1]) outputs.push_back(grad_weight);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad_out = saved[0], &input = saved[1], &weight = saved[2];
    const HyperParams hp(ctx);
    const auto mask = ctx->saved_data["output_mask"].toBoolList();
    const at::Tensor ggx = mask[0] ? grads[0] : at::Tensor();
    const at::Tensor ggw = mask[1] ? grads[mask[0] ? 1 : 0] : at::Tensor();
    at::Tensor d_grad_out, d_input, d_weight;
    if (ctx->needs_input_grad(0)) {
      if (ggx.defined()) d_grad_out = involution::forward(ggx, weight, hp.stride, hp.padding, hp.dilation);
      if (ggw.defined()) {
        at::Tensor t = involution::forward(input, ggw, hp.stride, hp.padding, hp.dilation);
        d_grad_out = d_grad_out.defined() ? d_grad_out.add(t) : t;
      }
    }
    if (ctx->needs_input_grad(1) && ggw.defined())
      d_input = std::get<0>(involution::backward(grad_out, input, ggw, hp.stride, hp.padding,
                                                 hp.dilation, {true, false}));
    if (ctx->needs_input_grad(2) && ggx.defined())
      d_weight = std::get<1>(involution::backward(grad_out, ggx, weight, hp.stride, hp.padding,
                                                  hp.dilation, {false, true}));
    return {d_grad_out, d_input, d_weight, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor forward_autograd(const at::Tensor& input, const at::Tensor& weight,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation) {
  return InvolutionFunction::apply(input, weight, stride, padding, dilation);
}

std::tuple<at::Tensor, at::Tensor> backward_autograd(const at::Tensor& grad_out,
                                                     const at::Tensor& input,
                                                     const at::Tensor& weight,
                                                     at::IntArrayRef stride,
                                                     at::IntArrayRef padding,
                                                     at::IntArrayRef dilation,
                                                     std::array<bool, 2> output_mask) {
  if (!output_mask[0] && !output_mask[1]) {
    // Nothing to compute, but the arguments are still checked.
    return involution::backward(grad_out.detach(), input.detach(), weight.detach(), stride,
                                padding, dilation, output_mask);
  }
  auto r = InvolutionBackwardFunction::apply(grad_out, input, weight, stride, padding, dilation,
                                             output_mask);
  at::Tensor grad_input = output_mask[0] ? r[0] : at::Tensor();
  at::Tensor grad_weight = output_mask[1] ? r[output_mask[0] ? 1 : 0] : at::Tensor();
  return {grad_input, grad_weight};
}

std::optional<at::Tensor> optional_tensor(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class FusedInvolutionFunction : public torch::autograd::Function<FusedInvolutionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& hidden, const at::Tensor& span_weight,
                            const std::optional<at::Tensor>& span_bias,
                            at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor out = involution::fused_forward(input, hidden, span_weight, span_bias, kernel_size,
                                               stride, padding, dilation);
    ctx->save_for_backward({input, hidden, span_weight, span_bias.value_or(at::Tensor())});
    save_hyper_params(ctx, stride, padding, dilation);
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const HyperParams hp(ctx);
    const auto kernel_size = ctx->saved_data["kernel_size"].toIntVector();
    const std::optional<at::Tensor> bias = optional_tensor(saved[3]);
    variable_list result(8);
    if (!grads[0].defined()) return result;
    const std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      ctx->needs_input_grad(2),
                                      bias.has_value() && ctx->needs_input_grad(3)};
    // With create_graph, the gradients must themselves be differentiable: the composition
    // of differentiable ops; else the fused kernels.
    auto [gx, gh, gs, gb] =
        at::GradMode::is_enabled()
            ? fused_backward_composite(grads[0], saved[0], saved[1], saved[2], bias, kernel_size,
                                       hp.stride, hp.padding, hp.dilation, mask)
            : involution::fused_backward(grads[0], saved[0], saved[1], saved[2], bias,
                                         kernel_size, hp.stride, hp.padding, hp.dilation, mask);
    result[0] = gx, result[1] = gh, result[2] = gs, result[3] = gb;
    return result;
  }
};

at::Tensor fused_forward_autograd(const at::Tensor& input, const at::Tensor& hidden,
                                  const at::Tensor& span_weight,
                                  const std::optional<at::Tensor>& span_bias,
                                  at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation) {
  return FusedInvolutionFunction::apply(input, hidden, span_weight, span_bias, kernel_size, stride,
                                        padding, dilation);
}

// fused_backward called directly on tensors that require grad (with grad mode on): the
// differentiable composition; else the backend kernel.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward_autograd(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& hidden,
    const at::Tensor& span_weight, const std::optional<at::Tensor>& span_bias,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 4> output_mask) {
  const bool bias_grad = span_bias.has_value() && span_bias->defined() && span_bias->requires_grad();
  const bool differentiable =
      at::GradMode::is_enabled() && (grad_output.requires_grad() || input.requires_grad() ||
                                     hidden.requires_grad() || span_weight.requires_grad() || bias_grad);
  if (differentiable)
    return fused_backward_composite(grad_output, input, hidden, span_weight, span_bias,
                                    kernel_size, stride, padding, dilation, output_mask);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return involution::fused_backward(grad_output, input, hidden, span_weight, span_bias,
                                    kernel_size, stride, padding, dilation, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(involution, Autograd, m) {
  m.impl("forward", &forward_autograd);
  m.impl("backward", &backward_autograd);
  m.impl("fused_forward", &fused_forward_autograd);
  m.impl("fused_backward", &fused_backward_autograd);
}

}  // namespace involution

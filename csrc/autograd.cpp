// Autograd for both ops, in C++ so TorchScript and LibTorch programs get gradients
// without Python. The op is bilinear in (input, weight), so the derivatives of the
// backward op are again forward/backward calls — double backward comes for free.
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

}  // namespace

TORCH_LIBRARY_IMPL(involution, Autograd, m) {
  m.impl("forward", &forward_autograd);
  m.impl("backward", &backward_autograd);
}

}  // namespace involution

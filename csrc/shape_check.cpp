#include "shape_check.h"

#include <c10/util/Exception.h>

namespace involution {
namespace {

void check_pair(const char* op, const char* name, at::IntArrayRef value, int64_t min_value) {
  TORCH_CHECK(value.size() == 2, op, ": ", name, " must have 2 elements (h, w), got ",
              value.size(), " (", value, ")");
  TORCH_CHECK(value[0] >= min_value && value[1] >= min_value, op, ": ", name,
              " must be >= ", min_value, ", got ", value);
}

void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", dt);
}

}  // namespace

Geometry check_forward_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation) {
  TORCH_CHECK(input.defined() && weight.defined(), op, ": input and weight must be defined");
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (B, C, H, W), got ", input.dim(),
              "-D with sizes ", input.sizes());
  TORCH_CHECK(weight.dim() == 6, op, ": weight must be 6-D (B, G, Kh, Kw, Ho, Wo), got ",
              weight.dim(), "-D with sizes ", weight.sizes());
  check_float_dtype(op, "input", input);
  check_float_dtype(op, "weight", weight);
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(), op,
              ": input and weight must have the same dtype, got ", input.scalar_type(), " and ",
              weight.scalar_type());
  TORCH_CHECK(input.device() == weight.device(), op,
              ": input and weight must be on the same device, got ", input.device(), " and ",
              weight.device());
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);

  Geometry g{};
  g.B = input.size(0);
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  g.G = weight.size(1);
  g.Kh = weight.size(2);
  g.Kw = weight.size(3);
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_h = padding[0];
  g.pad_w = padding[1];
  g.dil_h = dilation[0];
  g.dil_w = dilation[1];

  TORCH_CHECK(g.C > 0, op, ": input must have at least one channel, got sizes ", input.sizes());
  TORCH_CHECK(g.G > 0, op, ": weight must have at least one group, got sizes ", weight.sizes());
  TORCH_CHECK(g.C % g.G == 0, op, ": channels (", g.C, ") must be divisible by groups (", g.G,
              "); input ", input.sizes(), ", weight ", weight.sizes());
  TORCH_CHECK(weight.size(0) == g.B, op, ": batch size of weight (", weight.size(0),
              ") must equal batch size of input (", g.B, ")");
  TORCH_CHECK(g.Kh >= 1 && g.Kw >= 1, op, ": kernel size must be >= 1, got (", g.Kh, ", ",
              g.Kw, ") from weight sizes ", weight.sizes());

  g.Ho = conv_output_size(g.H, g.Kh, g.stride_h, g.pad_h, g.dil_h);
  g.Wo = conv_output_size(g.W, g.Kw, g.stride_w, g.pad_w, g.dil_w);
  TORCH_CHECK(g.Ho > 0 && g.Wo > 0, op, ": output size (", g.Ho, ", ", g.Wo,
              ") is not positive for input spatial size (", g.H, ", ", g.W, "), kernel (", g.Kh,
              ", ", g.Kw, "), stride ", stride, ", padding ", padding, ", dilation ", dilation);
  TORCH_CHECK(weight.size(4) == g.Ho && weight.size(5) == g.Wo, op,
              ": weight spatial size (", weight.size(4), ", ", weight.size(5),
              ") must equal the output size (", g.Ho, ", ", g.Wo, ") computed from input (", g.H,
              ", ", g.W, "), kernel (", g.Kh, ", ", g.Kw, "), stride ", stride, ", padding ",
              padding, ", dilation ", dilation);
  return g;
}

Geometry check_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& weight, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation) {
  const char* op = "involution::backward";
  Geometry g = check_forward_args(op, input, weight, stride, padding, dilation);
  TORCH_CHECK(grad_output.defined(), op, ": grad_output must be defined");
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.B && grad_output.size(1) == g.C &&
                  grad_output.size(2) == g.Ho && grad_output.size(3) == g.Wo,
              op, ": grad_output must have sizes (", g.B, ", ", g.C, ", ", g.Ho, ", ", g.Wo,
              "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), op,
              ": grad_output must have the input's dtype ", input.scalar_type(), ", got ",
              grad_output.scalar_type());
  TORCH_CHECK(grad_output.device() == input.device(), op,
              ": grad_output must be on the input's device ", input.device(), ", got ",
              grad_output.device());
  return g;
}

}  // namespace involution

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

// The geometry of a call before the output size: input sizes, groups, window and the
// (already checked) hyper-parameters.
Geometry make_geometry(const at::Tensor& input, int64_t groups, int64_t kh, int64_t kw,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return {input.size(0), input.size(1), groups,    input.size(2), input.size(3),
          kh,            kw,            0,         0,             stride[0],
          stride[1],     padding[0],    padding[1], dilation[0],  dilation[1]};
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

  Geometry g = make_geometry(input, weight.size(1), weight.size(2), weight.size(3), stride,
                             padding, dilation);

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

namespace {

void check_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                       const Geometry& g) {
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
}

}  // namespace

Geometry check_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& weight, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation) {
  const char* op = "involution::backward";
  Geometry g = check_forward_args(op, input, weight, stride, padding, dilation);
  check_grad_output(op, grad_output, input, g);
  return g;
}

FusedGeometry check_fused_args(const char* op, const at::Tensor& input, const at::Tensor& hidden,
                               const at::Tensor& span_weight,
                               const std::optional<at::Tensor>& span_bias,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.defined() && hidden.defined() && span_weight.defined(), op,
              ": input, hidden and span_weight must be defined");
  const bool has_bias = span_bias.has_value() && span_bias->defined();
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (B, C, H, W), got ", input.dim(),
              "-D with sizes ", input.sizes());
  TORCH_CHECK(hidden.dim() == 4, op, ": hidden must be 4-D (B, R, Ho, Wo), got ", hidden.dim(),
              "-D with sizes ", hidden.sizes());
  TORCH_CHECK(span_weight.dim() == 2, op, ": span_weight must be 2-D (G*Kh*Kw, R), got ",
              span_weight.dim(), "-D with sizes ", span_weight.sizes());
  check_float_dtype(op, "input", input);
  const std::pair<const char*, const at::Tensor*> others[] = {
      {"hidden", &hidden}, {"span_weight", &span_weight}, {"span_bias", has_bias ? &*span_bias : nullptr}};
  for (const auto& [name, t] : others) {
    if (t == nullptr) continue;
    check_float_dtype(op, name, *t);
    TORCH_CHECK(t->scalar_type() == input.scalar_type(), op, ": ", name,
                " must have the input's dtype ", input.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == input.device(), op, ": ", name, " must be on the input's device ",
                input.device(), ", got ", t->device());
  }
  check_pair(op, "kernel_size", kernel_size, 1);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);

  FusedGeometry f{make_geometry(input, 0, kernel_size[0], kernel_size[1], stride, padding,
                                dilation),
                  0, 0};
  Geometry& g = f.g;
  f.rows = span_weight.size(0);
  f.R = span_weight.size(1);
  TORCH_CHECK(g.C > 0, op, ": input must have at least one channel, got sizes ", input.sizes());
  TORCH_CHECK(f.R > 0, op, ": span_weight must have at least one column (R), got sizes ",
              span_weight.sizes());
  TORCH_CHECK(f.rows > 0 && f.rows % g.taps() == 0, op, ": span_weight rows (", f.rows,
              ") must be a positive multiple of Kh*Kw (", g.taps(), ")");
  g.G = f.rows / g.taps();
  TORCH_CHECK(g.C % g.G == 0, op, ": channels (", g.C, ") must be divisible by groups (", g.G,
              " = ", f.rows, " span rows / ", g.taps(), " taps)");
  TORCH_CHECK(hidden.size(1) == f.R, op, ": hidden has ", hidden.size(1),
              " channels but span_weight has R = ", f.R, " columns");
  if (has_bias)
    TORCH_CHECK(span_bias->dim() == 1 && span_bias->size(0) == f.rows, op,
                ": span_bias must have sizes (", f.rows, ",), got ", span_bias->sizes());
  g.Ho = conv_output_size(g.H, g.Kh, g.stride_h, g.pad_h, g.dil_h);
  g.Wo = conv_output_size(g.W, g.Kw, g.stride_w, g.pad_w, g.dil_w);
  TORCH_CHECK(g.Ho > 0 && g.Wo > 0, op, ": output size (", g.Ho, ", ", g.Wo,
              ") is not positive for input spatial size (", g.H, ", ", g.W, "), kernel ",
              kernel_size, ", stride ", stride, ", padding ", padding, ", dilation ", dilation);
  TORCH_CHECK(hidden.size(0) == g.B && hidden.size(2) == g.Ho && hidden.size(3) == g.Wo, op,
              ": hidden must have sizes (", g.B, ", ", f.R, ", ", g.Ho, ", ", g.Wo, "), got ",
              hidden.sizes());
  return f;
}

FusedGeometry check_fused_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& hidden, const at::Tensor& span_weight,
                                        const std::optional<at::Tensor>& span_bias,
                                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation) {
  const char* op = "involution::fused_backward";
  FusedGeometry f = check_fused_args(op, input, hidden, span_weight, span_bias, kernel_size,
                                     stride, padding, dilation);
  check_grad_output(op, grad_output, input, f.g);
  return f;
}

}  // namespace involution

// The grad_input kernel (a gather, aggregate.h), compiled once per instruction set
// (cmake/CpuIsa.cmake), with the weights staged from the weight tensor.
#include "cpu/aggregate.h"

namespace involution::cpu::INVOLUTION_NS {

template <typename T>
void grad_input(const Geometry& g, View4<const T> grad_out, View6<const T> weight,
                View4<T> grad_in) {
  using A = acc_t<T>;
  struct TensorStager {
    const Geometry& g;
    View6<const T> w;
    void stage(A* dst, int64_t tap_stride, int64_t b, int64_t grp, int64_t ilo, int64_t ni,
               int64_t width, int64_t col0) {
      stage_weight_rows(dst, tap_stride, width, w.data + b * w.s.b + grp * w.s.g, g, w.s, ilo,
                        ni, width, col0, /*halo_zeroed=*/true);
    }
  };
  with_vector_width<T>(ceil_div(g.W, g.stride_w), [&](auto vb) {
    grad_input_gather<T, vb()>(g, grad_out, grad_in,
                               [&](int64_t, int64_t) { return TensorStager{g, weight}; });
  });
}

#define INSTANTIATE(T) \
  template void grad_input<T>(const Geometry&, View4<const T>, View6<const T>, View4<T>);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

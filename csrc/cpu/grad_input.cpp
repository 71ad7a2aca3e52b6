// The grad_input kernel (a gather, aggregate.h), compiled once per instruction set
// (cmake/CpuIsa.cmake), with the weights read from the weight tensor: fp32/fp64 rows in
// place, the others staged (converted) a block at a time.
#include "cpu/aggregate.h"

namespace involution::cpu::INVOLUTION_NS {

template <typename T>
void grad_input(const Geometry& g, View4<const T> grad_out, View6<const T> weight,
                View4<T> grad_in) {
  using A = acc_t<T>;
  class TensorStager {
   public:
    TensorStager(const Geometry& geom, View6<const T> weight)
        : g(geom), w(weight), tap_offset(weight_tap_offsets(geom, weight.s)),
          end(weight_footprint_end(geom, weight)) {}
    void stage(A* dst, int64_t tap_stride, int64_t b, int64_t grp, int64_t ilo, int64_t ni,
               int64_t width, int64_t col0) {
      stage_weight_rows(dst, tap_stride, width, w.data + b * w.s.b + grp * w.s.g, g, w.s, ilo,
                        ni, width, col0, /*halo_zeroed=*/true);
    }
    // fp32/fp64 rows with unit column stride and at least a cache line long are read in
    // place, like the forward's (the gather's comment has the measurements).
    bool in_place() const {
      return std::is_same_v<T, A> && w.s.j == 1 && g.Wo * int64_t(sizeof(T)) >= 64;
    }
    const A* row(int64_t b, int64_t grp, int64_t tap, int64_t i, int64_t col0, int64_t width,
                 A* scratch) {
      const T* line = w.data + b * w.s.b + grp * w.s.g + tap_offset[tap] + i * w.s.i;
      if constexpr (std::is_same_v<T, A>) {
        const int64_t first = (line - w.data) + col0;  // the read's extent, against the tensor's
        if (first >= 0 && first + width <= end - w.data) {
          // As in the forward: the next row, fetched into L2.
          if (i + 1 < g.Ho) prefetch_bytes<2>(line + w.s.i, g.Wo * int64_t(sizeof(T)));
          return line + col0;
        }
      }
      stage_line(scratch, width, line, col0, 1, w.s.j, g.Wo);  // at the tensor's ends
      return scratch;
    }

   private:
    const Geometry& g;
    View6<const T> w;
    std::vector<int64_t> tap_offset;
    const T* end;
  };
  with_vector_width<T>(ceil_div(g.W, g.stride_w), [&](auto vb) {
    grad_input_gather<T, vb()>(g, grad_out, grad_in,
                               [&](int64_t, int64_t) { return TensorStager(g, weight); });
  });
}

#define INSTANTIATE(T) \
  template void grad_input<T>(const Geometry&, View4<const T>, View6<const T>, View4<T>);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

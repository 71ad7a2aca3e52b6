// The grad_weight kernel (kernel_grad_row of aggregate.h, stored into the weight-shaped
// gradient), compiled once per instruction set (cmake/CpuIsa.cmake).
#include "cpu/aggregate.h"

namespace involution::cpu::INVOLUTION_NS {
namespace {

// grad_w[b,g,u,v,i,j] = sum_{c in g} grad_y[b,c,i,j] * x[b,c,i*s-p+u*d, j*s-p+v*d]

template <typename T, int VB>
void grad_weight_impl(const Geometry& g, View4<const T> gy, View4<const T> x, View6<T> gw) {
  using A = acc_t<T>;
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t cg = g.channels_per_group();
  const int64_t taps = g.taps();
  const int64_t wo_padded = round_up(g.Wo, VL);
  const RowTasks tasks = staged_row_tasks<T>(g, wo_padded);
  const std::vector<int64_t> tap_offset = weight_tap_offsets(g, gw.s);

  at::parallel_for(0, tasks.size(), 1, [&](int64_t begin, int64_t end) {
    StagedInput<T, A> xs(g, wo_padded, tasks.per);
    std::vector<A> gyrow(cg * wo_padded);    // grad_y of one output row, per channel
    std::vector<A> gwrow(taps * wo_padded);  // grad_w of one output row, per tap
    std::vector<T> gwrow_t(std::is_same_v<T, A> ? 0 : taps * wo_padded);  // gwrow as T
    for (int64_t task = begin; task < end; ++task) {
      const auto [b, grp, i0, i1] = tasks[task];
      xs.stage(x, b, grp, i0, i1);
      for (int64_t i = i0; i < i1; ++i) {
        stage_lines(gyrow.data(), gy.data + b * gy.s.b + grp * cg * gy.s.c,
                    LineBlock{cg, 1, wo_padded, wo_padded, 0, gy.s.c, gy.s.h, gy.s.w, i, g.Ho, 0,
                              1, g.Wo});
        kernel_grad_row<T, VB>(g, xs, i - i0, gyrow.data(), wo_padded, gwrow.data(), wo_padded);
        T* dst = gw.data + b * gw.s.b + grp * gw.s.g + i * gw.s.i;
        // Contiguous rows are copied whole from gwrow (per vector through store_lanes' buffer
        // was a stack round trip per 7-wide row, 1.6x slower for half types at 56x56); half
        // types first convert every tap's row at once, as whole vectors, not a scalar tail
        // per row.
        if (gw.s.j == 1) {
          const T* rows = nullptr;
          if constexpr (std::is_same_v<T, A>) {
            rows = gwrow.data();
          } else {
            convert_from_acc(gwrow_t.data(), gwrow.data(), taps * wo_padded);
            rows = gwrow_t.data();
          }
          for (int64_t tap = 0; tap < taps; ++tap)
            copy_elements(dst + tap_offset[tap], rows + tap * wo_padded, g.Wo);
          continue;
        }
        for (int64_t tap = 0; tap < taps; ++tap) {
          T* d = dst + tap_offset[tap];
          for (int64_t j = 0; j < g.Wo; j += VL)
            store_lanes<A>(d + j * gw.s.j, gw.s.j, load<VB>(&gwrow[tap * wo_padded + j]),
                           std::min(VL, g.Wo - j));
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void grad_weight(const Geometry& g, View4<const T> grad_out, View4<const T> input,
                 View6<T> grad_w) {
  with_vector_width<T>(g.Wo, [&](auto vb) { grad_weight_impl<T, vb()>(g, grad_out, input, grad_w); });
}

#define INSTANTIATE(T) \
  template void grad_weight<T>(const Geometry&, View4<const T>, View4<const T>, View6<T>);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

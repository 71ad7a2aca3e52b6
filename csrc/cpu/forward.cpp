// The forward kernel: y = Eq. 4, compiled once per instruction set (cmake/CpuIsa.cmake).
#include "cpu/kernel_common.h"

namespace involution::cpu::INVOLUTION_NS {
namespace {

template <typename T, int VB>
void forward_impl(const Geometry& g, View4<const T> x, View6<const T> w, View4<T> y) {
  using A = acc_t<T>;
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t cg = g.channels_per_group();
  const int64_t taps = g.taps();
  const int64_t wo_padded = round_up(g.Wo, VL);
  const RowTasks tasks(g, g.Ho);
  const int64_t wo_bytes = g.Wo * static_cast<int64_t>(sizeof(T));

  // fp32/fp64 weights with unit column stride are read in place, whole vectors even
  // past the row end: lanes j >= Wo only feed output lanes that are never stored. A
  // row is staged (converted, zero tail) when its dtype or stride differs, or when a
  // vector read would leave the weight tensor's footprint.
  const bool direct = std::is_same_v<T, A> && w.s.j == 1;
  const bool prefetch = taps * g.Ho * wo_bytes > 64 * 1024;
  const T* w_end = w.data + 1 + (g.B - 1) * w.s.b + (g.G - 1) * w.s.g + (g.Kh - 1) * w.s.u +
                   (g.Kw - 1) * w.s.v + (g.Ho - 1) * w.s.i + (g.Wo - 1) * w.s.j;

  at::parallel_for(0, tasks.size(), 1, [&](int64_t begin, int64_t end) {
    StagedInput<T, A> xs(g, wo_padded, tasks.per);
    std::vector<A> wrow(taps * wo_padded);  // staged weights of one output row
    std::vector<const A*> wp(taps);          // per tap: weights of the current row
    std::vector<int64_t> w_tap_offset(taps);
    for (int64_t tap = 0; tap < taps; ++tap)
      w_tap_offset[tap] = (tap / g.Kw) * w.s.u + (tap % g.Kw) * w.s.v;
    for (int64_t task = begin; task < end; ++task) {
      const auto [b, grp, i0, i1] = tasks[task];
      xs.stage(x, b, grp, i0, i1);
      const T* wplane = w.data + b * w.s.b + grp * w.s.g;
      for (int64_t i = i0; i < i1; ++i) {
        if (!direct) {
          stage_weight_rows(wrow.data(), wo_padded, 0, wplane, g, w.s, i, 1, wo_padded, 0);
          for (int64_t tap = 0; tap < taps; ++tap) wp[tap] = &wrow[tap * wo_padded];
        }
        for (int64_t tap = 0; direct && tap < taps; ++tap) {
          const T* src = wplane + w_tap_offset[tap] + i * w.s.i;
          if constexpr (std::is_same_v<T, A>) {
            if (w_end - src >= wo_padded) {
              wp[tap] = src;
              // The weight is 49 concurrent streams for K=7, more than the hardware
              // prefetcher follows: fetch the next row's segments by hand (unless the
              // group's whole weight slab is small enough to stay in cache anyway).
              if (prefetch && i + 1 < i1)
                for (int64_t off = 0; off < wo_bytes; off += 64)
                  __builtin_prefetch(reinterpret_cast<const char*>(src + w.s.i) + off);
              continue;
            }
          }
          stage_line(&wrow[tap * wo_padded], wo_padded, src, 0, 1, w.s.j, g.Wo);
          wp[tap] = &wrow[tap * wo_padded];
        }
        for_each_channel_block(cg, [&](auto cb, int64_t c0) {
          constexpr int CB = decltype(cb)::value;
          const A* xrow = xs.buf.data() + c0 * xs.channel_stride;
          T* yrow = y.data + b * y.s.b + (grp * cg + c0) * y.s.c + i * y.s.h;
          for (int64_t j = 0; j < wo_padded; j += VL) {
            Vec<A, VB> acc[CB] = {};
            for (int64_t tap = 0; tap < taps; ++tap) {
              const Vec<A, VB> wv = load<VB>(wp[tap] + j);
              const A* xp = xrow + xs.offset(i - i0, tap) + j;
#pragma GCC unroll 16
              for (int c = 0; c < CB; ++c) acc[c] += wv * load<VB>(xp + c * xs.channel_stride);
            }
            const int64_t n = std::min(VL, g.Wo - j);
#pragma GCC unroll 16
            for (int c = 0; c < CB; ++c) store_lanes<A>(yrow + c * y.s.c + j * y.s.w, y.s.w, acc[c], n);
          }
        });
      }
    }
  });
}

}  // namespace

template <typename T>
void forward(const Geometry& g, View4<const T> input, View6<const T> weight, View4<T> out) {
  with_vector_width<T>(g.Wo, [&](auto vb) { forward_impl<T, vb()>(g, input, weight, out); });
}

#define INSTANTIATE(T) \
  template void forward<T>(const Geometry&, View4<const T>, View6<const T>, View4<T>);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

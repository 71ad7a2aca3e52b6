// The grad_input kernel (a gather), compiled once per instruction set (cmake/CpuIsa.cmake).
#include "cpu/kernel_common.h"

namespace involution::cpu::INVOLUTION_NS {
namespace {

// grad_x[b,c,h,w] = sum over taps (u,v) with (h+p-u*d) % s == 0 and (w+p-v*d) % s == 0 of
//   weight[b,g,u,v,i,j] * grad_y[b,c,i,j],  i = (h+p-u*d)/s, j = (w+p-v*d)/s.
// A gather: each task owns a block of input rows. Columns are visited per residue
// rw = w mod stride_w, where the valid taps are the same for every column and
// j = t + offset(v) is contiguous in t = w / stride_w — so the loop vectorizes over t.

template <typename T, int VB>
void grad_input_impl(const Geometry& g, View4<const T> gy, View6<const T> w, View4<T> gx) {
  using A = acc_t<T>;
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t cg = g.channels_per_group();
  const int64_t taps = g.taps();
  const int64_t sh = g.stride_h, sw = g.stride_w;
  const int64_t t_padded = round_up(ceil_div(g.W, sw), VL);
  // Staged output columns j in [col_lo, col_lo + staged_width) cover every tap offset.
  const int64_t col_lo = floor_div(g.pad_w - (g.Kw - 1) * g.dil_w, sw);
  const int64_t staged_width = t_padded + floor_div(sw - 1 + g.pad_w, sw) - col_lo;
  const RowTasks tasks(g, g.H);
  const int64_t max_out_rows = (tasks.per - 1 + (g.Kh - 1) * g.dil_h) / sh + 2;

  at::parallel_for(0, tasks.size(), 1, [&](int64_t begin, int64_t end) {
    std::vector<A> gybuf(cg * max_out_rows * staged_width);
    std::vector<A> wbuf(taps * max_out_rows * staged_width);
    std::vector<int64_t> w_off(taps), gy_off(taps);  // valid taps of one (h, residue)
    for (int64_t task = begin; task < end; ++task) {
      const auto [b, grp, h0, h1] = tasks[task];
      // Output rows that touch input rows [h0, h1).
      const int64_t ilo = std::max<int64_t>(0, ceil_div(h0 + g.pad_h - (g.Kh - 1) * g.dil_h, sh));
      const int64_t ihi = std::min(g.Ho - 1, floor_div(h1 - 1 + g.pad_h, sh));
      const int64_t ni = std::max<int64_t>(0, ihi - ilo + 1);
      const int64_t gy_cstride = ni * staged_width;
      stage_lines(gybuf.data(), gy.data + b * gy.s.b + grp * cg * gy.s.c,
                  LineBlock{cg, ni, staged_width, gy_cstride, staged_width, gy.s.c, gy.s.h,
                            gy.s.w, ilo, g.Ho, col_lo, 1, g.Wo});
      stage_weight_rows(wbuf.data(), ni * staged_width, staged_width,
                        w.data + b * w.s.b + grp * w.s.g, g, w.s, ilo, ni, staged_width, col_lo);

      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t rw = 0; rw < sw && rw < g.W; ++rw) {
          int64_t ntaps = 0;
          for (int64_t u = 0; u < g.Kh; ++u) {
            const int64_t num_h = h + g.pad_h - u * g.dil_h;
            if (floor_div(num_h, sh) * sh != num_h) continue;
            const int64_t i = num_h / sh;
            if (i < ilo || i > ihi) continue;
            for (int64_t v = 0; v < g.Kw; ++v) {
              const int64_t num_w = rw + g.pad_w - v * g.dil_w;
              if (floor_div(num_w, sw) * sw != num_w) continue;
              const int64_t k = floor_div(num_w, sw) - col_lo;
              w_off[ntaps] = ((u * g.Kw + v) * ni + (i - ilo)) * staged_width + k;
              gy_off[ntaps] = (i - ilo) * staged_width + k;
              ++ntaps;
            }
          }
          const int64_t count = ceil_div(g.W - rw, sw);  // columns w = rw + sw * t
          for_each_channel_block(cg, [&](auto cb, int64_t c0) {
            constexpr int CB = decltype(cb)::value;
            const A* gyc = gybuf.data() + c0 * gy_cstride;
            T* dst = gx.data + b * gx.s.b + (grp * cg + c0) * gx.s.c + h * gx.s.h + rw * gx.s.w;
            for (int64_t t = 0; t < count; t += VL) {
              Vec<A, VB> acc[CB] = {};
              for (int64_t n = 0; n < ntaps; ++n) {
                const Vec<A, VB> wv = load<VB>(&wbuf[w_off[n] + t]);
                const A* gp = gyc + gy_off[n] + t;
#pragma GCC unroll 16
                for (int c = 0; c < CB; ++c) acc[c] += wv * load<VB>(gp + c * gy_cstride);
              }
              const int64_t m = std::min(VL, count - t);
#pragma GCC unroll 16
              for (int c = 0; c < CB; ++c)
                store_lanes<A>(dst + c * gx.s.c + t * sw * gx.s.w, sw * gx.s.w, acc[c], m);
            }
          });
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void grad_input(const Geometry& g, View4<const T> grad_out, View6<const T> weight,
                View4<T> grad_in) {
  with_vector_width<T>(ceil_div(g.W, g.stride_w), [&](auto vb) {
    grad_input_impl<T, vb()>(g, grad_out, weight, grad_in);
  });
}

#define INSTANTIATE(T) \
  template void grad_input<T>(const Geometry&, View4<const T>, View6<const T>, View4<T>);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

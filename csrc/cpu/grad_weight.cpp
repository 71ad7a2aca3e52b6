// The grad_weight kernel (kernel_grad_row of aggregate.h, stored into the weight-shaped
// gradient), compiled once per instruction set (cmake/CpuIsa.cmake).
#include "cpu/aggregate.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace involution::cpu::INVOLUTION_NS {
namespace {

// grad_w[b,g,u,v,i,j] = sum_{c in g} grad_y[b,c,i,j] * x[b,c,i*s-p+u*d, j*s-p+v*d]

// The gradient is 3x the input (K=7, 16 channels per group). Stored through the cache, each
// of its lines is first read from memory (write-allocate); non-temporal stores skip that read
// (B=8, fp32: grad_weight 0.78-0.95x the time at 56x56, 28x28 and stride 2). Its reader (the
// span conv's backward) then finds it in memory rather than in the last-level cache: with a
// read of it timed too, streaming still took 0.7-1.0x. Smaller gradients stay cached from one
// kernel to the next and are stored normally (14x14 at B=8, 4.9 MB, streamed: 1.0-1.15x).
constexpr int64_t kStreamMinBytes = 8 << 20;

// n bytes from src to dst, dst's whole 64-byte lines with non-temporal stores.
inline void stream_bytes(char* __restrict dst, const char* __restrict src, int64_t n) {
#if defined(__SSE2__)
  const int64_t head = std::min<int64_t>(n, (64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64);
  copy_elements(dst, src, head);
  int64_t k = head;
  for (; k + 64 <= n; k += 64)
    for (int q = 0; q < 64; q += 16) {
      __m128i v;
      std::memcpy(&v, src + k + q, 16);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + k + q), v);
    }
  copy_elements(dst + k, src + k, n - k);
#else
  copy_elements(dst, src, n);
#endif
}

// Orders the calling thread's streamed stores before what it writes next (the end of the
// parallel region others wait on).
inline void end_streaming() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

template <typename T, int VB>
void grad_weight_impl(const Geometry& g, View4<const T> gy, View4<const T> x, View6<T> gw) {
  using A = acc_t<T>;
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t cg = g.channels_per_group();
  const int64_t taps = g.taps();
  const int64_t wo_padded = round_up(g.Wo, VL);
  // A task's gradient is buffered whole, [tap][row][column] with rows g.Wo apart as in a
  // contiguous weight, so each tap's rows leave as one run. A row's padded vectors spill into
  // the next row, written after it, or, past the last row, into the tap's slack.
  const RowTasks tasks = staged_row_tasks<T>(g, wo_padded, taps * g.Wo * int64_t(sizeof(A)));
  const int64_t tap_pitch = tasks.per * g.Wo + wo_padded;
  const bool contiguous = gw.s.j == 1 && gw.s.i == g.Wo;
  const bool stream = contiguous && g.B * g.G * taps * g.Ho * g.Wo * int64_t(sizeof(T)) >= kStreamMinBytes;
  const std::vector<int64_t> tap_offset = weight_tap_offsets(g, gw.s);

  at::parallel_for(0, tasks.size(), 1, [&](int64_t begin, int64_t end) {
    StagedInput<T, A> xs(g, wo_padded, tasks.per);
    std::vector<A> gyrow(cg * wo_padded);       // grad_y of one output row, per channel
    std::vector<A> gwbuf(taps * tap_pitch);     // the task's grad_w
    std::vector<T> gwtap(std::is_same_v<T, A> ? 0 : tasks.per * g.Wo);  // one tap's, as T
    for (int64_t task = begin; task < end; ++task) {
      const auto [b, grp, i0, i1] = tasks[task];
      xs.stage(x, b, grp, i0, i1);
      for (int64_t i = i0; i < i1; ++i) {
        stage_lines(gyrow.data(), gy.data + b * gy.s.b + grp * cg * gy.s.c,
                    LineBlock{cg, 1, wo_padded, wo_padded, 0, gy.s.c, gy.s.h, gy.s.w, i, g.Ho, 0,
                              1, g.Wo});
        kernel_grad_row<T, VB>(g, xs, i - i0, gyrow.data(), wo_padded,
                               gwbuf.data() + (i - i0) * g.Wo, tap_pitch);
      }
      T* plane = gw.data + b * gw.s.b + grp * gw.s.g + i0 * gw.s.i;
      const int64_t n = (i1 - i0) * g.Wo;
      for (int64_t tap = 0; tap < taps; ++tap) {
        const A* src = gwbuf.data() + tap * tap_pitch;
        T* dst = plane + tap_offset[tap];
        if (contiguous) {
          const T* run = nullptr;
          if constexpr (std::is_same_v<T, A>) {
            run = src;
          } else {
            convert_from_acc(gwtap.data(), src, n);
            run = gwtap.data();
          }
          if (stream)
            stream_bytes(reinterpret_cast<char*>(dst), reinterpret_cast<const char*>(run),
                         n * int64_t(sizeof(T)));
          else
            copy_elements(dst, run, n);
          continue;
        }
        for (int64_t r = 0; r < i1 - i0; ++r)
          for (int64_t j = 0; j < g.Wo; j += VL)
            store_lanes<A>(dst + r * gw.s.i + j * gw.s.j, gw.s.j, load<VB>(src + r * g.Wo + j),
                           std::min(VL, g.Wo - j));
      }
    }
    if (stream) end_streaming();
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

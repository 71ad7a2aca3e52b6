// The fused kernels: involution with its kernel generated inside the op from the hidden
// features, k[b, g, tap, i, j] = span_bias[g, tap] + sum_r span_weight[g, tap, r] *
// hidden[b, r, i, j]. Each task computes its rows' kernel values into a small per-thread
// buffer (a register-blocked product over R) and runs the same gathers as the unfused ops
// (aggregate.h) on them: the (B, G, Kh, Kw, Ho, Wo) tensor never exists. Compiled once per
// instruction set (cmake/CpuIsa.cmake).
//
// Backward: the kernel's gradient dk is formed per (task, group) as grad_weight forms it,
// then reduced on the spot into grad_hidden (sum over groups and taps of span_weight^T dk:
// over the task's chunk of groups, the chunks' sums added in order), grad_span_weight
// (dk . hidden^T) and grad_span_bias (sum of dk). The last two sum over B*Ho*Wo: each block
// of rows adds into the partial of its slot (a fixed range of blocks, processed in order),
// and the partials are summed in slot order, so the result is bitwise the same for any thread count. grad_input
// is the grad_input gather with the kernel rows it needs generated again (halo included).
#include <memory>

#include "cpu/aggregate.h"

namespace involution::cpu::INVOLUTION_NS {
namespace {

// out[m * ld_out + n] = (accumulate ? out[..] : bias[m] or 0) +
//                       sum_k mat[m * m_stride + k * k_stride] * in[k * ld_in + n]
// for m < rows, n < width. A block of MB rows x 2 vectors of n stays in registers over k:
// 12 accumulators of the 16 vector registers below AVX-512, 16 of its 32.
template <int VB, typename A>
void small_gemm(A* out, int64_t ld_out, const A* mat, int64_t m_stride, int64_t k_stride,
                int64_t rows, int64_t depth, const A* in, int64_t ld_in, int64_t width,
                const A* bias, bool accumulate) {
  constexpr int64_t VL = kLanes<A, VB>;
  constexpr int MB = kVecBytes >= 64 ? 8 : 6;
  auto init = [&](int64_t m, int64_t n) -> Vec<A, VB> {
    if (accumulate) return load<VB>(out + m * ld_out + n);
    Vec<A, VB> v = {};
    return v + (bias != nullptr ? bias[m] : A(0));
  };
  auto block = [&](int64_t m0, auto mb, auto nb, int64_t n) {
    constexpr int M = decltype(mb)::value, N = decltype(nb)::value;
    Vec<A, VB> acc[M][N];
    for (int a = 0; a < M; ++a)
      for (int c = 0; c < N; ++c) acc[a][c] = init(m0 + a, n + c * VL);
    for (int64_t k = 0; k < depth; ++k) {
      Vec<A, VB> x[N];
      for (int c = 0; c < N; ++c) x[c] = load<VB>(in + k * ld_in + n + c * VL);
      for (int a = 0; a < M; ++a) {
        const A s = mat[(m0 + a) * m_stride + k * k_stride];
        for (int c = 0; c < N; ++c) acc[a][c] += s * x[c];
      }
    }
    for (int a = 0; a < M; ++a)
      for (int c = 0; c < N; ++c) store(out + (m0 + a) * ld_out + n + c * VL, acc[a][c]);
  };
  const int64_t vec_width = width / VL * VL;
  for (int64_t m0 = 0; m0 < rows; m0 += MB) {
    const bool full = m0 + MB <= rows;
    int64_t n = 0;
    for (; n + 2 * VL <= vec_width; n += 2 * VL) {
      if (full) block(m0, std::integral_constant<int, MB>{}, std::integral_constant<int, 2>{}, n);
      else
        for (int64_t m = m0; m < rows; ++m)
          block(m, std::integral_constant<int, 1>{}, std::integral_constant<int, 2>{}, n);
    }
    for (; n < vec_width; n += VL) {
      if (full) block(m0, std::integral_constant<int, MB>{}, std::integral_constant<int, 1>{}, n);
      else
        for (int64_t m = m0; m < rows; ++m)
          block(m, std::integral_constant<int, 1>{}, std::integral_constant<int, 1>{}, n);
    }
    for (int64_t m = m0; m < std::min(rows, m0 + MB); ++m)  // the scalar tail of n
      for (int64_t t = vec_width; t < width; ++t) {
        A sum = accumulate ? out[m * ld_out + t] : (bias != nullptr ? bias[m] : A(0));
        for (int64_t k = 0; k < depth; ++k) sum += mat[m * m_stride + k * k_stride] * in[k * ld_in + t];
        out[m * ld_out + t] = sum;
      }
  }
}

// One group's span rows (taps x R) and bias in the accumulator type.
template <typename T>
struct GroupSpan {
  using A = acc_t<T>;
  std::vector<A> weight, bias;
  bool has_bias = false;
  GroupSpan(int64_t taps, int64_t R) : weight(taps * R), bias(taps) {}
  void load(const SpanArgs<T>& span, int64_t grp, int64_t taps) {
    for (int64_t t = 0; t < taps; ++t) {
      const T* row = span.weight + (grp * taps + t) * span.weight_s_row;
      for (int64_t r = 0; r < span.R; ++r) weight[t * span.R + r] = static_cast<A>(row[r * span.weight_s_col]);
      bias[t] = span.bias != nullptr ? static_cast<A>(span.bias[(grp * taps + t) * span.bias_s]) : A(0);
    }
    has_bias = span.bias != nullptr;
  }
};

// The hidden features of output rows [row0, row0 + rows), all R channels, staged as
// [r][row][column] with `width` columns from col0 (zero outside the map).
template <typename T>
void stage_hidden(std::vector<acc_t<T>>& buf, const Geometry& g, const SpanArgs<T>& span, int64_t b,
                  int64_t row0, int64_t rows, int64_t width, int64_t col0) {
  const View4<const T>& h = span.hidden;
  stage_lines(buf.data(), h.data + b * h.s.b,
              LineBlock{span.R, rows, width, rows * width, width, h.s.c, h.s.h, h.s.w, row0, g.Ho,
                        col0, 1, g.Wo});
}

// The kernel values of a block of output rows of one (batch, group), generated from the
// hidden features over the map's columns: [tap][row][j], j < wo_padded, with
// kernel = bias[tap] + sum_r span[tap, r] * hidden[r][row][j]. The staged hidden rows are
// reused while (batch, rows) stay the same, as they do from group to group of a block
// (TaskOrder::kGroupsInner).
template <typename T, int VB>
class KernelRows {
  using A = acc_t<T>;

 public:
  KernelRows(const Geometry& g, const SpanArgs<T>& span, int64_t wo_padded, int64_t max_rows)
      : g_(g), span_(span), wo_padded_(wo_padded), group_(g.taps(), span.R),
        hidden_(span.R * max_rows * wo_padded), kernel_(g.taps() * max_rows * wo_padded) {}

  const A* generate(int64_t b, int64_t grp, int64_t row0, int64_t rows) {
    if (b != b_ || row0 != row0_ || rows != rows_) stage_hidden(hidden_, g_, span_, b, row0, rows, wo_padded_, 0);
    b_ = b, row0_ = row0, rows_ = rows;
    group_.load(span_, grp, g_.taps());
    const int64_t n = rows * wo_padded_;
    small_gemm<VB>(kernel_.data(), n, group_.weight.data(), span_.R, 1, g_.taps(), span_.R,
                   hidden_.data(), n, n, group_.has_bias ? group_.bias.data() : nullptr, false);
    return kernel_.data();
  }

 private:
  const Geometry& g_;
  const SpanArgs<T>& span_;
  int64_t wo_padded_, b_ = -1, row0_ = -1, rows_ = -1;
  GroupSpan<T> group_;
  std::vector<A> hidden_, kernel_;  // [r][row][j] and [tap][row][j]
};

// The weight rows of forward_gather, generated: per task, the kernel values of its rows.
template <typename T, int VB>
class SpanWeightRows {
  using A = acc_t<T>;

 public:
  SpanWeightRows(const Geometry& g, const SpanArgs<T>& span, int64_t wo_padded, int64_t max_rows)
      : taps_(g.taps()), wo_padded_(wo_padded), rows_(g, span, wo_padded, max_rows), wp_(taps_) {}

  void begin_task(int64_t b, int64_t grp, int64_t i0, int64_t i1) {
    kernel_ = rows_.generate(b, grp, i0, i1 - i0);
    i0_ = i0;
    tap_stride_ = (i1 - i0) * wo_padded_;
  }

  const A* const* row(int64_t i) {
    for (int64_t tap = 0; tap < taps_; ++tap)
      wp_[tap] = kernel_ + tap * tap_stride_ + (i - i0_) * wo_padded_;
    return wp_.data();
  }

 private:
  int64_t taps_, wo_padded_, tap_stride_ = 0, i0_ = 0;
  KernelRows<T, VB> rows_;
  const A* kernel_ = nullptr;
  std::vector<const A*> wp_;
};

// The weights of grad_input_gather, generated for the output rows a block of input rows
// touches, then placed at their staged columns (the zeros around them stay, see WeightStager).
template <typename T, int VB>
class SpanStager {
  using A = acc_t<T>;

 public:
  SpanStager(const Geometry& g, const SpanArgs<T>& span, int64_t max_rows, int64_t wo_padded)
      : g_(g), wo_padded_(wo_padded), rows_(g, span, wo_padded, max_rows) {}

  void stage(A* dst, int64_t tap_stride, int64_t b, int64_t grp, int64_t ilo, int64_t ni,
             int64_t width, int64_t col0) {
    if (ni == 0) return;
    const A* kernel = rows_.generate(b, grp, ilo, ni);
    // Staged column k holds output column col0 + k; the columns outside stay zero.
    const int64_t lo = std::clamp<int64_t>(-col0, 0, width);
    const int64_t hi = std::clamp<int64_t>(g_.Wo - col0, lo, width);
    for (int64_t tap = 0; tap < g_.taps(); ++tap)
      for (int64_t row = 0; row < ni; ++row) {
        A* d = dst + tap * tap_stride + row * width;
        const A* src = kernel + (tap * ni + row) * wo_padded_;
        for (int64_t k = lo; k < hi; ++k) d[k] = src[col0 + k];
      }
  }

 private:
  const Geometry& g_;
  int64_t wo_padded_;
  KernelRows<T, VB> rows_;
};

// Input rows per grad_input task. A task generates the kernel of every output row its input
// rows touch, its K-1 halo rows included: 14 rows for 8 input rows at K=7, 1.75x the
// forward's generation. Larger blocks cut that (to 1x when a block is the whole map), as long
// as the task's kernel rows (taps x rows x width) stay within 320 KiB.
template <typename A>
int64_t grad_input_rows_per_task(const Geometry& g, int64_t width) {
  return rows_within_budget(g.H, 320 << 10, [&](int64_t rows) {
    return g.taps() * grad_input_out_rows(g, rows) * width * int64_t(sizeof(A));
  });
}

template <typename T, int VB>
void fused_forward_impl(const Geometry& g, View4<const T> x, const SpanArgs<T>& span, View4<T> y) {
  forward_gather<T, VB>(g, x, y, [&](int64_t wo_padded, int64_t max_rows, auto /*lanes*/) {
    return SpanWeightRows<T, VB>(g, span, wo_padded, max_rows);
  }, (g.taps() + span.R) * round_up(g.Wo, kLanes<acc_t<T>, VB>) * int64_t(sizeof(acc_t<T>)),
     TaskOrder::kGroupsInner);
}

// The reduction of grad_hidden, grad_span_weight and grad_span_bias. Blocks are (batch, kRows
// output rows); work items are (slot: a fixed range of blocks, chunk of groups), run block
// after block. The split depends on the shape only, never on the thread count: groups are
// split into chunks only as far as needed for kTargetTasks items (a small batch or map has
// few blocks). Items write disjoint groups of their slot's partials. A block's grad_hidden
// sums the chunk's groups; with several chunks, each (block, chunk) keeps its sum and the
// chunks are added in order.
template <typename T, int VB>
void fused_span_grads(const Geometry& g, View4<const T> gy, View4<const T> x,
                      const SpanArgs<T>& span, const SpanGrads<T>& out) {
  using A = acc_t<T>;
  constexpr int64_t VL = kLanes<A, VB>;
  constexpr int64_t kRows = 8, kTargetTasks = 32;
  const int64_t cg = g.channels_per_group(), taps = g.taps(), R = span.R;
  const int64_t wo_padded = round_up(g.Wo, VL);
  const int64_t tile = R * kRows * wo_padded;  // grad_hidden of one block
  const int64_t row_blocks = ceil_div(g.Ho, kRows), blocks = g.B * row_blocks;
  const int64_t chunks = std::clamp<int64_t>(ceil_div(kTargetTasks, blocks), 1, g.G);
  const bool want_hidden = out.hidden.data != nullptr;
  const bool want_span = out.weight != nullptr || out.bias != nullptr;
  // Partials of grad_span_weight and grad_span_bias per slot: as many slots as blocks, up to
  // 64 and a 64 MiB budget.
  const int64_t partial = g.G * taps * (R + 1);
  const int64_t slots = want_span ? std::max<int64_t>(1, std::min<int64_t>({blocks, 64,
                                        (int64_t(64) << 20) / int64_t(sizeof(A) * partial)}))
                                  : blocks;
  // Left uninitialized: each item zeroes its groups' share of its slot's partial (spread over
  // the threads; a memset of the whole, 6.4 MiB at 7x7, B=8, was about 3 % of the call), and
  // every hidden partial is written before it is read.
  const auto partials = std::make_unique_for_overwrite<A[]>(want_span ? slots * partial : 0);
  const auto hidden_partials =
      std::make_unique_for_overwrite<A[]>(want_hidden && chunks > 1 ? blocks * chunks * tile : 0);

  // Writes rows [i0, i1) of grad_hidden for batch b from sum (one tile, [r][row][j]).
  auto write_hidden = [&](const A* sum, int64_t b, int64_t i0, int64_t i1) {
    const View4<T>& gh = out.hidden;
    const int64_t n = (i1 - i0) * wo_padded;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = i0; i < i1; ++i) {
        T* dst = gh.data + b * gh.s.b + r * gh.s.c + i * gh.s.h;
        const A* src = sum + r * n + (i - i0) * wo_padded;
        for (int64_t j = 0; j < g.Wo; ++j) dst[j * gh.s.w] = static_cast<T>(src[j]);
      }
  };

  at::parallel_for(0, slots * chunks, 1, [&](int64_t item_begin, int64_t item_end) {
    StagedInput<T, A> xs(g, wo_padded, kRows);
    GroupSpan<T> group(taps, R);
    // hidden_t: the task's hidden features transposed, [row * wo_padded + j][r], so that
    // grad_span_weight is a product vectorized over r. Kept while the block stays the same.
    std::vector<A> hidden(R * kRows * wo_padded), hidden_t(kRows * wo_padded * R),
        grad_hidden(want_hidden && chunks == 1 ? tile : 0);
    std::vector<A> gyrow(cg * wo_padded), dk(taps * kRows * wo_padded);
    int64_t staged_block = -1;
    for (int64_t item = item_begin; item < item_end; ++item) {
      const int64_t slot = item / chunks, chunk = item % chunks;
      const int64_t g0 = chunk * g.G / chunks, g1 = (chunk + 1) * g.G / chunks;
      A* part = want_span ? partials.get() + slot * partial : nullptr;
      if (want_span) {
        std::fill_n(part + g0 * taps * R, (g1 - g0) * taps * R, A(0));
        std::fill_n(part + g.G * taps * R + g0 * taps, (g1 - g0) * taps, A(0));
      }
      for (int64_t block = slot * blocks / slots; block < (slot + 1) * blocks / slots; ++block) {
        const int64_t b = block / row_blocks, i0 = (block % row_blocks) * kRows;
        const int64_t i1 = std::min(g.Ho, i0 + kRows), n = (i1 - i0) * wo_padded;
        if (out.weight != nullptr && block != staged_block) {
          stage_hidden(hidden, g, span, b, i0, i1 - i0, wo_padded, 0);
          for (int64_t r = 0; r < R; ++r)
            for (int64_t l = 0; l < n; ++l) hidden_t[l * R + r] = hidden[r * n + l];
          staged_block = block;
        }
        A* gh_sum = chunks == 1 ? grad_hidden.data()
                                : hidden_partials.get() + (block * chunks + chunk) * tile;
        for (int64_t grp = g0; grp < g1; ++grp) {
          xs.stage(x, b, grp, i0, i1);
          for (int64_t i = i0; i < i1; ++i) {
            stage_lines(gyrow.data(), gy.data + b * gy.s.b + grp * cg * gy.s.c,
                        LineBlock{cg, 1, wo_padded, wo_padded, 0, gy.s.c, gy.s.h, gy.s.w, i, g.Ho,
                                  0, 1, g.Wo});
            kernel_grad_row<T, VB>(g, xs, i - i0, gyrow.data(), wo_padded,
                                   dk.data() + (i - i0) * wo_padded, n);
          }
          if (want_hidden) {
            group.load(span, grp, taps);
            // grad_hidden[r] (+)= sum_tap span[tap, r] * dk[tap]: the span rows read transposed.
            small_gemm<VB>(gh_sum, n, group.weight.data(), 1, R, R, taps, dk.data(), n, n,
                           static_cast<const A*>(nullptr), grp > g0);
          }
          if (out.weight != nullptr)  // partial[tap][r] += sum_l dk[tap][l] * hidden[r][l]
            small_gemm<VB>(part + grp * taps * R, R, dk.data(), n, 1, taps, n, hidden_t.data(), R, R,
                           static_cast<const A*>(nullptr), true);
          if (out.bias != nullptr) {
            A* bias_part = part + g.G * taps * R + grp * taps;
            for (int64_t t = 0; t < taps; ++t) {
              Vec<A, VB> s = {};
              for (int64_t l = 0; l < n; l += VL) s += load<VB>(dk.data() + t * n + l);
              for (int64_t l = 0; l < VL; ++l) bias_part[t] += s[l];
            }
          }
        }
        if (want_hidden && chunks == 1) write_hidden(gh_sum, b, i0, i1);
      }
    }
  });

  if (want_hidden && chunks > 1)  // the chunks' sums, added in chunk order
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> sum(tile);
      for (int64_t block = begin; block < end; ++block) {
        const int64_t b = block / row_blocks, i0 = (block % row_blocks) * kRows;
        const int64_t i1 = std::min(g.Ho, i0 + kRows), n = R * (i1 - i0) * wo_padded;
        const A* first = hidden_partials.get() + block * chunks * tile;
        std::copy(first, first + n, sum.begin());
        for (int64_t chunk = 1; chunk < chunks; ++chunk)
          for (int64_t l = 0; l < n; ++l) sum[l] += first[chunk * tile + l];
        write_hidden(sum.data(), b, i0, i1);
      }
    });

  if (!want_span) return;
  // The slots' partials, added in slot order: one contiguous run of (span row, r) values at a
  // time, so that the adds are vector adds over a slot's partial.
  const int64_t rows = g.G * taps;
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<A> weight_sum(out.weight != nullptr ? n * R : 0), bias_sum(n);
    for (int64_t slot = 0; slot < slots; ++slot) {
      const A* part = partials.get() + slot * partial;
      const A* weight_part = part + begin * R;
      const A* bias_part = part + rows * R + begin;
      for (int64_t l = 0; l < int64_t(weight_sum.size()); ++l) weight_sum[l] += weight_part[l];
      for (int64_t l = 0; l < n && out.bias != nullptr; ++l) bias_sum[l] += bias_part[l];
    }
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t r = 0; r < R && out.weight != nullptr; ++r)
        out.weight[row * out.weight_s_row + r * out.weight_s_col] =
            static_cast<T>(weight_sum[(row - begin) * R + r]);
      if (out.bias != nullptr) out.bias[row * out.bias_s] = static_cast<T>(bias_sum[row - begin]);
    }
  });
}

}  // namespace

template <typename T>
void fused_forward(const Geometry& g, View4<const T> input, const SpanArgs<T>& span,
                   View4<T> out) {
  with_vector_width<T>(g.Wo, [&](auto vb) { fused_forward_impl<T, vb()>(g, input, span, out); });
}

template <typename T>
void fused_backward(const Geometry& g, View4<const T> grad_out, View4<const T> input,
                    const SpanArgs<T>& span, View4<T> grad_in, const SpanGrads<T>& grads) {
  if (grads.hidden.data != nullptr || grads.weight != nullptr || grads.bias != nullptr)
    with_vector_width<T>(g.Wo, [&](auto vb) {
      fused_span_grads<T, vb()>(g, grad_out, input, span, grads);
    });
  if (grad_in.data != nullptr)
    with_vector_width<T>(ceil_div(g.W, g.stride_w), [&](auto vb) {
      constexpr int64_t VL = kLanes<acc_t<T>, vb()>;
      grad_input_gather<T, vb()>(
          g, grad_out, grad_in,
          [&](int64_t max_rows, int64_t) { return SpanStager<T, vb()>(g, span, max_rows, round_up(g.Wo, VL)); },
          grad_input_rows_per_task<acc_t<T>>(g, round_up(g.Wo, VL) + g.Kw * g.dil_w),
          TaskOrder::kGroupsInner);
    });
}

#define INSTANTIATE(T)                                                                         \
  template void fused_forward<T>(const Geometry&, View4<const T>, const SpanArgs<T>&,          \
                                 View4<T>);                                                    \
  template void fused_backward<T>(const Geometry&, View4<const T>, View4<const T>,             \
                                  const SpanArgs<T>&, View4<T>, const SpanGrads<T>&);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

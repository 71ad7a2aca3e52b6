// The two gathers every CPU kernel of the library is built on, with the kernel (the
// per-pixel weights) supplied by the caller, so the unfused ops (weights read from a tensor)
// and the fused ones (weights generated from the hidden features, fused.cpp) share them:
//  * forward_gather: y[b, c, i, :] = sum over taps of w[tap, i, :] * x[b, c, window(i, tap), :]
//    with WeightRows supplying, per output row, one pointer per tap to the row's weights;
//  * grad_input_gather: the gather of grad_input.cpp, with WeightStager staging the weights
//    of the output rows a block of input rows touches.
//  * kernel_grad_row: one output row of the kernel's gradient, as grad_weight.cpp stores it
//    and fused.cpp consumes it.
// The two gathers run with vectors along a row's columns or, where a group's channels fill
// whole vectors, along the channels (lane_gather_row; group_fills_vectors says when).
// Included by forward.cpp, grad_input.cpp, grad_weight.cpp and fused.cpp, so compiled once per
// instruction set.
#pragma once

#include <concepts>

#include "cpu/kernel_common.h"

namespace involution::cpu::INVOLUTION_NS {
namespace {

// One block of CB channels of one output row: out[c][j] = sum over taps of
// wp[tap][j] * x[c * channel_stride + row_offset + tap_offset[tap] + j], the weights of type
// W (A, or fp16/bf16 widened as they are loaded). Its own function with scalar arguments,
// kept out of line: inlined into the task loop, GCC kept the accumulators (or the tap tables
// and loop bound) on the stack, reloaded every tap.
template <typename T, int VB, int CB, typename A, typename W>
__attribute__((noinline)) void gather_row_block(T* yrow, int64_t y_sc, int64_t y_sw,
                                                const W* const* wp, const A* x,
                                                int64_t channel_stride, int64_t row_offset,
                                                const int64_t* tap_offset, int64_t taps,
                                                int64_t wo, int64_t wo_padded) {
  constexpr int64_t VL = kLanes<A, VB>;
  for (int64_t j = 0; j < wo_padded; j += VL) {
    Vec<A, VB> acc[CB] = {};
    for (int64_t tap = 0; tap < taps; ++tap) {
      const Vec<A, VB> wv = load_as_acc<VB, A>(wp[tap] + j);
      const A* xp = x + row_offset + tap_offset[tap] + j;
#pragma GCC unroll 16
      for (int c = 0; c < CB; ++c) acc[c] += wv * load<VB>(xp + c * channel_stride);
    }
    const int64_t n = std::min(VL, wo - j);
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) store_lanes<A>(yrow + c * y_sc + j * y_sw, y_sw, acc[c], n);
  }
}

// Channels on the vector lanes (see group_fills_vectors for when): one vector holds VL
// consecutive channels of a pixel and the pixel's weight is a broadcast scalar, so loads (and
// stores, for channels_last outputs) are whole contiguous vectors whatever the row width (the
// column-lane gather above fills 7 of 8 lanes on a 7-wide row, stages channels_last input
// through a transpose and stores a channels_last output lane by lane).
// Pixels staged pixel-major: row r (source row row0 + r) at dst + r * width * channels, its
// column k (source column col0 + k) at + k * channels, channel c at + c; rows outside
// [0, nrows) are zeros. Columns outside [0, ncols) are not written: the buffers' lines keep
// their place from task to task, so those columns, zeroed once, stay zero.
struct PixelBlock {
  int64_t channels, s_c, s_h, s_w;  // channels per pixel; source strides
  int64_t row0, rows, nrows, col0, width, ncols;
};

template <typename T, typename A>
void stage_pixel_rows(A* dst, const T* src, const PixelBlock& P) {
  const int64_t cs = P.channels;
  const auto [lo, hi] = valid_columns(P.width, P.col0, 1, P.ncols);
  for (int64_t r = 0; r < P.rows; ++r) {
    const int64_t h = P.row0 + r;
    A* line = dst + r * P.width * cs;
    if (h < 0 || h >= P.nrows) {  // a padding row (it may hold a row of the previous task)
      zero_elements(line + lo * cs, (hi - lo) * cs);
      continue;
    }
    const T* px = src + h * P.s_h + (P.col0 + lo) * P.s_w;
    for (int64_t k = lo; k < hi; ++k, px += P.s_w) {
      if (P.s_c == 1) {
        convert_to_acc(line + k * cs, px, cs);
      } else {
        for (int64_t c = 0; c < cs; ++c) line[k * cs + c] = static_cast<A>(px[c * P.s_c]);
      }
    }
  }
}

// Input rows of one group staged pixel-major, [row][column][channel] in the accumulator type:
// the input columns one output row reads, from column -pad_w, with a zero halo.
template <typename T, typename A>
struct StagedPixels {
  const Geometry& g;
  int64_t width;      // staged columns: those one output row reads
  int64_t row_pitch;  // width * channels per group
  std::vector<A> buf;
  std::vector<int64_t> tap_offset;  // per (u, v): offset of the tap's input for column 0

  // Lines keep their place from task to task: the halo columns, zeroed here, stay zero.
  StagedPixels(const Geometry& geom, int64_t max_rows_per_task)
      : g(geom), width(g.input_cols(g.Wo)),
        row_pitch(width * g.channels_per_group()), tap_offset(g.taps()) {
    buf.assign(g.input_rows(max_rows_per_task) * row_pitch, A(0));
    for (int64_t tap = 0; tap < g.taps(); ++tap)
      tap_offset[tap] = (tap / g.Kw) * g.dil_h * row_pitch +
                        (tap % g.Kw) * g.dil_w * g.channels_per_group();
  }

  // Stages the input rows of output rows [i0, i1) of group `grp` in batch b.
  void stage(View4<const T> x, int64_t b, int64_t grp, int64_t i0, int64_t i1) {
    const int64_t cg = g.channels_per_group();
    stage_pixel_rows(buf.data(), x.data + b * x.s.b + grp * cg * x.s.c,
                     PixelBlock{cg, x.s.c, x.s.h, x.s.w, i0 * g.stride_h - g.pad_h,
                                g.input_rows(i1 - i0), g.H, -g.pad_w, width, g.W});
  }
  int64_t row_offset(int64_t local_row) const { return local_row * g.stride_h * row_pitch; }
};

// Output pixels [j_begin, j_end) of one row, NV vectors of channels: channel c of pixel j,
// stored at y[j * y_sw + c * y_sc] (one vector store when y_sc == 1), is the sum over taps of
// wp[tap][j] * x[tap_offset[tap] + j * col_step + c], in blocks of P pixels (P * NV
// accumulators in registers); the last block overlaps the one before rather than running a
// tail (its pixels are worked out again, to the same values). Needs j_end - j_begin >= P,
// and reads only wp[tap][j_begin .. j_end). CS, when not 0,
// is col_step known at compile time: the P pixels' loads then take constant displacements
// from one pointer (with col_step in a register GCC spent more instructions on addresses
// than on FMAs, and spilled).
template <typename T, int VB, int NV, int P, int CS, typename A>
__attribute__((noinline)) void lane_gather_row(T* y, int64_t y_sc, int64_t y_sw,
                                               const A* const* wp, const A* x,
                                               int64_t col_step_arg, const int64_t* tap_offset,
                                               int64_t taps, int64_t j_begin, int64_t j_end) {
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t col_step = CS != 0 ? CS : col_step_arg;
  for (int64_t j0 = j_begin; j0 < j_end; j0 += P) {
    const int64_t j = std::min(j0, j_end - P);
    const A* xj = x + j * col_step;
    Vec<A, VB> acc[P][NV] = {};
    for (int64_t tap = 0; tap < taps; ++tap) {
      const A* w = wp[tap] + j;
      const A* xp = xj + tap_offset[tap];
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) {
        const A wv = w[p];
#pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) acc[p][n] += wv * load<VB>(xp + p * col_step + n * VL);
      }
    }
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n)
        store_lanes<A>(y + (j + p) * y_sw + n * VL * y_sc, y_sc, acc[p][n], VL);
  }
}

// Accumulators of lane_gather_row: 8 independent FMA chains cover the FMA latency of
// current x86 cores (4 cycles, 2 per cycle).
constexpr int kLaneAccumulators = 8;

// lane_gather_row with the widest block of pixels the columns allow; at full width, with the
// column step fixed when it is one block of channels (a group of NV vectors, stride 1).
template <typename T, int VB, int NV, int P = kLaneAccumulators / NV, typename A>
void lane_gather_row_any(T* y, int64_t y_sc, int64_t y_sw, const A* const* wp, const A* x,
                         int64_t col_step, const int64_t* tap_offset, int64_t taps,
                         int64_t j_begin, int64_t j_end) {
  constexpr int kBlock = NV * kLanes<A, VB>;
  const int64_t n = j_end - j_begin;
  if (n <= 0) return;
  if constexpr (P == kLaneAccumulators / NV) {
    if (n >= P && col_step == kBlock)
      return lane_gather_row<T, VB, NV, P, kBlock>(y, y_sc, y_sw, wp, x, col_step, tap_offset,
                                                   taps, j_begin, j_end);
  }
  if constexpr (P > 1) {
    if (n < P)
      return lane_gather_row_any<T, VB, NV, P / 2>(y, y_sc, y_sw, wp, x, col_step, tap_offset,
                                                   taps, j_begin, j_end);
  }
  lane_gather_row<T, VB, NV, P, 0>(y, y_sc, y_sw, wp, x, col_step, tap_offset, taps, j_begin,
                                   j_end);
}

// The channels-on-lanes gathers need a group's channels to fill whole vectors. The forward
// takes them for channels_last outputs (channels contiguous) and for rows no wider than one
// vector: such rows (RedNet's 7x7 stage) leave column lanes idle and pay a row's fixed costs
// for one vector of outputs: even with the NCHW input staged and the output stored lane by
// lane, the forward took 0.76x (fp32), 0.83x (fp16), 0.96x (bf16) the column lanes' time at
// 7x7. grad_input takes them for channels_last outputs only (NCHW at 7x7: 1.06x).
template <typename A, int VB>
bool group_fills_vectors(const Geometry& g) {
  return g.channels_per_group() % kLanes<A, VB> == 0;
}

// WeightRows (one per thread, from make_rows(wo_padded, rows_per_task, lanes), lanes a
// std::bool_constant: whether the channels-on-lanes gather will read the rows):
//   void begin_task(int64_t b, int64_t grp, int64_t i0, int64_t i1);
//   const W* const* row(int64_t i);  // per tap: wo_padded weights of output row i
// W is A, or, for the column lanes only, a type load_as_acc widens (fp16/bf16 rows read in
// place): the lanes broadcast one weight per pixel, which a widening load would cost
// several instructions each. Lanes j >= Wo of a weight row may hold anything: they feed
// only output lanes that are never stored.
// weight_row_bytes: what WeightRows buffers per output row (0 when it reads the weights in place).
template <typename T, int VB, typename MakeWeightRows>
void forward_gather(const Geometry& g, View4<const T> x, View4<T> y, MakeWeightRows&& make_rows,
                    int64_t weight_row_bytes = 0, TaskOrder order = TaskOrder::kBlocksInner) {
  using A = acc_t<T>;
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t cg = g.channels_per_group();
  const int64_t taps = g.taps();
  const int64_t wo_padded = round_up(g.Wo, VL);
  const RowTasks tasks = staged_row_tasks<T>(g, wo_padded, weight_row_bytes, order);
  // Per task: stage its input rows, then body(staged, weights of row i, b, grp, i, i0) per row.
  auto run_tasks = [&](auto lanes, auto make_staged, auto&& body) {
    at::parallel_for(0, tasks.size(), 1, [&](int64_t begin, int64_t end) {
      auto xs = make_staged();
      auto rows = make_rows(wo_padded, tasks.per, lanes);
      for (int64_t task = begin; task < end; ++task) {
        const auto [b, grp, i0, i1] = tasks[task];
        xs.stage(x, b, grp, i0, i1);
        rows.begin_task(b, grp, i0, i1);
        for (int64_t i = i0; i < i1; ++i) body(xs, rows.row(i), b, grp, i, i0);
      }
    });
  };
  auto out_row = [&](int64_t b, int64_t grp, int64_t i) {
    return y.data + b * y.s.b + grp * cg * y.s.c + i * y.s.h;
  };
  if (group_fills_vectors<A, VB>(g) && (y.s.c == 1 || g.Wo <= VL)) {
    return run_tasks(std::true_type{}, [&] { return StagedPixels<T, A>(g, tasks.per); },
                     [&](const StagedPixels<T, A>& xs, const A* const* wp, int64_t b,
                         int64_t grp, int64_t i, int64_t i0) {
      const A* xrow = xs.buf.data() + xs.row_offset(i - i0);
      for_each_lane_block(cg / VL, [&](auto nv, int64_t v0) {
        lane_gather_row_any<T, VB, decltype(nv)::value>(
            out_row(b, grp, i) + v0 * VL * y.s.c, y.s.c, y.s.w, wp, xrow + v0 * VL,
            g.stride_w * cg, xs.tap_offset.data(), taps, 0, g.Wo);
      });
    });
  }
  run_tasks(std::false_type{}, [&] { return StagedInput<T, A>(g, wo_padded, tasks.per); },
            [&](const StagedInput<T, A>& xs, const auto* const* wp, int64_t b, int64_t grp,
                int64_t i, int64_t i0) {
    for_each_channel_block(cg, [&](auto cb, int64_t c0) {
      gather_row_block<T, VB, decltype(cb)::value>(
          out_row(b, grp, i) + c0 * y.s.c, y.s.c, y.s.w, wp,
          xs.buf.data() + c0 * xs.channel_stride, xs.channel_stride, xs.row_offset(i - i0),
          xs.tap_offset.data(), taps, g.Wo, wo_padded);
    });
  });
}

// grad_x[b,c,h,w] = sum over taps (u,v) with (h+p-u*d) % s == 0 and (w+p-v*d) % s == 0 of
//   weight[b,g,u,v,i,j] * grad_y[b,c,i,j],  i = (h+p-u*d)/s, j = (w+p-v*d)/s.
// A gather: each task owns a block of input rows. Columns are visited per residue
// rw = w mod stride_w, where the valid taps are the same for every column and
// j = t + offset(v) is contiguous in t = w / stride_w — so the loop vectorizes over t.

// Output rows (an upper bound) that a block of `rows` input rows touches in grad_input.
inline int64_t grad_input_out_rows(const Geometry& g, int64_t rows) {
  return (rows - 1 + (g.Kh - 1) * g.dil_h) / g.stride_h + 2;
}

// WeightStager (one per thread, from make_stager(max_out_rows, staged_width)):
//   void stage(A* dst, int64_t tap_stride, int64_t b, int64_t grp, int64_t ilo, int64_t ni,
//              int64_t width, int64_t col0);
// writes tap t's weights of output rows ilo .. ilo+ni-1, columns col0 .. col0+width-1, at
// dst + t * tap_stride + row * width + column — only the columns inside the output: every
// line keeps its place from task to task, so the columns outside, zeroed once, stay zero.
// A stager may also hand out the weights in place (see InPlaceWeightStager): then nothing
// is staged but grad_output.
// A task takes up to max_rows input rows (fewer when needed to occupy every thread); by
// default as many as keep its staged grad_output and weights within 512 KiB. Each block
// stages the weights of its K-1 halo rows again; twice the budget of the other kernels
// (whole 28x28 planes, blocks of 14 rows at 56x56) took 0.74-0.90x the time at 56x56, 28x28
// and stride 2 (B=8, fp32), and 1 MiB gained nothing more.
constexpr int64_t kGradInputStagingBudget = 512 << 10;
// Weight rows at least this long are read in place by the channels-on-lanes gather.
constexpr int64_t kLaneInPlaceMinRowBytes = 192;

// A WeightStager that can also hand out weight rows in place:
//   bool in_place();  // whether row() may be called (else stage() is)
//   const A* row(int64_t b, int64_t grp, int64_t tap, int64_t i, int64_t col0, int64_t width,
//                A* scratch);
// returns p with p[k] = tap's weight at output row i, column col0 + k, for k in [0, width)
// (readable memory; columns outside [0, Wo) may hold anything, the gather zeroes them),
// staging the row into scratch (width elements) when it cannot be read in place.
template <typename S, typename A>
concept InPlaceWeightStager = requires(S s, int64_t n, A* scratch) {
  { s.in_place() } -> std::convertible_to<bool>;
  { s.row(n, n, n, n, n, n, scratch) } -> std::convertible_to<const A*>;
};

// Per first column f (from col0, `count` of them): the mask of a vector's lanes l whose
// column f + l lies inside [0, ncols). Weights read in place are and-ed with them at a
// row's ends, where a vector reaches beside the row: there a non-finite weight must not
// reach the sum as 0 * inf. A table, as working each mask out took 6 instructions per tap
// and vector (AVX2 grad_input at 28x28: 1.13x the staged weights' time; a load and an and).
template <typename A, int VB>
struct LaneMasks {
  using Bits = std::conditional_t<sizeof(A) == 4, uint32_t, uint64_t>;
  using Mask = typename VecOf<Bits, VB>::type;
  std::vector<Mask> table;
  LaneMasks(int64_t col0, int64_t count, int64_t ncols) : table(count) {
    for (int64_t f = 0; f < count; ++f)
      for (int64_t l = 0; l < kLanes<A, VB>; ++l) {
        const int64_t col = col0 + f + l;
        table[f][l] = col >= 0 && col < ncols ? ~Bits(0) : Bits(0);
      }
  }
  // v with the lanes outside zeroed, for the vector whose first column is col0 + f.
  Vec<A, VB> apply(Vec<A, VB> v, int64_t f) const {
    return reinterpret_cast<Vec<A, VB>>(reinterpret_cast<Mask>(v) & table[f]);
  }
};
template <typename T, int VB, typename MakeStager>
void grad_input_gather(const Geometry& g, View4<const T> gy, View4<T> gx, MakeStager&& make_stager,
                       int64_t max_rows = 0, TaskOrder order = TaskOrder::kBlocksInner) {
  using A = acc_t<T>;
  using Stager = decltype(make_stager(int64_t(0), int64_t(0)));
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t cg = g.channels_per_group();
  const int64_t taps = g.taps();
  const int64_t sh = g.stride_h, sw = g.stride_w;
  const int64_t t_padded = round_up(ceil_div(g.W, sw), VL);
  // Staged output columns j in [col_lo, col_lo + staged_width) cover every tap offset.
  const int64_t col_lo = floor_div(g.pad_w - (g.Kw - 1) * g.dil_w, sw);
  const int64_t staged_width = t_padded + floor_div(sw - 1 + g.pad_w, sw) - col_lo;

  // Channels on the lanes (see group_fills_vectors): grad_output staged pixel-major, and
  // each residue's columns run through lane_gather_row with per-tap weight pointers.
  const bool lanes = group_fills_vectors<A, VB>(g) && gx.s.c == 1;
  // Vectors of the lane gather's masked edges: 4 lanes, as few columns reach outside a row.
  constexpr int kEdgeBytes = std::min<int>(VB, 4 * sizeof(A));
  // Weights read in place: nothing staged but grad_output, and no halo rows staged twice.
  // Staging the weights took 37-52 % of grad_input; read in place (B=8, fp32, NCHW, rows of
  // 64 bytes or more) grad_input took 0.61-0.70x its time at 56x56, 0.85-0.94x at 28x28,
  // 0.91-1.0x at stride 2 (AVX-512 and AVX2). At 14x14 (56-byte rows) it was faster warm
  // but up to 1.17x slower from cold caches, so narrower rows are staged. A stager for no
  // rows (it allocates nothing) answers whether its weights can be read in place.
  // With channels on the lanes, a row's ends are copied (see below): in place took 0.70-0.77x
  // the time at 56x56 (224-byte rows, fp32 and fp64) and fp64 28x28, but fp32 took 1.08-1.32x
  // at 28x28 and stride 2 (112 bytes), where the staged blocks are whole planes with no halo
  // rows staged twice (docs/design.md).
  bool in_place = false;
  if constexpr (InPlaceWeightStager<Stager, A>)
    in_place = make_stager(0, 0).in_place() &&
               (!lanes || g.Wo * int64_t(sizeof(A)) >= kLaneInPlaceMinRowBytes);

  if (max_rows == 0)
    max_rows = rows_within_budget(g.H, kGradInputStagingBudget, [&](int64_t rows) {
      return (cg + (in_place ? 0 : taps)) * grad_input_out_rows(g, rows) * staged_width *
             int64_t(sizeof(A));
    });
  const RowTasks tasks(g, g.H, max_rows, order);
  const int64_t max_out_rows = grad_input_out_rows(g, tasks.per);

  // Staged lines (of grad_output channels and of weight taps) at fixed places: halos stay zero.
  const int64_t plane_stride = max_out_rows * staged_width;

  auto run = [&](auto in_place_weights) {
    constexpr bool kInPlace = decltype(in_place_weights)::value;
    at::parallel_for(0, tasks.size(), 1, [&](int64_t begin, int64_t end) {
      std::vector<A> gybuf(cg * plane_stride);  // [c][row][col], or [row][col][c] with lanes
      // Staged weights, or in place the rows that could not be read there.
      std::vector<A> wbuf(taps * (kInPlace ? t_padded : plane_stride));
      std::vector<int64_t> gy_off(taps), mask_index(taps);  // per valid tap of one (h, residue)
      std::vector<const A*> w_ptr_buf(taps), w_edge_buf(kInPlace && lanes ? taps : 0);
      // Raw pointers: stores through w_ptr (pointers) could alias the vectors' own pointers,
      // which GCC then reloaded for every tap (n7 NCHW: 1.12x the gather's instructions).
      A* const wb = wbuf.data();
      const A** const w_ptr = w_ptr_buf.data();
      const A** const w_edge = w_edge_buf.data();
      int64_t* const gy_off_p = gy_off.data();
      int64_t* const mask_index_p = mask_index.data();
      auto stager = make_stager(max_out_rows, staged_width);
      const LaneMasks<A, VB> masks(col_lo, kInPlace && !lanes ? staged_width : 0, g.Wo);
      const LaneMasks<A, kEdgeBytes> edge_masks(col_lo, kInPlace && lanes ? staged_width : 0,
                                                g.Wo);
      for (int64_t task = begin; task < end; ++task) {
        const auto [b, grp, h0, h1] = tasks[task];
        // Output rows that touch input rows [h0, h1).
        const int64_t ilo = std::max<int64_t>(0, ceil_div(h0 + g.pad_h - (g.Kh - 1) * g.dil_h, sh));
        const int64_t ihi = std::min(g.Ho - 1, floor_div(h1 - 1 + g.pad_h, sh));
        const int64_t ni = std::max<int64_t>(0, ihi - ilo + 1);
        const T* gy_planes = gy.data + b * gy.s.b + grp * cg * gy.s.c;
        if (lanes)
          stage_pixel_rows(gybuf.data(), gy_planes,
                           PixelBlock{cg, gy.s.c, gy.s.h, gy.s.w, ilo, ni, g.Ho, col_lo,
                                      staged_width, g.Wo});
        else
          stage_lines(gybuf.data(), gy_planes,
                      LineBlock{cg, ni, staged_width, plane_stride, staged_width, gy.s.c, gy.s.h,
                                gy.s.w, ilo, g.Ho, col_lo, 1, g.Wo, /*halo_zeroed=*/true});
        if constexpr (!kInPlace)
          stager.stage(wb, plane_stride, b, grp, ilo, ni, staged_width, col_lo);

        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t rw = 0; rw < sw && rw < g.W; ++rw) {
            // The valid taps: tap n reads output column t + col_lo + k for column w = rw + sw * t,
            // at w_ptr[n][t] (weights) and gy_off[n] + t (staged grad_output).
            int64_t ntaps = 0;
            int64_t t_lo = 0, t_hi = t_padded;  // columns t whose every tap is inside [0, Wo)
            for (int64_t u = 0; u < g.Kh; ++u) {
              const int64_t num_h = h + g.pad_h - u * g.dil_h;
              if (floor_div(num_h, sh) * sh != num_h) continue;
              const int64_t i = num_h / sh;
              if (i < ilo || i > ihi) continue;
              for (int64_t v = 0; v < g.Kw; ++v) {
                const int64_t num_w = rw + g.pad_w - v * g.dil_w;
                if (floor_div(num_w, sw) * sw != num_w) continue;
                const int64_t j0 = floor_div(num_w, sw);
                const int64_t k = j0 - col_lo;
                if constexpr (kInPlace) {
                  w_ptr[ntaps] = stager.row(b, grp, u * g.Kw + v, i, j0, t_padded,
                                            wb + ntaps * t_padded);
                  mask_index_p[ntaps] = k;
                  t_lo = std::max(t_lo, -j0);
                  t_hi = std::min(t_hi, g.Wo - j0);
                } else {
                  w_ptr[ntaps] = wb + (u * g.Kw + v) * plane_stride + (i - ilo) * staged_width + k;
                }
                gy_off_p[ntaps] = (i - ilo) * staged_width + k;
                ++ntaps;
              }
            }
            const int64_t count = ceil_div(g.W - rw, sw);  // columns w = rw + sw * t
            T* gx_row = gx.data + b * gx.s.b + grp * cg * gx.s.c + h * gx.s.h + rw * gx.s.w;
            if (lanes) {
              for (int64_t n = 0; n < ntaps; ++n) gy_off_p[n] *= cg;
              // Columns [t0, t1), with the weights of tap n at wp[n][t].
              auto lane_gather = [&](const A* const* wp, int64_t t0, int64_t t1) {
                for_each_lane_block(cg / VL, [&](auto nv, int64_t v0) {
                  lane_gather_row_any<T, VB, decltype(nv)::value>(
                      gx_row + v0 * VL * gx.s.c, gx.s.c, sw * gx.s.w, wp,
                      gybuf.data() + v0 * VL, cg, gy_off_p, ntaps, t0, t1);
                });
              };
              if constexpr (kInPlace) {
                // The lane gather reads single weights, so row ends cannot be masked in
                // registers: the columns below m0 and from m1 (covering those outside
                // [t_lo, t_hi)) are copied masked into the tap's scratch line, the columns
                // between are read in place. Each edge spans a block of pixels at least, so
                // that it runs in full blocks (lane_gather_row_any halves the block, and the
                // accumulators, for fewer pixels).
                constexpr int64_t EL = kLanes<A, kEdgeBytes>;
                const int64_t pixels = kLaneAccumulators / std::min<int64_t>(4, cg / VL);
                const int64_t m0 =
                    t_lo == 0 ? 0 : std::min(count, round_up(std::max(t_lo, pixels), EL));
                const int64_t m1 =
                    t_hi >= count
                        ? count
                        : std::max(m0, std::max<int64_t>(0, std::min(t_hi, count - pixels)) /
                                           EL * EL);
                for (int64_t n = 0; n < ntaps; ++n) {
                  A* edge = wb + n * t_padded;
                  const A* row = w_ptr[n];
                  const int64_t f = mask_index_p[n];
                  for (int64_t t = 0; t < m0; t += EL)
                    store(edge + t, edge_masks.apply(load<kEdgeBytes>(row + t), t + f));
                  for (int64_t t = m1; t < count; t += EL)
                    store(edge + t, edge_masks.apply(load<kEdgeBytes>(row + t), t + f));
                  w_edge[n] = edge;
                }
                lane_gather(w_edge, 0, m0);
                lane_gather(w_ptr, m0, m1);
                lane_gather(w_edge, m1, count);
              } else {
                lane_gather(w_ptr, 0, count);
              }
              continue;
            }
            // Weights read in place take the vectors reaching beside their rows (outside
            // [t_lo, t_hi)) and-ed with the lane masks. Written out here: as a function (even
            // inlined) GCC made the loop 1.15x the instructions (NCHW 7x7).
            for_each_channel_block(cg, [&](auto cb, int64_t c0) {
              constexpr int CB = decltype(cb)::value;
              const A* gyc = gybuf.data() + c0 * plane_stride;
              T* dst = gx_row + c0 * gx.s.c;
              for (int64_t t = 0; t < count; t += VL) {
                Vec<A, VB> acc[CB] = {};
                if (kInPlace && (t < t_lo || std::min(t + VL, count) > t_hi)) {
                  for (int64_t n = 0; n < ntaps; ++n) {
                    const Vec<A, VB> wv = masks.apply(load<VB>(w_ptr[n] + t), t + mask_index_p[n]);
                    const A* gp = gyc + gy_off_p[n] + t;
  #pragma GCC unroll 16
                    for (int c = 0; c < CB; ++c) acc[c] += wv * load<VB>(gp + c * plane_stride);
                  }
                } else {
                  for (int64_t n = 0; n < ntaps; ++n) {
                    const Vec<A, VB> wv = load<VB>(w_ptr[n] + t);
                    const A* gp = gyc + gy_off_p[n] + t;
  #pragma GCC unroll 16
                    for (int c = 0; c < CB; ++c) acc[c] += wv * load<VB>(gp + c * plane_stride);
                  }
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
  };
  if constexpr (InPlaceWeightStager<Stager, A>) {
    if (in_place) return run(std::true_type{});
  }
  run(std::false_type{});
}

// grad_w[tap, j] of output row i0 + local_row = sum over the group's channels c of
// gyrow[c * wo_padded + j] * x[c, window(i, tap), j], from the group's staged input rows:
// gwrow[tap * tap_stride + j] for every j < wo_padded (zero where gyrow's tail is zero).
template <typename T, int VB>
void kernel_grad_row(const Geometry& g, const StagedInput<T, acc_t<T>>& xs, int64_t local_row,
                     const acc_t<T>* gyrow, int64_t wo_padded, acc_t<T>* gwrow,
                     int64_t tap_stride) {
  using A = acc_t<T>;
  constexpr int64_t VL = kLanes<A, VB>;
  const int64_t taps = g.taps();
  bool first_block = true;
  for_each_channel_block(g.channels_per_group(), [&](auto cb, int64_t c0) {
    constexpr int CB = decltype(cb)::value;
    const A* xrow = xs.buf.data() + c0 * xs.channel_stride;
    for (int64_t j = 0; j < wo_padded; j += VL) {
      Vec<A, VB> gyv[CB];
#pragma GCC unroll 16
      for (int c = 0; c < CB; ++c) gyv[c] = load<VB>(&gyrow[(c0 + c) * wo_padded + j]);
      for (int64_t tap = 0; tap < taps; ++tap) {
        const A* xp = xrow + xs.offset(local_row, tap) + j;
        // Two partial sums halve the FMA dependency chain; the order is fixed.
        Vec<A, VB> s0 = gyv[0] * load<VB>(xp), s1 = {};
#pragma GCC unroll 16
        for (int c = 1; c < CB; ++c) {
          const Vec<A, VB> p = gyv[c] * load<VB>(xp + c * xs.channel_stride);
          if (c % 2) s1 += p; else s0 += p;
        }
        A* out = &gwrow[tap * tap_stride + j];
        store(out, first_block ? s0 + s1 : load<VB>(out) + (s0 + s1));
      }
    }
    first_block = false;
  });
}

}  // namespace
}  // namespace involution::cpu::INVOLUTION_NS

// Tiling and index math of the CUDA kernels, as __host__ __device__ helpers: the
// kernels use nothing else to map blocks/threads to pixels and shared memory, so a
// CPU test (tests/cpp/cuda_index_sim.cpp) can run the same helpers over every block and
// thread of a launch and check that each output is written exactly once and every
// read stays in bounds — the hardest part of the kernels is tested without a GPU.
//
// Every helper is templated on the index type I (int32_t or int64_t, as BasicGeometry): the
// host plans in int64, and a launch runs its kernels on int32 copies of the geometry, plan
// and strides when int32_indexing_fits says every offset of the call fits.
#pragma once

#include "geometry.h"
#include "views.h"

#include <cstdint>
#include <initializer_list>
#include <limits>

namespace involution::cuda {

// At most 256 threads per block (the kernels' launch bound), one per pixel of the block's
// tile.
constexpr int kThreads = 256;
// Channels of a group staged in shared memory at once; also the accumulator count.
constexpr int kMaxChunk = 16;
// Shared memory a block may use without opting in to more (all architectures).
constexpr int64_t kSmemBytes = 48 * 1024;

// The pixels a block owns: h rows x w columns, one thread each.
template <typename I>
struct Tile {
  I h, w;
};

// The tile for a map of rows x cols pixels: 32 columns (a warp per row, so NCHW rows are
// read and written coalesced), or 16 / 8 for narrower maps; then as many rows as fill 256
// threads, but no more than the map has (rounded up to a power of two). A fixed 8x32 tile
// would leave most threads idle on RedNet's 14x14 and 7x7 stages (38 % and 19 % busy);
// these get 16x16 and 8x8 tiles (77 %).
template <typename I>
INVOLUTION_HD Tile<I> choose_tile(I rows, I cols) {
  const I w = cols <= 8 ? 8 : cols <= 16 ? 16 : 32;
  I h = 1;
  while (h < rows && 2 * h * w <= kThreads) h *= 2;
  return {h, w};
}

// A rectangle of source rows/columns staged in shared memory (may extend past the
// tensor: those cells are zero).
template <typename I>
struct Window {
  I row0, col0, rows, cols;
};

// Input rows/columns read by the output tile starting at (i0, j0) (forward, grad_weight).
template <typename I>
INVOLUTION_HD Window<I> input_window(const BasicGeometry<I>& s, const Tile<I>& t, I i0, I j0) {
  return {i0 * s.stride_h - s.pad_h, j0 * s.stride_w - s.pad_w,
          s.input_rows(t.h), s.input_cols(t.w)};
}

// Output rows/columns that touch the input tile starting at (h0, w0) (grad_input).
template <typename I>
INVOLUTION_HD Window<I> output_window(const BasicGeometry<I>& s, const Tile<I>& t, I h0, I w0) {
  const I r0 = ceil_div<I>(h0 + s.pad_h - (s.Kh - 1) * s.dil_h, s.stride_h);
  const I r1 = floor_div<I>(h0 + t.h - 1 + s.pad_h, s.stride_h);
  const I c0 = ceil_div<I>(w0 + s.pad_w - (s.Kw - 1) * s.dil_w, s.stride_w);
  const I c1 = floor_div<I>(w0 + t.w - 1 + s.pad_w, s.stride_w);
  return {r0, c0, r1 >= r0 ? r1 - r0 + 1 : 0, c1 >= c0 ? c1 - c0 + 1 : 0};
}

// Largest output_window over all tiles, for sizing shared memory.
template <typename I>
INVOLUTION_HD Window<I> max_output_window(const BasicGeometry<I>& s, const Tile<I>& t) {
  return {0, 0, (t.h - 1 + (s.Kh - 1) * s.dil_h) / s.stride_h + 2,
          (t.w - 1 + (s.Kw - 1) * s.dil_w) / s.stride_w + 2};
}

// Launch plan shared by host code and the CPU simulation. Blocks are linear over
// (b, g, tile row, tile column) — gridDim.x alone, so no 65535 limit applies.
template <typename I>
struct BasicPlan {
  Tile<I> tile;
  I tiles_h, tiles_w, blocks;
  I chunk;          // channels staged per pass (<= kMaxChunk); 0 = no staging
  I pitch;          // elements per staged row (>= the window's columns, smem_pitch)
  I window_cells;   // rows * pitch of the largest staged window
  INVOLUTION_HD I threads() const { return tile.h * tile.w; }
  INVOLUTION_HD I smem_elems() const { return chunk * window_cells; }
  template <typename J>
  INVOLUTION_HD BasicPlan<J> as() const {
    return {{J(tile.h), J(tile.w)}, J(tiles_h), J(tiles_w), J(blocks), J(chunk), J(pitch),
            J(window_cells)};
  }
};
using Plan = BasicPlan<int64_t>;

template <typename I>
struct BlockCoord {
  I b, g, h0, w0;  // batch, group, first pixel row/column of the tile
};
// Blocks linear over (b, tile row, tile column), group 0: the fused span-gradient kernel,
// whose blocks walk all groups of their tile.
template <typename I>
INVOLUTION_HD BlockCoord<I> batch_block_coord(const BasicPlan<I>& p, I block) {
  const I tw = block % p.tiles_w;
  const I th = (block / p.tiles_w) % p.tiles_h;
  return {block / (p.tiles_w * p.tiles_h), I(0), th * p.tile.h, tw * p.tile.w};
}
template <typename I>
INVOLUTION_HD BlockCoord<I> block_coord(const BasicGeometry<I>& s, const BasicPlan<I>& p, I block) {
  const BlockCoord<I> c = batch_block_coord(p, block);  // c.b: the (batch, group) pair
  return {c.b / s.G, c.b % s.G, c.h0, c.w0};
}

// Thread t of a block owns pixel (h0 + ty, w0 + tx) of its tile.
template <typename I>
struct ThreadPixel {
  I ty, tx, h, w;
};
template <typename I>
INVOLUTION_HD ThreadPixel<I> thread_pixel(const BasicPlan<I>& p, const BlockCoord<I>& bc, I thread) {
  const I ty = thread / p.tile.w, tx = thread % p.tile.w;
  return {ty, tx, bc.h0 + ty, bc.w0 + tx};
}

// Cooperative staging: staged element `idx` of a chunk of `chunk` channels maps to
// (channel, row, col). Column-fastest suits NCHW sources (coalesced along W); with
// channel_fastest the channels of one pixel are adjacent (channels_last sources).
template <typename I>
struct Cell {
  I c, r, col;
};
template <typename I>
INVOLUTION_HD Cell<I> staging_cell(I idx, I chunk, const Window<I>& w, bool channel_fastest) {
  if (channel_fastest) return {idx % chunk, idx / (chunk * w.cols), (idx / chunk) % w.cols};
  return {idx / (w.rows * w.cols), (idx / w.cols) % w.rows, idx % w.cols};
}
// Shared-memory layout [channel][row][col], `pitch` elements per row.
template <typename I>
INVOLUTION_HD I smem_offset(const Window<I>& w, I pitch, I c, I r, I col) {
  return (c * w.rows + r) * pitch + col;
}

// Shared memory has 32 banks of 4-byte words; a warp's read takes one pass per distinct
// word a bank must serve. For one read of the compute loop — lane (ty, tx) of the first
// warp reading element ty * row_elems + tx * col_step — returns the worst such count
// (1: conflict-free).
INVOLUTION_HD int64_t warp_bank_conflicts(const Tile<int64_t>& t, int64_t row_elems, int64_t col_step,
                                          int64_t elem) {
  int64_t words[64];
  int64_t n = 0;
  const int64_t lanes = t.h * t.w < 32 ? t.h * t.w : 32;
  const int64_t words_per_value = elem > 4 ? elem / 4 : 1;
  for (int64_t lane = 0; lane < lanes; ++lane) {
    const int64_t first = ((lane / t.w) * row_elems + (lane % t.w) * col_step) * elem / 4;
    for (int64_t k = 0; k < words_per_value; ++k) {
      bool seen = false;
      for (int64_t i = 0; i < n; ++i) seen = seen || words[i] == first + k;
      if (!seen) words[n++] = first + k;
    }
  }
  int64_t worst = 1;
  for (int64_t bank = 0; bank < 32; ++bank) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += words[i] % 32 == bank;
    worst = count > worst ? count : worst;
  }
  return worst;
}

// Row pitch (elements) of a staged window of `cols` columns: the first of cols .. cols+32
// with the fewest bank conflicts for the compute loop's reads (row_step / col_step: window
// rows / columns between adjacent threads). A warp spans 32 / tile.w tile rows, so with
// 16- or 8-wide tiles an unlucky pitch puts rows on the same banks (fp32 windows of 22 or
// 14 columns: 2-way conflicts, i.e. half the shared-memory bandwidth). The search stops
// once only the conflicts within one tile row (strided columns), which no pitch changes,
// are left: it runs on the host for every launch.
INVOLUTION_HD int64_t smem_pitch(int64_t cols, const Tile<int64_t>& t, int64_t row_step,
                                 int64_t col_step, int64_t elem) {
  const int64_t floor = warp_bank_conflicts(Tile<int64_t>{1, t.w}, 0, col_step, elem);
  int64_t best = cols, fewest = warp_bank_conflicts(t, cols * row_step, col_step, elem);
  for (int64_t pitch = cols + 1; pitch <= cols + 32 && fewest > floor; ++pitch) {
    const int64_t conflicts = warp_bank_conflicts(t, pitch * row_step, col_step, elem);
    if (conflicts < fewest) best = pitch, fewest = conflicts;
  }
  return best;
}

// Forward / grad_weight: thread (ty, tx) owns output pixel (h0 + ty, w0 + tx); tap (u, v)
// reads window cell (ty*sh + u*dh, tx*sw + v*dw), i.e. input (i*sh - ph + u*dh, ...).
template <typename I>
INVOLUTION_HD I forward_tap_row(const BasicGeometry<I>& s, I ty, I u) {
  return ty * s.stride_h + u * s.dil_h;
}
template <typename I>
INVOLUTION_HD I forward_tap_col(const BasicGeometry<I>& s, I tx, I v) {
  return tx * s.stride_w + v * s.dil_w;
}

// grad_input: input pixel (h, w) gathers from output (i, j) = ((h+ph-u*dh)/sh, (w+pw-v*dw)/sw)
// for the taps where both divide exactly and (i, j) lies in the output. Returns false
// for taps that do not contribute.
template <typename I>
INVOLUTION_HD bool grad_input_tap(const BasicGeometry<I>& s, I h, I w, I u, I v, I& i, I& j) {
  const I nh = h + s.pad_h - u * s.dil_h, nw = w + s.pad_w - v * s.dil_w;
  if (nh < 0 || nw < 0 || nh % s.stride_h != 0 || nw % s.stride_w != 0) return false;
  i = nh / s.stride_h;
  j = nw / s.stride_w;
  return i < s.Ho && j < s.Wo;
}

// The index maps of the two gather kernels, forward and grad_input, which both compute
// out[c, pixel] = sum over taps of weight[tap, wi, wj] * src[c, window cell (r, col)]:
// which window a tile stages, and for a pixel and a tap the cell to read and the weight
// pixel (wi, wj) to apply (false: the tap does not reach this pixel).
template <typename I>
struct TapRead {
  I r, col, wi, wj;
};
struct ForwardMap {  // pixels: output (i, j); source: input
  template <typename I>
  INVOLUTION_HD static Window<I> window(const BasicGeometry<I>& s, const Tile<I>& t, I h0, I w0) {
    return input_window(s, t, h0, w0);
  }
  template <typename I>
  INVOLUTION_HD static Window<I> max_window(const BasicGeometry<I>& s, const Tile<I>& t) {
    return input_window(s, t, I(0), I(0));
  }
  // Window rows / columns between adjacent threads' reads.
  INVOLUTION_HD static int64_t row_step(const Geometry& s) { return s.stride_h; }
  INVOLUTION_HD static int64_t col_step(const Geometry& s) { return s.stride_w; }
  template <typename I>
  INVOLUTION_HD static bool tap(const BasicGeometry<I>& s, const Window<I>&, I ty, I tx, I i, I j,
                                I u, I v, TapRead<I>& t) {
    t = {forward_tap_row(s, ty, u), forward_tap_col(s, tx, v), i, j};
    return true;
  }
};
struct GradInputMap {  // pixels: input (h, w); source: grad_output
  template <typename I>
  INVOLUTION_HD static Window<I> window(const BasicGeometry<I>& s, const Tile<I>& t, I h0, I w0) {
    return output_window(s, t, h0, w0);
  }
  template <typename I>
  INVOLUTION_HD static Window<I> max_window(const BasicGeometry<I>& s, const Tile<I>& t) {
    return max_output_window(s, t);
  }
  // Stride 1: adjacent threads read adjacent cells; larger strides skip taps irregularly.
  INVOLUTION_HD static int64_t row_step(const Geometry&) { return 1; }
  INVOLUTION_HD static int64_t col_step(const Geometry&) { return 1; }
  template <typename I>
  INVOLUTION_HD static bool tap(const BasicGeometry<I>& s, const Window<I>& win, I, I, I h, I w, I u,
                                I v, TapRead<I>& t) {
    I i, j;
    if (!grad_input_tap(s, h, w, u, v, i, j)) return false;
    t = {i - win.row0, j - win.col0, i, j};
    return true;
  }
};

// The plan of a launch whose threads own a rows x cols map of pixels (Map: ForwardMap for
// forward and grad_weight, GradInputMap for grad_input; their tiles stage at most
// Map::max_window); elem: bytes per staged value.
// `tile` may be given (else choose_tile), and `reserved_bytes` of shared memory kept for other
// use (the staged window gets the rest).
template <typename Map>
INVOLUTION_HD Plan plan_for(const Geometry& s, int64_t rows, int64_t cols, int64_t elem,
                            Tile<int64_t> tile = {0, 0}, int64_t reserved_bytes = 0) {
  Plan p{};
  p.tile = tile.h > 0 ? tile : choose_tile(rows, cols);
  p.tiles_h = ceil_div(rows, p.tile.h);
  p.tiles_w = ceil_div(cols, p.tile.w);
  p.blocks = s.B * s.G * p.tiles_h * p.tiles_w;
  const Window<int64_t> window = Map::max_window(s, p.tile);
  p.pitch = smem_pitch(window.cols, p.tile, Map::row_step(s), Map::col_step(s), elem);
  p.window_cells = window.rows * p.pitch;
  const int64_t fit =
      (kSmemBytes - reserved_bytes) / (elem * (p.window_cells > 0 ? p.window_cells : 1));
  int64_t chunk = s.channels_per_group() < fit ? s.channels_per_group() : fit;
  if (chunk > kMaxChunk) chunk = kMaxChunk;
  p.chunk = chunk;  // 0: even one channel's window does not fit; read global memory
  return p;
}

// The fused span-gradient kernel (span_grads_kernel in kernels.cuh): blocks over (b, tile),
// each walking every group. Per group, its threads form their pixels' kernel gradient for
// every tap in shared memory (taps x gk_pitch accumulators), then reduce it into grad_hidden
// and the block's partial span gradients. The tile shrinks (its longer side first) until the
// accumulators take at most 5/8 of the shared memory; the staged input window gets the rest.
struct SpanGradsPlan {
  Plan p;
  int64_t gk_pitch;    // accumulators per tap: one per thread, plus one so that the partials'
                       // reads (a tap per lane, same thread column) fall on distinct banks
  int64_t smem_bytes;  // accumulators, then the staged window
};
INVOLUTION_HD SpanGradsPlan span_grads_plan(const Geometry& s, int64_t elem, int64_t acc_elem) {
  Tile<int64_t> t = choose_tile(s.Ho, s.Wo);
  while (s.taps() * (t.h * t.w + 1) * acc_elem > kSmemBytes * 5 / 8 && t.h * t.w > 1) {
    if (t.w >= t.h) t.w /= 2;
    else t.h /= 2;
  }
  SpanGradsPlan sp{};
  sp.gk_pitch = t.h * t.w + 1;
  const int64_t gk_bytes = s.taps() * sp.gk_pitch * acc_elem;
  sp.p = plan_for<ForwardMap>(s, s.Ho, s.Wo, elem, t, gk_bytes);
  sp.p.blocks = s.B * sp.p.tiles_h * sp.p.tiles_w;
  sp.smem_bytes = gk_bytes + sp.p.smem_elems() * elem;
  return sp;
}

// Largest element offset a view reaches: the sum over its dims of |stride| * (size - 1).
inline int64_t span_term(int64_t stride, int64_t size) {
  return (stride < 0 ? -stride : stride) * (size > 0 ? size - 1 : 0);
}
inline int64_t view_span(const Strides4& st, int64_t b, int64_t c, int64_t h, int64_t w) {
  return span_term(st.b, b) + span_term(st.c, c) + span_term(st.h, h) + span_term(st.w, w);
}
inline int64_t view_span(const Strides6& st, const Geometry& s) {
  return span_term(st.b, s.B) + span_term(st.g, s.G) + span_term(st.u, s.Kh) +
         span_term(st.v, s.Kw) + span_term(st.i, s.Ho) + span_term(st.j, s.Wo);
}

// True when every index the kernels compute for this call fits int32: the element offsets
// of each tensor view (view_span), the pixel coordinates of windows and taps (which reach
// past the map by the padding, the dilated window and a tile of strided threads), and the
// block index. Then the kernels run on int32 copies of geometry, plan and strides.
inline bool int32_indexing_fits(const Geometry& s, const Plan& p,
                                std::initializer_list<int64_t> view_spans) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  for (int64_t span : view_spans)
    if (span > kMax) return false;
  const int64_t rows =
      (s.H > s.Ho ? s.H : s.Ho) + 2 * s.pad_h + s.Kh * s.dil_h + kThreads * s.stride_h;
  const int64_t cols =
      (s.W > s.Wo ? s.W : s.Wo) + 2 * s.pad_w + s.Kw * s.dil_w + kThreads * s.stride_w;
  return rows <= kMax && cols <= kMax && p.blocks <= kMax && s.B * s.C <= kMax;
}

}  // namespace involution::cuda

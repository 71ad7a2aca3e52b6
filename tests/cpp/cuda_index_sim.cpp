// Runs the CUDA kernels' index plan (csrc/cuda/tiling.h) on the CPU over every block and
// thread of each launch, for many shapes, and checks:
//  * staging: each shared-memory cell of a chunk is written exactly once, inside the
//    allocation, from an in-bounds global element (or zero outside the source);
//  * compute: every window cell a thread reads is inside the staged window, and it is
//    the source element Eq. 4 asks for (checked against the definition, not the helper);
//  * grad_input taps: exactly the taps the definition says contribute;
//  * outputs: every element of y / grad_input / grad_weight has exactly one owner;
//  * the fused span-gradient plan: shared memory within bounds, every pixel owned once;
//  * speed: with stride 1, a warp's shared-memory reads are free of bank conflicts;
//  * all of it with the kernels' int32 index math as well as their int64 one.
// Prints "ok N shapes" and exits 0, or prints the first failure and exits 1.
#include "cuda/tiling.h"
#include "cuda_test_shapes.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>

using namespace involution;
using namespace involution::cuda;

namespace {

int failures = 0;
#define EXPECT(cond, ...)                                  \
  do {                                                     \
    if (!(cond)) {                                         \
      if (failures++ < 5) {                                \
        std::printf("FAIL %s:%d: %s | ", __FILE__, __LINE__, #cond); \
        std::printf(__VA_ARGS__);                          \
        std::printf("\n");                                 \
      }                                                    \
    }                                                      \
  } while (0)

// Staging of one chunk: every cell of the window written once, in bounds (rows are
// p.pitch apart, so the padding past each row's last column is never written).
template <typename I>
void check_staging(const BasicPlan<I>& p, const Window<I>& win, int64_t cc, bool channel_fastest,
                   int64_t smem_elems) {
  EXPECT(p.pitch >= win.cols, "pitch %lld < %lld columns", (long long)p.pitch, (long long)win.cols);
  std::vector<int> hits(smem_elems > 0 ? smem_elems : 1, 0);
  const int64_t total = cc * win.rows * win.cols;
  for (int64_t t = 0; t < p.threads(); ++t)
    for (int64_t idx = t; idx < total; idx += p.threads()) {
      const Cell<I> cell = staging_cell(I(idx), I(cc), win, channel_fastest);
      EXPECT(cell.c >= 0 && cell.c < cc && cell.r >= 0 && cell.r < win.rows && cell.col >= 0 &&
                 cell.col < win.cols,
             "cell (%lld,%lld,%lld)", (long long)cell.c, (long long)cell.r, (long long)cell.col);
      const int64_t off = smem_offset(win, p.pitch, cell.c, cell.r, cell.col);
      EXPECT(off >= 0 && off < smem_elems, "smem offset %lld of %lld", (long long)off,
             (long long)smem_elems);
      if (off >= 0 && off < smem_elems) hits[off]++;
    }
  int64_t written = 0;
  for (int64_t k = 0; k < smem_elems; ++k) {
    EXPECT(hits[k] <= 1, "smem cell %lld hit %d", (long long)k, hits[k]);
    written += hits[k];
  }
  EXPECT(written == total, "%lld of %lld window cells staged", (long long)written, (long long)total);
}

// The tile: at most kThreads threads, rows of 8/16/32 (whole sectors for coalescing), and
// not much larger than the map when the map is small.
void check_tile(const Plan& p, int64_t rows, int64_t cols) {
  const Tile<int64_t> t = p.tile;
  EXPECT(p.threads() >= 1 && p.threads() <= kThreads, "tile %lldx%lld",
         (long long)t.h, (long long)t.w);
  EXPECT(t.w == 8 || t.w == 16 || t.w == 32, "tile width %lld", (long long)t.w);
  EXPECT(t.w == 8 || cols > t.w / 2, "tile width %lld for %lld columns", (long long)t.w, (long long)cols);
  EXPECT(t.h == 1 || rows > t.h / 2, "tile height %lld for %lld rows", (long long)t.h, (long long)rows);
  EXPECT(2 * t.h * t.w > kThreads || t.h >= rows, "tile %lldx%lld could be taller", (long long)t.h,
         (long long)t.w);
}

// Bank conflicts of the compute loop's first shared-memory read (tap (0, 0), channel 0) by
// the first warp of a block, from the lanes' actual offsets: the most distinct 4-byte
// words any of the 32 banks must serve (1 = one pass).
template <typename Map>
int64_t first_read_bank_conflicts(const Geometry& s, const Plan& p, int64_t elem) {
  const BlockCoord<int64_t> bc = block_coord(s, p, int64_t{0});
  const Window<int64_t> win = Map::window(s, p.tile, bc.h0, bc.w0);
  std::vector<std::vector<int64_t>> bank_words(32);
  for (int64_t lane = 0; lane < 32 && lane < p.threads(); ++lane) {
    const auto [ty, tx, h, w] = thread_pixel(p, bc, lane);
    TapRead<int64_t> t{};
    if (!Map::tap(s, win, ty, tx, h, w, int64_t{0}, int64_t{0}, t)) continue;
    const int64_t word = smem_offset(win, p.pitch, int64_t{0}, t.r, t.col) * elem / 4;
    auto& words = bank_words[word % 32];
    if (std::find(words.begin(), words.end(), word) == words.end()) words.push_back(word);
  }
  int64_t worst = 1;
  for (const auto& words : bank_words) worst = std::max<int64_t>(worst, words.size());
  return worst;
}

// Stride 1 (every RedNet involution but the stride-2 ones): fp32 and fp16 reads of the
// compute loop are conflict-free for every tile shape, thanks to the row pitch.
void check_bank_conflicts(const Geometry& s) {
  if (s.stride_h != 1 || s.stride_w != 1) return;
  for (int64_t elem : {4, 2}) {
    const Plan pf = plan_for<ForwardMap>(s, s.Ho, s.Wo, elem);
    if (pf.chunk > 0)
      EXPECT(first_read_bank_conflicts<ForwardMap>(s, pf, elem) == 1, "forward: %lld-way bank conflicts (tile %lldx%lld, pitch %lld, %lld-byte values)",
             (long long)first_read_bank_conflicts<ForwardMap>(s, pf, elem), (long long)pf.tile.h, (long long)pf.tile.w, (long long)pf.pitch, (long long)elem);
    const Plan pg = plan_for<GradInputMap>(s, s.H, s.W, elem);
    if (pg.chunk > 0 && s.dil_h == 1 && s.dil_w == 1)
      EXPECT(first_read_bank_conflicts<GradInputMap>(s, pg, elem) == 1, "grad_input: bank conflicts (tile %lldx%lld, pitch %lld)",
             (long long)pg.tile.h, (long long)pg.tile.w, (long long)pg.pitch);
  }
}

// The launch plans are made on the host in int64; the kernels' helpers then run in I
// (int32_t or int64_t), on copies of the geometry and plan, as the backend launches them.
template <typename I>
void check_shape(const Geometry& s64) {
  const BasicGeometry<I> s = s64.as<I>();
  const int64_t cg = s.channels_per_group();
  // ---- forward and grad_weight (same plan: threads own output pixels) ----
  {
    const BasicPlan<I> p = plan_for<ForwardMap>(s64, s64.Ho, s64.Wo, 4).as<I>();
    check_tile(p.template as<int64_t>(), s.Ho, s.Wo);
    const int64_t chunk = p.chunk > 0 ? p.chunk : kMaxChunk;
    EXPECT(p.smem_elems() * 4 <= kSmemBytes, "smem %lld", (long long)(p.smem_elems() * 4));
    std::vector<int> y_owner(s.B * s.C * s.Ho * s.Wo, 0);
    std::vector<int> gw_owner(s.B * s.G * s.taps() * s.Ho * s.Wo, 0);
    for (int64_t block = 0; block < p.blocks; ++block) {
      const BlockCoord<I> bc = block_coord(s, p, I(block));
      EXPECT(bc.b < s.B && bc.g < s.G && bc.h0 < s.Ho && bc.w0 < s.Wo, "block %lld", (long long)block);
      const Window<I> win = ForwardMap::window(s, p.tile, bc.h0, bc.w0);
      EXPECT(win.rows * p.pitch == p.window_cells, "window size");
      for (int64_t c0 = 0; c0 < cg; c0 += chunk) {
        const int64_t cc = cg - c0 < chunk ? cg - c0 : chunk;
        EXPECT(cc >= 1 && cc <= kMaxChunk, "chunk %lld", (long long)cc);
        if (p.chunk > 0) {
          check_staging(p, win, cc, false, p.smem_elems());
          check_staging(p, win, cc, true, p.smem_elems());
        }
        for (int64_t t = 0; t < p.threads(); ++t) {
          const auto [ty, tx, i, j] = thread_pixel(p, bc, I(t));
          if (!(i < s.Ho && j < s.Wo)) continue;
          for (int64_t u = 0; u < s.Kh; ++u)
            for (int64_t v = 0; v < s.Kw; ++v) {
              TapRead<I> t{};
              EXPECT(ForwardMap::tap(s, win, ty, tx, i, j, I(u), I(v), t), "forward taps always apply");
              const int64_t r = t.r, col = t.col;
              EXPECT(t.wi == i && t.wj == j, "forward applies the pixel's own weight");
              EXPECT(r >= 0 && r < win.rows && col >= 0 && col < win.cols, "tap cell");
              EXPECT(win.row0 + r == i * s.stride_h - s.pad_h + u * s.dil_h &&
                         win.col0 + col == j * s.stride_w - s.pad_w + v * s.dil_w,
                     "tap (%lld,%lld) of (%lld,%lld) reads the wrong element", (long long)u,
                     (long long)v, (long long)i, (long long)j);
              if (p.chunk > 0)
                EXPECT(smem_offset(win, p.pitch, I(cc - 1), I(r), I(col)) < p.smem_elems(), "smem read");
              if (c0 == 0) gw_owner[(((bc.b * s.G + bc.g) * s.taps() + u * s.Kw + v) * s.Ho + i) * s.Wo + j]++;
            }
          for (int64_t c = 0; c < cc; ++c)
            y_owner[((bc.b * s.C + bc.g * cg + c0 + c) * s.Ho + i) * s.Wo + j]++;
        }
      }
    }
    for (size_t k = 0; k < y_owner.size(); ++k) EXPECT(y_owner[k] == 1, "y[%zu] written %d times", k, y_owner[k]);
    for (size_t k = 0; k < gw_owner.size(); ++k) EXPECT(gw_owner[k] == 1, "gw[%zu] owned %d times", k, gw_owner[k]);
  }
  // ---- grad_input (threads own input pixels, gather over output taps) ----
  {
    const BasicPlan<I> p = plan_for<GradInputMap>(s64, s64.H, s64.W, 4).as<I>();
    check_tile(p.template as<int64_t>(), s.H, s.W);
    const Window<I> maxw = GradInputMap::max_window(s, p.tile);
    const int64_t chunk = p.chunk > 0 ? p.chunk : kMaxChunk;
    EXPECT(p.smem_elems() * 4 <= kSmemBytes, "smem");
    std::vector<int> gx_owner(s.B * s.C * s.H * s.W, 0);
    for (int64_t block = 0; block < p.blocks; ++block) {
      const BlockCoord<I> bc = block_coord(s, p, I(block));
      const Window<I> win = GradInputMap::window(s, p.tile, bc.h0, bc.w0);
      EXPECT(win.rows <= maxw.rows && win.cols <= maxw.cols, "window larger than the maximum");
      for (int64_t c0 = 0; c0 < cg; c0 += chunk) {
        const int64_t cc = cg - c0 < chunk ? cg - c0 : chunk;
        if (p.chunk > 0) check_staging(p, win, cc, false, p.smem_elems());
        for (int64_t t = 0; t < p.threads(); ++t) {
          const auto [ty, tx, h, w] = thread_pixel(p, bc, I(t));
          if (!(h < s.H && w < s.W)) continue;
          for (int64_t u = 0; u < s.Kh; ++u)
            for (int64_t v = 0; v < s.Kw; ++v) {
              // Definition: output (i, j) reads input (h, w) through tap (u, v).
              int64_t want_i = -1, want_j = -1;
              for (int64_t i = 0; i < s.Ho; ++i)
                if (i * s.stride_h - s.pad_h + u * s.dil_h == h) want_i = i;
              for (int64_t j = 0; j < s.Wo; ++j)
                if (j * s.stride_w - s.pad_w + v * s.dil_w == w) want_j = j;
              TapRead<I> t{};
              const bool got = GradInputMap::tap(s, win, t.r, t.col, h, w, I(u), I(v), t);
              const int64_t i = t.wi, j = t.wj;
              EXPECT(got == (want_i >= 0 && want_j >= 0), "tap validity at (%lld,%lld) tap (%lld,%lld)",
                     (long long)h, (long long)w, (long long)u, (long long)v);
              if (!got) continue;
              EXPECT(i == want_i && j == want_j, "tap target");
              const int64_t r = t.r, col = t.col;
              EXPECT(win.row0 + r == i && win.col0 + col == j, "grad_input cell");
              EXPECT(r >= 0 && r < win.rows && col >= 0 && col < win.cols,
                     "grad_input tap outside the staged window");
            }
          for (int64_t c = 0; c < cc; ++c) gx_owner[((bc.b * s.C + bc.g * cg + c0 + c) * s.H + h) * s.W + w]++;
        }
      }
    }
    for (size_t k = 0; k < gx_owner.size(); ++k) EXPECT(gx_owner[k] == 1, "gx[%zu] written %d times", k, gx_owner[k]);
  }
  // ---- the fused span gradients (blocks over (b, tile), every group in turn) ----
  for (const auto [elem, acc] : {std::pair<int64_t, int64_t>{2, 4}, {4, 4}, {8, 8}}) {
    const SpanGradsPlan sp = span_grads_plan(s64, elem, acc);
    const BasicPlan<I> p = sp.p.as<I>();
    EXPECT(p.threads() >= 1 && p.threads() <= kThreads && sp.gk_pitch == p.threads() + 1,
           "span-gradient tile %lldx%lld", (long long)p.tile.h, (long long)p.tile.w);
    EXPECT(sp.smem_bytes == s.taps() * sp.gk_pitch * acc + p.smem_elems() * elem &&
               sp.smem_bytes <= kSmemBytes,
           "span-gradient smem %lld bytes", (long long)sp.smem_bytes);
    EXPECT(p.blocks == s.B * p.tiles_h * p.tiles_w, "span-gradient blocks");
    std::vector<int> owner(s.B * s.Ho * s.Wo, 0), summed(s.B * s.Ho * s.Wo, 0);
    for (int64_t block = 0; block < p.blocks; ++block) {
      const BlockCoord<I> bc = batch_block_coord(p, I(block));
      EXPECT(bc.b < s.B && bc.g == 0 && bc.h0 < s.Ho && bc.w0 < s.Wo, "block %lld", (long long)block);
      for (int64_t t = 0; t < p.threads(); ++t) {
        const auto [ty, tx, i, j] = thread_pixel(p, bc, I(t));
        EXPECT(ty * p.tile.w + tx == t, "thread %lld's accumulator column", (long long)t);
        if (i < s.Ho && j < s.Wo) owner[(bc.b * s.Ho + i) * s.Wo + j]++;
      }
      // The partial sums' loops over the tile's pixels inside the map (as the kernel bounds them).
      const I rows_h = s.Ho - bc.h0 < p.tile.h ? s.Ho - bc.h0 : p.tile.h;
      const I cols_w = s.Wo - bc.w0 < p.tile.w ? s.Wo - bc.w0 : p.tile.w;
      for (I qy = 0; qy < rows_h; ++qy)
        for (I qx = 0; qx < cols_w; ++qx) summed[(bc.b * s.Ho + bc.h0 + qy) * s.Wo + bc.w0 + qx]++;
    }
    for (size_t k = 0; k < owner.size(); ++k)
      EXPECT(owner[k] == 1 && summed[k] == 1, "span gradients: pixel %zu owned %d times, summed %d times",
             k, owner[k], summed[k]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int n_random = argc > 1 ? std::atoi(argv[1]) : 150;
  std::vector<Geometry> shapes = {
      // RedNet stages (B=1 keeps it quick), stride 2, and windows too big for shared memory.
      {1, 64, 4, 56, 56, 7, 7, 0, 0, 1, 1, 3, 3, 1, 1},
      {1, 128, 8, 28, 28, 7, 7, 0, 0, 1, 1, 3, 3, 1, 1},
      {1, 256, 16, 14, 14, 7, 7, 0, 0, 1, 1, 3, 3, 1, 1},
      {1, 512, 32, 7, 7, 7, 7, 0, 0, 1, 1, 3, 3, 1, 1},
      {1, 128, 8, 56, 56, 7, 7, 0, 0, 2, 2, 3, 3, 1, 1},
      {1, 32, 1, 9, 9, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1},
      {1, 40, 2, 50, 70, 9, 9, 0, 0, 1, 1, 48, 48, 12, 12},
      {2, 3, 3, 33, 65, 3, 5, 0, 0, 3, 2, 0, 4, 2, 3},
  };
  std::mt19937_64 rng(20261128);
  while (static_cast<int>(shapes.size()) < 5 + n_random) {
    const Geometry s = testing::random_shape(rng, {2, 40, 70, 7, 3, 4, 3}, {1, 2, 5, 16, 17, 33});
    if (s.channels_per_group() > 16 && s.H * s.W > 400) continue;  // keep the run short
    shapes.push_back(s);
  }
  int checked = 0;
  for (Geometry& s : shapes) {
    if (!testing::set_output_size(s)) continue;
    check_bank_conflicts(s);
    check_shape<int64_t>(s);
    check_shape<int32_t>(s);
    ++checked;
    if (failures) {
      std::printf("shape %s\n", testing::describe(s).c_str());
      return 1;
    }
  }
  std::printf("ok %d shapes\n", checked);
  return 0;
}

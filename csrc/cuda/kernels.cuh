// The CUDA kernels of involution::forward / backward / fused_forward / fused_backward and the
// host-side recipes that launch them, free of at::Tensor: the backend (involution_cuda.cu) launches
// them with <<<>>> on the current stream, and tests/cpp/cuda_emulation.cpp runs the very same
// code on the CPU with one std::thread per CUDA thread (under ASan/UBSan and TSan), so the
// kernels' arithmetic, staging and barriers are tested without a GPU.
//
// A block owns (batch, group, pixel tile: 8x32, or 16x16 / 8x8 for small maps, see
// choose_tile); a thread owns one pixel. The block stages the window of the source its
// tile reads (input for forward and grad_weight, grad_output for grad_input) for up to 16
// channels of the group in shared memory, so each source element is read from global
// memory about once. Each thread then reads its pixel's weight once per tap and applies
// it to every staged channel from registers (16 accumulators). All index math comes from
// tiling.h (checked on the CPU by tests/cpp/cuda_index_sim.cpp).
//
// The fused ops run the same gathers with each kernel value generated on chip from the
// hidden features (SpanKernel), and span_grads_kernel for the generator-side gradients.
//
// Determinism: every output element has one owner thread that sums in a fixed order;
// grad_input is a gather over the taps that reach the pixel, grad_weight reduces the
// group's channels inside the owner thread, the span gradients are per-block partials
// summed in block order. No atomics anywhere.
#pragma once

#include "cuda/tiling.h"
#include "views.h"

#include <ATen/OpMathType.h>

#include <cstdint>
#include <type_traits>

namespace involution::cuda {

template <typename T>
using acc_t = at::opmath_type<T>;

template <typename T>
__device__ __forceinline__ T* shared_scratch() {
#if defined(INVOLUTION_CUDA_EMULATION)
  return reinterpret_cast<T*>(emulated_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  return reinterpret_cast<T*>(smem_bytes);
#endif
}

// The `cc` (<= kMaxChunk) channels of one pixel a thread loads or stores. When they are
// adjacent (channels_last), a whole number of 16-byte vectors and 16-byte aligned, they
// move as 16-byte vectors (one 128-bit access instead of 16/sizeof(T) scalar ones); else
// one at a time.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kLanes = 16 / sizeof(T);
  T lane[kLanes];
};
static_assert(kMaxChunk % Vec16<double>::kLanes == 0 && kMaxChunk % Vec16<float>::kLanes == 0 &&
              kMaxChunk % Vec16<uint16_t>::kLanes == 0, "a chunk is whole vectors");

template <typename T, typename I>
__device__ __forceinline__ bool vector_run(const T* p, I stride_c, I cc) {
  return stride_c == 1 && cc % Vec16<T>::kLanes == 0 &&
         reinterpret_cast<uintptr_t>(p) % sizeof(Vec16<T>) == 0;
}

template <typename T, typename I, typename A>
__device__ __forceinline__ void store_channels(T* dst, I stride_c, I cc,
                                               const A (&value)[kMaxChunk]) {
  constexpr int kLanes = Vec16<T>::kLanes;
  if (vector_run(dst, stride_c, cc)) {
#pragma unroll
    for (int c0 = 0; c0 < kMaxChunk; c0 += kLanes) {
      if (c0 >= cc) break;
      Vec16<T> v;
#pragma unroll
      for (int k = 0; k < kLanes; ++k) v.lane[k] = static_cast<T>(value[c0 + k]);
      *reinterpret_cast<Vec16<T>*>(dst + c0) = v;
    }
    return;
  }
#pragma unroll
  for (int c = 0; c < kMaxChunk; ++c)
    if (c < cc) dst[c * stride_c] = static_cast<T>(value[c]);
}

// Loads as store_channels stores; channels past cc read as zero.
template <typename T, typename I, typename A>
__device__ __forceinline__ void load_channels(const T* src, I stride_c, I cc,
                                              A (&value)[kMaxChunk]) {
  constexpr int kLanes = Vec16<T>::kLanes;
  if (vector_run(src, stride_c, cc)) {
#pragma unroll
    for (int c0 = 0; c0 < kMaxChunk; c0 += kLanes) {
      const Vec16<T> v = c0 < cc ? *reinterpret_cast<const Vec16<T>*>(src + c0) : Vec16<T>{};
#pragma unroll
      for (int k = 0; k < kLanes; ++k) value[c0 + k] = c0 < cc ? static_cast<A>(v.lane[k]) : A(0);
    }
    return;
  }
#pragma unroll
  for (int c = 0; c < kMaxChunk; ++c) value[c] = c < cc ? static_cast<A>(src[c * stride_c]) : A(0);
}

// Stages `cc` channels of the window `win` of a (rows x cols) source plane into shared
// memory, zero outside the source; the block's `nthreads` threads share the work. Values
// stay in the tensor's dtype: for fp16/bf16 that halves the shared memory a window takes
// and the bytes read from it per multiply-add (converted to fp32 in registers).
template <typename T, typename I>
__device__ void stage_window(T* smem, const T* src, I s_c, I s_h, I s_w, const Window<I>& win,
                             I pitch, I cc, I nrows, I ncols, bool channel_fastest, I nthreads) {
  const I total = cc * win.rows * win.cols;
  for (I idx = threadIdx.x; idx < total; idx += nthreads) {
    const Cell<I> cell = staging_cell(idx, cc, win, channel_fastest);
    const I h = win.row0 + cell.r, w = win.col0 + cell.col;
    T value = static_cast<T>(0);
    if (h >= 0 && h < nrows && w >= 0 && w < ncols) value = src[cell.c * s_c + h * s_h + w * s_w];
    smem[smem_offset(win, pitch, cell.c, cell.r, cell.col)] = value;
  }
}

// Where one tap's reads come from, worked out once per tap rather than per channel: in the
// staged window, the cell's offset in channel 0's plane (channel c adds c * plane); unstaged,
// the pixel's offset in channel 0 of the source (c adds c * s_c), or nothing when the pixel
// lies in the padding (windows too large for shared memory).
template <typename I>
struct TapSource {
  I offset;
  bool inside;
};

template <bool kStaged, typename I>
__device__ __forceinline__ TapSource<I> tap_source(const Window<I>& win, I pitch, I s_h, I s_w,
                                                   I r, I col, I nrows, I ncols) {
  if constexpr (kStaged) {
    return {r * pitch + col, true};
  } else {
    const I h = win.row0 + r, w = win.col0 + col;
    const bool inside = h >= 0 && h < nrows && w >= 0 && w < ncols;
    return {inside ? h * s_h + w * s_w : I(0), inside};
  }
}

// Channel c's value at a tap (plane: staged elements per channel; s_c: the source's channel
// stride).
template <bool kStaged, typename T, typename I, typename A = acc_t<T>>
__device__ __forceinline__ A tap_value(const T* smem, I plane, const T* src, I s_c,
                                       const TapSource<I>& at, int c) {
  if constexpr (kStaged) return static_cast<A>(smem[c * plane + at.offset]);
  else return at.inside ? static_cast<A>(src[c * s_c + at.offset]) : A(0);
}

// Where the gathers take the kernel value of (group, tap (u, v), output pixel (i, j)) from:
// block(b, g) once per block, then value(block, u, v, i, j) per pixel and tap.
//
// KernelTensor: the (B, G, Kh, Kw, Ho, Wo) tensor of the unfused ops.
template <typename T, typename I = int64_t>
struct KernelTensor {
  View6<const T, I> w;
  struct Block {
    const T* plane;
  };
  __device__ Block block(I b, I g, I /*taps*/, I /*Kw*/) const {
    return {w.data + b * w.s.b + g * w.s.g};
  }
  __device__ __forceinline__ acc_t<T> value(const Block& k, I u, I v, I i, I j) const {
    return static_cast<acc_t<T>>(k.plane[u * w.s.u + v * w.s.v + i * w.s.i + j * w.s.j]);
  }
  template <typename J>
  KernelTensor<T, J> as() const { return {w.template as<J>()}; }
  int64_t view_span(const Geometry& s) const { return cuda::view_span(w.s, s); }
};

// SpanKernel: generated on chip by the fused ops, bias[row] + sum_r weight[row, r] *
// hidden[b, r, i, j] for span row (g, u, v), in the accumulator type. The threads of a warp
// handle the same tap at the same time, so each span-row read is one address for the whole
// warp (a broadcast), and the hidden reads of adjacent pixels are adjacent (NCHW).
template <typename T, typename I = int64_t>
struct SpanKernel {
  BasicSpanArgs<T, I> span;
  struct Block {
    const T* hidden;  // batch b
    const T* rows;    // group g's first span row
    const T* bias;    // group g's first bias, or nullptr
    I Kw;
  };
  __device__ Block block(I b, I g, I taps, I Kw) const {
    return {span.hidden.data + b * span.hidden.s.b, span.weight + g * taps * span.weight_s_row,
            span.bias != nullptr ? span.bias + g * taps * span.bias_s : nullptr, Kw};
  }
  __device__ __forceinline__ acc_t<T> value(const Block& k, I u, I v, I i, I j) const {
    using A = acc_t<T>;
    const I row = u * k.Kw + v;
    A sum = k.bias != nullptr ? static_cast<A>(k.bias[row * span.bias_s]) : A(0);
    const T* weight = k.rows + row * span.weight_s_row;
    const T* hidden = k.hidden + i * span.hidden.s.h + j * span.hidden.s.w;
    for (I r = 0; r < span.R; ++r)
      sum += static_cast<A>(weight[r * span.weight_s_col]) *
             static_cast<A>(hidden[r * span.hidden.s.c]);
    return sum;
  }
  template <typename J>
  SpanKernel<T, J> as() const { return {span.template as<J>()}; }
  // The largest offset into hidden or the span rows.
  int64_t view_span(const Geometry& s) const {
    const int64_t rows = s.G * s.taps();
    const int64_t h = cuda::view_span(span.hidden.s, s.B, span.R, s.Ho, s.Wo);
    const int64_t w = span_term(span.weight_s_row, rows) + span_term(span.weight_s_col, span.R);
    const int64_t b = span_term(span.bias_s, rows);
    return h > w ? (h > b ? h : b) : (w > b ? w : b);
  }
};

// forward (Map = ForwardMap: src = input, out = output) and grad_input (GradInputMap:
// src = grad_output, out = grad_input, a gather over the taps that reach each pixel).
// I: the index type (int32 when the call's offsets fit, see int32_indexing_fits); Kernel:
// KernelTensor or SpanKernel.
template <typename T, typename Map, bool kStaged, typename I, typename Kernel>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(BasicGeometry<I> s, BasicPlan<I> p, View4<const T, I> src, I src_rows,
                  I src_cols, Kernel kernel, View4<T, I> out, I out_rows, I out_cols,
                  bool channel_fastest) {
  using A = acc_t<T>;
  T* smem = shared_scratch<T>();
  const BlockCoord<I> bc = block_coord(s, p, I(blockIdx.x));
  const auto [ty, tx, ph, pw] = thread_pixel(p, bc, I(threadIdx.x));
  const bool active = ph < out_rows && pw < out_cols;
  const Window<I> win = Map::window(s, p.tile, bc.h0, bc.w0);
  const I plane = win.rows * p.pitch;
  const I cg = s.channels_per_group();
  const I chunk = kStaged ? p.chunk : I(kMaxChunk);
  const typename Kernel::Block kb = kernel.block(bc.b, bc.g, s.taps(), s.Kw);
  for (I c0 = 0; c0 < cg; c0 += chunk) {
    const I cc = cg - c0 < chunk ? cg - c0 : chunk;
    const T* srcc = src.data + bc.b * src.s.b + (bc.g * cg + c0) * src.s.c;
    if constexpr (kStaged) {
      __syncthreads();  // the previous chunk's reads are done
      stage_window(smem, srcc, src.s.c, src.s.h, src.s.w, win, p.pitch, cc, src_rows, src_cols,
                   channel_fastest, p.threads());
      __syncthreads();
    }
    if (!active) continue;
    A acc[kMaxChunk];
#pragma unroll
    for (int c = 0; c < kMaxChunk; ++c) acc[c] = A(0);
    for (I u = 0; u < s.Kh; ++u) {
      for (I v = 0; v < s.Kw; ++v) {
        TapRead<I> t;
        if (!Map::tap(s, win, ty, tx, ph, pw, u, v, t)) continue;
        const A wv = kernel.value(kb, u, v, t.wi, t.wj);
        const TapSource<I> at =
            tap_source<kStaged>(win, p.pitch, src.s.h, src.s.w, t.r, t.col, src_rows, src_cols);
#pragma unroll
        for (int c = 0; c < kMaxChunk; ++c)
          if (c < cc) acc[c] += wv * tap_value<kStaged>(smem, plane, srcc, src.s.c, at, c);
      }
    }
    store_channels(out.data + bc.b * out.s.b + (bc.g * cg + c0) * out.s.c + ph * out.s.h +
                       pw * out.s.w,
                   out.s.c, cc, acc);
  }
}

// The kernel gradient of block bc's group at the thread's output pixel (i, j): for every
// channel chunk and tap (u, v), sink(u, v, sum over the chunk's channels of gy * x, first
// chunk?). Every thread of the block calls it (it stages with barriers); inactive ones (pixel
// outside the map) get no sink calls.
template <bool kStaged, typename T, typename I, typename Sink>
__device__ __forceinline__ void kernel_grad_chunks(const BasicGeometry<I>& s,
                                                   const BasicPlan<I>& p, const BlockCoord<I>& bc,
                                                   I ty, I tx, I i, I j, bool active,
                                                   const View4<const T, I>& gy,
                                                   const View4<const T, I>& x, T* smem,
                                                   bool channel_fastest, Sink&& sink) {
  using A = acc_t<T>;
  const Window<I> win = input_window(s, p.tile, bc.h0, bc.w0);
  const I plane = win.rows * p.pitch;
  const I cg = s.channels_per_group();
  const I chunk = kStaged ? p.chunk : I(kMaxChunk);
  for (I c0 = 0; c0 < cg; c0 += chunk) {
    const I cc = cg - c0 < chunk ? cg - c0 : chunk;
    const T* xs = x.data + bc.b * x.s.b + (bc.g * cg + c0) * x.s.c;
    if constexpr (kStaged) {
      __syncthreads();
      stage_window(smem, xs, x.s.c, x.s.h, x.s.w, win, p.pitch, cc, s.H, s.W, channel_fastest,
                   p.threads());
      __syncthreads();
    }
    if (!active) continue;
    A gyv[kMaxChunk];
    load_channels(gy.data + bc.b * gy.s.b + (bc.g * cg + c0) * gy.s.c + i * gy.s.h + j * gy.s.w,
                  gy.s.c, cc, gyv);
    for (I u = 0; u < s.Kh; ++u) {
      const I r = forward_tap_row(s, ty, u);
      for (I v = 0; v < s.Kw; ++v) {
        const TapSource<I> at = tap_source<kStaged>(win, p.pitch, x.s.h, x.s.w, r,
                                                    forward_tap_col(s, tx, v), s.H, s.W);
        A sum = A(0);
#pragma unroll
        for (int c = 0; c < kMaxChunk; ++c)
          if (c < cc) sum += gyv[c] * tap_value<kStaged>(smem, plane, xs, x.s.c, at, c);
        sink(u, v, sum, c0 == 0);
      }
    }
  }
}

// O is the type grad_weight is accumulated in across channel chunks: T when the group
// fits one chunk, fp32 (a temporary) for half types with several chunks.
template <typename T, typename O, bool kStaged, typename I>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(BasicGeometry<I> s, BasicPlan<I> p, View4<const T, I> gy,
                       View4<const T, I> x, View6<O, I> gw, bool channel_fastest) {
  using A = acc_t<T>;
  const BlockCoord<I> bc = block_coord(s, p, I(blockIdx.x));
  const auto [ty, tx, i, j] = thread_pixel(p, bc, I(threadIdx.x));
  O* gwpix = gw.data + bc.b * gw.s.b + bc.g * gw.s.g + i * gw.s.i + j * gw.s.j;
  kernel_grad_chunks<kStaged>(s, p, bc, ty, tx, i, j, i < s.Ho && j < s.Wo, gy, x,
                              shared_scratch<T>(), channel_fastest,
                              [&](I u, I v, A sum, bool first) {
                                O* dst = gwpix + u * gw.s.u + v * gw.s.v;
                                *dst = first ? static_cast<O>(sum)
                                             : static_cast<O>(static_cast<A>(*dst) + sum);
                              });
}

// The generator-side gradients of the fused backward, from the kernel gradient dk that a
// block forms per group in shared memory (kernel_grad_chunks) and never writes out:
//   grad_hidden[b, r, i, j] = sum over groups and taps of span_weight[row, r] * dk[row, i, j],
//     summed by the pixel's thread over the groups in order, in the accumulator type
//     (grad_hidden itself for fp32/fp64, an fp32 scratch for half types);
//   the block's partials[row][r] = sum over its pixels of dk[row] * hidden[r] and
//     partials[row][R] = sum of dk[row], later summed over blocks in order (reduce_partials),
//     for grad_span_weight and grad_span_bias.
// grad_hidden.data or partials may be null (not wanted). Blocks are (b, tile); each walks
// every group, so grad_hidden needs no cross-block sum.
template <typename T, bool kStaged, typename I>
__global__ void __launch_bounds__(kThreads)
    span_grads_kernel(BasicGeometry<I> s, BasicPlan<I> p, I gk_pitch, View4<const T, I> gy,
                      View4<const T, I> x, BasicSpanArgs<T, I> span,
                      View4<acc_t<T>, I> grad_hidden, acc_t<T>* partials, bool channel_fastest) {
  using A = acc_t<T>;
  const I taps = s.taps(), R = span.R, nthreads = p.threads();
  A* dk = shared_scratch<A>();  // [tap][thread], gk_pitch per tap
  T* staged = reinterpret_cast<T*>(dk + taps * gk_pitch);
  BlockCoord<I> bc = batch_block_coord(p, I(blockIdx.x));
  const I t = I(threadIdx.x);
  const auto [ty, tx, i, j] = thread_pixel(p, bc, t);
  const bool active = i < s.Ho && j < s.Wo;
  const View4<const T, I>& hs = span.hidden;
  const T* hidden = hs.data + bc.b * hs.s.b;
  A* block_partials = partials != nullptr ? partials + I(blockIdx.x) * s.G * taps * (R + 1)
                                          : nullptr;
  for (I g = 0; g < s.G; ++g) {
    bc.g = g;
    __syncthreads();  // the previous group's dk is read
    kernel_grad_chunks<kStaged>(s, p, bc, ty, tx, i, j, active, gy, x, staged, channel_fastest,
                                [&](I u, I v, A sum, bool first) {
                                  A& d = dk[(u * s.Kw + v) * gk_pitch + t];
                                  d = first ? sum : d + sum;
                                });
    __syncthreads();  // dk complete
    const T* rows = span.weight + g * taps * span.weight_s_row;
    if (active && grad_hidden.data != nullptr) {
      A* gh = grad_hidden.data + bc.b * grad_hidden.s.b + i * grad_hidden.s.h +
              j * grad_hidden.s.w;
      for (I r = 0; r < R; ++r) {
        A sum = A(0);
        for (I k = 0; k < taps; ++k)
          sum += static_cast<A>(rows[k * span.weight_s_row + r * span.weight_s_col]) *
                 dk[k * gk_pitch + t];
        A& dst = gh[r * grad_hidden.s.c];
        dst = g == 0 ? sum : dst + sum;
      }
    }
    if (block_partials == nullptr) continue;
    // One (tap, r) pair per thread at a time, tap fastest: the lanes of a warp mostly share
    // r, so their hidden reads are one address. (No divisions in these loops: with int64
    // indices each is a subroutine call.)
    const I rows_h = s.Ho - bc.h0 < p.tile.h ? s.Ho - bc.h0 : p.tile.h;
    const I cols_w = s.Wo - bc.w0 < p.tile.w ? s.Wo - bc.w0 : p.tile.w;
    for (I e = t; e < taps * (R + 1); e += nthreads) {
      const I k = e % taps, r = e / taps;
      const T* hr = hidden + r * hs.s.c + bc.h0 * hs.s.h + bc.w0 * hs.s.w;
      const A* dkk = dk + k * gk_pitch;
      A sum = A(0);
      for (I qy = 0; qy < rows_h; ++qy)
        for (I qx = 0; qx < cols_w; ++qx) {
          const A h = r < R ? static_cast<A>(hr[qy * hs.s.h + qx * hs.s.w]) : A(1);
          sum += dkk[qy * p.tile.w + qx] * h;
        }
      block_partials[(g * taps + k) * (R + 1) + r] = sum;
    }
  }
}

// out_w[row, r] = sum over blocks (in order) of partials[block][row][r], out_b[row] likewise
// from column R; either output may be null. One thread per (row, r).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reduce_partials_kernel(const acc_t<T>* partials, int64_t blocks, int64_t rows, int64_t R,
                           T* out_w, int64_t w_s_row, int64_t w_s_col, T* out_b, int64_t b_s) {
  using A = acc_t<T>;
  const int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t len = rows * (R + 1);
  if (e >= len) return;
  A sum = A(0);
  for (int64_t blk = 0; blk < blocks; ++blk) sum += partials[blk * len + e];
  const int64_t row = e / (R + 1), r = e % (R + 1);
  if (r < R && out_w != nullptr) out_w[row * w_s_row + r * w_s_col] = static_cast<T>(sum);
  if (r == R && out_b != nullptr) out_b[row * b_s] = static_cast<T>(sum);
}

// ---- host-side launch recipes. `launch(kernel, blocks, threads, smem_bytes, args...)`
// runs `kernel` over `blocks` blocks of `threads` threads with that much dynamic shared
// memory.

// Index width of a launch: Auto takes int32 when int32_indexing_fits, else int64; Int64
// forces the wide path (the CPU emulation runs both).
enum class Indexing { Auto, Int64 };

// Calls fn(I{}) with the index type the launch runs in.
template <typename Fn>
void with_index_type(bool int32_fits, Indexing indexing, Fn&& fn) {
  if (int32_fits && indexing == Indexing::Auto)
    fn(int32_t{});
  else
    fn(int64_t{});
}

// forward (Map = ForwardMap: threads own output pixels) or grad_input (Map = GradInputMap:
// threads own input pixels); out_rows/out_cols: that map's extent.
// Kernel: KernelTensor<T> (the unfused ops) or SpanKernel<T> (the fused ones).
template <typename T, typename Map, typename Kernel, typename Launch>
void run_gather(Launch&& launch, const Geometry& s, View4<const T> src, int64_t src_rows,
                int64_t src_cols, const Kernel& kernel, View4<T> out, int64_t out_rows,
                int64_t out_cols, bool channel_fastest, Indexing indexing = Indexing::Auto) {
  const Plan p = plan_for<Map>(s, out_rows, out_cols, sizeof(T));
  const bool fits = int32_indexing_fits(s, p, {view_span(src.s, s.B, s.C, src_rows, src_cols),
                                               kernel.view_span(s),
                                               view_span(out.s, s.B, s.C, out_rows, out_cols)});
  with_index_type(fits, indexing, [&](auto index) {
    using I = decltype(index);
    using KernelI = decltype(kernel.template as<I>());
    const bool staged = p.chunk > 0;
    launch(staged ? gather_kernel<T, Map, true, I, KernelI> : gather_kernel<T, Map, false, I, KernelI>,
           p.blocks, p.threads(), staged ? p.smem_elems() * int64_t(sizeof(T)) : 0,
           s.template as<I>(), p.template as<I>(), src.template as<I>(), I(src_rows),
           I(src_cols), kernel.template as<I>(), out.template as<I>(), I(out_rows), I(out_cols),
           channel_fastest);
  });
}

// grad_weight's threads own output pixels and stage input windows, as forward's do.
template <typename T>
Plan grad_weight_plan(const Geometry& s) {
  return plan_for<ForwardMap>(s, s.Ho, s.Wo, sizeof(T));
}

// True when grad_weight of a half type spans several channel chunks of plan `p`: the
// running sums then go through an fp32 scratch copy of grad_weight rather than being
// rounded per chunk.
template <typename T>
bool grad_weight_needs_fp32_scratch(const Geometry& s, const Plan& p) {
  return !std::is_same_v<T, acc_t<T>> &&
         s.channels_per_group() > (p.chunk > 0 ? p.chunk : kMaxChunk);
}

// grad_weight by plan `p` (grad_weight_plan) into `gw` (O = T, or float for the scratch of
// grad_weight_needs_fp32_scratch).
template <typename T, typename O, typename Launch>
void run_grad_weight(Launch&& launch, const Geometry& s, const Plan& p, View4<const T> gy,
                     View4<const T> x, View6<O> gw, bool channel_fastest,
                     Indexing indexing = Indexing::Auto) {
  const bool fits = int32_indexing_fits(s, p, {view_span(gy.s, s.B, s.C, s.Ho, s.Wo),
                                               view_span(x.s, s.B, s.C, s.H, s.W),
                                               view_span(gw.s, s)});
  with_index_type(fits, indexing, [&](auto index) {
    using I = decltype(index);
    const bool staged = p.chunk > 0;
    launch(staged ? grad_weight_kernel<T, O, true, I> : grad_weight_kernel<T, O, false, I>,
           p.blocks, p.threads(), staged ? p.smem_elems() * int64_t(sizeof(T)) : 0,
           s.template as<I>(), p.template as<I>(), gy.template as<I>(), x.template as<I>(),
           gw.template as<I>(), channel_fastest);
  });
}

// Accumulators of the span-gradient partials of plan `sp`: per block, G*taps rows of R + 1.
inline int64_t span_partials_elems(const Geometry& s, const SpanGradsPlan& sp, int64_t R) {
  return sp.p.blocks * s.G * s.taps() * (R + 1);
}

// The fused backward's generator side, by plan `sp` (span_grads_plan): grad_hidden into
// `grad_hidden` (accumulator type: for half types an fp32 scratch copy; data null when not
// wanted), and when `partials` is given (span_partials_elems of them) the span gradients
// into grad_w / grad_b (null when not wanted).
template <typename T, typename Launch>
void run_span_grads(Launch&& launch, const Geometry& s, const SpanGradsPlan& sp,
                    View4<const T> gy, View4<const T> x, const SpanArgs<T>& span,
                    View4<acc_t<T>> grad_hidden, acc_t<T>* partials, T* grad_w, int64_t w_s_row,
                    int64_t w_s_col, T* grad_b, int64_t b_s, bool channel_fastest,
                    Indexing indexing = Indexing::Auto) {
  const Plan& p = sp.p;
  const bool fits = int32_indexing_fits(
      s, p, {view_span(gy.s, s.B, s.C, s.Ho, s.Wo), view_span(x.s, s.B, s.C, s.H, s.W),
             SpanKernel<T>{span}.view_span(s), view_span(grad_hidden.s, s.B, span.R, s.Ho, s.Wo),
             span_partials_elems(s, sp, span.R)});
  with_index_type(fits, indexing, [&](auto index) {
    using I = decltype(index);
    const bool staged = p.chunk > 0;
    launch(staged ? span_grads_kernel<T, true, I> : span_grads_kernel<T, false, I>,
           p.blocks, p.threads(), sp.smem_bytes, s.template as<I>(), p.template as<I>(),
           I(sp.gk_pitch), gy.template as<I>(), x.template as<I>(), span.template as<I>(),
           grad_hidden.template as<I>(), partials, channel_fastest);
  });
  if (partials == nullptr) return;
  const int64_t rows = s.G * s.taps(), len = rows * (span.R + 1);
  launch(reduce_partials_kernel<T>, ceil_div(len, int64_t(kThreads)), int64_t(kThreads), 0,
         static_cast<const acc_t<T>*>(partials), p.blocks, rows, span.R, grad_w, w_s_row, w_s_col,
         grad_b, b_s);
}

}  // namespace involution::cuda

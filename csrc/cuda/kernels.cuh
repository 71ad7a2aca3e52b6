// The CUDA kernels of involution::forward / involution::backward and the host-side
// recipes that launch them, free of at::Tensor: the backend (involution_cuda.cu) launches
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
// Determinism: every output element has one owner thread that sums in a fixed order;
// grad_input is a gather over the taps that reach the pixel, grad_weight reduces the
// group's channels inside the owner thread. No atomics anywhere.
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

// forward (Map = ForwardMap: src = input, out = output) and grad_input (GradInputMap:
// src = grad_output, out = grad_input, a gather over the taps that reach each pixel).
// I: the index type (int32 when the call's offsets fit, see int32_indexing_fits).
template <typename T, typename Map, bool kStaged, typename I>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(BasicGeometry<I> s, BasicPlan<I> p, View4<const T, I> src, I src_rows,
                  I src_cols, View6<const T, I> w, View4<T, I> out, I out_rows, I out_cols,
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
  const T* wplane = w.data + bc.b * w.s.b + bc.g * w.s.g;
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
        const A wv = static_cast<A>(wplane[u * w.s.u + v * w.s.v + t.wi * w.s.i + t.wj * w.s.j]);
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

// O is the type grad_weight is accumulated in across channel chunks: T when the group
// fits one chunk, fp32 (a temporary) for half types with several chunks.
template <typename T, typename O, bool kStaged, typename I>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(BasicGeometry<I> s, BasicPlan<I> p, View4<const T, I> gy,
                       View4<const T, I> x, View6<O, I> gw, bool channel_fastest) {
  using A = acc_t<T>;
  T* smem = shared_scratch<T>();
  const BlockCoord<I> bc = block_coord(s, p, I(blockIdx.x));
  const auto [ty, tx, i, j] = thread_pixel(p, bc, I(threadIdx.x));
  const bool active = i < s.Ho && j < s.Wo;
  const Window<I> win = input_window(s, p.tile, bc.h0, bc.w0);
  const I plane = win.rows * p.pitch;
  const I cg = s.channels_per_group();
  const I chunk = kStaged ? p.chunk : I(kMaxChunk);
  O* gwpix = gw.data + bc.b * gw.s.b + bc.g * gw.s.g + i * gw.s.i + j * gw.s.j;
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
        O* dst = gwpix + u * gw.s.u + v * gw.s.v;
        *dst = c0 == 0 ? static_cast<O>(sum) : static_cast<O>(static_cast<A>(*dst) + sum);
      }
    }
  }
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
template <typename T, typename Map, typename Launch>
void run_gather(Launch&& launch, const Geometry& s, View4<const T> src, int64_t src_rows,
                int64_t src_cols, View6<const T> w, View4<T> out, int64_t out_rows,
                int64_t out_cols, bool channel_fastest, Indexing indexing = Indexing::Auto) {
  const Plan p = plan_for<Map>(s, out_rows, out_cols, sizeof(T));
  const bool fits = int32_indexing_fits(s, p, {view_span(src.s, s.B, s.C, src_rows, src_cols),
                                               view_span(w.s, s),
                                               view_span(out.s, s.B, s.C, out_rows, out_cols)});
  with_index_type(fits, indexing, [&](auto index) {
    using I = decltype(index);
    const bool staged = p.chunk > 0;
    launch(staged ? gather_kernel<T, Map, true, I> : gather_kernel<T, Map, false, I>, p.blocks,
           p.threads(), staged ? p.smem_elems() * int64_t(sizeof(T)) : 0, s.template as<I>(),
           p.template as<I>(), src.template as<I>(), I(src_rows), I(src_cols), w.template as<I>(),
           out.template as<I>(), I(out_rows), I(out_cols), channel_fastest);
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

}  // namespace involution::cuda

// CUDA backend of involution::forward / involution::backward.
//
// A block owns (batch, group, 8x32 pixel tile); a thread owns one pixel. The block
// stages the window of the source its tile reads (input for forward and grad_weight,
// grad_output for grad_input) for up to 16 channels of the group in shared memory,
// so each source element is read from global memory about once. Each thread then
// reads its pixel's weight once per tap and applies it to every staged channel from
// registers (16 accumulators). All index math comes from tiling.h (checked on the CPU
// by tests/cuda_index_sim.cpp).
//
// Determinism: every output element has one owner thread that sums in a fixed order;
// grad_input is a gather over the taps that reach the pixel, grad_weight reduces the
// group's channels inside the owner thread. No atomics anywhere.
#include "cuda/tiling.h"
#include "shape_check.h"
#include "backend_common.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <tuple>
#include <type_traits>

namespace involution::cuda {
namespace {

template <typename T>
using acc_t = at::opmath_type<T>;

template <typename A>
__device__ __forceinline__ A* shared_scratch() {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  return reinterpret_cast<A*>(smem_bytes);
}

// Stages `cc` channels of the window `win` of a (rows x cols) source plane into shared
// memory, zero outside the source.
template <typename T, typename A>
__device__ void stage_window(A* smem, const T* src, int64_t s_c, int64_t s_h, int64_t s_w,
                             const Window& win, int64_t cc, int64_t nrows, int64_t ncols,
                             bool channel_fastest) {
  const int64_t total = cc * win.rows * win.cols;
  for (int64_t idx = threadIdx.x; idx < total; idx += kThreads) {
    const Cell cell = staging_cell(idx, cc, win, channel_fastest);
    const int64_t h = win.row0 + cell.r, w = win.col0 + cell.col;
    A value = A(0);
    if (h >= 0 && h < nrows && w >= 0 && w < ncols)
      value = static_cast<A>(src[cell.c * s_c + h * s_h + w * s_w]);
    smem[smem_offset(win, cell.c, cell.r, cell.col)] = value;
  }
}

// Reads channel c at window cell (r, col): from shared memory when staged, else from
// global memory with bounds checks (windows too large for shared memory).
template <bool kStaged, typename T, typename A>
__device__ __forceinline__ A window_value(const A* smem, const Window& win, const T* src,
                                          int64_t s_c, int64_t s_h, int64_t s_w, int64_t c,
                                          int64_t r, int64_t col, int64_t nrows, int64_t ncols) {
  if constexpr (kStaged) {
    return smem[smem_offset(win, c, r, col)];
  } else {
    const int64_t h = win.row0 + r, w = win.col0 + col;
    if (h < 0 || h >= nrows || w < 0 || w >= ncols) return A(0);
    return static_cast<A>(src[c * s_c + h * s_h + w * s_w]);
  }
}

// forward (Map = ForwardMap: src = input, out = output) and grad_input (GradInputMap:
// src = grad_output, out = grad_input, a gather over the taps that reach each pixel).
template <typename T, typename Map, bool kStaged>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(Shape s, Plan p, View4<const T> src, int64_t src_rows, int64_t src_cols,
                  View6<const T> w, View4<T> out, int64_t out_rows, int64_t out_cols,
                  bool channel_fastest) {
  using A = acc_t<T>;
  A* smem = shared_scratch<A>();
  const BlockCoord bc = block_coord(s, p, blockIdx.x);
  const auto [ty, tx, ph, pw] = thread_pixel(bc, threadIdx.x);
  const bool active = ph < out_rows && pw < out_cols;
  const Window win = Map::window(s, bc.h0, bc.w0);
  const int64_t cg = s.cg();
  const int64_t chunk = kStaged ? p.chunk : kMaxChunk;
  const T* wplane = w.data + bc.b * w.s.b + bc.g * w.s.g;
  for (int64_t c0 = 0; c0 < cg; c0 += chunk) {
    const int64_t cc = cg - c0 < chunk ? cg - c0 : chunk;
    const T* srcc = src.data + bc.b * src.s.b + (bc.g * cg + c0) * src.s.c;
    if constexpr (kStaged) {
      __syncthreads();  // the previous chunk's reads are done
      stage_window(smem, srcc, src.s.c, src.s.h, src.s.w, win, cc, src_rows, src_cols,
                   channel_fastest);
      __syncthreads();
    }
    if (!active) continue;
    A acc[kMaxChunk];
#pragma unroll
    for (int c = 0; c < kMaxChunk; ++c) acc[c] = A(0);
    for (int64_t u = 0; u < s.Kh; ++u) {
      for (int64_t v = 0; v < s.Kw; ++v) {
        TapRead t;
        if (!Map::tap(s, win, ty, tx, ph, pw, u, v, t)) continue;
        const A wv = static_cast<A>(wplane[u * w.s.u + v * w.s.v + t.wi * w.s.i + t.wj * w.s.j]);
#pragma unroll
        for (int c = 0; c < kMaxChunk; ++c)
          if (c < cc)
            acc[c] += wv * window_value<kStaged>(smem, win, srcc, src.s.c, src.s.h, src.s.w, c,
                                                 t.r, t.col, src_rows, src_cols);
      }
    }
    T* o = out.data + bc.b * out.s.b + (bc.g * cg + c0) * out.s.c + ph * out.s.h + pw * out.s.w;
#pragma unroll
    for (int c = 0; c < kMaxChunk; ++c)
      if (c < cc) o[c * out.s.c] = static_cast<T>(acc[c]);
  }
}

// O is the type grad_weight is accumulated in across channel chunks: T when the group
// fits one chunk, fp32 (a temporary) for half types with several chunks.
template <typename T, typename O, bool kStaged>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(Shape s, Plan p, View4<const T> gy, View4<const T> x, View6<O> gw,
                       bool channel_fastest) {
  using A = acc_t<T>;
  A* smem = shared_scratch<A>();
  const BlockCoord bc = block_coord(s, p, blockIdx.x);
  const auto [ty, tx, i, j] = thread_pixel(bc, threadIdx.x);
  const bool active = i < s.Ho && j < s.Wo;
  const Window win = input_window(s, bc.h0, bc.w0);
  const int64_t cg = s.cg();
  const int64_t chunk = kStaged ? p.chunk : kMaxChunk;
  O* gwpix = gw.data + bc.b * gw.s.b + bc.g * gw.s.g + i * gw.s.i + j * gw.s.j;
  for (int64_t c0 = 0; c0 < cg; c0 += chunk) {
    const int64_t cc = cg - c0 < chunk ? cg - c0 : chunk;
    const T* xs = x.data + bc.b * x.s.b + (bc.g * cg + c0) * x.s.c;
    if constexpr (kStaged) {
      __syncthreads();
      stage_window(smem, xs, x.s.c, x.s.h, x.s.w, win, cc, s.H, s.W, channel_fastest);
      __syncthreads();
    }
    if (!active) continue;
    A gyv[kMaxChunk];
    const T* gyp = gy.data + bc.b * gy.s.b + (bc.g * cg + c0) * gy.s.c + i * gy.s.h + j * gy.s.w;
#pragma unroll
    for (int c = 0; c < kMaxChunk; ++c) gyv[c] = c < cc ? static_cast<A>(gyp[c * gy.s.c]) : A(0);
    for (int64_t u = 0; u < s.Kh; ++u) {
      const int64_t r = forward_tap_row(s, ty, u);
      for (int64_t v = 0; v < s.Kw; ++v) {
        const int64_t col = forward_tap_col(s, tx, v);
        A sum = A(0);
#pragma unroll
        for (int c = 0; c < kMaxChunk; ++c)
          if (c < cc)
            sum += gyv[c] * window_value<kStaged>(smem, win, xs, x.s.c, x.s.h, x.s.w, c, r, col,
                                                  s.H, s.W);
        O* dst = gwpix + u * gw.s.u + v * gw.s.v;
        *dst = c0 == 0 ? static_cast<O>(sum) : static_cast<O>(static_cast<A>(*dst) + sum);
      }
    }
  }
}

Shape to_shape(const Geometry& g) {
  return {g.B, g.C, g.G, g.H, g.W, g.Kh, g.Kw, g.Ho, g.Wo,
          g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w};
}

bool channels_inner(const at::Tensor& t) { return std::abs(t.stride(1)) < std::abs(t.stride(3)); }

template <typename T, typename Map>
void launch_gather(const Shape& s, const Window& max_window, const at::Tensor& src,
                   int64_t src_rows, int64_t src_cols, const at::Tensor& weight, at::Tensor& out) {
  using A = acc_t<T>;
  const Plan p = make_plan(s, out.size(2), out.size(3), max_window, sizeof(A));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto sv = view4<const T>(src);
  const auto wv = view6<const T>(weight);
  auto ov = view4<T>(out);
  const bool cf = channels_inner(src);
  if (p.chunk > 0) {
    gather_kernel<T, Map, true><<<p.blocks, kThreads, p.smem_elems() * sizeof(A), stream>>>(
        s, p, sv, src_rows, src_cols, wv, ov, out.size(2), out.size(3), cf);
  } else {
    gather_kernel<T, Map, false><<<p.blocks, kThreads, 0, stream>>>(
        s, p, sv, src_rows, src_cols, wv, ov, out.size(2), out.size(3), cf);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, typename O>
void launch_grad_weight_into(const Shape& s, const Plan& p, const at::Tensor& grad_out,
                             const at::Tensor& input, at::Tensor& grad_w) {
  using A = acc_t<T>;
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto gy = view4<const T>(grad_out);
  auto x = view4<const T>(input);
  auto gw = view6<O>(grad_w);
  const bool cf = channels_inner(input);
  if (p.chunk > 0) {
    grad_weight_kernel<T, O, true><<<p.blocks, kThreads, p.smem_elems() * sizeof(A), stream>>>(s, p, gy, x, gw, cf);
  } else {
    grad_weight_kernel<T, O, false><<<p.blocks, kThreads, 0, stream>>>(s, p, gy, x, gw, cf);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void launch_grad_weight(const Shape& s, const at::Tensor& grad_out, const at::Tensor& input,
                        at::Tensor& grad_w) {
  using A = acc_t<T>;
  const Plan p = make_plan(s, s.Ho, s.Wo, input_window(s, 0, 0), sizeof(A));
  const int64_t chunk = p.chunk > 0 ? p.chunk : kMaxChunk;
  if constexpr (!std::is_same_v<T, A>) {
    if (s.cg() > chunk) {  // several chunks: keep the running sums in fp32
      at::Tensor tmp = at::empty(grad_w.sizes(), grad_w.options().dtype(at::kFloat));
      launch_grad_weight_into<T, float>(s, p, grad_out, input, tmp);
      grad_w.copy_(tmp);
      return;
    }
  }
  launch_grad_weight_into<T, T>(s, p, grad_out, input, grad_w);
}

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = check_forward_args("involution::forward", input, weight, stride, padding,
                                        dilation);
  TORCH_CHECK(input.is_cuda(), "involution::forward: CUDA kernel got a ", input.device(),
              " tensor");
  c10::cuda::CUDAGuard device_guard(input.device());
  at::Tensor out = empty_output(input, g);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_forward_cuda", [&] {
    const Shape s = to_shape(g);
    launch_gather<scalar_t, ForwardMap>(s, input_window(s, 0, 0), input, g.H, g.W, weight, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_output,
                                                 const at::Tensor& input, const at::Tensor& weight,
                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation,
                                                 std::array<bool, 2> output_mask) {
  const Geometry g = check_backward_args(grad_output, input, weight, stride, padding, dilation);
  TORCH_CHECK(input.is_cuda(), "involution::backward: CUDA kernel got a ", input.device(),
              " tensor");
  c10::cuda::CUDAGuard device_guard(input.device());
  auto [grad_input, grad_weight] = empty_grads(input, weight, output_mask);
  if (g.B == 0) return {grad_input, grad_weight};
  const Shape s = to_shape(g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "involution_backward_cuda", [&] {
    if (grad_input.defined() && grad_input.numel() > 0)
      launch_gather<scalar_t, GradInputMap>(s, max_output_window(s), grad_output, g.Ho, g.Wo,
                                            weight, grad_input);
    if (grad_weight.defined()) launch_grad_weight<scalar_t>(s, grad_output, input, grad_weight);
  });
  return {grad_input, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(involution, CUDA, m) {
  m.impl("forward", &forward_cuda);
  m.impl("backward", &backward_cuda);
}

}  // namespace involution::cuda

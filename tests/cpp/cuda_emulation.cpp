// Runs the CUDA kernels of csrc/cuda/kernels.cuh on the CPU — the same source the GPU
// build compiles, launched through the same host recipes (run_gather, run_grad_weight) —
// with one std::thread per CUDA thread and a barrier for __syncthreads, and checks
// forward, grad_input and grad_weight against an fp64 loop of the paper's Eq. 4 (and its
// derivatives, written as scatters, unlike the kernels' gathers), and the fused ops' kernels
// (kernel generated on chip; generator-side gradients) likewise, for fp64/fp32/fp16/bf16,
// NCHW, channels_last and strided tensors, staged and unstaged (huge-window) kernels.
//
// Also checked per launch: every thread of a block reaches the same number of barriers,
// dynamic shared memory stays within the requested size (buffers are exact, so ASan sees
// any overrun; shared memory is refilled with NaN between blocks, so a read of a cell no
// thread staged shows up as a wrong result), every output element is written (outputs
// start as NaN), reads outside the tensors' elements never happen (ASan; gaps of strided
// tensors hold NaN), and backward twice is bitwise equal. Built with -fsanitize=thread,
// data races between threads of a block (on shared or global memory) are reported.
//
// Usage: cuda_emulation [n_random_shapes] [seed] [quick]. Prints "ok N launches" and exits 0, or
// prints the failures and exits 1.

// ---- the part of CUDA the kernels use, emulated ----
#define INVOLUTION_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

struct EmulatedDim3 {
  unsigned x = 0, y = 0, z = 0;
};
thread_local EmulatedDim3 threadIdx, blockIdx;

namespace emulation {
// A barrier whose waiters yield the core: with 256 threads on a few cores, the thread
// that completes a phase must get to run soon.
class Barrier {
 public:
  explicit Barrier(int threads) : threads_(threads) {}
  void arrive_and_wait() {
    const int64_t phase = phase_.load();
    if (arrived_.fetch_add(1) + 1 == threads_) {
      arrived_.store(0);
      phase_.fetch_add(1);
    } else {
      const auto start = std::chrono::steady_clock::now();
      for (int64_t spins = 1; phase_.load() == phase; ++spins) {
        std::this_thread::yield();
        if (spins % 4096 == 0 && std::chrono::steady_clock::now() - start > std::chrono::seconds(60)) {
          std::printf("FAIL a barrier waited 60 s: threads of a block reach __syncthreads unevenly\n");
          std::fflush(stdout);
          std::abort();
        }
      }
    }
  }

 private:
  const int threads_;
  std::atomic<int> arrived_{0};
  std::atomic<int64_t> phase_{0};
};

struct Block {
  explicit Block(int threads) : barrier(threads) {}
  Barrier barrier;
  unsigned char* shared = nullptr;
  std::atomic<int64_t> syncs[256] = {};
};
thread_local Block* current_block = nullptr;
}  // namespace emulation

unsigned char* emulated_shared_memory() { return emulation::current_block->shared; }
void __syncthreads() {
  emulation::current_block->syncs[threadIdx.x]++;
  emulation::current_block->barrier.arrive_and_wait();
}

#include "cuda/kernels.cuh"
#include "cuda_test_shapes.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace involution;
using namespace involution::cuda;

namespace {

int failures = 0;
int64_t launches = 0;
void fail(const std::string& what) {
  if (failures++ < 20) std::printf("FAIL %s\n", what.c_str());
}

static_assert(kThreads <= 256, "emulation::Block tracks at most 256 threads");

// kThreads worker threads, started once; each launch hands every one of them the job
// (those past the launch's block size return at once).
class ThreadPool {
 public:
  ThreadPool() {
    for (int t = 0; t < kThreads; ++t) workers_.emplace_back([this, t] { work(t); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    start_.notify_all();
    for (auto& w : workers_) w.join();
  }
  void run(const std::function<void(int)>& job) {
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = &job;
    pending_ = kThreads;
    ++generation_;
    start_.notify_all();
    done_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void work(int t) {
    int64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      const auto* job = job_;
      lock.unlock();
      (*job)(t);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  const std::function<void(int)>* job_ = nullptr;
  int64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

// Runs `kernel` as CUDA would: blocks one after another, each with `threads` threads
// sharing a barrier and `smem_bytes` of shared memory.
struct EmulatedLaunch {
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), int64_t blocks, int64_t threads, int64_t smem_bytes,
                  Args&&... args) const {
    static ThreadPool pool;
    ++launches;
    if (blocks <= 0 || blocks > std::numeric_limits<int32_t>::max())
      return fail("grid of " + std::to_string(blocks) + " blocks");
    if (threads <= 0 || threads > kThreads)
      return fail("blocks of " + std::to_string(threads) + " threads");
    if (smem_bytes < 0 || smem_bytes > kSmemBytes)
      return fail("dynamic shared memory " + std::to_string(smem_bytes) + " bytes");
    emulation::Block block(static_cast<int>(threads));
    // Exactly the requested size (ASan reports overruns); none at all when 0.
    std::unique_ptr<unsigned char[]> shared(smem_bytes > 0 ? new unsigned char[smem_bytes] : nullptr);
    block.shared = shared.get();
    auto poison = [&] { if (smem_bytes > 0) std::memset(block.shared, 0xFF, smem_bytes); };
    poison();
    std::atomic<bool> uneven{false};
    pool.run([&](int t) {
      if (t >= threads) return;
      emulation::current_block = &block;
      threadIdx.x = t;
      for (int64_t b = 0; b < blocks; ++b) {
        blockIdx.x = static_cast<unsigned>(b);
        kernel(args...);
        block.barrier.arrive_and_wait();  // the block is done
        if (t == 0) {
          for (int k = 1; k < threads; ++k)
            if (block.syncs[k].load() != block.syncs[0].load()) uneven = true;
          for (int k = 0; k < threads; ++k) block.syncs[k] = 0;
          poison();
        }
        block.barrier.arrive_and_wait();  // the next block starts clean
      }
    });
    if (uneven) fail("threads of a block reached different numbers of __syncthreads");
  }
};

// ---- tensors: an exact buffer plus strides, NaN in every element not part of the tensor ----
template <typename T>
struct Buffer {
  std::unique_ptr<T[]> data;
  int64_t size = 0;
};

template <typename T>
T nan_value() {
  return static_cast<T>(std::numeric_limits<float>::quiet_NaN());
}

template <typename T, size_t N>
Buffer<T> allocate(const int64_t (&sizes)[N], const int64_t (&strides)[N]) {
  int64_t extent = 1;
  for (size_t d = 0; d < N; ++d) extent += (sizes[d] - 1) * strides[d];
  Buffer<T> buf{std::unique_ptr<T[]>(new T[extent]), extent};
  for (int64_t k = 0; k < extent; ++k) buf.data[k] = nan_value<T>();
  return buf;
}

enum class Layout { NCHW, ChannelsLast, Strided };
const char* name(Layout l) {
  return l == Layout::NCHW ? "nchw" : l == Layout::ChannelsLast ? "channels_last" : "strided";
}

// Strides of a (B, C, H, W) tensor. Strided: every other column of a wider NCHW tensor
// with an extra channel, as a slice would give.
Strides4 strides4(Layout l, int64_t C, int64_t H, int64_t W) {
  switch (l) {
    case Layout::NCHW: return {C * H * W, H * W, W, 1};
    case Layout::ChannelsLast: return {H * W * C, 1, W * C, C};
    default: return {(C + 1) * H * 2 * W, H * 2 * W, 2 * W, 2};
  }
}
// Strides of the (B, G, Kh, Kw, Ho, Wo) weight: contiguous, the view of a channels_last
// (B, G*Kh*Kw, Ho, Wo) conv output (how Involution2d hands it over), or with a gap per row.
Strides6 strides6(Layout l, const Geometry& s) {
  const int64_t K = s.taps(), HW = s.Ho * s.Wo;
  switch (l) {
    case Layout::NCHW: return {s.G * K * HW, K * HW, s.Kw * HW, HW, s.Wo, 1};
    case Layout::ChannelsLast: return {HW * s.G * K, K, s.Kw, 1, s.Wo * s.G * K, s.G * K};
    default: {
      const int64_t plane = s.Ho * (s.Wo + 3);
      return {s.G * K * plane, K * plane, s.Kw * plane, plane, s.Wo + 3, 1};
    }
  }
}

template <typename T>
Buffer<T> make4(Layout l, int64_t B, int64_t C, int64_t H, int64_t W, Strides4& st) {
  st = strides4(l, C, H, W);
  return allocate<T>({B, C, H, W}, {st.b, st.c, st.h, st.w});
}

double tolerance(double) { return 1e-12; }
double tolerance(float) { return 2e-5; }
double tolerance(c10::Half) { return 2e-3; }
double tolerance(c10::BFloat16) { return 1.6e-2; }
// Absolute floor: fp16 results below 2^-14 are subnormal, spaced 2^-24 apart.
double smallest_step(c10::Half) { return 6e-8; }
double smallest_step(...) { return 1e-300; }
const char* dtype_name(double) { return "fp64"; }
const char* dtype_name(float) { return "fp32"; }
const char* dtype_name(c10::Half) { return "fp16"; }
const char* dtype_name(c10::BFloat16) { return "bf16"; }

template <typename T>
double as_double(T v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return static_cast<double>(static_cast<float>(v));
}

// got vs the fp64 reference, with the tolerance scaled by the sum of |terms| (`scale`).
template <typename T>
void compare(const char* what, const std::string& where, const T* got, const std::vector<double>& ref,
             const std::vector<double>& scale, const std::vector<int64_t>& offsets) {
  for (size_t k = 0; k < ref.size(); ++k) {
    const double value = as_double(got[offsets[k]]);
    if (!(std::abs(value - ref[k]) <= tolerance(T{}) * scale[k] + smallest_step(T{}))) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s element %zu: got %.9g want %.9g (scale %.3g)", what, k, value,
                    ref[k], scale[k]);
      return fail(where + ": " + buf);
    }
  }
}

// fn(b, g, u, v, i, j) for every weight element, in contiguous order.
template <typename Fn>
void for_each_weight(const Geometry& s, Fn&& fn) {
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t u = 0; u < s.Kh; ++u)
        for (int64_t v = 0; v < s.Kw; ++v)
          for (int64_t i = 0; i < s.Ho; ++i)
            for (int64_t j = 0; j < s.Wo; ++j) fn(b, g, u, v, i, j);
}

int64_t at4(const Strides4& st, int64_t b, int64_t c, int64_t h, int64_t w) {
  return b * st.b + c * st.c + h * st.h + w * st.w;
}

// Fills the elements of a (B, C, H, W) buffer with normal values rounded to T (so the
// reference sees exactly what the kernels see); returns their offsets in contiguous order.
template <typename T>
std::vector<int64_t> fill4(Buffer<T>& buf, const Strides4& st, int64_t B, int64_t C, int64_t H,
                           int64_t W, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<int64_t> offsets;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          offsets.push_back(at4(st, b, c, h, w));
          buf.data[offsets.back()] = static_cast<T>(normal(rng));
        }
  return offsets;
}

template <typename T>
void run_case(const Geometry& s, Layout layout, Indexing indexing, std::mt19937_64& rng) {
  const std::string where = testing::describe(s) + " " + name(layout) + " " + dtype_name(T{}) +
                            (indexing == Indexing::Int64 ? " int64-index" : " auto-index");
  const int64_t cg = s.channels_per_group(), K = s.taps();
  std::normal_distribution<float> normal;
  Strides4 xs, ys;
  auto x = make4<T>(layout, s.B, s.C, s.H, s.W, xs);
  auto gy = make4<T>(layout, s.B, s.C, s.Ho, s.Wo, ys);
  const Strides6 ws = strides6(layout, s);
  auto w = allocate<T>({s.B, s.G, s.Kh, s.Kw, s.Ho, s.Wo}, {ws.b, ws.g, ws.u, ws.v, ws.i, ws.j});
  auto at6 = [&](int64_t b, int64_t g, int64_t u, int64_t v, int64_t i, int64_t j) {
    return b * ws.b + g * ws.g + u * ws.u + v * ws.v + i * ws.i + j * ws.j;
  };
  const std::vector<int64_t> x_off = fill4(x, xs, s.B, s.C, s.H, s.W, rng);
  const std::vector<int64_t> y_off = fill4(gy, ys, s.B, s.C, s.Ho, s.Wo, rng);
  std::vector<int64_t> w_off;
  for_each_weight(s, [&](int64_t b, int64_t g, int64_t u, int64_t v, int64_t i, int64_t j) {
    w_off.push_back(at6(b, g, u, v, i, j));
    w.data[w_off.back()] = static_cast<T>(normal(rng));
  });

  // ---- fp64 reference: Eq. 4 and its derivatives, as loops over (output pixel, tap) ----
  std::vector<double> y_ref(y_off.size()), y_abs(y_off.size()), gx_ref(x_off.size()),
      gx_abs(x_off.size()), gw_ref(w_off.size()), gw_abs(w_off.size());
  for_each_weight(s, [&](int64_t b, int64_t g, int64_t u, int64_t v, int64_t i, int64_t j) {
    const int64_t h = i * s.stride_h - s.pad_h + u * s.dil_h, ww = j * s.stride_w - s.pad_w + v * s.dil_w;
    if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) return;
    const double wv = as_double(w.data[at6(b, g, u, v, i, j)]);
    const int64_t wk = ((((b * s.G + g) * s.Kh + u) * s.Kw + v) * s.Ho + i) * s.Wo + j;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      const double xv = as_double(x.data[at4(xs, b, c, h, ww)]);
      const double gyv = as_double(gy.data[at4(ys, b, c, i, j)]);
      const int64_t yk = ((b * s.C + c) * s.Ho + i) * s.Wo + j;
      const int64_t xk = ((b * s.C + c) * s.H + h) * s.W + ww;
      y_ref[yk] += wv * xv, y_abs[yk] += std::abs(wv * xv);
      gx_ref[xk] += wv * gyv, gx_abs[xk] += std::abs(wv * gyv);
      gw_ref[wk] += gyv * xv, gw_abs[wk] += std::abs(gyv * xv);
    }
  });

  // ---- the kernels, through the same recipes as the CUDA backend ----
  const bool channel_fastest = std::abs(xs.c) < std::abs(xs.w);
  const bool grad_channel_fastest = std::abs(ys.c) < std::abs(ys.w);
  const View4<const T> xv{x.data.get(), xs}, gyv{gy.data.get(), ys};
  const KernelTensor<T> wv{View6<const T>{w.data.get(), ws}};
  Strides4 os, gxs;
  auto y = make4<T>(layout, s.B, s.C, s.Ho, s.Wo, os);
  run_gather<T, ForwardMap>(EmulatedLaunch{}, s, xv, s.H, s.W, wv,
                            View4<T>{y.data.get(), os}, s.Ho, s.Wo, channel_fastest, indexing);
  compare("forward", where, y.data.get(), y_ref, y_abs, y_off);
  // The int32 and int64 index paths do the same arithmetic in the same order.
  auto y_wide = make4<T>(layout, s.B, s.C, s.Ho, s.Wo, os);
  run_gather<T, ForwardMap>(EmulatedLaunch{}, s, xv, s.H, s.W, wv,
                            View4<T>{y_wide.data.get(), os}, s.Ho, s.Wo, channel_fastest, Indexing::Int64);
  if (std::memcmp(y.data.get(), y_wide.data.get(), y.size * sizeof(T)) != 0)
    fail(where + ": forward with int64 index math differs");

  auto backward = [&](Buffer<T>& gx, Buffer<T>& gw) {
    run_gather<T, GradInputMap>(EmulatedLaunch{}, s, gyv, s.Ho, s.Wo, wv,
                                View4<T>{gx.data.get(), gxs}, s.H, s.W, grad_channel_fastest, indexing);
    const Plan p = grad_weight_plan<T>(s);
    if (grad_weight_needs_fp32_scratch<T>(s, p)) {
      std::vector<float> scratch(s.B * s.G * K * s.Ho * s.Wo, std::numeric_limits<float>::quiet_NaN());
      const int64_t HW = s.Ho * s.Wo;
      run_grad_weight<T, float>(EmulatedLaunch{}, s, p, gyv, xv,
                                View6<float>{scratch.data(), {s.G * K * HW, K * HW, s.Kw * HW, HW, s.Wo, 1}},
                                channel_fastest, indexing);
      for (size_t k = 0; k < w_off.size(); ++k) gw.data[w_off[k]] = static_cast<T>(scratch[k]);
    } else {
      run_grad_weight<T, T>(EmulatedLaunch{}, s, p, gyv, xv, View6<T>{gw.data.get(), ws}, channel_fastest,
                            indexing);
    }
  };
  auto gx = make4<T>(layout, s.B, s.C, s.H, s.W, gxs);
  auto gw = allocate<T>({s.B, s.G, s.Kh, s.Kw, s.Ho, s.Wo}, {ws.b, ws.g, ws.u, ws.v, ws.i, ws.j});
  backward(gx, gw);
  compare("grad_input", where, gx.data.get(), gx_ref, gx_abs, x_off);
  compare("grad_weight", where, gw.data.get(), gw_ref, gw_abs, w_off);

  auto gx2 = make4<T>(layout, s.B, s.C, s.H, s.W, gxs);
  auto gw2 = allocate<T>({s.B, s.G, s.Kh, s.Kw, s.Ho, s.Wo}, {ws.b, ws.g, ws.u, ws.v, ws.i, ws.j});
  backward(gx2, gw2);
  if (std::memcmp(gx.data.get(), gx2.data.get(), gx.size * sizeof(T)) != 0 ||
      std::memcmp(gw.data.get(), gw2.data.get(), gw.size * sizeof(T)) != 0)
    fail(where + ": backward twice differs");
}

// The fused ops' kernels: forward and grad_input gathers with the kernel generated on chip
// (SpanKernel) and the generator-side gradients (run_span_grads), against fp64 loops over
// the kernel k = span_weight @ hidden + bias that they never form. R span inputs; the span
// rows are contiguous, transposed (the layout's channels_last case) or padded per row.
template <typename T>
void run_fused_case(const Geometry& s, Layout layout, Indexing indexing, int64_t R, bool with_bias,
                    std::mt19937_64& rng) {
  using A = acc_t<T>;
  const std::string where = "fused R=" + std::to_string(R) + (with_bias ? " bias " : " no-bias ") +
                            testing::describe(s) + " " + name(layout) + " " + dtype_name(T{}) +
                            (indexing == Indexing::Int64 ? " int64-index" : " auto-index");
  const int64_t cg = s.channels_per_group(), taps = s.taps(), rows = s.G * taps;
  std::normal_distribution<float> normal;
  Strides4 xs, ys, hs;
  auto x = make4<T>(layout, s.B, s.C, s.H, s.W, xs);
  auto gy = make4<T>(layout, s.B, s.C, s.Ho, s.Wo, ys);
  auto hidden = make4<T>(layout, s.B, R, s.Ho, s.Wo, hs);
  const int64_t sw_row = layout == Layout::NCHW ? R : layout == Layout::ChannelsLast ? 1 : R + 2;
  const int64_t sw_col = layout == Layout::ChannelsLast ? rows : 1;
  const int64_t bias_s = layout == Layout::Strided ? 2 : 1;
  auto sw = allocate<T>({rows, R}, {sw_row, sw_col});
  auto bias = allocate<T>({rows}, {bias_s});
  const std::vector<int64_t> x_off = fill4(x, xs, s.B, s.C, s.H, s.W, rng);
  const std::vector<int64_t> y_off = fill4(gy, ys, s.B, s.C, s.Ho, s.Wo, rng);
  const std::vector<int64_t> h_off = fill4(hidden, hs, s.B, R, s.Ho, s.Wo, rng);
  std::vector<int64_t> sw_off, b_off;
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t r = 0; r < R; ++r) {
      sw_off.push_back(row * sw_row + r * sw_col);
      sw.data[sw_off.back()] = static_cast<T>(0.3f * normal(rng));
    }
    b_off.push_back(row * bias_s);
    bias.data[b_off.back()] = static_cast<T>(normal(rng));
  }
  auto swv = [&](int64_t row, int64_t r) { return as_double(sw.data[row * sw_row + r * sw_col]); };
  auto hv = [&](int64_t b, int64_t r, int64_t i, int64_t j) { return as_double(hidden.data[at4(hs, b, r, i, j)]); };

  // ---- fp64 reference: the kernel formed, then Eq. 4 and its derivatives ----
  const int64_t HW = s.Ho * s.Wo;
  std::vector<double> k(s.B * rows * HW), k_abs(k.size());
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t i = 0; i < s.Ho; ++i)
        for (int64_t j = 0; j < s.Wo; ++j) {
          const int64_t kk = (b * rows + row) * HW + i * s.Wo + j;
          k[kk] = with_bias ? as_double(bias.data[row * bias_s]) : 0.0;
          k_abs[kk] = std::abs(k[kk]);
          for (int64_t r = 0; r < R; ++r) {
            k[kk] += swv(row, r) * hv(b, r, i, j);
            k_abs[kk] += std::abs(swv(row, r) * hv(b, r, i, j));
          }
        }
  std::vector<double> y_ref(y_off.size()), y_abs(y_off.size()), gx_ref(x_off.size()),
      gx_abs(x_off.size()), dk(k.size()), dk_abs(k.size());
  for_each_weight(s, [&](int64_t b, int64_t g, int64_t u, int64_t v, int64_t i, int64_t j) {
    const int64_t h = i * s.stride_h - s.pad_h + u * s.dil_h, ww = j * s.stride_w - s.pad_w + v * s.dil_w;
    if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) return;
    const int64_t kk = ((b * rows + g * taps + u * s.Kw + v) * s.Ho + i) * s.Wo + j;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      const double xv = as_double(x.data[at4(xs, b, c, h, ww)]);
      const double gyv = as_double(gy.data[at4(ys, b, c, i, j)]);
      const int64_t yk = ((b * s.C + c) * s.Ho + i) * s.Wo + j;
      const int64_t xk = ((b * s.C + c) * s.H + h) * s.W + ww;
      y_ref[yk] += k[kk] * xv, y_abs[yk] += k_abs[kk] * std::abs(xv);
      gx_ref[xk] += k[kk] * gyv, gx_abs[xk] += k_abs[kk] * std::abs(gyv);
      dk[kk] += gyv * xv, dk_abs[kk] += std::abs(gyv * xv);
    }
  });
  std::vector<double> gh_ref(h_off.size()), gh_abs(h_off.size()), gsw_ref(rows * R),
      gsw_abs(rows * R), gb_ref(rows), gb_abs(rows);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t p = 0; p < HW; ++p) {
        const int64_t kk = (b * rows + row) * HW + p, i = p / s.Wo, j = p % s.Wo;
        gb_ref[row] += dk[kk], gb_abs[row] += dk_abs[kk];
        for (int64_t r = 0; r < R; ++r) {
          const int64_t hk = (b * R + r) * HW + p;
          gh_ref[hk] += swv(row, r) * dk[kk], gh_abs[hk] += std::abs(swv(row, r)) * dk_abs[kk];
          gsw_ref[row * R + r] += dk[kk] * hv(b, r, i, j);
          gsw_abs[row * R + r] += dk_abs[kk] * std::abs(hv(b, r, i, j));
        }
      }

  // ---- the kernels, through the CUDA backend's recipes ----
  const SpanArgs<T> span{View4<const T>{hidden.data.get(), hs}, sw.data.get(), sw_row, sw_col,
                         with_bias ? bias.data.get() : nullptr, with_bias ? bias_s : 0, R};
  const bool channel_fastest = std::abs(xs.c) < std::abs(xs.w);
  const bool grad_channel_fastest = std::abs(ys.c) < std::abs(ys.w);
  Strides4 os, gxs, ghs;
  auto y = make4<T>(layout, s.B, s.C, s.Ho, s.Wo, os);
  run_gather<T, ForwardMap>(EmulatedLaunch{}, s, View4<const T>{x.data.get(), xs}, s.H, s.W,
                            SpanKernel<T>{span}, View4<T>{y.data.get(), os}, s.Ho, s.Wo,
                            channel_fastest, indexing);
  compare("fused forward", where, y.data.get(), y_ref, y_abs, y_off);
  auto gx = make4<T>(layout, s.B, s.C, s.H, s.W, gxs);
  run_gather<T, GradInputMap>(EmulatedLaunch{}, s, View4<const T>{gy.data.get(), ys}, s.Ho, s.Wo,
                              SpanKernel<T>{span}, View4<T>{gx.data.get(), gxs}, s.H, s.W,
                              grad_channel_fastest, indexing);
  compare("fused grad_input", where, gx.data.get(), gx_ref, gx_abs, x_off);

  const SpanGradsPlan sp = span_grads_plan(s, sizeof(T), sizeof(A));
  auto span_grads = [&](Indexing ix, Buffer<A>& gh, Buffer<T>& gsw, Buffer<T>& gb) {
    std::vector<A> partials(span_partials_elems(s, sp, R), std::numeric_limits<A>::quiet_NaN());
    run_span_grads<T>(EmulatedLaunch{}, s, sp, View4<const T>{gy.data.get(), ys},
                      View4<const T>{x.data.get(), xs}, span, View4<A>{gh.data.get(), ghs},
                      partials.data(), gsw.data.get(), sw_row, sw_col,
                      with_bias ? gb.data.get() : nullptr, bias_s, channel_fastest, ix);
  };
  auto gh = make4<A>(layout, s.B, R, s.Ho, s.Wo, ghs);
  auto gsw = allocate<T>({rows, R}, {sw_row, sw_col});
  auto gb = allocate<T>({rows}, {bias_s});
  span_grads(indexing, gh, gsw, gb);
  compare("fused grad_hidden", where, gh.data.get(), gh_ref, gh_abs, h_off);
  compare("fused grad_span_weight", where, gsw.data.get(), gsw_ref, gsw_abs, sw_off);
  if (with_bias) compare("fused grad_span_bias", where, gb.data.get(), gb_ref, gb_abs, b_off);
  // Bitwise the same again, with the other index width.
  auto gh2 = make4<A>(layout, s.B, R, s.Ho, s.Wo, ghs);
  auto gsw2 = allocate<T>({rows, R}, {sw_row, sw_col});
  auto gb2 = allocate<T>({rows}, {bias_s});
  span_grads(indexing == Indexing::Int64 ? Indexing::Auto : Indexing::Int64, gh2, gsw2, gb2);
  if (std::memcmp(gh.data.get(), gh2.data.get(), gh.size * sizeof(A)) != 0 ||
      std::memcmp(gsw.data.get(), gsw2.data.get(), gsw.size * sizeof(T)) != 0 ||
      std::memcmp(gb.data.get(), gb2.data.get(), gb.size * sizeof(T)) != 0)
    fail(where + ": span gradients differ between runs");
}

}  // namespace

int main(int argc, char** argv) {
  const int n_random = argc > 1 ? std::atoi(argv[1]) : 12;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20261128;
  // quick (for the slow ThreadSanitizer build): one layout per shape, in turn, fp32 and fp16.
  const bool quick = argc > 3 && std::strcmp(argv[3], "quick") == 0;
  std::vector<Geometry> shapes = {
      // RedNet-like (one 16-channel chunk per group), stride 2 on odd sizes
      {1, 32, 2, 14, 14, 7, 7, 0, 0, 1, 1, 3, 3, 1, 1},
      {2, 16, 1, 15, 17, 3, 3, 0, 0, 2, 2, 1, 1, 1, 1},
      // 40 channels per group: several (partial) chunks, fp32 scratch for half grad_weight
      {1, 80, 2, 10, 12, 7, 7, 0, 0, 2, 1, 3, 3, 1, 1},
      // a window too large for shared memory: the unstaged kernels
      {1, 4, 1, 8, 10, 9, 9, 0, 0, 1, 1, 48, 48, 12, 12},
      // asymmetric everything; two tile rows and columns; 1x1 kernel
      {2, 6, 3, 9, 33, 3, 5, 0, 0, 3, 2, 0, 4, 2, 3},
      {1, 3, 1, 17, 40, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1},
      {1, 4, 4, 5, 5, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1},
  };
  std::mt19937_64 rng(seed);
  for (int k = 0; k < n_random; ++k)
    shapes.push_back(testing::random_shape(rng, {2, 18, 40, 5, 3, 3, 2}, {1, 2, 3, 16, 17}));
  int cases = 0, dtypes = quick ? 2 : 4, shape_index = 0;
  const Layout layouts[] = {Layout::NCHW, Layout::ChannelsLast, Layout::Strided};
  for (Geometry& s : shapes) {
    ++shape_index;
    if (!testing::set_output_size(s)) continue;
    for (int li = 0; li < 3; ++li) {
      if (quick && li != shape_index % 3) continue;
      const Layout l = layouts[li];
      // Backward in turn with the int32 (these sizes fit) and the int64 index math.
      const Indexing ix = (shape_index + li) % 2 ? Indexing::Auto : Indexing::Int64;
      run_case<float>(s, l, ix, rng);
      run_case<c10::Half>(s, l, ix, rng);
      if (!quick) {
        run_case<double>(s, l, ix, rng);
        run_case<c10::BFloat16>(s, l, ix, rng);
      }
      // The fused ops: R from 1 (odd) to 17, with and without a bias.
      const int64_t R = 1 + (shape_index * 5 + li * 3) % 17;
      const bool with_bias = (shape_index + li) % 3 != 0;
      run_fused_case<float>(s, l, ix, R, with_bias, rng);
      if (!quick) {
        run_fused_case<double>(s, l, ix, R, with_bias, rng);
        run_fused_case<c10::Half>(s, l, ix, R, with_bias, rng);
        run_fused_case<c10::BFloat16>(s, l, ix, R, with_bias, rng);
      }
      ++cases;
    }
  }
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("ok %lld launches, %d shape/layout cases x %d dtypes\n", (long long)launches, cases, dtypes);
  return 0;
}

// What the CPU kernels share: vector types, staging of input rows and weights, the division
// of the work into tasks. Included by forward.cpp, grad_input.cpp and grad_weight.cpp, each
// compiled once per instruction set (cmake/CpuIsa.cmake) into namespace isa_<name>.
//
// Design (docs/design.md has the overview):
// * A task is (batch, group, block of rows). It stages the rows it needs of the group's
//   channels into a small per-thread buffer in the accumulator type, with a zero halo
//   and with strided columns split into phases. The inner loops then have no bounds
//   checks, every load is a plain contiguous vector load, and any input layout
//   (NCHW, channels_last, arbitrary strides) and dtype is handled in the staging alone.
//   Extra memory is O(threads x tile), never an unfold buffer.
// * Vectors run along output columns; a block of up to 16 channels of one group keeps
//   its accumulators in registers, so each weight vector feeds one FMA per channel.
// * Every output element is computed by exactly one task in a fixed order (grad_input
//   is a gather, grad_weight reduces channels inside its task), so results are bitwise
//   identical run to run and for any thread count. No atomics.
#pragma once

#include "cpu/kernels.h"

#include <ATen/Parallel.h>

#if defined(__AVX2__) || defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#ifndef INVOLUTION_ISA
#error "INVOLUTION_ISA must name the instruction-set namespace suffix"
#endif
#ifndef INVOLUTION_VEC_BYTES
#error "INVOLUTION_VEC_BYTES must give the vector width in bytes"
#endif

#define INVOLUTION_CAT_(a, b) a##b
#define INVOLUTION_CAT(a, b) INVOLUTION_CAT_(a, b)
#define INVOLUTION_NS INVOLUTION_CAT(isa_, INVOLUTION_ISA)

namespace involution::cpu::INVOLUTION_NS {
namespace {

constexpr int kVecBytes = INVOLUTION_VEC_BYTES;
// Accumulators of one channel block, plus a weight and an input vector, must fit in
// the register file: 32 registers with AVX-512, 16 below it.
constexpr int kMaxChannelBlock = kVecBytes >= 64 ? 16 : 8;

// fp16/bf16 accumulate in fp32, fp64 in fp64.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// GCC/Clang vector extensions: the compiler maps them onto the ISA this file is built for.
// VB is the vector width in bytes; the AVX-512 build also runs 32-byte vectors for rows
// of at most 8 fp32 (RedNet's 7x7 stage), where 64-byte ones would leave half the lanes
// idle (and 256-bit FMAs issue twice as fast as 512-bit ones on AMD Zen 4).
template <typename A, int VB>
struct VecOf {
  typedef A type __attribute__((vector_size(VB)));
};
template <typename A, int VB = kVecBytes>
using Vec = typename VecOf<A, VB>::type;
template <typename A, int VB = kVecBytes>
constexpr int64_t kLanes = VB / sizeof(A);

// Writes `bytes` bytes at d with fixed-size moves from source(offset) (a pointer to the
// bytes for d + offset, at least 32 readable): 32-byte blocks, the last one ending at the end
// (overlapping the one before); below 32 bytes, two overlapping moves of the largest power of
// two that fits; nothing when bytes <= 0. Lines here are tens of elements, and the
// memcpy/memset call GCC makes of a plain loop cost more than the copy: a quarter of
// grad_input's time at 7x7.
template <typename Source>
inline void write_bytes(char* __restrict d, int64_t bytes, Source&& source) {
  auto move = [&](auto size, int64_t at) {
    char tmp[size()];
    std::memcpy(tmp, source(at), size());
    std::memcpy(d + at, tmp, size());
  };
  auto two = [&](auto size) {  // size <= bytes < 2 * size
    move(size, 0);
    move(size, bytes - size());
  };
  using std::integral_constant;
  if (bytes >= 32) {
    for (int64_t k = 0; k + 32 < bytes; k += 32) move(integral_constant<int64_t, 32>{}, k);
    move(integral_constant<int64_t, 32>{}, bytes - 32);
  } else if (bytes >= 16) {
    two(integral_constant<int64_t, 16>{});
  } else if (bytes >= 8) {
    two(integral_constant<int64_t, 8>{});
  } else if (bytes >= 4) {
    two(integral_constant<int64_t, 4>{});
  } else if (bytes >= 2) {
    two(integral_constant<int64_t, 2>{});
  } else if (bytes == 1) {
    move(integral_constant<int64_t, 1>{}, 0);
  }
}

template <typename A>
inline void copy_elements(A* __restrict dst, const A* __restrict src, int64_t n) {
  const char* s = reinterpret_cast<const char*>(src);
  write_bytes(reinterpret_cast<char*>(dst), n * int64_t(sizeof(A)),
              [s](int64_t at) { return s + at; });
}

template <typename A>
inline void zero_elements(A* dst, int64_t n) {
  alignas(32) static constexpr char kZeros[32] = {};
  write_bytes(reinterpret_cast<char*>(dst), n * int64_t(sizeof(A)),
              [](int64_t) { return kZeros; });
}

// n values of a half type converted to fp32 (dst) or back (convert_from_acc), 8 at a time
// where the build has vector instructions for it (F16C for fp16; integer shifts for bf16),
// with the same rounding as c10's scalar conversions (round to nearest even; bf16 NaN ->
// 0x7FC0); any other pair of types, and the last n % 8, one value at a time (a tail through
// an 8-value buffer was slower: the vector load of a buffer just written in pieces waits for
// the stores, which cost grad_input and grad_weight 1.4-1.7x at 7x7). Equal types: a copy.
template <typename T, typename A>
constexpr bool has_vector_conversion() {
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, c10::Half> && std::is_same_v<A, float>) return true;
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, c10::BFloat16> && std::is_same_v<A, float>) return true;
#endif
  return false;
}

// 8 values of a half type widened to fp32 in a register (bf16: the high half of an fp32);
// called only where has_vector_conversion<T, float>(). Used by convert8_to_acc and
// load_as_acc; widen16 below is its AVX-512 twin.
#if defined(__AVX2__) || defined(__F16C__)
template <typename T>
inline __m256 widen8(const T* __restrict src) {
  const __m128i narrow = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, c10::Half>) return _mm256_cvtph_ps(narrow);
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, c10::BFloat16>)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(narrow), 16));
#endif
}
#endif

// 8 values each way; called only where has_vector_conversion<T, float>().
template <typename T>
inline void convert8_to_acc(float* __restrict dst, const T* __restrict src) {
#if defined(__AVX2__) || defined(__F16C__)
  _mm256_storeu_ps(dst, widen8(src));
#endif
}

template <typename T>
inline void convert8_from_acc(T* __restrict dst, const float* __restrict src) {
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, c10::Half>)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src), _MM_FROUND_TO_NEAREST_INT));
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    const __m256 v = _mm256_loadu_ps(src);
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                     _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
  }
#endif
}

#if defined(__AVX512F__)
// 16 values each way, in the AVX-512 build: half the instructions of two 8-value steps
// (B=8, bf16 forward with the widened loads, AVX-512: 0.88-0.95x the time at 56x56 and 28x28
// in NCHW, 0.86-0.97x in channels_last, whose gather reads converted weight rows).
template <typename T>
inline __m512 widen16(const T* __restrict src) {
  const __m256i narrow = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  if constexpr (std::is_same_v<T, c10::Half>) return _mm512_cvtph_ps(narrow);
  if constexpr (std::is_same_v<T, c10::BFloat16>)
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(narrow), 16));
}

template <typename T>
inline void convert16_to_acc(float* __restrict dst, const T* __restrict src) {
  _mm512_storeu_ps(dst, widen16(src));
}

template <typename T>
inline void convert16_from_acc(T* __restrict dst, const float* __restrict src) {
  const __m512 v = _mm512_loadu_ps(src);
  __m256i narrow;
  if constexpr (std::is_same_v<T, c10::Half>)
    narrow = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
  if constexpr (std::is_same_v<T, c10::BFloat16>) {  // as convert8_from_acc
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, bias), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
    narrow = _mm512_cvtepi32_epi16(r);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), narrow);
}
#endif

// dst[k] = src[k] converted, for k < n: the body of convert_to_acc and convert_from_acc.
// Always inlined, as is convert_to_acc: with the 16-value steps GCC called them out of line,
// once per tap and row from the forward's weight rows (bf16 7x7 channels_last: 1.1x the time).
template <typename D, typename S>
__attribute__((always_inline)) inline void convert_elements(D* __restrict dst,
                                                            const S* __restrict src, int64_t n) {
  if constexpr (std::is_same_v<D, S>) return copy_elements(dst, src, n);
  int64_t k = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<D, float> && has_vector_conversion<S, float>())
    for (; k + 16 <= n; k += 16) convert16_to_acc(dst + k, src + k);
  if constexpr (std::is_same_v<S, float> && has_vector_conversion<D, float>())
    for (; k + 16 <= n; k += 16) convert16_from_acc(dst + k, src + k);
#endif
  if constexpr (std::is_same_v<D, float> && has_vector_conversion<S, float>())
    for (; k + 8 <= n; k += 8) convert8_to_acc(dst + k, src + k);
  if constexpr (std::is_same_v<S, float> && has_vector_conversion<D, float>())
    for (; k + 8 <= n; k += 8) convert8_from_acc(dst + k, src + k);
  for (; k < n; ++k) dst[k] = static_cast<D>(src[k]);
}

template <typename T, typename A>
__attribute__((always_inline)) inline void convert_to_acc(A* __restrict dst,
                                                          const T* __restrict src, int64_t n) {
  convert_elements(dst, src, n);
}

template <typename T, typename A>
inline void convert_from_acc(T* __restrict dst, const A* __restrict src, int64_t n) {
  convert_elements(dst, src, n);
}

template <int VB, typename A>
inline Vec<A, VB> load(const A* p) {
  Vec<A, VB> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Whether load_as_acc<VB, A>(const T*) widens a vector of T in registers: equal types, and
// fp16/bf16 to fp32 in the AVX2 and AVX-512 builds.
template <typename T, typename A, int VB>
constexpr bool loads_as_acc() {
  if constexpr (std::is_same_v<T, A>) return true;
  if constexpr (!has_vector_conversion<T, A>()) return false;
#if defined(__AVX512F__)
  return VB == 32 || VB == 64;
#else
  return VB == 32;
#endif
}

// One vector of A from kLanes<A, VB> values of T, converted as convert_to_acc would: the
// widening of convert8_to_acc / convert16_to_acc, kept in a register (intrinsics: from
// generic vector code GCC widened the two halves apart, 5 instructions).
template <int VB, typename A, typename T>
inline Vec<A, VB> load_as_acc(const T* p) {
  static_assert(loads_as_acc<T, A, VB>());
  if constexpr (std::is_same_v<T, A>) {
    return load<VB>(p);
#if defined(__AVX512F__)
  } else if constexpr (VB == 64) {
    return widen16(p);
#endif
#if defined(__AVX2__) || defined(__F16C__)
  } else if constexpr (VB == 32) {
    return widen8(p);
#endif
  }
}

template <typename A, typename V>
inline void store(A* p, const V& v) {
  std::memcpy(p, &v, sizeof(v));
}

inline int64_t round_up(int64_t a, int64_t m) { return ceil_div(a, m) * m; }

// The k in [0, width) with 0 <= col0 + k*step < ncols, as [lo, hi) (empty: lo == hi).
struct ColumnRange {
  int64_t lo, hi;
};
inline ColumnRange valid_columns(int64_t width, int64_t col0, int64_t step, int64_t ncols) {
  if (col0 >= ncols) return {0, 0};
  int64_t lo, hi;
  if (step == 1) {  // the common case, without integer divisions
    lo = std::max<int64_t>(0, -col0);
    hi = std::min(width, ncols - col0);
  } else {
    lo = col0 >= 0 ? 0 : ceil_div(-col0, step);
    hi = std::min(width, floor_div(ncols - 1 - col0, step) + 1);
  }
  return {std::min(lo, hi), hi};
}

// dst[k] = src[(col0 + k * step) * col_stride] where 0 <= col0 + k*step < ncols, else 0,
// for k in [0, width). src == nullptr stages a row of zeros (a row in the padding).
// Rows are short (tens of elements): copies and zero fills are fixed-size moves (write_bytes).
// halo_zeroed: dst already holds zeros outside the valid columns (a buffer whose lines keep
// their place from task to task, see StagedInput): only the valid columns are written.
// stage_valid_columns is stage_line with valid_columns(width, col0, step, ncols) given, so
// stage_lines works them out (two divisions when step > 1) once per block, not per line.
// Always inlined: with one more caller (grad_input's rows at the tensor's ends) GCC moved it
// out of stage_lines, 1.4x the instructions of staging a block (NCHW 7x7).
template <typename T, typename A>
__attribute__((always_inline)) inline void stage_valid_columns(
    A* __restrict dst, int64_t width, const T* __restrict src, int64_t col0, int64_t step,
    int64_t col_stride, ColumnRange valid, bool halo_zeroed) {
  const auto [lo, hi] = valid;
  if (!halo_zeroed) {
    zero_elements(dst, lo);
    zero_elements(dst + hi, width - hi);
  }
  if (src == nullptr) {
    zero_elements(dst + lo, hi - lo);
  } else if (hi > lo) {  // s: the first valid source element (never a pointer outside the row)
    const T* __restrict s = src + (col0 + lo * step) * col_stride;
    if (step == 1 && col_stride == 1) {
      convert_to_acc(dst + lo, s, hi - lo);
    } else {  // (stride-2 NCHW rows go through stage_line_phases instead)
      const int64_t jump = step * col_stride;
      for (int64_t k = 0; k < hi - lo; ++k) dst[lo + k] = static_cast<A>(s[k * jump]);
    }
  }
}

template <typename T, typename A>
void stage_line(A* __restrict dst, int64_t width, const T* __restrict src, int64_t col0,
                int64_t step, int64_t col_stride, int64_t ncols, bool halo_zeroed = false) {
  stage_valid_columns(dst, width, src, col0, step, col_stride,
                      valid_columns(width, col0, step, ncols), halo_zeroed);
}

// A block of lines: line (c, r) lands at dst + c*dst_c + r*dst_r and holds
// stage_line(row h = row0 + r of plane c, columns col0 + k*step) — rows outside
// [0, nrows) are zeros. When planes are closer in memory than columns (channels_last
// input, pixel-major weights) the copy runs column-outer, plane-inner, so each
// source cache line is read once instead of once per plane.
struct LineBlock {
  int64_t planes, rows, width;    // lines are planes x rows, each `width` long
  int64_t dst_c, dst_r;           // destination strides of a plane and a row
  int64_t s_c, s_h, s_w;          // source strides of a plane, a row and a column
  int64_t row0, nrows, col0, step, ncols;
  bool halo_zeroed = false;       // see stage_line
};

// Transposes the L x L matrix of r's lanes (r[i] = row i) in registers: stage S swaps the
// S x S blocks off the diagonal of every 2S x 2S block, so an element whose row and column
// differ in bit S trades that bit; after every bit, row and column have traded.
template <int S, typename V, size_t L>
inline void transpose_stage(V (&r)[L]) {
  using Lane = std::conditional_t<sizeof(r[0][0]) == 4, int32_t, int64_t>;
  using Index = typename VecOf<Lane, sizeof(V)>::type;
  constexpr auto pattern = [](auto f) {
    return [&]<size_t... K>(std::index_sequence<K...>) {
      return Index{static_cast<Lane>(f(K))...};
    }(std::make_index_sequence<L>{});
  };
  // Row i keeps its lanes with bit S clear and takes row i+S's lanes below; row i+S the rest.
  constexpr Index low = pattern([](size_t k) { return (k & S) ? L + k - S : k; });
  constexpr Index high = pattern([](size_t k) { return (k & S) ? L + k : k + S; });
  for (size_t i = 0; i < L; ++i) {
    if (i & S) continue;
    const V a = r[i], b = r[i + S];
    r[i] = __builtin_shuffle(a, b, low);
    r[i + S] = __builtin_shuffle(a, b, high);
  }
}

template <typename V, size_t L>
inline void transpose_square(V (&r)[L]) {
  static_assert(L == sizeof(V) / sizeof(r[0][0]), "one row per lane");
  [&]<size_t... B>(std::index_sequence<B...>) {
    (transpose_stage<(1 << B)>(r), ...);
  }(std::make_index_sequence<std::countr_zero(L)>{});
}

template <typename T, typename A>
void stage_lines(A* dst, const T* src, const LineBlock& L) {
  const bool plane_inner = L.planes > 1 && std::abs(L.s_c) < std::abs(L.s_w);
  // The same columns are valid in every line (see stage_valid_columns).
  const ColumnRange valid = valid_columns(L.width, L.col0, L.step, L.ncols);
  const auto [lo, hi] = valid;
  auto source_row = [&](int64_t r) -> const T* {
    const int64_t h = L.row0 + r;
    return (h >= 0 && h < L.nrows) ? src + h * L.s_h : nullptr;
  };
  if (!plane_inner) {
    // Plane by plane: each plane's rows are one run the hardware prefetcher follows. Row by
    // row, grad_input's 49 weight planes (K=7) were 49 streams at once: B=8, from cold
    // caches, plane by plane took 0.72-0.93x the time (14x14, 28x28, 7x7, stride 2).
    for (int64_t c = 0; c < L.planes; ++c)
      for (int64_t r = 0; r < L.rows; ++r) {
        const T* row = source_row(r);
        stage_valid_columns(dst + c * L.dst_c + r * L.dst_r, L.width,
                            row ? row + c * L.s_c : nullptr, L.col0, L.step, L.s_w, valid,
                            L.halo_zeroed);
      }
    return;
  }
  for (int64_t r = 0; r < L.rows; ++r) {
    const T* row = source_row(r);
    if (row == nullptr) {
      for (int64_t c = 0; c < L.planes; ++c)
        stage_valid_columns(dst + c * L.dst_c + r * L.dst_r, L.width,
                            static_cast<const T*>(nullptr), L.col0, L.step, L.s_w, valid,
                            L.halo_zeroed);
      continue;
    }
    if (!L.halo_zeroed) {
      for (int64_t c = 0; c < L.planes; ++c) {
        A* d = dst + c * L.dst_c + r * L.dst_r;
        zero_elements(d, lo);
        zero_elements(d + hi, L.width - hi);
      }
    }
    A* d = dst + r * L.dst_r;
    int64_t k = lo, c0 = 0;
    if (L.s_c == 1) {
      // Square blocks of one vector's lanes, transposed in registers: both the reads
      // (pixel-major) and the writes (plane-major) are whole vectors (through a buffer,
      // element by element, channels_last grad_weight took 1.1-1.2x the time at B=8, 56x56,
      // 28x28, stride 2). The last block of a line ends at hi, overlapping the one before;
      // lines narrower than a vector take narrower vectors (down to 16 bytes).
      auto tiles = [&](auto vb, auto& self) -> void {
        constexpr int VB = decltype(vb)::value;
        constexpr int64_t kB = kLanes<A, VB>;
        if (hi - lo < kB || L.planes < kB) {
          if constexpr (VB > 16) self(std::integral_constant<int, VB / 2>{}, self);
          return;
        }
        for (; c0 + kB <= L.planes; c0 += kB)
          for (int64_t kb = lo; kb < hi; kb += kB) {
            const int64_t at = std::min(kb, hi - kB);
            Vec<A, VB> tile[kB];
            for (int64_t kk = 0; kk < kB; ++kk) {
              const T* s = row + (L.col0 + (at + kk) * L.step) * L.s_w + c0;
              if constexpr (std::is_same_v<T, A>) {
                tile[kk] = load<VB>(s);
              } else {
                A wide[kB];
                convert_to_acc(wide, s, kB);
                tile[kk] = load<VB>(wide);
              }
            }
            transpose_square(tile);
            for (int64_t c = 0; c < kB; ++c) store(d + (c0 + c) * L.dst_c + at, tile[c]);
          }
        k = hi;  // every column of planes [0, c0) is done
      };
      tiles(std::integral_constant<int, std::is_same_v<T, A> ? kVecBytes
                                                             : std::min(kVecBytes, 32)>{},
            tiles);
    }
    for (int64_t c = 0; c < L.planes; ++c)
      for (int64_t kk = c < c0 ? k : lo; kk < hi; ++kk)
        d[c * L.dst_c + kk] = static_cast<A>(row[(L.col0 + kk * L.step) * L.s_w + c * L.s_c]);
  }
}

// d0[k] = s[2k] and d1[k] = s[2k + 1] for k < n, in the accumulator type: a stride-2 line's
// two phases from one pass over its source. Blocks of V pairs are two vector loads and two
// shuffles; the last block ends at n, overlapping the one before (its values written again).
template <typename T, typename A>
inline void deinterleave_pairs(A* __restrict d0, A* __restrict d1, const T* __restrict s,
                               int64_t n) {
  // Half types convert 32-byte vectors, so the loads after the conversion read whole stores.
  constexpr int VB = std::is_same_v<T, A> ? kVecBytes : std::min(kVecBytes, 32);
  constexpr int64_t V = kLanes<A, VB>;
  if (n < V) {
    for (int64_t k = 0; k < n; ++k) {
      d0[k] = static_cast<A>(s[2 * k]);
      d1[k] = static_cast<A>(s[2 * k + 1]);
    }
    return;
  }
  using Lane = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;
  using Index = typename VecOf<Lane, VB>::type;
  constexpr auto pattern = [](auto lanes, Lane first) {
    return [&]<size_t... L>(std::index_sequence<L...>) {
      return Index{static_cast<Lane>(first + 2 * L)...};
    }(lanes);
  };
  constexpr Index even = pattern(std::make_index_sequence<V>{}, 0);
  constexpr Index odd = pattern(std::make_index_sequence<V>{}, 1);
  auto block = [&](int64_t k) {
    Vec<A, VB> lo, hi;
    if constexpr (std::is_same_v<T, A>) {
      lo = load<VB>(s + 2 * k);
      hi = load<VB>(s + 2 * k + V);
    } else {
      A wide[2 * V];
      convert_to_acc(wide, s + 2 * k, 2 * V);
      lo = load<VB>(wide);
      hi = load<VB>(wide + V);
    }
    store(d0 + k, __builtin_shuffle(lo, hi, even));
    store(d1 + k, __builtin_shuffle(lo, hi, odd));
  };
  for (int64_t k = 0; k + V < n; k += V) block(k);
  block(n - V);
}

// stage_lines for step 2 and unit column stride (NCHW rows), both phases at once: phase q of
// line (c, r), at dst + c*dst_c + r*dst_r + q*dst_q, holds columns col0 + q + 2k (zero outside
// [0, ncols)), as stage_lines(step 2) would stage it per phase with col0 + q. Each source row
// is read once and split with vector shuffles, not copied once per phase element by element:
// 2.2x fewer staging instructions, a stride-2 forward's 4.83M -> 3.67M per call (callgrind,
// AVX2, B=1, C=128, 56x56). Lines keep their place from task to task (halo_zeroed): only
// columns inside the input are written.
template <typename T, typename A>
__attribute__((noinline)) void stage_line_phases(A* dst, const T* src, const LineBlock& L,
                                                int64_t dst_q) {
  const ColumnRange v0 = valid_columns(L.width, L.col0, 2, L.ncols);
  const ColumnRange v1 = valid_columns(L.width, L.col0 + 1, 2, L.ncols);
  // Pairs k in [lo, hi) have both columns inside. The two phases' ranges differ by at most
  // one k at each end (columns 2k and 2k + 1 are neighbours), so the only other k with a
  // column inside are lo - 1 and hi.
  const int64_t lo = std::max(v0.lo, v1.lo), hi = std::max(lo, std::min(v0.hi, v1.hi));
  for (int64_t c = 0; c < L.planes; ++c) {
    for (int64_t r = 0; r < L.rows; ++r) {
      A* d0 = dst + c * L.dst_c + r * L.dst_r;
      A* d1 = d0 + dst_q;
      const int64_t h = L.row0 + r;
      if (h < 0 || h >= L.nrows) {
        zero_elements(d0 + v0.lo, v0.hi - v0.lo);
        zero_elements(d1 + v1.lo, v1.hi - v1.lo);
        continue;
      }
      const T* row = src + c * L.s_c + h * L.s_h;  // column m at row[m]
      if (hi > lo) deinterleave_pairs(d0 + lo, d1 + lo, row + L.col0 + 2 * lo, hi - lo);
      for (const int64_t k : {lo - 1, hi}) {
        if (k >= v0.lo && k < v0.hi) d0[k] = static_cast<A>(row[L.col0 + 2 * k]);
        if (k >= v1.lo && k < v1.hi) d1[k] = static_cast<A>(row[L.col0 + 2 * k + 1]);
      }
    }
  }
}

// Tap (u, v) = (tap / Kw, tap % Kw) of a weight-shaped view: its offset u * s.u + v * s.v.
inline int64_t weight_tap_offset(const Geometry& g, const Strides6& s, int64_t tap) {
  return (tap / g.Kw) * s.u + (tap % g.Kw) * s.v;
}
inline std::vector<int64_t> weight_tap_offsets(const Geometry& g, const Strides6& s) {
  std::vector<int64_t> offsets(g.taps());
  for (int64_t tap = 0; tap < g.taps(); ++tap) offsets[tap] = weight_tap_offset(g, s, tap);
  return offsets;
}

// One past the last element of a weight-shaped view (nonnegative strides): a read of a row
// in place, whole vectors past the row's end included, must end within it.
template <typename T>
const T* weight_footprint_end(const Geometry& g, View6<const T> w) {
  return w.data + 1 + (g.B - 1) * w.s.b + (g.G - 1) * w.s.g + (g.Kh - 1) * w.s.u +
         (g.Kw - 1) * w.s.v + (g.Ho - 1) * w.s.i + (g.Wo - 1) * w.s.j;
}

// Fetches the cache lines of bytes [p, p + bytes) into L2 (Locality 2) or L1 (3). The
// weights read in place are K*K concurrent row streams (49 at K=7), more than the hardware
// prefetcher follows, so the kernels fetch each tap's next row by hand: every line the row
// touches (a misaligned row's last line included).
template <int Locality>
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const auto first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
  const auto last = reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes);
  for (uintptr_t line = first; line < last; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line), 0, Locality);
}

// Stages rows [row0, row0 + rows) of every tap's weight plane (columns col0 + k): tap t
// lands at dst + t*dst_tap. Taps one stride apart (contiguous or pixel-major weights)
// are staged as one block of planes. halo_zeroed: see stage_line.
template <typename T, typename A>
void stage_weight_rows(A* dst, int64_t dst_tap, int64_t dst_r, const T* plane,
                       const Geometry& g, const Strides6& s, int64_t row0, int64_t rows,
                       int64_t width, int64_t col0, bool halo_zeroed = false) {
  if (s.u == g.Kw * s.v) {
    stage_lines(dst, plane, LineBlock{g.taps(), rows, width, dst_tap, dst_r, s.v, s.i, s.j,
                                      row0, g.Ho, col0, 1, g.Wo, halo_zeroed});
    return;
  }
  for (int64_t tap = 0; tap < g.taps(); ++tap)
    stage_lines(dst + tap * dst_tap, plane + weight_tap_offset(g, s, tap),
                LineBlock{1, rows, width, 0, dst_r, 0, s.i, s.j, row0, g.Ho, col0, 1, g.Wo,
                          halo_zeroed});
}

// Stores the first n lanes of v (0 < n < lanes) at dst: a row's tail. With AVX-512, one
// masked store; else with copy_elements' fixed-size moves (a variable-length memcpy is a
// call, and AVX2's masked store is microcoded on AMD cores).
template <typename A, typename V>
inline void store_first_lanes(A* dst, const V& v, int64_t n) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
  if constexpr (sizeof(V) == 64 || sizeof(V) == 32) {
    const auto mask = static_cast<__mmask16>((1u << n) - 1);
    if constexpr (sizeof(V) == 64 && std::is_same_v<A, float>) _mm512_mask_storeu_ps(dst, mask, (__m512)v);
    else if constexpr (sizeof(V) == 64) _mm512_mask_storeu_pd(dst, static_cast<__mmask8>(mask), (__m512d)v);
    else if constexpr (std::is_same_v<A, float>) _mm256_mask_storeu_ps(dst, static_cast<__mmask8>(mask), (__m256)v);
    else _mm256_mask_storeu_pd(dst, static_cast<__mmask8>(mask), (__m256d)v);
    return;
  }
#endif
  alignas(sizeof(V)) A tmp[sizeof(V) / sizeof(A)];
  store(tmp, v);
  copy_elements(dst, tmp, n);
}

// Writes the first n lanes of v (a vector of A) to dst[l * stride], converting to T.
template <typename A, typename V, typename T>
inline void store_lanes(T* dst, int64_t stride, const V& v, int64_t n) {
  constexpr int64_t lanes = sizeof(V) / sizeof(A);
  if constexpr (std::is_same_v<T, A>) {
    if (stride == 1 && n == lanes) {
      store(dst, v);
      return;
    }
    if (stride == 1) return store_first_lanes<A>(dst, v, n);
  }
  alignas(sizeof(V)) A tmp[lanes];
  store(tmp, v);
  if (stride == 1 && n == lanes) return convert_from_acc(dst, tmp, n);
  if constexpr (has_vector_conversion<T, A>() && lanes % 8 == 0) {
    // A row's tail, or lanes bound for different planes (an NCHW output of the
    // channels-on-lanes gathers): every lane converted as vectors, n of them copied.
    // Converted one by one, they gave a bf16 7x7 NCHW forward's lane_gather_row 1.58x the
    // instructions of fp32's; 1.22x this way.
    T narrow[lanes];
    convert_from_acc(narrow, tmp, lanes);
    if (stride == 1) return copy_elements(dst, narrow, n);
    for (int64_t l = 0; l < n; ++l) dst[l * stride] = narrow[l];
    return;
  }
  if (stride == 1) return convert_from_acc(dst, tmp, n);
  for (int64_t l = 0; l < n; ++l) dst[l * stride] = static_cast<T>(tmp[l]);
}

// Calls body(std::integral_constant<int, N>, i0) over [0, count) in blocks of each size
// of Sizes in turn (largest first), so a block's accumulators are compile-time arrays.
template <int... Sizes, typename Body>
inline void for_each_block(int64_t count, Body&& body) {
  int64_t i0 = 0;
  auto run = [&](auto n) {
    for (; count - i0 >= decltype(n)::value; i0 += decltype(n)::value) body(n, i0);
  };
  (run(std::integral_constant<int, Sizes>{}), ...);
}

// Channel blocks of the column-lane gathers: kMaxChannelBlock, then 8, 4, 2, 1.
template <typename Body>
inline void for_each_channel_block(int64_t channels, Body&& body) {
  if constexpr (kMaxChannelBlock > 8)
    for_each_block<kMaxChannelBlock, 8, 4, 2, 1>(channels, body);
  else
    for_each_block<8, 4, 2, 1>(channels, body);
}

// Channel blocks of the channels-on-lanes gathers, in vectors: 4, 2, 1.
template <typename Body>
inline void for_each_lane_block(int64_t vectors, Body&& body) {
  for_each_block<4, 2, 1>(vectors, body);
}

// Rows per task: as many as max_rows (see rows_within_budget), but keep enough tasks to
// occupy every thread.
inline int64_t rows_per_task(int64_t outer_tasks, int64_t rows, int64_t max_rows = 8) {
  const int64_t want_tasks = 4 * static_cast<int64_t>(at::get_num_threads());
  int64_t r = max_rows;
  while (r > 1 && outer_tasks * ceil_div(rows, r) < want_tasks) r /= 2;
  return std::max<int64_t>(1, std::min(r, rows));
}

// Rows per task before rows_per_task's split for occupancy. A task stages its block's K-1
// halo rows again (14 rows for a block of 8 at K=7), so blocks are as tall as the task's
// buffers allow, bytes(rows) <= budget (the whole extent when it fits), and 8 rows at least.
template <typename Bytes>
int64_t rows_within_budget(int64_t extent, int64_t budget, Bytes&& bytes) {
  int64_t rows = extent;
  while (rows > 8 && bytes(rows) > budget) rows = ceil_div(rows, 2);
  return std::max<int64_t>(rows, 8);
}
constexpr int64_t kStagingBudget = 256 << 10;  // half the L2 of AMD Zen 2/3 cores (512 KiB)

// The work split of every kernel: tasks are (batch, group, block of rows of an extent
// of `rows` rows). Neighbouring tasks (those one thread runs in turn) share a group's weights
// (kBlocksInner: the unfused ops, whose weights are per group), or a block of rows
// (kGroupsInner: the fused ops, whose hidden features are the same for every group).
enum class TaskOrder { kBlocksInner, kGroupsInner };
struct RowTask {
  int64_t b, grp, r0, r1;
};
struct RowTasks {
  int64_t B, G, rows, per, blocks;
  TaskOrder order;
  RowTasks(const Geometry& g, int64_t extent, int64_t max_rows = 8,
           TaskOrder task_order = TaskOrder::kBlocksInner)
      : B(g.B), G(g.G), rows(extent), per(rows_per_task(g.B * g.G, extent, max_rows)),
        blocks(ceil_div(extent, per)), order(task_order) {}
  int64_t size() const { return B * G * blocks; }
  RowTask operator[](int64_t t) const {
    const bool blocks_inner = order == TaskOrder::kBlocksInner;
    const int64_t block = blocks_inner ? t % blocks : (t / G) % blocks;
    const int64_t grp = blocks_inner ? (t / blocks) % G : t % G;
    const int64_t r0 = block * per;
    return {t / (G * blocks), grp, r0, std::min(rows, r0 + per)};
  }
};

// Input rows of one group staged for a block of output rows, shared by the forward
// and grad_weight kernels. Layout [channel][row][phase][column]; column k of phase q
// holds input column k*stride_w + q - pad_w, so output column j with tap v reads
// column j + (v*dil_w)/stride_w of phase (v*dil_w)%stride_w: contiguous in j.
template <typename T, typename A>
struct StagedInput {
  const Geometry& g;
  int64_t row_width;  // columns per (row, phase): padded output width + tap shift
  int64_t rows;       // input rows spanned by the block
  int64_t channel_stride;
  std::vector<A> buf;
  std::vector<int64_t> tap_offset;  // per (u, v): offset of the tap's first column

  // Every line keeps its place from task to task (channel_stride is set by the largest
  // block), so the halo columns, zeroed once here, stay zero: a task writes only the columns
  // that hold input (and zero rows in the padding).
  StagedInput(const Geometry& geom, int64_t padded_wo, int64_t max_rows_per_task)
      : g(geom), row_width(row_width_for(geom, padded_wo)), tap_offset(geom.taps()) {
    channel_stride = g.input_rows(max_rows_per_task) * g.stride_w * row_width;
    buf.assign(g.channels_per_group() * channel_stride, A(0));
    for (int64_t u = 0; u < g.Kh; ++u)
      for (int64_t v = 0; v < g.Kw; ++v) {
        const int64_t t = v * g.dil_w;
        tap_offset[u * g.Kw + v] = (u * g.dil_h * g.stride_w + t % g.stride_w) * row_width +
                                   t / g.stride_w;
      }
  }

  static int64_t row_width_for(const Geometry& g, int64_t padded_wo) {
    return padded_wo + ((g.Kw - 1) * g.dil_w) / g.stride_w;
  }
  // The buffer's size for blocks of up to `rows_per_task` output rows.
  static int64_t bytes(const Geometry& g, int64_t padded_wo, int64_t rows_per_task) {
    return g.channels_per_group() * g.input_rows(rows_per_task) * g.stride_w *
           row_width_for(g, padded_wo) * int64_t(sizeof(A));
  }

  // Stages rows for output rows [i0, i1) of group `grp` in batch b.
  void stage(View4<const T> x, int64_t b, int64_t grp, int64_t i0, int64_t i1) {
    rows = g.input_rows(i1 - i0);
    const int64_t cg = g.channels_per_group();
    const T* plane0 = x.data + b * x.s.b + grp * cg * x.s.c;
    const auto lines = [&](int64_t q) {
      return LineBlock{cg, rows, row_width, channel_stride, g.stride_w * row_width, x.s.c,
                       x.s.h, x.s.w, i0 * g.stride_h - g.pad_h, g.H, q - g.pad_w,
                       g.stride_w, g.W, /*halo_zeroed=*/true};
    };
    if (g.stride_w == 2 && x.s.w == 1)
      return stage_line_phases(buf.data(), plane0, lines(0), row_width);
    for (int64_t q = 0; q < g.stride_w; ++q)
      stage_lines(buf.data() + q * row_width, plane0, lines(q));
  }
  // Offset of channel 0's input for output row i0 + local_row and tap (u, v), column 0:
  // row_offset(local_row) + tap_offset[tap].
  int64_t row_offset(int64_t local_row) const {
    return local_row * g.stride_h * g.stride_w * row_width;
  }
  int64_t offset(int64_t local_row, int64_t tap) const {
    return row_offset(local_row) + tap_offset[tap];
  }
};

// The tasks of a kernel over output rows that stages its input with StagedInput (forward,
// grad_weight): blocks as tall as keep the staged input, plus extra_row_bytes of other
// buffers per output row, within kStagingBudget.
template <typename T>
RowTasks staged_row_tasks(const Geometry& g, int64_t wo_padded, int64_t extra_row_bytes = 0,
                          TaskOrder order = TaskOrder::kBlocksInner) {
  const int64_t max_rows = rows_within_budget(g.Ho, kStagingBudget, [&](int64_t rows) {
    return StagedInput<T, acc_t<T>>::bytes(g, wo_padded, rows) + rows * extra_row_bytes;
  });
  return RowTasks(g, g.Ho, max_rows, order);
}

// Runs impl with 32-byte vectors when `width` fits in them on an AVX-512 build (see Vec),
// else with the build's full vectors.
template <typename T, typename Impl>
void with_vector_width(int64_t width, Impl&& impl) {
  if constexpr (kVecBytes > 32) {
    if (width <= kLanes<acc_t<T>, 32>) return impl(std::integral_constant<int, 32>{});
  }
  impl(std::integral_constant<int, kVecBytes>{});
}

}  // namespace
}  // namespace involution::cpu::INVOLUTION_NS

// Explicit instantiation of a kernel for the four dtypes: MACRO(T) for each.
#define INVOLUTION_FOR_EACH_DTYPE(MACRO) \
  MACRO(float) MACRO(double) MACRO(c10::Half) MACRO(c10::BFloat16)

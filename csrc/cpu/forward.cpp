// The forward kernel (y = Eq. 4, the gather of aggregate.h) with the weights read from the
// weight tensor, compiled once per instruction set (cmake/CpuIsa.cmake).
#include "cpu/aggregate.h"

namespace involution::cpu::INVOLUTION_NS {
namespace {

// The weight rows of forward_gather, from the weight tensor, as W: A, or T where the column
// lanes widen fp16/bf16 as they load them (load_as_acc). Rows with unit column stride are read
// as whole vectors even past the row end (lanes j >= Wo only feed output lanes that are never
// stored): in place for fp32/fp64 and for W = T, converted vector by vector into a buffer for
// fp16/bf16 with W = A. A row is staged (converted, zero tail) when its column stride is not 1
// (never with W = T), or when a vector read would leave the weight tensor's footprint.
template <typename T, typename W>
class TensorWeightRows {
  using A = acc_t<T>;
  static constexpr bool kInPlace = std::is_same_v<T, W>;  // fp32/fp64, or W = T widened
  static constexpr bool kWidened = !std::is_same_v<W, A>;
  static_assert(kInPlace || !kWidened);

 public:
  TensorWeightRows(const Geometry& g, View6<const T> w, int64_t wo_padded)
      : g_(g), w_(w), wo_padded_(wo_padded), wrow_(g.taps() * wo_padded), wp_(g.taps()),
        tap_offset_(weight_tap_offsets(g, w.s)) {
    TORCH_INTERNAL_ASSERT(!kWidened || w.s.j == 1);
    wo_bytes_ = g.Wo * static_cast<int64_t>(sizeof(T));
    // Every row is prefetched, whatever the weight's size: a small one is not in cache when
    // other layers ran since it was written (cold caches, B=8, 14x14 fp32: 0.82-0.84x the
    // time without the prefetch, level when the weight is cached). Rows under a cache line
    // share lines with the next rows, so the prefetch runs as many rows ahead as a line
    // holds. Rows under 32 bytes used to go without: prefetched, bf16 14x14 (28-byte rows)
    // took 0.71-0.74x the time from cold caches, and the 7x7 rows were level (fp32, bf16).
    ahead_ = std::max<int64_t>(1, 64 / std::max<int64_t>(wo_bytes_, 1));
    end_ = weight_footprint_end(g, w);
  }

  void begin_task(int64_t b, int64_t grp, int64_t, int64_t i1) {
    plane_ = w_.data + b * w_.s.b + grp * w_.s.g;
    i1_ = i1;
  }

  const W* const* row(int64_t i) {
    const int64_t taps = g_.taps();
    if constexpr (!kWidened) {
      if (w_.s.j != 1) {
        stage_weight_rows(wrow_.data(), wo_padded_, 0, plane_, g_, w_.s, i, 1, wo_padded_, 0);
        for (int64_t tap = 0; tap < taps; ++tap) wp_[tap] = &wrow_[tap * wo_padded_];
        return wp_.data();
      }
    }
    for (int64_t tap = 0; tap < taps; ++tap) {
      const T* src = plane_ + tap_offset_[tap] + i * w_.s.i;
      W* staged = &wrow_[tap * wo_padded_];
      if (end_ - src >= wo_padded_) {
        // A later row, fetched by hand (prefetch_bytes). Read in place, it goes to L2 only:
        // in L1 it evicted the staged input rows the gather reads beside it (B=8, 56x56:
        // 0.61-0.67x the time with AVX-512, 0.65-0.79x with AVX2, stride 2 0.69-0.86x).
        // Converted right away (fp16/bf16 into a buffer), it goes to L1 (L2 there: 1.1-1.2x).
        constexpr int locality = kInPlace ? 2 : 3;
        if (i + ahead_ < i1_) prefetch_bytes<locality>(src + ahead_ * w_.s.i, wo_bytes_);
        if constexpr (kInPlace) {
          wp_[tap] = src;
        } else {  // whole vectors, no tail: converted as fast as they are read
          convert_to_acc(staged, src, wo_padded_);
          wp_[tap] = staged;
        }
        continue;
      }
      stage_line(staged, wo_padded_, src, 0, 1, w_.s.j, g_.Wo);
      wp_[tap] = staged;
    }
    return wp_.data();
  }

 private:
  const Geometry& g_;
  View6<const T> w_;
  int64_t wo_padded_, wo_bytes_ = 0, i1_ = 0, ahead_ = 1;
  const T* end_ = nullptr;
  const T* plane_ = nullptr;
  std::vector<W> wrow_;       // staged weights of one output row
  std::vector<const W*> wp_;  // per tap: weights of the current row
  std::vector<int64_t> tap_offset_;
};

}  // namespace

template <typename T>
void forward(const Geometry& g, View4<const T> input, View6<const T> weight, View4<T> out) {
  using A = acc_t<T>;
  with_vector_width<T>(g.Wo, [&](auto vb) {
    // fp16/bf16 rows with unit column stride are widened as the column lanes load them, in
    // place, rather than converted into a buffer per output row and tap first (B=8, bf16,
    // NCHW, AVX-512: 0.75-0.80x the time at 56x56 and 28x28, 0.83-0.90x at stride 2; AVX2
    // 0.77-0.90x).
    // The channels-on-lanes gather reads converted rows (see forward_gather).
    auto run = [&]<typename W>(std::type_identity<W>) {
      forward_gather<T, vb()>(g, input, out, [&](int64_t wo_padded, int64_t, auto lanes) {
        if constexpr (decltype(lanes)::value)
          return TensorWeightRows<T, A>(g, weight, wo_padded);
        else
          return TensorWeightRows<T, W>(g, weight, wo_padded);
      });
    };
    if constexpr (!std::is_same_v<T, A> && loads_as_acc<T, A, vb()>()) {
      if (weight.s.j == 1) return run(std::type_identity<T>{});
    }
    run(std::type_identity<A>{});
  });
}

#define INSTANTIATE(T) \
  template void forward<T>(const Geometry&, View4<const T>, View6<const T>, View4<T>);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

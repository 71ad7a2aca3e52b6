// The forward kernel (y = Eq. 4, the gather of aggregate.h) with the weights read from the
// weight tensor, compiled once per instruction set (cmake/CpuIsa.cmake).
#include "cpu/aggregate.h"

namespace involution::cpu::INVOLUTION_NS {
namespace {

// The weight rows of forward_gather, from the weight tensor. Rows with unit column stride
// are read as whole vectors even past the row end (lanes j >= Wo only feed output lanes that
// are never stored): in place for fp32/fp64, converted vector by vector for fp16/bf16. A row
// is staged (converted, zero tail) when its column stride is not 1, or when a vector read
// would leave the weight tensor's footprint.
template <typename T>
class TensorWeightRows {
  using A = acc_t<T>;

 public:
  TensorWeightRows(const Geometry& g, View6<const T> w, int64_t wo_padded)
      : g_(g), w_(w), wo_padded_(wo_padded), wrow_(g.taps() * wo_padded), wp_(g.taps()),
        tap_offset_(weight_tap_offsets(g, w.s)) {
    wo_bytes_ = g.Wo * static_cast<int64_t>(sizeof(T));
    // Whatever the weight's size: a small one is not in cache when other layers ran since
    // it was written (cold caches, B=8, 14x14 fp32: 0.82-0.84x the time without the
    // prefetch, level when the weight is cached). Rows under half a cache line share lines
    // with the next row, already on their way (7x7 fp32: no gain).
    prefetch_ = wo_bytes_ >= 32;
    end_ = weight_footprint_end(g, w);
  }

  void begin_task(int64_t b, int64_t grp, int64_t, int64_t i1) {
    plane_ = w_.data + b * w_.s.b + grp * w_.s.g;
    i1_ = i1;
  }

  const A* const* row(int64_t i) {
    const int64_t taps = g_.taps();
    if (w_.s.j != 1) {
      stage_weight_rows(wrow_.data(), wo_padded_, 0, plane_, g_, w_.s, i, 1, wo_padded_, 0);
      for (int64_t tap = 0; tap < taps; ++tap) wp_[tap] = &wrow_[tap * wo_padded_];
      return wp_.data();
    }
    for (int64_t tap = 0; tap < taps; ++tap) {
      const T* src = plane_ + tap_offset_[tap] + i * w_.s.i;
      A* staged = &wrow_[tap * wo_padded_];
      if (end_ - src >= wo_padded_) {
        // The next row, fetched by hand (prefetch_bytes). Read in place (fp32/fp64), it
        // goes to L2 only: in L1 it evicted the staged input rows the gather reads beside
        // it (B=8, 56x56: 0.61-0.67x the time with AVX-512, 0.65-0.79x with AVX2, stride 2
        // 0.69-0.86x). Converted right away (fp16/bf16), it goes to L1 (L2 there: 1.1-1.2x).
        constexpr int locality = std::is_same_v<T, A> ? 2 : 3;
        if (prefetch_ && i + 1 < i1_) prefetch_bytes<locality>(src + w_.s.i, wo_bytes_);
        if constexpr (std::is_same_v<T, A>) {
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
  int64_t wo_padded_, wo_bytes_ = 0, i1_ = 0;
  bool prefetch_ = false;
  const T* end_ = nullptr;
  const T* plane_ = nullptr;
  std::vector<A> wrow_;     // staged weights of one output row
  std::vector<const A*> wp_;  // per tap: weights of the current row
  std::vector<int64_t> tap_offset_;
};

}  // namespace

template <typename T>
void forward(const Geometry& g, View4<const T> input, View6<const T> weight, View4<T> out) {
  with_vector_width<T>(g.Wo, [&](auto vb) {
    forward_gather<T, vb()>(g, input, out, [&](int64_t wo_padded, int64_t) {
      return TensorWeightRows<T>(g, weight, wo_padded);
    });
  });
}

#define INSTANTIATE(T) \
  template void forward<T>(const Geometry&, View4<const T>, View6<const T>, View4<T>);
INVOLUTION_FOR_EACH_DTYPE(INSTANTIATE)
#undef INSTANTIATE

}  // namespace involution::cpu::INVOLUTION_NS

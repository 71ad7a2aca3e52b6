// Geometry helpers shared by the CPU checks of the CUDA code (cuda_index_sim.cpp and
// cuda_emulation.cpp).
#pragma once

#include "cuda/tiling.h"

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace involution::cuda::testing {

// Fills in s.Ho and s.Wo from the other sizes; false when the output would be empty.
inline bool set_output_size(Geometry& s) {
  s.Ho = conv_output_size(s.H, s.Kh, s.stride_h, s.pad_h, s.dil_h);
  s.Wo = conv_output_size(s.W, s.Kw, s.stride_w, s.pad_w, s.dil_w);
  return s.Ho > 0 && s.Wo > 0;
}

inline std::string describe(const Geometry& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "B=%lld C=%lld G=%lld H=%lld W=%lld K=%lldx%lld s=%lld,%lld p=%lld,%lld d=%lld,%lld",
                (long long)s.B, (long long)s.C, (long long)s.G, (long long)s.H, (long long)s.W,
                (long long)s.Kh, (long long)s.Kw, (long long)s.stride_h, (long long)s.stride_w,
                (long long)s.pad_h, (long long)s.pad_w, (long long)s.dil_h, (long long)s.dil_w);
  return buf;
}

// Upper bounds of a random shape's sizes (lower bounds: 1, padding 0).
struct ShapeLimits {
  int64_t B, H, W, K, stride, pad, dil;
};

// A random shape within `lim`: 1..3 groups of one of `group_channels` channels each
// (Ho / Wo not set).
inline Geometry random_shape(std::mt19937_64& rng, const ShapeLimits& lim,
                             const std::vector<int64_t>& group_channels) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t G = pick(1, 3);
  const int64_t cg = group_channels[pick(0, static_cast<int64_t>(group_channels.size()) - 1)];
  // Braced initialisation evaluates left to right: the draws come in a fixed order.
  return {pick(1, lim.B), G * cg, G, pick(1, lim.H), pick(1, lim.W), pick(1, lim.K), pick(1, lim.K), 0, 0,
          pick(1, lim.stride), pick(1, lim.stride), pick(0, lim.pad), pick(0, lim.pad),
          pick(1, lim.dil), pick(1, lim.dil)};
}

}  // namespace involution::cuda::testing

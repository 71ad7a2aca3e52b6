// Shape helpers shared by the CPU checks of the CUDA code (cuda_index_sim.cpp and
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
inline bool set_output_size(Shape& s) {
  s.Ho = (s.H + 2 * s.ph - s.dh * (s.Kh - 1) - 1) / s.sh + 1;
  s.Wo = (s.W + 2 * s.pw - s.dw * (s.Kw - 1) - 1) / s.sw + 1;
  return s.Ho > 0 && s.Wo > 0;
}

inline std::string describe(const Shape& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "B=%lld C=%lld G=%lld H=%lld W=%lld K=%lldx%lld s=%lld,%lld p=%lld,%lld d=%lld,%lld",
                (long long)s.B, (long long)s.C, (long long)s.G, (long long)s.H, (long long)s.W,
                (long long)s.Kh, (long long)s.Kw, (long long)s.sh, (long long)s.sw,
                (long long)s.ph, (long long)s.pw, (long long)s.dh, (long long)s.dw);
  return buf;
}

// Upper bounds of a random shape's sizes (lower bounds: 1, padding 0).
struct ShapeLimits {
  int64_t B, H, W, K, stride, pad, dil;
};

// A random shape within `lim`: 1..3 groups of one of `group_channels` channels each
// (Ho / Wo not set).
inline Shape random_shape(std::mt19937_64& rng, const ShapeLimits& lim,
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

// Checks the CPU kernels' vector conversions between the half types and fp32
// (convert_to_acc / convert_from_acc in csrc/cpu/kernel_common.h) against c10's scalar
// conversions, bit for bit: every fp16 and bf16 value to fp32, and to fp16 / bf16 every fp32
// rounding case — ties, values next to ties, subnormals, overflow, infinities, NaNs — plus
// random bit patterns, at every length from 0 to 20 both ways (the vector body and the tail). Built by
// tests/test_cpp.py with the instruction-set flags of one kernel build (INVOLUTION_ISA).
// Prints "ok N values" and exits 0, or the first mismatches and exits 1.
#include "cpu/kernel_common.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace ns = involution::cpu::INVOLUTION_NS;

namespace {

int failures = 0;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
uint16_t raw(T v) {
  uint16_t u;
  std::memcpy(&u, &v, 2);
  return u;
}

template <typename T>
int64_t check_type(const char* name, const std::vector<float>& floats) {
  // Every 16-bit pattern to fp32.
  std::vector<T> all(65536);
  for (uint32_t k = 0; k < 65536; ++k) {
    const uint16_t u = static_cast<uint16_t>(k);
    std::memcpy(&all[k], &u, 2);
  }
  std::vector<float> wide(all.size());
  ns::convert_to_acc(wide.data(), all.data(), static_cast<int64_t>(all.size()));
  for (size_t k = 0; k < all.size(); ++k) {
    const float want = static_cast<float>(all[k]);
    if (bits(wide[k]) != bits(want) && !(want != want && wide[k] != wide[k]) && failures++ < 10)
      std::printf("FAIL %s 0x%04zx -> fp32: got 0x%08x want 0x%08x\n", name, k, bits(wide[k]), bits(want));
  }
  // fp32 to T, and every length from 0 to 20 for the tails.
  std::vector<T> narrow(floats.size());
  ns::convert_from_acc(narrow.data(), floats.data(), static_cast<int64_t>(floats.size()));
  for (size_t k = 0; k < floats.size(); ++k) {
    const uint16_t want = raw(static_cast<T>(floats[k]));
    if (raw(narrow[k]) != want && failures++ < 10)
      std::printf("FAIL fp32 0x%08x -> %s: got 0x%04x want 0x%04x\n", bits(floats[k]), name, raw(narrow[k]), want);
  }
  for (int64_t n = 0; n <= 20; ++n) {
    std::vector<T> part(n + 1, T(7.0f));
    ns::convert_from_acc(part.data(), floats.data(), n);
    for (int64_t k = 0; k < n; ++k)
      if (raw(part[k]) != raw(static_cast<T>(floats[k])) && failures++ < 10)
        std::printf("FAIL %s length %lld element %lld\n", name, (long long)n, (long long)k);
    if (raw(part[n]) != raw(T(7.0f)) && failures++ < 10)
      std::printf("FAIL %s length %lld wrote past the end\n", name, (long long)n);
  }
  for (int64_t n = 0; n <= 20; ++n) {  // and to fp32, from an odd offset
    std::vector<float> part(n + 1, 7.0f);
    ns::convert_to_acc(part.data(), all.data() + 15361, n);
    for (int64_t k = 0; k < n; ++k)
      if (bits(part[k]) != bits(static_cast<float>(all[15361 + k])) && failures++ < 10)
        std::printf("FAIL %s -> fp32 length %lld element %lld\n", name, (long long)n, (long long)k);
    if (part[n] != 7.0f && failures++ < 10)
      std::printf("FAIL %s -> fp32 length %lld wrote past the end\n", name, (long long)n);
  }
  return static_cast<int64_t>(all.size() + floats.size());
}

}  // namespace

int main() {
  std::vector<float> floats;
  // Around every fp16 and bf16 value: the value's fp32 neighbours and the midpoints (ties)
  // between adjacent values, and one ulp either side of them.
  for (uint32_t k = 0; k < 65536; ++k) {
    const uint16_t u = static_cast<uint16_t>(k);
    c10::Half h;
    std::memcpy(&h, &u, 2);
    c10::BFloat16 b;
    std::memcpy(&b, &u, 2);
    for (const float v : {static_cast<float>(h), static_cast<float>(b)})
      for (int d = -2; d <= 2; ++d) floats.push_back(from_bits(bits(v) + d));
    const uint32_t mid = (static_cast<uint32_t>(k) << 16) | 0x8000;  // bf16 ties
    for (int d = -1; d <= 1; ++d) floats.push_back(from_bits(mid + d));
  }
  for (float v = 65504.0f; v < 65600.0f; v += 1.0f) floats.push_back(v);  // fp16 overflow edge
  for (const float v : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN(), from_bits(0x7f800001u), from_bits(0xffc12345u),
                        std::numeric_limits<float>::denorm_min(), 0.0f, -0.0f})
    floats.push_back(v);
  std::mt19937 rng(2026);
  for (int k = 0; k < 200000; ++k) floats.push_back(from_bits(rng()));
  const int64_t n = check_type<c10::Half>("fp16", floats) + check_type<c10::BFloat16>("bf16", floats);
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("ok %lld values\n", static_cast<long long>(n));
  return 0;
}

// Raw pointer + element strides: what kernels of every backend see of a tensor, so any
// memory layout is read and written in place.
#pragma once

#include <cstdint>

namespace involution {

struct Strides4 {
  int64_t b, c, h, w;
};
struct Strides6 {
  int64_t b, g, u, v, i, j;
};

template <typename T>
struct View4 {
  T* data;
  Strides4 s;
};
template <typename T>
struct View6 {
  T* data;
  Strides6 s;
};

}  // namespace involution

// Raw pointer + element strides: what kernels of every backend see of a tensor, so any
// memory layout is read and written in place.
#pragma once

#include <cstdint>

namespace involution {

// I: the index type of the strides (see BasicGeometry in geometry.h); int64 by default.
template <typename I>
struct BasicStrides4 {
  I b, c, h, w;
};
template <typename I>
struct BasicStrides6 {
  I b, g, u, v, i, j;
};
using Strides4 = BasicStrides4<int64_t>;
using Strides6 = BasicStrides6<int64_t>;

template <typename T, typename I = int64_t>
struct View4 {
  T* data;
  BasicStrides4<I> s;
  template <typename J>
  View4<T, J> as() const { return {data, {J(s.b), J(s.c), J(s.h), J(s.w)}}; }
};
template <typename T, typename I = int64_t>
struct View6 {
  T* data;
  BasicStrides6<I> s;
  template <typename J>
  View6<T, J> as() const { return {data, {J(s.b), J(s.g), J(s.u), J(s.v), J(s.i), J(s.j)}}; }
};

// The generator's side of the fused ops: hidden (B, R, Ho, Wo) and the span rows
// (G*Kh*Kw, R) with their bias (nullptr without one), read in place through their strides.
template <typename T, typename I = int64_t>
struct BasicSpanArgs {
  View4<const T, I> hidden;
  const T* weight;
  I weight_s_row, weight_s_col;
  const T* bias;
  I bias_s;
  I R;
  template <typename J>
  BasicSpanArgs<T, J> as() const {
    return {hidden.template as<J>(), weight, J(weight_s_row), J(weight_s_col), bias, J(bias_s), J(R)};
  }
};
template <typename T>
using SpanArgs = BasicSpanArgs<T>;

// Where fused_backward writes the generator-side gradients; nullptr (data) = not wanted.
template <typename T>
struct SpanGrads {
  View4<T> hidden;
  T* weight;
  int64_t weight_s_row, weight_s_col;
  T* bias;
  int64_t bias_s;
};

}  // namespace involution

// CPU kernel interface. The bodies live in forward.cpp, grad_input.cpp, grad_weight.cpp and
// fused.cpp,
// which CMake compiles once per instruction set into its own namespace (isa_default,
// isa_avx2, isa_avx512); involution_cpu.cpp picks one kernel table at run time. Kernels see
// raw pointers and element strides only, so any memory layout is read in place.
#pragma once

#include "shape_check.h"
#include "views.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace involution::cpu {

using involution::Strides4;
using involution::Strides6;
using involution::View4;
using involution::View6;

#define INVOLUTION_DECLARE_CPU_KERNELS(ns)                                                    \
  namespace ns {                                                                              \
  template <typename T>                                                                       \
  void forward(const Geometry& g, View4<const T> input, View6<const T> weight, View4<T> out);  \
  template <typename T>                                                                       \
  void grad_input(const Geometry& g, View4<const T> grad_out, View6<const T> weight,          \
                  View4<T> grad_in);                                                          \
  template <typename T>                                                                       \
  void grad_weight(const Geometry& g, View4<const T> grad_out, View4<const T> input,           \
                   View6<T> grad_w);                                                          \
  template <typename T>                                                                       \
  void fused_forward(const Geometry& g, View4<const T> input, const SpanArgs<T>& span,        \
                     View4<T> out);                                                           \
  template <typename T>                                                                       \
  void fused_backward(const Geometry& g, View4<const T> grad_out, View4<const T> input,       \
                      const SpanArgs<T>& span, View4<T> grad_in, const SpanGrads<T>& grads);  \
  }

INVOLUTION_DECLARE_CPU_KERNELS(isa_default)
INVOLUTION_DECLARE_CPU_KERNELS(isa_avx2)
INVOLUTION_DECLARE_CPU_KERNELS(isa_avx512)

}  // namespace involution::cpu

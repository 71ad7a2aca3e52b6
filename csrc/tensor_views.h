// at::Tensor -> View4/View6 (host side, shared by the CPU and CUDA backends).
#pragma once

#include "views.h"

#include <ATen/core/Tensor.h>

namespace involution {

template <typename T>
View4<T> view4(const at::Tensor& t) {
  return {static_cast<T*>(t.data_ptr()), {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}};
}
template <typename T>
View6<T> view6(const at::Tensor& t) {
  return {static_cast<T*>(t.data_ptr()),
          {t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4), t.stride(5)}};
}

}  // namespace involution

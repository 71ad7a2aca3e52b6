// involution_ext._C: build facts only. It does not link torch, so it imports even
// when the op library cannot be loaded (e.g. after a torch upgrade) and lets the
// Python side say which torch the library was built for.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "Build facts of the involution_ext op library";
  py::dict info;
  info["version"] = INVOLUTION_VERSION;
  info["torch_version"] = INVOLUTION_TORCH_VERSION;
  info["torch_cuda_version"] = INVOLUTION_TORCH_CUDA_VERSION;
  info["openmp"] = static_cast<bool>(INVOLUTION_OPENMP_ENABLED);
  info["cpu_isas"] = INVOLUTION_CPU_ISAS;
  info["cuda"] = static_cast<bool>(INVOLUTION_CUDA_ENABLED);
  info["cuda_archs"] = INVOLUTION_CUDA_ARCHS;
  info["cuda_note"] = INVOLUTION_CUDA_REASON;
  info["compiler"] = INVOLUTION_CXX_COMPILER;
  m.attr("build_info") = info;
}

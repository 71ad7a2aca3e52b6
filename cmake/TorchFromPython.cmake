# Locate Torch through the Python interpreter that will run the
# package, so the build always matches the installed torch — no hard-coded paths.
find_package(Python REQUIRED COMPONENTS Interpreter)

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
          "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _torch_info
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _torch_rc)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "involution_ext: could not import torch with ${Python_EXECUTABLE}. "
                      "Install torch first, then build with --no-build-isolation.")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 INVOLUTION_TORCH_CMAKE_PREFIX)
list(GET _torch_info 1 INVOLUTION_TORCH_VERSION)
list(LENGTH _torch_info _n)
set(INVOLUTION_TORCH_CUDA_VERSION "")
if(_n GREATER 2)
  list(GET _torch_info 2 INVOLUTION_TORCH_CUDA_VERSION)
endif()
list(APPEND CMAKE_PREFIX_PATH "${INVOLUTION_TORCH_CMAKE_PREFIX}")
message(STATUS "involution_ext: torch ${INVOLUTION_TORCH_VERSION} (CUDA: '${INVOLUTION_TORCH_CUDA_VERSION}')")

# Decides whether to build the CUDA kernels. INVOLUTION_CUDA (or the environment
# variable INVOLUTION_EXT_CUDA) is AUTO (default: on when the installed torch has CUDA
# and nvcc is found), ON (fail if either is missing) or OFF. Must run before
# find_package(Torch): torch's CMake config reads TORCH_CUDA_ARCH_LIST.
set(INVOLUTION_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: AUTO, ON or OFF")
if(DEFINED ENV{INVOLUTION_EXT_CUDA} AND NOT "$ENV{INVOLUTION_EXT_CUDA}" STREQUAL "")
  set(INVOLUTION_CUDA "$ENV{INVOLUTION_EXT_CUDA}")
endif()
string(TOUPPER "${INVOLUTION_CUDA}" INVOLUTION_CUDA)

set(INVOLUTION_CUDA_ENABLED OFF)
set(INVOLUTION_CUDA_ARCHS "")
set(INVOLUTION_CUDA_TOOLKIT_ROOT "")
if(INVOLUTION_CUDA STREQUAL "OFF")
  set(INVOLUTION_CUDA_REASON "CUDA disabled (INVOLUTION_EXT_CUDA=OFF)")
elseif(INVOLUTION_TORCH_CUDA_VERSION STREQUAL "")
  set(INVOLUTION_CUDA_REASON "CPU-only: the installed torch ${INVOLUTION_TORCH_VERSION} has no CUDA")
else()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(INVOLUTION_CUDA_ENABLED ON)
  else()
    set(INVOLUTION_CUDA_REASON "CPU-only: nvcc not found (set CUDACXX or put nvcc on PATH)")
  endif()
endif()
if(INVOLUTION_CUDA STREQUAL "ON" AND NOT INVOLUTION_CUDA_ENABLED)
  message(FATAL_ERROR "involution_ext: INVOLUTION_EXT_CUDA=ON but ${INVOLUTION_CUDA_REASON}")
endif()

if(INVOLUTION_CUDA_ENABLED)
  # Respect TORCH_CUDA_ARCH_LIST: the environment variable first (so a rebuild in the
  # same build folder follows it, not a cached older value), else a -D value, else
  # Ampere, Ada, Hopper, plus PTX for newer GPUs.
  if(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    set(TORCH_CUDA_ARCH_LIST "$ENV{TORCH_CUDA_ARCH_LIST}" CACHE STRING "CUDA architectures" FORCE)
  elseif(NOT DEFINED TORCH_CUDA_ARCH_LIST)
    set(TORCH_CUDA_ARCH_LIST "8.0;8.6;8.9;9.0+PTX")
  endif()
  string(REPLACE " " ";" TORCH_CUDA_ARCH_LIST "${TORCH_CUDA_ARCH_LIST}")
  string(REPLACE ";" " " INVOLUTION_CUDA_ARCHS "${TORCH_CUDA_ARCH_LIST}")
  enable_language(CUDA)
  # torch's CMake config asks for CUDA_STANDARD 20 (= CXX_STANDARD); CMake < 3.26 has no
  # flag on record for that with nvcc, so give it the one nvcc takes.
  if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION OR CMAKE_CUDA20_STANDARD_COMPILE_OPTION STREQUAL "")
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  # torch's CMake config looks for the toolkit (FindCUDA, FindCUDAToolkit) beside the nvcc
  # on PATH, which misses it when that nvcc is a wrapper or link in another bin/ folder
  # (e.g. /usr/local/bin/nvcc). CMake already asked nvcc where its toolkit is: pass that on.
  if(CMAKE_CUDA_COMPILER_TOOLKIT_ROOT AND NOT DEFINED CUDA_TOOLKIT_ROOT_DIR
     AND NOT DEFINED CUDAToolkit_ROOT AND NOT DEFINED ENV{CUDAToolkit_ROOT}
     AND NOT DEFINED ENV{CUDA_HOME} AND NOT DEFINED ENV{CUDA_PATH})
    set(CUDA_TOOLKIT_ROOT_DIR "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}" CACHE PATH "CUDA toolkit (from nvcc)")
    set(CUDAToolkit_ROOT "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}")
  endif()
  # torch's CMake config links NVRTC. A toolkit without it (a minimal install: nvcc and the
  # runtime) still builds beside the PyPI torch, whose nvidia-* wheels carry the library as
  # libnvrtc.so.<major> only: look there too.
  get_filename_component(_site_packages "${INVOLUTION_TORCH_CMAKE_PREFIX}/../../.." ABSOLUTE)
  string(REGEX REPLACE "\\..*" "" _cuda_major "${INVOLUTION_TORCH_CUDA_VERSION}")
  find_library(CUDA_nvrtc_LIBRARY NAMES nvrtc libnvrtc.so.${_cuda_major}
               HINTS "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}" "${_site_packages}/nvidia/cu${_cuda_major}"
                     "${_site_packages}/nvidia/cuda_nvrtc"
               PATH_SUFFIXES lib64 lib)
  set(INVOLUTION_CUDA_TOOLKIT_ROOT "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}")  # for the CMake package
  set(INVOLUTION_CUDA_REASON "CUDA ${CMAKE_CUDA_COMPILER_VERSION} kernels for ${INVOLUTION_CUDA_ARCHS}")
endif()
message(STATUS "involution_ext: ${INVOLUTION_CUDA_REASON}")

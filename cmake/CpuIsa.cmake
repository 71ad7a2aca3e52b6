# The CPU kernels (csrc/cpu/forward.cpp, grad_input.cpp, grad_weight.cpp and fused.cpp over
# the shared kernel_common.h and aggregate.h) are compiled once per instruction set; the op library picks one at run
# time from CPUID. The baseline
# object uses the compiler's default target, so the library loads on any CPU of the
# architecture, while AVX2 and AVX-512 machines still run code built for them.
set(INVOLUTION_CPU_ISAS "default")
set(INVOLUTION_CPU_KERNEL_SOURCES csrc/cpu/forward.cpp csrc/cpu/grad_input.cpp csrc/cpu/grad_weight.cpp
                                  csrc/cpu/fused.cpp)
add_library(involution_isa_default OBJECT ${INVOLUTION_CPU_KERNEL_SOURCES})
target_compile_definitions(involution_isa_default PRIVATE INVOLUTION_ISA=default INVOLUTION_VEC_BYTES=16)
set(_isa_targets involution_isa_default)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" AND NOT INVOLUTION_BASELINE_ONLY)
  add_library(involution_isa_avx2 OBJECT ${INVOLUTION_CPU_KERNEL_SOURCES})
  target_compile_definitions(involution_isa_avx2 PRIVATE INVOLUTION_ISA=avx2 INVOLUTION_VEC_BYTES=32)
  target_compile_options(involution_isa_avx2 PRIVATE -mavx2 -mfma -mf16c)
  add_library(involution_isa_avx512 OBJECT ${INVOLUTION_CPU_KERNEL_SOURCES})
  target_compile_definitions(involution_isa_avx512 PRIVATE INVOLUTION_ISA=avx512 INVOLUTION_VEC_BYTES=64)
  # prefer-vector-width keeps GCC from splitting our 64-byte vectors into halves.
  target_compile_options(involution_isa_avx512 PRIVATE
    -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -mprefer-vector-width=512)
  list(APPEND _isa_targets involution_isa_avx2 involution_isa_avx512)
  list(APPEND INVOLUTION_CPU_ISAS "avx2" "avx512")
endif()

foreach(_t IN LISTS _isa_targets)
  set_target_properties(${_t} PROPERTIES POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden)
  target_link_libraries(${_t} PRIVATE torch)
  target_include_directories(${_t} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/csrc")
  target_compile_options(${_t} PRIVATE -O3 ${INVOLUTION_OPENMP_FLAGS})
  if(INVOLUTION_VECTORIZE_REPORT)
    target_compile_options(${_t} PRIVATE -fopt-info-vec-optimized)
  endif()
endforeach()
string(REPLACE ";" "," INVOLUTION_CPU_ISAS_STR "${INVOLUTION_CPU_ISAS}")

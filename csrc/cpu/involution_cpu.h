#pragma once

#include <string>

namespace involution::cpu {

// Returns the instruction set the CPU kernels run with. A non-empty `requested`
// ("auto", "default", "avx2", "avx512") selects one first; asking for one that this
// build or this CPU lacks is an error. The initial choice is "auto", overridable with
// the INVOLUTION_CPU_ISA environment variable.
std::string cpu_isa(const std::string& requested);

}  // namespace involution::cpu

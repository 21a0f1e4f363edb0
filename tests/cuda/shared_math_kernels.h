#pragma once
// Host entry points of tests/cuda/shared_math_kernels.cu: run shared_math_element on the GPU so a
// test can compare every bit with the host build. Plain C++ interface: the test itself is compiled
// by the host compiler.
#include <cstddef>
#include <string>

#include "shared_math_element.h"

namespace eco_cuda_test {

// Returns "" on success, else the CUDA error text. `x`, `g`, `m`, `v` and `out` are host arrays.
std::string run_shared_math(const float* x, const float* g, const float* m, const float* v, size_t n,
                            const AdamArgs& args, SharedMathOut* out);

// Number of CUDA devices usable by this process (0 when there is no GPU or no driver), with the
// reason when there are none.
int cuda_device_count(std::string* why);

}  // namespace eco_cuda_test

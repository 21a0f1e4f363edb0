#pragma once
// Host entry points of tests/cuda/shared_math_kernels.cu: run the ECO_HD per-element math (codecs,
// stochastic rounding, Philox, the AdamW-ECO update) on the GPU so a test can compare every bit
// with the same headers compiled for the CPU. Plain C++ interface: the test itself is compiled by
// the host compiler.
#include <cstddef>
#include <cstdint>
#include <string>

namespace eco_cuda_test {

// Per input element: codes of x in every format and rounding, and one AdamW-ECO step of a weight
// x with gradient g and moments (m, v) whose new weight is stored as E4M3 with scale `scale`.
struct SharedMathOut {
  uint32_t random;  // Philox word of the element (seed, step, stream, index)
  uint8_t e4m3_rtn, e4m3_sr, e5m2_rtn, e5m2_sr, int8_rtn, int8_sr;
  uint16_t bf16_rtn, bf16_sr;
  float e4m3_decoded, e5m2_decoded;  // decode of the RTN codes
  uint8_t w_code;                    // the stored weight after the step
  float m, v;                        // moments after the step, m with ECO's injection
};

struct AdamArgs {
  float lr, beta1, beta2, eps, weight_decay;
  long long t;
  float scale;  // dequantization scale of the stored weight
  uint64_t seed;
  uint32_t step, stream;
};

// Returns "" on success, else the CUDA error text. `x`, `g`, `m`, `v` and `out` are host arrays.
std::string run_shared_math(const float* x, const float* g, const float* m, const float* v, size_t n,
                            const AdamArgs& args, SharedMathOut* out);

// Number of CUDA devices usable by this process (0 when there is no GPU or no driver), with the
// reason when there are none.
int cuda_device_count(std::string* why);

}  // namespace eco_cuda_test

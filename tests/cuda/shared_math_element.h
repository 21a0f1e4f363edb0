#pragma once
// One element of the GPU/CPU parity check: every codec in RTN and SR, the Philox word, and one
// AdamW step with ECO's injection and an SR-stored E4M3 weight. ECO_HD, so the kernel and the
// host twin in test_cuda_shared_math.cpp run this same source through nvcc and the host compiler.
#include <cstdint>

#include "core/philox.h"
#include "optim/update_rule.h"
#include "quant/bf16.h"
#include "quant/fp8.h"
#include "quant/int8.h"

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

ECO_HD SharedMathOut shared_math_element(float x, float g, float m, float v, uint64_t i, const AdamArgs& a,
                                         const eco::AdamStepConsts& c) {
  SharedMathOut o;
  const eco::RandomKey key{a.seed, a.step, a.stream};
  const uint32_t r = eco::random_bits(key, i);
  o.random = r;
  o.e4m3_rtn = eco::e4m3_encode_rtn(x);
  o.e4m3_sr = eco::e4m3_encode_sr(x, r);
  o.e5m2_rtn = eco::e5m2_encode_rtn(x);
  o.e5m2_sr = eco::e5m2_encode_sr(x, r);
  o.int8_rtn = eco::int8_encode_rtn(x);
  o.int8_sr = eco::int8_encode_sr(x, r);
  o.bf16_rtn = eco::bf16_encode_rne(x);
  o.bf16_sr = eco::bf16_encode_sr(x, r);
  o.e4m3_decoded = eco::e4m3_decode(o.e4m3_rtn);
  o.e5m2_decoded = eco::e5m2_decode(o.e5m2_rtn);
  const float d = eco::adam_moments(g, m, v, c);
  const float w_new = eco::adamw_new_weight(x, m, d, c);
  o.w_code = eco::e4m3_encode_sr(w_new / a.scale, r);
  const float e = w_new - eco::e4m3_decode(o.w_code) * a.scale;
  o.m = m + eco::eco_adam_injection(e, d, c);
  o.v = v;
  return o;
}

}  // namespace eco_cuda_test

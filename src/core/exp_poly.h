#pragma once
// The exponential both backends use where their results must agree bit for bit (softmax, GELU,
// SiLU): Cody-Waite reduction x = n·ln2 + r with |r| <= ln2/2, then a degree-6 polynomial for e^r,
// every step one IEEE rounding (no FMA: -ffp-contract=off / --fmad=false). Max relative error
// ~1.5 ulp. Inputs are clamped to [-87.3, 88.3] (results below ~1e-38 become ~1e-38, never 0;
// above, ~2e38, never inf); NaN stays NaN. The CPU runs the same sequence on 8-lane vectors
// (src/cpu/vec_math.h); the CUDA kernels call exp_poly() (src/cuda).
#include <cstdint>

#include "core/float_bits.h"
#include "core/hd.h"

namespace eco::exp_poly {

inline constexpr float kClampLo = -87.3f, kClampHi = 88.3f;
inline constexpr float kShifter = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer (ties to even)
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693145751953125f;  // ln2 split in a short high part and a tail
inline constexpr float kLn2Lo = 1.428606765330187045e-06f;
inline constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                       kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

ECO_HD float exp(float in) {
  float x = in < kClampLo ? kClampLo : in;  // ternaries, not fminf/fmaxf: NaN must stay NaN
  x = x > kClampHi ? kClampHi : x;
  const float t = x * kLog2e + kShifter;
  const float n = t - kShifter;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = kP0;
  p = p * r + kP1;
  p = p * r + kP2;
  p = p * r + kP3;
  p = p * r + kP4;
  p = p * r + kP5;
  p = p * r * r + r + 1.0f;
  // n sits in the low mantissa bits of t; shift it into the exponent field: 2^n.
  const uint32_t ni = float_to_bits(t) - float_to_bits(kShifter);  // modulo 2^32: the signed n
  return p * bits_to_float((ni + 127u) << 23);
}

ECO_HD float sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }

}  // namespace eco::exp_poly

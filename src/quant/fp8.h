#pragma once
// FP8 codecs (E4M3 "fn" and E5M2), bit-exact with cuda_fp8.h's float -> fp8 conversion
// (round-to-nearest-even; __NV_SATFINITE or __NV_NOSAT) and its exact fp8 -> float widening.
// They work on the float's bit pattern with integer operations only, so the same source gives the
// same bits on the CPU and in a CUDA kernel. Formats, the rounding rules and the stochastic
// rounding formula are written out in docs/numerics.md.
#include <cstdint>

#include "core/hd.h"
#include "core/float_bits.h"

namespace eco {

// One FP8 layout: kMant mantissa bits, exponent bias kBias, the largest finite code kMaxCode,
// and the code NOSAT returns on overflow (NaN for E4M3, which has no infinity; Inf for E5M2).
template <int Mant, int Bias, uint32_t MaxCode, uint32_t OverflowCode>
struct Fp8Layout {
  static constexpr int kMant = Mant;
  static constexpr int kBias = Bias;
  static constexpr int kEmin = 1 - Bias;  // exponent of the smallest normal
  static constexpr uint32_t kMaxCode = MaxCode;
  static constexpr uint32_t kOverflowCode = OverflowCode;
};
using E4M3Layout = Fp8Layout<3, 7, 0x7Eu, 0x7Fu>;
using E5M2Layout = Fp8Layout<2, 15, 0x7Bu, 0x7Cu>;

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;
// Every float NaN encodes to this code in both formats (the sign of the NaN is dropped).
inline constexpr uint8_t kFp8CanonicalNaN = 0x7F;

namespace fp8_detail {
// Code for magnitude q·2^(e_eff − M), where e_eff = max(E, emin) and q ≤ 2^(M+1). For a normal
// value q ∈ [2^M, 2^(M+1)] and the sum carries into the exponent field when q = 2^(M+1); for a
// subnormal e_eff = emin, the exponent term is 0 and q = 2^M lands on the smallest normal.
template <class L>
ECO_HD uint32_t code_from_q(int e_eff, uint32_t q) {
  return (static_cast<uint32_t>(e_eff + L::kBias - 1) << L::kMant) + q;
}
}  // namespace fp8_detail

// Round-to-nearest-even. saturate = __NV_SATFINITE (overflow and ±Inf give ±max) or __NV_NOSAT
// (overflow gives the format's overflow code with the sign: E4M3 NaN, E5M2 ±Inf).
// NaN gives 0x7F. Float subnormals (< 2^-126) are far below half the smallest FP8 step: ±0.
template <class L>
ECO_HD uint8_t fp8_encode_rne(float x, bool saturate) {
  const uint32_t u = float_to_bits(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return kFp8CanonicalNaN;
  if (a < 0x00800000u) return static_cast<uint8_t>(sign);
  uint32_t code;
  if (a == 0x7F800000u) {
    code = 0xFFFFu;  // ±Inf takes the overflow path below
  } else {
    const int E = static_cast<int>(a >> 23) - 127;
    const uint32_t sig = (a & 0x7FFFFFu) | 0x800000u;
    const int e_eff = E > L::kEmin ? E : L::kEmin;
    const int shift = (23 - L::kMant) + (e_eff - E);  // bits of sig below one FP8 step
    uint32_t q = 0;
    if (shift < 25) {  // else |x| < half the smallest step (sig < 2^24 ≤ 2^(shift-1)): 0
      // RNE without a data-dependent branch: adding half − 1 plus the kept part's lowest bit
      // carries into the kept part iff the dropped part is above half, or exactly half with an
      // odd kept part.
      const uint32_t half = 1u << (shift - 1);
      q = (sig + (half - 1u) + ((sig >> shift) & 1u)) >> shift;
    }
    code = fp8_detail::code_from_q<L>(e_eff, q);
  }
  if (code > L::kMaxCode) code = saturate ? L::kMaxCode : L::kOverflowCode;
  return static_cast<uint8_t>(code | sign);
}

// Stochastic rounding with 32 random bits r, on the magnitude: with s = the number of bits of the
// 24-bit significand below one FP8 step at x's magnitude, keep the top bits and round away from
// zero iff (r mod 2^s) < (the dropped bits), so P(away) = dropped / 2^s exactly and E[SR(x)] = x.
// When s ≥ 32 (|x| below 2^-8 of the smallest step) the comparison is r < dropped >> (s − 32),
// which rounds P(away) down to a multiple of 2^-32. Saturates at ±max (never NaN or Inf from a
// finite input); ±Inf gives ±max; NaN gives 0x7F; representable values are returned unchanged.
template <class L>
ECO_HD uint8_t fp8_encode_sr(float x, uint32_t r) {
  const uint32_t u = float_to_bits(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return kFp8CanonicalNaN;
  if (a == 0x7F800000u) return static_cast<uint8_t>(L::kMaxCode | sign);
  if (a < 0x00800000u) return static_cast<uint8_t>(sign);
  const int E = static_cast<int>(a >> 23) - 127;
  const uint32_t sig = (a & 0x7FFFFFu) | 0x800000u;
  const int e_eff = E > L::kEmin ? E : L::kEmin;
  const int shift = (23 - L::kMant) + (e_eff - E);
  uint32_t q;
  bool away;
  if (shift < 32) {
    const uint32_t mask = (1u << shift) - 1u;
    q = sig >> shift;
    away = (r & mask) < (sig & mask);
  } else {
    const int t = shift - 32;
    q = 0;
    away = t < 24 && r < (sig >> t);
  }
  uint32_t code = fp8_detail::code_from_q<L>(e_eff, q + (away ? 1u : 0u));
  if (code > L::kMaxCode) code = L::kMaxCode;
  return static_cast<uint8_t>(code | sign);
}

// Exact widening. E4M3: 0x7F/0xFF are NaN. E5M2: exponent field 31 is ±Inf (mantissa 0) or NaN.
template <class L>
ECO_HD float fp8_decode(uint8_t c) {
  constexpr uint32_t kExpMask = (0xFFu >> (L::kMant + 1));  // 15 or 31
  constexpr uint32_t kManMask = (1u << L::kMant) - 1u;
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t e = (c >> L::kMant) & kExpMask;
  const uint32_t m = c & kManMask;
  if constexpr (L::kOverflowCode == 0x7Fu) {  // E4M3: only S.1111.111 is special
    if ((c & 0x7Fu) == 0x7Fu) return bits_to_float(0x7FC00000u);
  } else if (e == kExpMask) {
    return bits_to_float(m == 0 ? (sign | 0x7F800000u) : 0x7FC00000u);
  }
  if (e == 0) {
    // Subnormal m·2^(emin − M): an exact small integer times an exact power of two.
    const float step = bits_to_float(static_cast<uint32_t>(L::kEmin - L::kMant + 127) << 23);
    return bits_to_float(sign | float_to_bits(static_cast<float>(m) * step));
  }
  return bits_to_float(sign | ((e - L::kBias + 127) << 23) | (m << (23 - L::kMant)));
}

// Named entry points used across the project.
ECO_HD uint8_t e4m3_encode_rtn(float x) { return fp8_encode_rne<E4M3Layout>(x, true); }
ECO_HD uint8_t e4m3_encode_rtn_nosat(float x) { return fp8_encode_rne<E4M3Layout>(x, false); }
ECO_HD uint8_t e4m3_encode_sr(float x, uint32_t r) { return fp8_encode_sr<E4M3Layout>(x, r); }
ECO_HD float e4m3_decode(uint8_t c) { return fp8_decode<E4M3Layout>(c); }

ECO_HD uint8_t e5m2_encode_rtn(float x) { return fp8_encode_rne<E5M2Layout>(x, true); }
ECO_HD uint8_t e5m2_encode_rtn_nosat(float x) { return fp8_encode_rne<E5M2Layout>(x, false); }
ECO_HD uint8_t e5m2_encode_sr(float x, uint32_t r) { return fp8_encode_sr<E5M2Layout>(x, r); }
ECO_HD float e5m2_decode(uint8_t c) { return fp8_decode<E5M2Layout>(c); }

}  // namespace eco

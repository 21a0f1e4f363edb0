#pragma once
// BF16 codecs on the float bit pattern (bf16 = the top 16 bits of a float), host and device.
// RNE matches __float2bfloat16_rn (IEEE: overflow rounds to ±Inf); SR keeps finite values finite.
#include <cstdint>

#include "core/hd.h"
#include "core/float_bits.h"

namespace eco {

// Round-to-nearest-even. NaN stays NaN (made quiet, sign and top payload kept).
ECO_HD uint16_t bf16_encode_rne(float x) {
  const uint32_t u = float_to_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Adding 0x7FFF (+1 when the kept part is odd) carries into bit 16 exactly when the dropped
  // half is above one half, or equal to it with an odd kept part.
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// Stochastic rounding with 32 random bits r: away from zero iff (r & 0xFFFF) < (the dropped low 16
// bits of x), so P(away) = dropped / 2^16 and E[SR(x)] = x. The float pattern is sign-magnitude,
// so incrementing the kept half moves away from zero for both signs and carries across binades;
// float subnormals are handled by the same rule. A finite x never becomes ±Inf: a carry into the
// Inf pattern is pulled back to ±max (0x7F7F). ±Inf stays ±Inf; NaN becomes a quiet NaN.
ECO_HD uint16_t bf16_encode_sr(float x, uint32_t r) {
  const uint32_t u = float_to_bits(x);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  uint32_t h = u >> 16;
  if (a == 0x7F800000u) return static_cast<uint16_t>(h);
  if ((r & 0xFFFFu) < (u & 0xFFFFu)) ++h;
  if ((h & 0x7FFFu) == 0x7F80u) --h;
  return static_cast<uint16_t>(h);
}

ECO_HD float bf16_decode(uint16_t c) { return bits_to_float(static_cast<uint32_t>(c) << 16); }

}  // namespace eco

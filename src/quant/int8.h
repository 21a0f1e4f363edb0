#pragma once
// Symmetric INT8 codecs: codes −127..127 (−128 unused, so the grid is symmetric), value = code ·
// scale, with the scale mapping the block's absmax to 127. The functions here take y = x / scale.
// The code byte is the two's-complement pattern of the int8.
#include <cstdint>

#include "core/hd.h"
#include "core/float_bits.h"

namespace eco {

inline constexpr float kInt8Max = 127.0f;

namespace int8_detail {
// NaN → 0 (INT8 has no NaN; the quantizer's non-finite count reports it); ±Inf and overflow clamp.
ECO_HD float clamp_to_grid(float y) {
  if (y != y) return 0.0f;
  return y < -kInt8Max ? -kInt8Max : (y > kInt8Max ? kInt8Max : y);
}
}  // namespace int8_detail

// Round-to-nearest-even. Adding 1.5·2^23 puts |y| ≤ 127 into [2^23, 2^24), where the float spacing
// is 1, so the IEEE addition itself rounds to the nearest integer with ties to even.
ECO_HD uint8_t int8_encode_rtn(float y) {
  const float magic = 12582912.0f;  // 1.5 · 2^23
  const float yc = int8_detail::clamp_to_grid(y);
  const float rounded = (yc + magic) - magic;
  return static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(rounded)));
}

// Stochastic rounding on the magnitude a = |y| (after clamping): with f = a − floor(a) (exact),
// round away from zero iff r < trunc(f · 2^32), so P(away) = f to within 2^-32 and E[SR(y)] = y.
ECO_HD uint8_t int8_encode_sr(float y, uint32_t r) {
  const float yc = int8_detail::clamp_to_grid(y);
  const bool negative = yc < 0.0f;
  const float a = negative ? -yc : yc;
  const int whole = static_cast<int>(a);  // truncation = floor for a ≥ 0
  const float frac = a - static_cast<float>(whole);
  const uint32_t threshold = static_cast<uint32_t>(frac * 4294967296.0f);  // frac < 1: fits
  const int q = whole + (r < threshold ? 1 : 0);
  return static_cast<uint8_t>(static_cast<int8_t>(negative ? -q : q));
}

ECO_HD float int8_decode(uint8_t c) { return static_cast<float>(static_cast<int8_t>(c)); }

}  // namespace eco

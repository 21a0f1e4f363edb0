#pragma once
// Sub-byte integer weight codecs (INT4, INT2, ternary), their packing and their scale rules,
// shared by host and device (docs/lowbit.md "Formats"). value = decode(code) · scale; the encoders
// take y = x / scale, as the INT8 codec does (quant/int8.h).
//
// Grids (codes are two's-complement integers of the stated width):
//   INT4     −7..7 (the pattern 0x8 = −8 is never produced), scale = group absmax / 7
//   INT2     −2, −1, 0, +1 (DQT's 2-bit grid: Qn = −2, Qp = 1), scale = absmean
//   ternary  −1, 0, +1 (BitNet b1.58 / DQT), scale = absmean, stored as INT2 codes (2 is unused)
// Ternary codes are valid INT2 codes with the same meaning, so one 2-bit decoder serves both.
//
// Why DQT's asymmetric INT2 grid rather than a symmetric one: it is the grid of the paper we
// compare against (research/solo-dqt.md §0.2), it contains exact zero (decayed or dead weights
// can rest there, which a mid-rise grid {±0.5, ±1.5} cannot), and it strictly contains the
// ternary grid with the same scale, so INT2 vs ternary measures exactly the value of one extra
// level. The price is a sign asymmetry: positive values clip at +1·scale, negative at −2·scale.
//
// Special values: NaN encodes as code 0 (the tensor layer counts it); ±Inf and overflow clamp to
// the end of the grid. Rounding: RTN is nearest with ties to even; SR rounds away from zero with
// probability equal to the fractional part, so E[decode(SR(y))] = clamp(y) (to within 2^-32).
#include <cstddef>
#include <cstdint>

#include "core/hd.h"
#include "core/float_bits.h"
#include "quant/bf16.h"

namespace eco {

enum class LowbitFormat : uint8_t { INT4, INT2, Ternary };

// Per-format constants: storage width, grid ends (as code values) and the scale rule.
template <LowbitFormat F>
struct LowbitGrid;
template <>
struct LowbitGrid<LowbitFormat::INT4> {
  static constexpr int kBits = 4;
  static constexpr int kMin = -7;
  static constexpr int kMax = 7;
  static constexpr bool kAbsmeanScale = false;  // scale = absmax / kMax
};
template <>
struct LowbitGrid<LowbitFormat::INT2> {
  static constexpr int kBits = 2;
  static constexpr int kMin = -2;
  static constexpr int kMax = 1;
  static constexpr bool kAbsmeanScale = true;  // scale = mean |x|
};
template <>
struct LowbitGrid<LowbitFormat::Ternary> {
  static constexpr int kBits = 2;
  static constexpr int kMin = -1;
  static constexpr int kMax = 1;
  static constexpr bool kAbsmeanScale = true;
};

// Runtime views of the same constants.
ECO_HD int lowbit_bits(LowbitFormat f) { return f == LowbitFormat::INT4 ? 4 : 2; }
ECO_HD int lowbit_min_code(LowbitFormat f) {
  return f == LowbitFormat::INT4 ? -7 : (f == LowbitFormat::INT2 ? -2 : -1);
}
ECO_HD int lowbit_max_code(LowbitFormat f) { return f == LowbitFormat::INT4 ? 7 : 1; }
ECO_HD bool lowbit_absmean_scale(LowbitFormat f) { return f != LowbitFormat::INT4; }

namespace lowbit_detail {
// NaN → 0; ±Inf and overflow clamp to [lo, hi].
ECO_HD float clamp_to_grid(float y, float lo, float hi) {
  if (y != y) return 0.0f;
  return y < lo ? lo : (y > hi ? hi : y);
}

// Nearest integer, ties to even, for |y| ≤ 2^22: adding 1.5·2^23 lands in [2^23, 2^24), where the
// float spacing is 1, so the IEEE addition does the rounding (the same trick as quant/int8.h).
ECO_HD int round_half_even(float y) {
  const float magic = 12582912.0f;  // 1.5 · 2^23
  return static_cast<int>((y + magic) - magic);
}

// SR on the magnitude, as int8_encode_sr: away from zero iff r < trunc(frac · 2^32). lo and hi
// are integers, so the result stays on the grid.
ECO_HD int round_stochastic(float y, uint32_t r) {
  const bool negative = y < 0.0f;
  const float a = negative ? -y : y;
  const int whole = static_cast<int>(a);  // truncation = floor for a ≥ 0
  const float frac = a - static_cast<float>(whole);
  const uint32_t threshold = static_cast<uint32_t>(frac * 4294967296.0f);  // frac < 1: fits
  const int q = whole + (r < threshold ? 1 : 0);
  return negative ? -q : q;
}

// Two's-complement field of `bits` bits ↔ int.
ECO_HD uint8_t to_field(int q, int bits) { return static_cast<uint8_t>(q & ((1 << bits) - 1)); }
ECO_HD int from_field(uint8_t c, int bits) {
  const int sign = 1 << (bits - 1);
  const int v = static_cast<int>(c & ((1 << bits) - 1));
  return (v ^ sign) - sign;
}
}  // namespace lowbit_detail

// Encoders return the code in the low kBits bits of a byte (upper bits 0); decoders read only the
// low kBits bits.
template <LowbitFormat F>
struct LowbitCodec {
  using Grid = LowbitGrid<F>;
  static constexpr int kBits = Grid::kBits;
  static constexpr float kMinValue = static_cast<float>(Grid::kMin);
  static constexpr float kMaxValue = static_cast<float>(Grid::kMax);

  ECO_HD static uint8_t encode_rtn(float y) {
    const float yc = lowbit_detail::clamp_to_grid(y, kMinValue, kMaxValue);
    return lowbit_detail::to_field(lowbit_detail::round_half_even(yc), kBits);
  }
  ECO_HD static uint8_t encode_sr(float y, uint32_t r) {
    const float yc = lowbit_detail::clamp_to_grid(y, kMinValue, kMaxValue);
    return lowbit_detail::to_field(lowbit_detail::round_stochastic(yc, r), kBits);
  }
  ECO_HD static int decode_int(uint8_t c) { return lowbit_detail::from_field(c, kBits); }
  ECO_HD static float decode(uint8_t c) { return static_cast<float>(decode_int(c)); }
};

using Int4Codec = LowbitCodec<LowbitFormat::INT4>;
using Int2Codec = LowbitCodec<LowbitFormat::INT2>;
using TernaryCodec = LowbitCodec<LowbitFormat::Ternary>;

// Runtime-format versions (one branch per call; loops over a tensor should dispatch once with
// dispatch_lowbit_format and use LowbitCodec<F> inside).
ECO_HD uint8_t lowbit_encode_rtn(LowbitFormat f, float y) {
  switch (f) {
    case LowbitFormat::INT4: return Int4Codec::encode_rtn(y);
    case LowbitFormat::INT2: return Int2Codec::encode_rtn(y);
    case LowbitFormat::Ternary: break;
  }
  return TernaryCodec::encode_rtn(y);
}
ECO_HD uint8_t lowbit_encode_sr(LowbitFormat f, float y, uint32_t r) {
  switch (f) {
    case LowbitFormat::INT4: return Int4Codec::encode_sr(y, r);
    case LowbitFormat::INT2: return Int2Codec::encode_sr(y, r);
    case LowbitFormat::Ternary: break;
  }
  return TernaryCodec::encode_sr(y, r);
}
ECO_HD float lowbit_decode(LowbitFormat f, uint8_t c) {
  return static_cast<float>(lowbit_detail::from_field(c, lowbit_bits(f)));
}

// Calls fn(LowbitCodec<F>{}) for the runtime format f: one switch per tensor, not per element.
template <class Fn>
decltype(auto) dispatch_lowbit_format(LowbitFormat f, Fn&& fn) {
  switch (f) {
    case LowbitFormat::INT4: return fn(Int4Codec{});
    case LowbitFormat::INT2: return fn(Int2Codec{});
    case LowbitFormat::Ternary: break;
  }
  return fn(TernaryCodec{});
}

// ---- Packing -------------------------------------------------------------------------------------
// kBits-bit codes packed 8/kBits to a byte, element i in bits [kBits·(i mod n), kBits·(i mod n) +
// kBits) of byte i / n: the first element sits in the LOW bits (INT4: low nibble = even element).
// Writing one code is a read-modify-write of its byte, so concurrent writers must own whole bytes
// (split work on multiples of 8/kBits elements; rows of a LowbitLayout start on byte boundaries).

ECO_HD size_t packed_byte_count(size_t n_codes, int bits) {
  const size_t per_byte = static_cast<size_t>(8 / bits);
  return (n_codes + per_byte - 1) / per_byte;
}

template <int kBits>
ECO_HD uint8_t packed_get(const uint8_t* bytes, size_t i) {
  static_assert(kBits == 2 || kBits == 4, "packed codes are 2 or 4 bits");
  constexpr size_t kPerByte = 8 / kBits;
  const unsigned shift = static_cast<unsigned>(i % kPerByte) * kBits;
  return static_cast<uint8_t>((bytes[i / kPerByte] >> shift) & ((1u << kBits) - 1u));
}

template <int kBits>
ECO_HD void packed_set(uint8_t* bytes, size_t i, uint8_t code) {
  static_assert(kBits == 2 || kBits == 4, "packed codes are 2 or 4 bits");
  constexpr size_t kPerByte = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1u;
  const unsigned shift = static_cast<unsigned>(i % kPerByte) * kBits;
  uint8_t& b = bytes[i / kPerByte];
  b = static_cast<uint8_t>((b & ~(kMask << shift)) | ((code & kMask) << shift));
}

// One whole byte from up to 8/kBits codes (the missing tail codes are 0): lets a writer that owns a
// byte store it without reading it first.
template <int kBits>
ECO_HD uint8_t packed_byte(const uint8_t* codes, size_t count) {
  constexpr size_t kPerByte = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1u;
  unsigned b = 0;
  for (size_t k = 0; k < kPerByte && k < count; ++k) b |= (codes[k] & kMask) << (k * kBits);
  return static_cast<uint8_t>(b);
}

ECO_HD uint8_t packed_get(const uint8_t* bytes, size_t i, int bits) {
  return bits == 4 ? packed_get<4>(bytes, i) : packed_get<2>(bytes, i);
}
ECO_HD void packed_set(uint8_t* bytes, size_t i, int bits, uint8_t code) {
  if (bits == 4) packed_set<4>(bytes, i, code);
  else packed_set<2>(bytes, i, code);
}

// ---- Scales ----------------------------------------------------------------------------------------
// A scale is stored as fp32 or bf16; the value used to quantize is always the stored one (read
// back through lowbit_scale_load), so encode and decode agree exactly.
enum class LowbitScaleDtype : uint8_t { F32, BF16 };

ECO_HD size_t lowbit_scale_size(LowbitScaleDtype d) { return d == LowbitScaleDtype::F32 ? 4 : 2; }

// Smallest scale: the smallest normal float (exact in bf16: 0x0080). It keeps x / scale finite.
inline constexpr float kLowbitMinScale = 1.17549435e-38f;  // 2^-126

// Rounds a positive finite scale to bf16, upward (toward +Inf): used for absmax scales so that
// absmax / scale ≤ kMax still holds and the group's largest element is not clipped. The result is
// at most 2^-7 relative above s, so the absmax still rounds to the top code.
ECO_HD float bf16_round_up_positive(float s) {
  uint32_t u = float_to_bits(s);
  if (u & 0xFFFFu) u = (u & 0xFFFF0000u) + 0x10000u;  // carries into the exponent correctly
  return bits_to_float(u);
}

// INT4: scale = absmax / 7 (absmax over finite values). absmax = 0 (all zero, or nothing finite)
// gives scale 1: every code is 0 and decodes to an exact zero, no division by zero anywhere.
// The result is already representable in `dtype`.
ECO_HD float lowbit_scale_from_absmax(float absmax, float max_code, LowbitScaleDtype dtype) {
  if (!(absmax > 0.0f)) return 1.0f;
  float s = absmax / max_code;
  if (s < kLowbitMinScale) s = kLowbitMinScale;
  return dtype == LowbitScaleDtype::BF16 ? bf16_round_up_positive(s) : s;
}

// INT2 / ternary: scale = mean |x| over the finite values (the value of code +1). absmean = 0 gives
// scale 1 (as above). bf16 rounds to nearest: an absmean scale is not a clip bound to protect.
ECO_HD float lowbit_scale_from_absmean(float absmean, LowbitScaleDtype dtype) {
  if (!(absmean > 0.0f)) return 1.0f;
  float s = absmean < kLowbitMinScale ? kLowbitMinScale : absmean;
  return dtype == LowbitScaleDtype::BF16 ? bf16_decode(bf16_encode_rne(s)) : s;
}

// The scale of one span from its statistics over finite values (abs_sum in double, in element
// order; finite = how many): absmean for INT2 / ternary, absmax / kMax for INT4. The CPU tensor
// layer and the CUDA kernels both call this, so equal statistics give equal scales.
ECO_HD float lowbit_span_scale(LowbitFormat f, LowbitScaleDtype dtype, double abs_sum, size_t finite, float absmax) {
  if (lowbit_absmean_scale(f)) {
    const float mean = finite ? static_cast<float>(abs_sum / static_cast<double>(finite)) : 0.0f;
    return lowbit_scale_from_absmean(mean, dtype);
  }
  return lowbit_scale_from_absmax(absmax, static_cast<float>(lowbit_max_code(f)), dtype);
}

// Scale i of a scale array of the given dtype, stored little-endian byte by byte (no alignment
// needed, so fp32 and bf16 arrays can sit anywhere in a packed buffer).
ECO_HD float lowbit_scale_load(const uint8_t* scales, size_t i, LowbitScaleDtype dtype) {
  if (dtype == LowbitScaleDtype::BF16) {
    const uint8_t* p = scales + 2 * i;
    return bf16_decode(static_cast<uint16_t>(p[0] | (p[1] << 8)));
  }
  const uint8_t* p = scales + 4 * i;
  return bits_to_float(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                       (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
}

// Stores s (already representable in dtype, as the lowbit_scale_from_* functions return it).
ECO_HD void lowbit_scale_store(uint8_t* scales, size_t i, LowbitScaleDtype dtype, float s) {
  if (dtype == LowbitScaleDtype::BF16) {
    const uint16_t h = bf16_encode_rne(s);
    scales[2 * i] = static_cast<uint8_t>(h);
    scales[2 * i + 1] = static_cast<uint8_t>(h >> 8);
    return;
  }
  const uint32_t u = float_to_bits(s);
  for (int k = 0; k < 4; ++k) scales[4 * i + k] = static_cast<uint8_t>(u >> (8 * k));
}

}  // namespace eco

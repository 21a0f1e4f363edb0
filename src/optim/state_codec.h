#pragma once
// Per-element codecs of block-wise low-bit optimizer states (DESIGN.md §4; the SOLO formulas are
// in research/solo-dqt.md §0.3), shared by the CPU and CUDA backends. A state tensor is cut into
// blocks of kStateBlock consecutive elements; each block stores packed b-bit codes and one or two
// fp32 parameters. The block parameters need a reduction over the whole block (absmax, max,
// quantile) before any element can be encoded: that is the caller's job (state_block.cpp on the
// CPU, a block reduction on the GPU); everything here is per element given those parameters.
//
// First moment m (signed):
//   8 bits   linear INT8, scale = absmax/127 (codes −127..127, quant/int8.h): the smallest largest
//            gap of any 8-bit map, which bounds SOLO's variance term (Thm 3.6 uses the max half-gap),
//            and with SR the small entries stay unbiased without needing fine levels near zero.
//   4/3/2    SOLO's signed dynamic-exponent map (torchao create_dynamic_map(signed, b−1, b)), with
//            a SIGNED block scale: scale = the block's element of largest magnitude, sign included,
//            so the absmax element always lands on the +1 level (the map has +1 but no −1; with an
//            unsigned scale a block led by a negative entry would clip it to −0.55 at 2 bits).
//   Sign: 0 is a level and both RTN (nearest, midpoints) and SR (between the two bracketing levels)
//   only ever choose levels of x's sign or 0, so m's sign can vanish but never flip.
// Second moment v (unsigned, ≥ 0): SOLO's logarithmic quantizer at every width (8 bits included):
//   per block d = max, α = (x_q/d)^(1/N), N = 2^b − 1, x_q = the p-quantile of the block's
//   POSITIVE values; levels d·α^k, k = 0..N. Code = SR on the log index y = log2(x/d)/log2(α)
//   (floor(y) + [u < frac(y)]), so E[code] = y, i.e. E[log v̂] = log v: the geometric mean is
//   unbiased. The decoded value is biased UP (α^k is convex in k, Jensen): E[v̂]/v =
//   (1−f)·α^(−f) + f·α^(1−f) ≤ 1.09 at 2 bits (α ≈ 0.44, f = ½), and values below x_q are rounded
//   up to it. Both err on the safe side: a larger v is a smaller step.
//   v decodes strictly positive unless its block has no positive value (then exactly 0, which is
//   also the true value). Zeros inside a block with positives decode to the bottom level.
//
// Non-finite input (the trainer skips NaN/Inf steps, so these are defined, not expected): block
// parameters are taken over finite values only. m: NaN → the zero level, ±Inf → the end level of its
// sign. v: NaN and +Inf → the top level d (the smallest step), negative values → the bottom level.
// A block without a finite nonzero (m) / positive (v) value decodes to zeros.
//
// Every operation is one IEEE float op (plus a polynomial log2 and exp_poly::exp, no libm), so the
// CPU and the GPU (--fmad=false) produce the same codes for the same random bits.
#include <cstdint>

#include "core/exp_poly.h"
#include "core/float_bits.h"
#include "core/hd.h"
#include "core/philox.h"
#include "quant/int8.h"

namespace eco {

inline constexpr int kStateBlock = 128;  // elements per block (SOLO's and bitsandbytes' size)

// ---------------------------------------------------------------------------------------------
// Packed codes. Element i occupies bits [i·b, i·b + b) of a little-endian bit stream, so 8 codes
// fill exactly b bytes: 2-bit = 4 per byte, 4-bit = 2 per byte, 3-bit = 8 codes in 3 bytes (a
// code may straddle two bytes; it never reaches past the byte holding its last bit), 8-bit = a
// byte. A block of 128 codes is 16·b bytes, so blocks start on byte boundaries. Writes are
// read-modify-write of one or two bytes: concurrent writers must own whole groups of 8 codes.

ECO_HD uint32_t state_code_get(const uint8_t* p, uint64_t i, int bits) {
  const uint64_t bit = i * static_cast<uint64_t>(bits);
  const uint64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7u);
  uint32_t w = p[byte];
  if (shift + bits > 8) w |= static_cast<uint32_t>(p[byte + 1]) << 8;
  return (w >> shift) & ((1u << bits) - 1u);
}

ECO_HD void state_code_set(uint8_t* p, uint64_t i, int bits, uint32_t code) {
  const uint64_t bit = i * static_cast<uint64_t>(bits);
  const uint64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7u);
  const uint32_t mask = ((1u << bits) - 1u) << shift;
  const uint32_t val = (code << shift) & mask;
  p[byte] = static_cast<uint8_t>((p[byte] & ~mask) | val);
  if (shift + bits > 8) p[byte + 1] = static_cast<uint8_t>((p[byte + 1] & ~(mask >> 8)) | (val >> 8));
}

// Bytes holding n packed b-bit codes.
ECO_HD uint64_t state_code_bytes(uint64_t n, int bits) { return (n * static_cast<uint64_t>(bits) + 7u) / 8u; }

// ---------------------------------------------------------------------------------------------
// SOLO's precision-specific β1 (research/solo-dqt.md §1.3, §0.4): β1 is lowered at low bit width so
// that the extra variance of a quantized EMA, ∝ β1/(1−β1)·r(b), stays at that of a setup known to
// work. Values: the paper's bound for the 5-bit reference (0.820 / 0.694 / 0.527 at 4 / 3 / 2 bits),
// rounded down to 0.8 (the reference code's README example for 4-bit m) / 0.65 / 0.5; 8 bits and
// wider keep Adam's 0.9.
ECO_HD float solo_default_beta1(int m_bits) {
  return m_bits >= 8 ? 0.9f : m_bits == 4 ? 0.8f : m_bits == 3 ? 0.65f : 0.5f;
}

// ---------------------------------------------------------------------------------------------
// First moment: signed dynamic map (2, 3, 4 bits) or linear INT8 (8 bits).

// Level `code` of the b-bit signed dynamic map, ascending; 2^b levels, 0 at code 2^(b−1) − 1, +1 at
// the top, no −1. Literals = torchao create_dynamic_map(signed=True, max_exponent_bits=b−1,
// total_bits=b) (the test recomputes them from that definition).
ECO_HD float dyn_map_level(int bits, uint32_t code) {
  if (bits == 2) {
    const float t[4] = {-0.55f, 0.0f, 0.55f, 1.0f};
    return t[code & 3u];
  }
  if (bits == 3) {
    const float t[8] = {-0.775f, -0.325f, -0.055f, 0.0f, 0.055f, 0.325f, 0.775f, 1.0f};
    return t[code & 7u];
  }
  const float t[16] = {-0.8875f, -0.6625f, -0.4375f, -0.2125f, -0.0775f, -0.0325f, -0.0055f, 0.0f,
                       0.0055f,  0.0325f,  0.0775f,  0.2125f,  0.4375f,  0.6625f,  0.8875f,  1.0f};
  return t[code & 15u];
}

// The code whose value is 0: the dynamic map's zero level, INT8's code 0.
ECO_HD uint32_t m_zero_code(int bits) { return bits == 8 ? 0u : (1u << (bits - 1)) - 1u; }

// Combines two candidates of a block's signed absmax (the value of largest magnitude, sign kept);
// commutative and associative (ties between +a and −a go to +a), so any reduction order gives the
// same result. Non-finite values count as 0: the scale is over finite values.
ECO_HD float signed_absmax_combine(float a, float b) {
  if (!is_finite_bits(a)) a = 0.0f;
  if (!is_finite_bits(b)) b = 0.0f;
  const float fa = a < 0.0f ? -a : a, fb = b < 0.0f ? -b : b;
  if (fa != fb) return fa > fb ? a : b;
  return a > b ? a : b;
}

// Block scale of m from the block's signed absmax: INT8 maps |absmax| to 127; the dynamic map
// divides by the signed absmax itself (so it lands on +1). 0 for a block without a nonzero value.
ECO_HD float m_block_scale(float signed_absmax, int bits) {
  if (bits == 8) return (signed_absmax < 0.0f ? -signed_absmax : signed_absmax) / kInt8Max;
  return signed_absmax;
}

namespace state_codec_detail {
// The normalized value x / scale for the dynamic map; ±Inf stays ±Inf (clipped to the ends later).
ECO_HD float dyn_normalize(float x, float scale) { return x / scale; }
}  // namespace state_codec_detail

// Round to nearest level (midpoints between neighbours; a tie goes to the upper level, as in the
// reference). Out-of-range values clip to the end levels; NaN and a zero scale give the zero code.
ECO_HD uint32_t m_encode_rtn(float x, float scale, int bits) {
  if (x != x || scale == 0.0f) return m_zero_code(bits);
  if (bits == 8) return int8_encode_rtn(x / scale);
  const float xn = state_codec_detail::dyn_normalize(x, scale);
  const uint32_t n = 1u << bits;
  uint32_t code = 0;
  float lo = dyn_map_level(bits, 0);
  for (uint32_t k = 1; k < n; ++k) {
    const float hi = dyn_map_level(bits, k);
    if (xn >= 0.5f * (lo + hi)) code = k;
    lo = hi;
  }
  return code;
}

// Stochastic rounding between the two levels that bracket x/scale: up with probability equal to the
// fractional distance, from the top 24 bits of r (uniform_from_bits), so E[decode] = x for x inside
// the map's range. Out-of-range values clip to the end levels; NaN and a zero scale give the zero
// code. INT8 uses quant/int8.h's SR (the same rule with a 32-bit threshold).
ECO_HD uint32_t m_encode_sr(float x, float scale, int bits, uint32_t r) {
  if (x != x || scale == 0.0f) return m_zero_code(bits);
  if (bits == 8) return int8_encode_sr(x / scale, r);
  const float xn = state_codec_detail::dyn_normalize(x, scale);
  const uint32_t top = (1u << bits) - 1u;
  if (xn <= dyn_map_level(bits, 0)) return 0u;
  if (xn >= dyn_map_level(bits, top)) return top;
  uint32_t k = 0;  // the largest level ≤ xn
  while (k + 1 < top && dyn_map_level(bits, k + 1) <= xn) ++k;
  const float lo = dyn_map_level(bits, k), hi = dyn_map_level(bits, k + 1);
  const float frac = (xn - lo) / (hi - lo);
  return uniform_from_bits(r) < frac ? k + 1 : k;
}

ECO_HD float m_decode(uint32_t code, float scale, int bits) {
  if (bits == 8) return int8_decode(static_cast<uint8_t>(code)) * scale;
  return dyn_map_level(bits, code) * scale;
}

// ---------------------------------------------------------------------------------------------
// Second moment: SOLO's logarithmic quantizer.

// The quantile ratio x_q/d is floored here: α^N ≥ 2^-64, so every level α^k stays a normal float and
// the log index never needs log2 of a subnormal. Smaller values decode to d·2^-64 (rounded up).
inline constexpr float kLogMinRatio = 5.42101086242752217e-20f;  // 2^-64

// One block of v: d = its largest finite value (0: no positive value, the block decodes to 0) and
// the level ratio α ∈ (0, 1] (α = 1: every level is d).
struct LogBlock {
  float d = 0.0f;
  float alpha = 1.0f;
};

// log2 of a positive normal float with basic IEEE ops only (bit-identical on CPU and GPU; libm's
// log2f and CUDA's differ in the last bit): x = 2^e·m with m ∈ [√½, √2), ln m = 2·atanh(t) with
// t = (m−1)/(m+1), |t| ≤ 0.172, by its series to t^9 (truncation < 1e-9). Abs. error ~2e-7.
ECO_HD float log2_poly(float x) {
  const uint32_t u = float_to_bits(x);
  int e = static_cast<int>((u >> 23) & 0xFFu) - 127;
  float m = bits_to_float((u & 0x007FFFFFu) | 0x3F800000u);
  if (m > 1.41421356f) {
    m = m * 0.5f;
    e += 1;
  }
  const float t = (m - 1.0f) / (m + 1.0f);
  const float t2 = t * t;
  float p = 1.0f / 9.0f;
  p = p * t2 + 1.0f / 7.0f;
  p = p * t2 + 1.0f / 5.0f;
  p = p * t2 + 1.0f / 3.0f;
  p = p * t2 + 1.0f;
  const float ln_m = 2.0f * t * p;
  return static_cast<float>(e) + ln_m * 1.44269504088896341f;
}

// Block parameters from the block's max and the p-quantile of its positive values (both finite).
ECO_HD LogBlock v_block_params(float max, float quantile, int bits) {
  LogBlock b;
  if (!(max > 0.0f) || !is_finite_bits(max)) return b;  // d = 0
  b.d = max;
  float ratio = quantile / max;
  if (!(ratio >= kLogMinRatio)) ratio = kLogMinRatio;  // also catches NaN
  if (ratio >= 1.0f) return b;                         // α = 1
  const float n = static_cast<float>((1u << bits) - 1u);
  const float a = exp_poly::exp(log2_poly(ratio) / n * 0.693147180559945309f);  // ratio^(1/N)
  b.alpha = a < 1.0f ? a : 1.0f;
  return b;
}

namespace state_codec_detail {
// The fractional log index y = log2(x/d)/log2(α) ∈ [0, N] of a positive finite x < d, or −1 when the
// code is decided without it (x at or below the floor: code N). α < 1.
ECO_HD float log_index(float x, const LogBlock& b, uint32_t top) {
  const float xn = x / b.d;
  if (!(xn >= kLogMinRatio)) return static_cast<float>(top);
  const float y = log2_poly(xn) / log2_poly(b.alpha);
  return y < 0.0f ? 0.0f : y;
}
}  // namespace state_codec_detail

// Code of v: SR on the log index (SOLO's quantizer); codes above N clip to N (values below the
// quantile are rounded up to it). NaN and +Inf → 0 (the top level d); 0 and negatives → N.
ECO_HD uint32_t v_encode_sr(float x, const LogBlock& b, int bits, uint32_t r) {
  const uint32_t top = (1u << bits) - 1u;
  if (x != x || x >= b.d) return 0u;  // NaN, +Inf, the block max (and anything for d = 0 and x ≥ 0)
  if (!(x > 0.0f) || b.alpha >= 1.0f) return x > 0.0f ? 0u : top;
  const float y = state_codec_detail::log_index(x, b, top);
  if (y >= static_cast<float>(top)) return top;
  const uint32_t k = static_cast<uint32_t>(y);
  const float frac = y - static_cast<float>(k);
  const uint32_t code = uniform_from_bits(r) < frac ? k + 1 : k;
  return code < top ? code : top;
}

// Round to the nearest log index (tie up): the deterministic baseline, which swamps small EMA updates.
ECO_HD uint32_t v_encode_rtn(float x, const LogBlock& b, int bits) {
  const uint32_t top = (1u << bits) - 1u;
  if (x != x || x >= b.d) return 0u;
  if (!(x > 0.0f) || b.alpha >= 1.0f) return x > 0.0f ? 0u : top;
  const float y = state_codec_detail::log_index(x, b, top);
  if (y >= static_cast<float>(top)) return top;
  const uint32_t k = static_cast<uint32_t>(y + 0.5f);
  return k < top ? k : top;
}

// v = d·α^code, α^code by square-and-multiply in a fixed order; strictly positive when d > 0 (an
// underflow of a tiny block would give the smallest subnormal, never 0).
ECO_HD float v_decode(uint32_t code, const LogBlock& b) {
  if (!(b.d > 0.0f)) return 0.0f;
  float p = 1.0f, a = b.alpha;
  for (uint32_t k = code; k != 0; k >>= 1) {
    if (k & 1u) p = p * a;
    a = a * a;
  }
  const float v = b.d * p;
  return v > 0.0f ? v : 1.40129846e-45f;
}

// The p-quantile of n ≥ 1 values by torch.quantile's rule: linear interpolation at position
// p·(n−1) between the order statistics x_(lo) and x_(lo+1) (0-based; hi = lo at the top).
// quantile_low_index gives lo; quantile_between interpolates. Split so that a GPU block, which
// finds the two order statistics by ranking instead of sorting, computes the same float.
ECO_HD int quantile_low_index(int n, float p) {
  const float pos = p * static_cast<float>(n - 1);
  const int lo = static_cast<int>(pos);
  return lo > n - 1 ? n - 1 : lo;
}
ECO_HD float quantile_between(float x_lo, float x_hi, int n, float p) {
  const float pos = p * static_cast<float>(n - 1);
  const float frac = pos - static_cast<float>(quantile_low_index(n, p));
  return x_lo + (x_hi - x_lo) * frac;
}

// The same over n ≥ 1 ascending values.
ECO_HD float quantile_sorted(const float* sorted, int n, float p) {
  const int lo = quantile_low_index(n, p);
  const int hi = lo + 1 < n ? lo + 1 : lo;
  return quantile_between(sorted[lo], sorted[hi], n, p);
}

// ---------------------------------------------------------------------------------------------
// Block-parallel pieces: how a GPU block (a thread per element, or per byte) reaches the results of
// the sequential CPU code above exactly. tests/test_state_codecs.cpp checks each against it.

// Byte j of the packed stream of code[0 .. count) (state_code_set's layout), built whole, so one
// writer per byte needs no read-modify-write; bits past the last code are 0.
ECO_HD uint8_t state_packed_byte(const uint32_t* code, int count, int bits, int j) {
  const int bit0 = 8 * j;
  uint32_t byte = 0;
  for (int i = bit0 / bits; i < count && i * bits < bit0 + 8; ++i) {
    const int shift = i * bits - bit0;  // < 0: code i began in the byte before
    byte |= shift >= 0 ? code[i] << shift : code[i] >> -shift;
  }
  return static_cast<uint8_t>(byte & 0xFFu);
}

// The 0-based position of x[t] (positive and finite) in ascending order among the block's positive
// finite values, ties broken by index: every position is held by exactly one element, so the
// element at quantile_low_index and the next one are the order statistics nth_element finds.
ECO_HD int positive_rank(const float* x, int count, int t) {
  const float v = x[t];
  int rank = 0;
  for (int j = 0; j < count; ++j) {
    const float y = x[j];
    if (y > 0.0f && is_finite_bits(y) && (y < v || (y == v && j < t))) ++rank;
  }
  return rank;
}

// A block's signed absmax as the CPU's left fold from 0 (m_block_scale_of) gives it, from `tree`,
// the same combine reduced in any order, and the block's last value. With a largest magnitude
// M > 0 the fold is order-free (+M wins a tie with −M) and equals the tree; when every value is
// ±0 or not finite, the fold returns the last value's zero, sign included (non-finite counts as +0).
ECO_HD float signed_absmax_from_tree(float tree, float last) {
  if (tree != 0.0f) return tree;
  return is_finite_bits(last) ? last : 0.0f;
}

}  // namespace eco

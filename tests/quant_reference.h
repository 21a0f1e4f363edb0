#pragma once
// Independent references for the codec tests: FP8 values from the format definition (ldexp in
// double), nearest-code search by exhaustive comparison, and the two neighbours of a value. None
// of this looks at float bit patterns, so it shares no logic with src/quant.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace quant_ref {

struct Fp8Def {
  int mant;          // mantissa bits
  int bias;
  int max_code;      // largest finite positive code
  int overflow_code; // what NOSAT gives on overflow (E4M3: NaN 0x7F, E5M2: Inf 0x7C)
  bool ieee_special; // E5M2: exponent field all ones is Inf/NaN; E4M3: only 0x7F is NaN
};
inline constexpr Fp8Def kE4M3{3, 7, 0x7E, 0x7F, false};
inline constexpr Fp8Def kE5M2{2, 15, 0x7B, 0x7C, true};

// Value of a non-negative code c (0..127) read as sign-less "exponent, mantissa" with no special
// cases: used for finite codes and for the virtual code max_code + 1 just above the largest value.
inline double magnitude_of(const Fp8Def& f, int c) {
  const int e = c >> f.mant, m = c & ((1 << f.mant) - 1);
  if (e == 0) return std::ldexp(static_cast<double>(m), 1 - f.bias - f.mant);
  return std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -f.mant), e - f.bias);
}

// The value of any code per the format's definition (NaN / ±Inf included).
inline double value_of(const Fp8Def& f, int code) {
  const bool neg = code & 0x80;
  const int c = code & 0x7F;
  double v;
  if (!f.ieee_special && c == 0x7F) return std::numeric_limits<double>::quiet_NaN();
  if (f.ieee_special && (c >> f.mant) == (0x7F >> f.mant)) {
    if ((c & ((1 << f.mant) - 1)) != 0) return std::numeric_limits<double>::quiet_NaN();
    v = std::numeric_limits<double>::infinity();
  } else {
    v = magnitude_of(f, c);
  }
  return neg ? -v : v;
}

// magnitude_of for codes 0..max_code+1, computed once per format.
inline const std::vector<double>& magnitude_table(const Fp8Def& f) {
  auto build = [](const Fp8Def& d) {
    std::vector<double> v;
    for (int c = 0; c <= d.max_code + 1; ++c) v.push_back(magnitude_of(d, c));
    return v;
  };
  static const std::vector<double> e4m3 = build(kE4M3), e5m2 = build(kE5M2);
  return f.bias == kE4M3.bias ? e4m3 : e5m2;
}

// Round |x| to nearest, ties to the even code, by comparing it with every code 0..max_code+1 in
// double; the virtual code max_code+1 stands for "overflow" (it is the next value an unbounded
// format would have, so the overflow threshold and its tie come out right). x must not be NaN.
inline int nearest_code_unbounded(const Fp8Def& f, float x) {
  const std::vector<double>& mag = magnitude_table(f);
  const double a = std::fabs(static_cast<double>(x));
  // At or beyond the virtual value the answer is plain; comparing distances there would lose
  // the difference between two huge distances to double rounding.
  if (a >= mag[f.max_code + 1]) return f.max_code + 1;
  int best = 0;
  double best_d = a;
  for (int c = 1; c <= f.max_code + 1; ++c) {
    const double d = std::fabs(mag[c] - a);
    if (d < best_d || (d == best_d && (c % 2 == 0))) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

// The full RNE encoder: sign, NaN, and saturation (SATFINITE) or the overflow code (NOSAT).
inline uint8_t finish_code(const Fp8Def& f, float x, int unbounded, bool saturate) {
  if (std::isnan(x)) return 0x7F;
  int best = unbounded;
  if (best > f.max_code) best = saturate ? f.max_code : f.overflow_code;
  return static_cast<uint8_t>(best | (std::signbit(x) ? 0x80 : 0x00));
}

inline uint8_t encode_nearest(const Fp8Def& f, float x, bool saturate) {
  if (std::isnan(x)) return 0x7F;
  return finish_code(f, x, nearest_code_unbounded(f, x), saturate);
}

// Sorted finite non-negative values (index = code).
inline std::vector<double> positive_values(const Fp8Def& f) {
  std::vector<double> v;
  for (int c = 0; c <= f.max_code; ++c) v.push_back(magnitude_of(f, c));
  return v;
}

// Codes of the largest value ≤ |x| and the smallest value ≥ |x| (both max_code above max).
struct Neighbours {
  int below;
  int above;
};
inline Neighbours neighbours(const Fp8Def& f, double x) {
  const double a = std::fabs(x);
  const std::vector<double> v = positive_values(f);
  Neighbours n{0, 0};
  for (int c = 0; c <= f.max_code; ++c)
    if (v[c] <= a) n.below = c;
  n.above = f.max_code;
  for (int c = f.max_code; c >= 0; --c)
    if (v[c] >= a) n.above = c;
  return n;
}

// BF16 value of a 16-bit pattern; 0x7F80 (Inf) is read as the virtual 2^128 so that a
// nearest-value search sees the IEEE overflow threshold.
inline double bf16_value_or_virtual(uint16_t h) {
  if ((h & 0x7FFF) == 0x7F80) return (h & 0x8000) ? -std::ldexp(1.0, 128) : std::ldexp(1.0, 128);
  const bool neg = h & 0x8000;
  const int e = (h >> 7) & 0xFF, m = h & 0x7F;
  double v = e == 0 ? std::ldexp(static_cast<double>(m), -133) : std::ldexp(1.0 + m / 128.0, e - 127);
  return neg ? -v : v;
}

}  // namespace quant_ref

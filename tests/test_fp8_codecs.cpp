// FP8 (E4M3, E5M2), BF16 and INT8 codecs against independent references (tests/quant_reference.h):
// all codes, every midpoint and its neighbours, saturation, NaN, subnormals, and ~10^7 floats
// compared with an exhaustive nearest-code search.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "quant/bf16.h"
#include "quant/fp8.h"
#include "quant/int8.h"
#include "quant_reference.h"

using namespace eco;
using quant_ref::Fp8Def;

namespace {
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

struct Fp8Under {
  const char* name;
  Fp8Def def;
  uint8_t (*rtn)(float);
  uint8_t (*nosat)(float);
  float (*decode)(uint8_t);
};
const Fp8Under kFormats[] = {
    {"E4M3", quant_ref::kE4M3, e4m3_encode_rtn, e4m3_encode_rtn_nosat, e4m3_decode},
    {"E5M2", quant_ref::kE5M2, e5m2_encode_rtn, e5m2_encode_rtn_nosat, e5m2_decode},
};

bool is_nan_code(const Fp8Def& f, int code) { return std::isnan(quant_ref::value_of(f, code)); }

// Compares both encoders with the reference for one float; returns false (and reports) on mismatch.
bool agrees(const Fp8Under& f, float x) {
  const int unbounded = std::isnan(x) ? 0 : quant_ref::nearest_code_unbounded(f.def, x);
  const uint8_t got_sat = f.rtn(x), want_sat = quant_ref::finish_code(f.def, x, unbounded, true);
  const uint8_t got_nosat = f.nosat(x), want_nosat = quant_ref::finish_code(f.def, x, unbounded, false);
  if (got_sat == want_sat && got_nosat == want_nosat) return true;
  static int reported = 0;
  if (reported++ < 5)
    UNSCOPED_INFO(f.name << " x=" << x << " bits=0x" << std::hex << to_bits(x) << " sat got 0x" << int(got_sat)
                       << " want 0x" << int(want_sat) << " nosat got 0x" << int(got_nosat) << " want 0x"
                       << int(want_nosat));
  return false;
}
}  // namespace

TEST_CASE("FP8: all 256 codes decode to the value of the format definition", "[fp8]") {
  for (const auto& f : kFormats) {
    INFO(f.name);
    for (int c = 0; c < 256; ++c) {
      const double want = quant_ref::value_of(f.def, c);
      const float got = f.decode(static_cast<uint8_t>(c));
      INFO("code " << c);
      if (std::isnan(want)) {
        CHECK(std::isnan(got));
      } else {
        CHECK(static_cast<double>(got) == want);
        CHECK(std::signbit(got) == bool(c & 0x80));
      }
    }
  }
  // Spot values from the OCP spec.
  CHECK(e4m3_decode(0x7E) == 448.0f);
  CHECK(e4m3_decode(0x08) == std::ldexp(1.0f, -6));
  CHECK(e4m3_decode(0x01) == std::ldexp(1.0f, -9));
  CHECK(e5m2_decode(0x7B) == 57344.0f);
  CHECK(std::isinf(e5m2_decode(0x7C)));
  CHECK(e5m2_decode(0xFC) < 0.0f);
  CHECK(e5m2_decode(0x01) == std::ldexp(1.0f, -16));
}

TEST_CASE("FP8: encode(decode(c)) == c for every non-NaN code, signed zeros kept", "[fp8]") {
  for (const auto& f : kFormats) {
    INFO(f.name);
    for (int c = 0; c < 256; ++c) {
      if (is_nan_code(f.def, c)) continue;
      const float v = f.decode(static_cast<uint8_t>(c));
      INFO("code " << c);
      if (std::isinf(v)) {  // E5M2 ±Inf: NOSAT keeps it, SATFINITE clamps to ±max
        CHECK(f.nosat(v) == c);
        CHECK(f.rtn(v) == ((c & 0x80) | f.def.max_code));
        continue;
      }
      CHECK(f.rtn(v) == c);
      CHECK(f.nosat(v) == c);
    }
  }
}

TEST_CASE("FP8: midpoints round to the even code, their float neighbours to the nearer code", "[fp8]") {
  for (const auto& f : kFormats) {
    INFO(f.name);
    // Pairs (c, c+1) of finite codes, plus (max, virtual next) for the overflow threshold.
    for (int c = 0; c <= f.def.max_code; ++c) {
      const double lo = quant_ref::magnitude_of(f.def, c), hi = quant_ref::magnitude_of(f.def, c + 1);
      const float mid = static_cast<float>((lo + hi) / 2);
      REQUIRE(static_cast<double>(mid) == (lo + hi) / 2);  // FP8 midpoints are exact floats
      const float up = std::nextafter(mid, std::numeric_limits<float>::infinity());
      const float down = std::nextafter(mid, 0.0f);
      const int even = (c % 2 == 0) ? c : c + 1;
      auto sat = [&](int code) { return code > f.def.max_code ? f.def.max_code : code; };
      auto nosat = [&](int code) { return code > f.def.max_code ? f.def.overflow_code : code; };
      for (int s = 0; s < 2; ++s) {
        const float sg = s ? -1.0f : 1.0f;
        const int sb = s ? 0x80 : 0;
        INFO("pair " << c << " sign " << s);
        CHECK(f.rtn(sg * mid) == (sat(even) | sb));
        CHECK(f.rtn(sg * up) == (sat(c + 1) | sb));
        CHECK(f.rtn(sg * down) == (c | sb));
        CHECK(f.nosat(sg * mid) == (nosat(even) | sb));
        CHECK(f.nosat(sg * up) == (nosat(c + 1) | sb));
        CHECK(f.nosat(sg * down) == (c | sb));
      }
    }
  }
  // The documented consequences: E4M3 (448, 464] -> 448, above -> overflow; E5M2 61440 -> Inf.
  CHECK(e4m3_encode_rtn_nosat(464.0f) == 0x7E);
  CHECK(e4m3_encode_rtn_nosat(std::nextafter(464.0f, 1e9f)) == 0x7F);
  CHECK(e5m2_encode_rtn_nosat(61440.0f) == 0x7C);
  CHECK(e5m2_encode_rtn_nosat(std::nextafter(61440.0f, 0.0f)) == 0x7B);
}

TEST_CASE("FP8: saturation, NOSAT overflow, infinities and NaN", "[fp8]") {
  const float big[] = {449.0f, 1e6f, 3.0e38f, std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity()};
  for (float b : big) {
    INFO(b);
    CHECK(e4m3_encode_rtn(b) == 0x7E);
    CHECK(e4m3_encode_rtn(-b) == 0xFE);
    if (b > 464.0f) {
      CHECK(e4m3_encode_rtn_nosat(b) == 0x7F);
      CHECK(e4m3_encode_rtn_nosat(-b) == 0xFF);
    }
    if (b >= 61440.0f) {
      CHECK(e5m2_encode_rtn(b) == 0x7B);
      CHECK(e5m2_encode_rtn(-b) == 0xFB);
      CHECK(e5m2_encode_rtn_nosat(b) == 0x7C);
      CHECK(e5m2_encode_rtn_nosat(-b) == 0xFC);
    }
  }
  const float nans[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                        std::numeric_limits<float>::signaling_NaN(), from_bits(0x7F800001u), from_bits(0xFFFFFFFFu)};
  for (float n : nans) {
    CHECK(e4m3_encode_rtn(n) == kFp8CanonicalNaN);
    CHECK(e4m3_encode_rtn_nosat(n) == kFp8CanonicalNaN);
    CHECK(e5m2_encode_rtn(n) == kFp8CanonicalNaN);
    CHECK(e5m2_encode_rtn_nosat(n) == kFp8CanonicalNaN);
  }
  CHECK(std::isnan(e4m3_decode(0x7F)));
  CHECK(std::isnan(e4m3_decode(0xFF)));
  for (int c : {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}) CHECK(std::isnan(e5m2_decode(static_cast<uint8_t>(c))));
}

TEST_CASE("FP8: subnormals and values that round to signed zero", "[fp8]") {
  const float e4_min_sub = std::ldexp(1.0f, -9), e5_min_sub = std::ldexp(1.0f, -16);
  CHECK(e4m3_encode_rtn(e4_min_sub) == 0x01);
  CHECK(e4m3_encode_rtn(7 * e4_min_sub) == 0x07);
  CHECK(e4m3_encode_rtn(7.5f * e4_min_sub) == 0x08);  // tie between 0x07 (odd) and min normal 0x08
  CHECK(e4m3_encode_rtn(2.5f * e4_min_sub) == 0x02);
  CHECK(e4m3_encode_rtn(0.5f * e4_min_sub) == 0x00);  // tie with 0: zero is even
  CHECK(e4m3_encode_rtn(std::nextafter(0.5f * e4_min_sub, 1.0f)) == 0x01);
  CHECK(e4m3_encode_rtn(-0.25f * e4_min_sub) == 0x80);
  CHECK(e5m2_encode_rtn(e5_min_sub) == 0x01);
  CHECK(e5m2_encode_rtn(3.5f * e5_min_sub) == 0x04);  // tie 0x03 (odd) / min normal 0x04
  CHECK(e5m2_encode_rtn(-0.5f * e5_min_sub) == 0x80);
  CHECK(e5m2_encode_rtn(-0.0f) == 0x80);
  CHECK(e4m3_encode_rtn(0.0f) == 0x00);
  CHECK(e4m3_encode_rtn(-0.0f) == 0x80);
  // Float subnormals are far below either format's smallest step.
  CHECK(e4m3_encode_rtn(from_bits(0x00000001u)) == 0x00);
  CHECK(e4m3_encode_rtn(-from_bits(0x007FFFFFu)) == 0x80);
  CHECK(e5m2_encode_rtn(from_bits(0x00400000u)) == 0x00);
}

TEST_CASE("FP8: ~10^7 floats agree with the exhaustive nearest-code reference", "[fp8][slow]") {
  for (const auto& f : kFormats) {
    INFO(f.name);
    size_t bad = 0, n = 0;
    // 1) A stride through all 2^32 bit patterns (every sign, exponent and NaN class).
    for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 1021) {
      bad += agrees(f, from_bits(static_cast<uint32_t>(u))) ? 0 : 1;
      ++n;
    }
    // 2) A denser stride through the exponents where the format lives, plus the binades above max.
    const int emin = 1 - f.def.bias - f.def.mant - 2, emax = (f.def.ieee_special ? 16 : 9) + 1;
    const uint32_t begin = static_cast<uint32_t>(emin + 127) << 23, end = static_cast<uint32_t>(emax + 127) << 23;
    const uint32_t stride = (end - begin) / 3000000 | 1u;
    for (uint32_t u = begin; u < end; u += stride) {
      bad += agrees(f, from_bits(u)) ? 0 : 1;
      bad += agrees(f, from_bits(u | 0x80000000u)) ? 0 : 1;
      n += 2;
    }
    // 3) Random magnitudes, log-uniform over the format's range.
    std::mt19937_64 rng(12345);
    std::uniform_real_distribution<double> log2mag(emin, emax);
    for (int i = 0; i < 1000000; ++i) {
      float x = static_cast<float>(std::exp2(log2mag(rng)));
      if (rng() & 1) x = -x;
      bad += agrees(f, x) ? 0 : 1;
      ++n;
    }
    INFO(n << " samples");
    CHECK(n > 4000000);
    CHECK(bad == 0);
  }
}

TEST_CASE("BF16: RNE equals the nearest-value reference over 2^24 strided floats; NaN kept quiet", "[bf16]") {
  size_t bad = 0;
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 251) {
    const float x = from_bits(static_cast<uint32_t>(u));
    const uint16_t got = bf16_encode_rne(x);
    if (std::isnan(x)) {
      bad += (std::isnan(bf16_decode(got)) && (got & 0x0040) && ((got & 0x8000) == ((u >> 16) & 0x8000))) ? 0 : 1;
      continue;
    }
    if (std::isinf(x)) {
      bad += got == static_cast<uint16_t>(u >> 16) ? 0 : 1;
      continue;
    }
    // Candidates: the pattern truncated toward zero and the next one out; pick by distance in double.
    const uint16_t t = static_cast<uint16_t>(u >> 16), a = static_cast<uint16_t>(t + 1);
    const double dx = x;
    const double dt = std::fabs(quant_ref::bf16_value_or_virtual(t) - dx);
    const double da = std::fabs(quant_ref::bf16_value_or_virtual(a) - dx);
    const uint16_t want = (dt < da || (dt == da && t % 2 == 0)) ? t : a;
    if (got != want) {
      if (bad < 5) UNSCOPED_INFO("x bits 0x" << std::hex << u << " got 0x" << got << " want 0x" << want);
      ++bad;
    }
  }
  CHECK(bad == 0);
  CHECK(bf16_encode_rne(1.0f) == 0x3F80);
  CHECK(bf16_decode(0x3F80) == 1.0f);
  CHECK(bf16_encode_rne(from_bits(0x3F808000u)) == 0x3F80);  // tie, even kept
  CHECK(bf16_encode_rne(from_bits(0x3F818000u)) == 0x3F82);  // tie, odd rounds up
  CHECK(bf16_encode_rne(from_bits(0x7F7F8000u)) == 0x7F80);  // IEEE overflow to Inf
  CHECK(bf16_encode_rne(from_bits(0x7F800001u)) == 0x7FC0);  // signalling NaN made quiet
  for (uint32_t h = 0; h < 0x10000u; ++h) {  // every non-NaN bf16 round-trips
    const float v = bf16_decode(static_cast<uint16_t>(h));
    if (!std::isnan(v)) REQUIRE(bf16_encode_rne(v) == h);
  }
}

TEST_CASE("INT8: RTN ties to even, clamps to ±127, NaN to 0; every code decodes to itself", "[int8]") {
  for (int k = -127; k <= 127; ++k) {
    CHECK(int8_decode(static_cast<uint8_t>(static_cast<int8_t>(k))) == static_cast<float>(k));
    CHECK(int8_encode_rtn(static_cast<float>(k)) == static_cast<uint8_t>(static_cast<int8_t>(k)));
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-140.0f, 140.0f);
  for (int i = 0; i < 200000; ++i) {
    float y = d(rng);
    if (i % 4 == 0) y = std::round(y * 2.0f) / 2.0f;  // many exact ties
    const double c = std::fmax(-127.0, std::fmin(127.0, std::nearbyint(static_cast<double>(y))));
    INFO(y);
    REQUIRE(int8_decode(int8_encode_rtn(y)) == static_cast<float>(c));
  }
  CHECK(int8_encode_rtn(2.5f) == 2);
  CHECK(int8_encode_rtn(3.5f) == 4);
  CHECK(int8_decode(int8_encode_rtn(-2.5f)) == -2.0f);
  CHECK(int8_decode(int8_encode_rtn(126.5f)) == 126.0f);
  CHECK(int8_decode(int8_encode_rtn(1e9f)) == 127.0f);
  CHECK(int8_decode(int8_encode_rtn(-std::numeric_limits<float>::infinity())) == -127.0f);
  CHECK(int8_encode_rtn(std::numeric_limits<float>::quiet_NaN()) == 0);
  CHECK(int8_decode(int8_encode_rtn(0.49999997f)) == 0.0f);
}

// Stochastic rounding (E4M3, E5M2, BF16, INT8): lands on one of the two neighbours, is unbiased
// (mean of N draws within 5 standard errors; P(away) matches the fractional distance), leaves
// representable values alone, saturates instead of overflowing, and follows its documented
// formula at the extreme random words (r = 0 rounds away, r = 2^32 − 1 truncates).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "core/philox.h"
#include "quant/bf16.h"
#include "quant/fp8.h"
#include "quant/int8.h"
#include "quant_reference.h"

using namespace eco;

namespace {
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The two grid values around |x| (equal when x is on the grid), from the format definitions.
using Pair = std::pair<double, double>;

Pair fp8_neighbours(const quant_ref::Fp8Def& f, float x) {
  const auto n = quant_ref::neighbours(f, x);
  return {quant_ref::magnitude_of(f, n.below), quant_ref::magnitude_of(f, n.above)};
}

// BF16 keeps 8 significant bits: the grid spacing at |x| is 2^(floor(log2|x|) − 7), never below
// the subnormal spacing 2^-133; the largest finite value is the top of the grid.
Pair bf16_neighbours(float x) {
  const double a = std::fabs(static_cast<double>(x));
  if (a == 0.0) return {0.0, 0.0};
  int ex;
  std::frexp(a, &ex);
  const double ulp = std::ldexp(1.0, std::max(ex - 1, -126) - 7);
  const double lo = std::floor(a / ulp) * ulp;
  const double max = std::ldexp(255.0, 120);  // (2 − 2^-7)·2^127
  return {lo, lo == a ? lo : std::min(lo + ulp, max)};
}

Pair int8_neighbours(float y) {
  const double a = std::min(std::fabs(static_cast<double>(y)), 127.0);
  return {std::floor(a), std::ceil(a)};
}

struct SrFormat {
  const char* name;
  std::function<double(float, uint32_t)> sr;  // the value SR produces for x with random word r
  std::function<Pair(float)> neighbours;
  std::vector<float> samples;  // magnitudes across the range, subnormals and near max included
};

std::vector<SrFormat> formats() {
  using quant_ref::kE4M3;
  using quant_ref::kE5M2;
  return {
      {"E4M3", [](float x, uint32_t r) { return double(e4m3_decode(e4m3_encode_sr(x, r))); },
       [](float x) { return fp8_neighbours(kE4M3, x); },
       {0.3f, 1.1f, 3.14159f, 100.7f, 440.0f, 447.9f, -5.3f, 0.0013f, 0.005f, 7.3f * 0.001953125f, 1e-6f, -0.0107f}},
      {"E5M2", [](float x, uint32_t r) { return double(e5m2_decode(e5m2_encode_sr(x, r))); },
       [](float x) { return fp8_neighbours(kE5M2, x); },
       {0.3f, 1.1f, 3.14159f, 1000.3f, 50000.0f, 57000.0f, -7.7f, 1e-5f, 3.3e-5f, 2.5e-7f}},
      {"BF16", [](float x, uint32_t r) { return double(bf16_decode(bf16_encode_sr(x, r))); }, bf16_neighbours,
       {1.00123f, 3.14159f, -2.7f, 1e30f, 3e-39f, 1e-42f, 3.3e38f}},
      {"INT8", [](float y, uint32_t r) { return double(int8_decode(int8_encode_sr(y, r))); }, int8_neighbours,
       {0.3f, 5.5f, 126.2f, -3.7f, 0.001f, -100.25f, 64.9f}},
  };
}
}  // namespace

TEST_CASE("SR is unbiased: mean of N draws within 5 standard errors, P(away) = fractional distance", "[sr]") {
  const int N = 40000;
  RandomKey key{0x5EED5EEDull, 7, 3};
  for (const auto& f : formats()) {
    for (float x : f.samples) {
      INFO(f.name << " x = " << x);
      const auto [lo, hi] = f.neighbours(x);
      const double sign = std::signbit(x) ? -1.0 : 1.0;
      const double a = std::fabs(static_cast<double>(x));
      REQUIRE(lo < a);
      REQUIRE(a < hi);
      const double p = (a - lo) / (hi - lo);
      long away = 0;
      double sum = 0.0;
      for (int i = 0; i < N; ++i) {
        const double v = f.sr(x, random_bits(key, static_cast<uint64_t>(i)));
        REQUIRE((v == sign * lo || v == sign * hi));
        away += v == sign * hi ? 1 : 0;
        sum += v;
      }
      const double se_fraction = std::sqrt(p * (1.0 - p) / N);
      const double mean = sum / N;
      INFO("p = " << p << ", observed " << double(away) / N << ", mean " << mean);
      CHECK(std::fabs(double(away) / N - p) <= 5.0 * se_fraction + 1e-12);
      CHECK(std::fabs(mean - static_cast<double>(x)) <= 5.0 * (hi - lo) * se_fraction * (1.0 + 1e-9) + 1e-300);
    }
  }
}

TEST_CASE("SR leaves every representable value unchanged, for any random word", "[sr]") {
  const uint32_t words[] = {0u, 1u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 0x12345678u};
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    for (uint32_t r : words) {
      INFO("code " << c << " r " << r);
      if (!std::isnan(e4m3_decode(code))) CHECK(e4m3_encode_sr(e4m3_decode(code), r) == code);
      const float v5 = e5m2_decode(code);
      if (std::isfinite(v5)) CHECK(e5m2_encode_sr(v5, r) == code);
      if (c != 0x80) CHECK(int8_encode_sr(int8_decode(code), r) == code);  // 0x80 = −128 is not on the grid
    }
  }
  for (uint32_t h = 0; h < 0x10000u; h += 7) {
    const float v = bf16_decode(static_cast<uint16_t>(h));
    if (std::isfinite(v)) REQUIRE(bf16_encode_sr(v, 0u) == h);
  }
}

TEST_CASE("SR saturates at ±max, never turns a finite value into NaN or Inf", "[sr]") {
  const float inf = std::numeric_limits<float>::infinity();
  for (uint32_t r : {0u, 0x80000000u, 0xFFFFFFFFu}) {
    for (float x : {448.5f, 460.0f, 479.9f, 1e10f, std::numeric_limits<float>::max(), inf}) {
      CHECK(e4m3_encode_sr(x, r) == 0x7E);
      CHECK(e4m3_encode_sr(-x, r) == 0xFE);
    }
    for (float x : {57345.0f, 60000.0f, 65000.0f, 1e30f, inf}) {
      CHECK(e5m2_encode_sr(x, r) == 0x7B);
      CHECK(e5m2_encode_sr(-x, r) == 0xFB);
    }
    CHECK(bf16_encode_sr(std::numeric_limits<float>::max(), r) == 0x7F7F);
    CHECK(bf16_encode_sr(-std::numeric_limits<float>::max(), r) == 0xFF7F);
    CHECK(bf16_encode_sr(inf, r) == 0x7F80);
    CHECK(int8_decode(int8_encode_sr(300.0f, r)) == 127.0f);
    CHECK(int8_decode(int8_encode_sr(-inf, r)) == -127.0f);
    CHECK(e4m3_encode_sr(std::numeric_limits<float>::quiet_NaN(), r) == kFp8CanonicalNaN);
    CHECK(e5m2_encode_sr(std::numeric_limits<float>::quiet_NaN(), r) == kFp8CanonicalNaN);
    CHECK(std::isnan(bf16_decode(bf16_encode_sr(std::numeric_limits<float>::quiet_NaN(), r))));
    CHECK(int8_encode_sr(std::numeric_limits<float>::quiet_NaN(), r) == 0);
  }
  // A sweep of finite floats with random words: the result is always finite.
  std::mt19937 rng(99);
  size_t bad = 0;
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 65537) {
    const float x = from_bits(static_cast<uint32_t>(u));
    if (!std::isfinite(x)) continue;
    const uint32_t r = rng();
    bad += std::isfinite(e4m3_decode(e4m3_encode_sr(x, r))) ? 0 : 1;
    bad += std::isfinite(e5m2_decode(e5m2_encode_sr(x, r))) ? 0 : 1;
    bad += std::isfinite(bf16_decode(bf16_encode_sr(x, r))) ? 0 : 1;
  }
  CHECK(bad == 0);
}

TEST_CASE("SR lands on a neighbour; r = 2^32-1 truncates toward zero and r = 0 rounds away", "[sr]") {
  // Over a sweep of floats in each format's range; r = 0 rounds away whenever the value is inexact
  // and at least 2^-11 of the smallest step (where the formula uses the exact comparison).
  for (const auto& f : formats()) {
    INFO(f.name);
    const bool int8 = std::string(f.name) == "INT8";
    const double lo_mag = int8 ? 1e-3 : (std::string(f.name) == "BF16" ? 1e-40 : 1e-7);
    const double hi_mag = int8 ? 140.0 : (std::string(f.name) == "E4M3" ? 500.0 : 70000.0);
    std::mt19937 rng(5);
    std::uniform_real_distribution<double> lg(std::log2(lo_mag), std::log2(hi_mag));
    size_t bad = 0;
    for (int i = 0; i < 300000; ++i) {
      float x = static_cast<float>(std::exp2(lg(rng)));
      if (i & 1) x = -x;
      const double sign = std::signbit(x) ? -1.0 : 1.0;
      const auto [lo, hi] = f.neighbours(x);
      const double any = f.sr(x, static_cast<uint32_t>(rng()));
      const double trunc = f.sr(x, 0xFFFFFFFFu), away = f.sr(x, 0u);
      bad += (any == sign * lo || any == sign * hi) ? 0 : 1;
      bad += trunc == sign * lo ? 0 : 1;
      bad += away == sign * hi ? 0 : 1;
      if (bad && bad < 4) UNSCOPED_INFO("x " << x << " lo " << lo << " hi " << hi << " trunc " << trunc << " away " << away);
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("SR below 2^-8 of the smallest FP8 step still rounds up with the right probability", "[sr]") {
  // |x| = 2^-20 is 2^-11 of E4M3's step 2^-9: the 32-bit comparison path (shift ≥ 32).
  const float x = std::ldexp(1.0f, -20);
  const double p = std::ldexp(1.0, -11);
  const int N = 400000;
  RandomKey key{42, 1, 9};
  long away = 0;
  for (int i = 0; i < N; ++i) away += e4m3_encode_sr(x, random_bits(key, static_cast<uint64_t>(i))) == 0x01 ? 1 : 0;
  CHECK(std::fabs(double(away) / N - p) <= 5.0 * std::sqrt(p * (1 - p) / N));
  CHECK(away > 0);
}

// QuantTensor and the per-row fake quantizer: scales at every granularity, the RTN error bound,
// zero rows, NaN/Inf refusal, SR reproducibility, thread-count independence, raw round trips.
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/error.h"
#include "quant/quant_rows.h"
#include "quant/quant_tensor.h"
#include "quant_reference.h"

using namespace eco;

namespace {
std::vector<float> random_matrix(size_t rows, size_t cols, uint32_t seed, float spread = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> row_mag(-3.0f, 3.0f);
  std::vector<float> x(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    const float m = std::pow(10.0f, spread * row_mag(rng));  // rows of very different magnitude
    for (size_t c = 0; c < cols; ++c) x[r * cols + c] = m * n(rng);
  }
  return x;
}

float absmax_of(const std::vector<float>& x, size_t r0, size_t r1, size_t c0, size_t c1, size_t cols) {
  float m = 0.0f;
  for (size_t r = r0; r < r1; ++r)
    for (size_t c = c0; c < c1; ++c) m = std::max(m, std::fabs(x[r * cols + c]));
  return m;
}

// Half the grid spacing at |y| for the FP8 format, from its definition.
double fp8_half_ulp(const quant_ref::Fp8Def& f, double y) {
  const double a = std::fabs(y);
  const int e = a > 0 ? std::ilogb(a) : 0;
  return std::ldexp(0.5, std::max(e, 1 - f.bias) - f.mant);
}

std::vector<float> dequant(const QuantTensor& q) {
  std::vector<float> out(q.numel());
  q.dequantize_to(out.data());
  return out;
}

std::vector<uint8_t> codes(const QuantTensor& q) { return {q.code_data(), q.code_data() + q.code_bytes()}; }
std::vector<float> scales(const QuantTensor& q) { return {q.scale_data(), q.scale_data() + q.scale_count()}; }
}  // namespace

TEST_CASE("Per-row E4M3: scale = row absmax / 448, absmax maps to ±448, RTN error ≤ half an ulp", "[quant]") {
  const size_t R = 37, C = 300;
  const auto x = random_matrix(R, C, 1);
  QuantTensor q(R, C, QuantFormat::E4M3);
  REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
  REQUIRE(q.scale_count() == R);
  const auto v = dequant(q);
  for (size_t r = 0; r < R; ++r) {
    const float am = absmax_of(x, r, r + 1, 0, C, C);
    CHECK(q.scale_data()[r] == am / 448.0f);
    for (size_t c = 0; c < C; ++c) {
      const size_t i = r * C + c;
      const double s = q.scale_data()[r];
      if (std::fabs(x[i]) == am) CHECK(std::fabs(v[i]) == Approx(am).epsilon(1e-6));
      // Half an E4M3 step at x/s, plus one float rounding each for x/s and code·s.
      const double bound = fp8_half_ulp(quant_ref::kE4M3, x[i] / s) * s + 2.0 * std::fabs(x[i]) * 0x1p-24;
      INFO("row " << r << " col " << c << " x " << x[i] << " got " << v[i]);
      REQUIRE(std::fabs(double(v[i]) - x[i]) <= bound);
      REQUIRE(v[i] == q.value(i));
      REQUIRE(q.scale_at(r, c) == q.scale_data()[r]);
    }
  }
}

TEST_CASE("Per-tensor and 128x128-block scales; power-of-two scales round up", "[quant]") {
  const size_t R = 300, C = 260;  // 3 x 3 blocks, partial at the edges
  const auto x = random_matrix(R, C, 2, 0.5f);
  SECTION("per tensor") {
    QuantTensor q(R, C, QuantFormat::E5M2, ScaleGranularity::PerTensor);
    REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
    REQUIRE(q.scale_count() == 1);
    CHECK(q.scale_data()[0] == absmax_of(x, 0, R, 0, C, C) / 57344.0f);
  }
  SECTION("block128") {
    QuantTensor q(R, C, QuantFormat::E4M3, ScaleGranularity::Block128);
    REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
    REQUIRE(q.scale_count() == 9);
    for (size_t br = 0; br < 3; ++br)
      for (size_t bc = 0; bc < 3; ++bc) {
        const float am = absmax_of(x, br * 128, std::min(R, br * 128 + 128), bc * 128, std::min(C, bc * 128 + 128), C);
        CHECK(q.scale_data()[br * 3 + bc] == am / 448.0f);
        CHECK(q.scale_at(br * 128 + 5, bc * 128 + 3) == am / 448.0f);
      }
    const auto v = dequant(q);
    for (size_t i = 0; i < x.size(); ++i) {
      const double s = q.scale_at(i / C, i % C);
      REQUIRE(std::fabs(double(v[i]) - x[i]) <= fp8_half_ulp(quant_ref::kE4M3, x[i] / s) * s + 2.0 * std::fabs(x[i]) * 0x1p-24);
    }
  }
  SECTION("power-of-two scales: smallest power of two with absmax / scale ≤ max") {
    for (auto g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor, ScaleGranularity::Block128}) {
      QuantTensor q(R, C, QuantFormat::E4M3, g, /*pow2_scales=*/true);
      REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
      const auto& L = q.scale_layout();
      std::vector<float> am(L.count(), 0.0f);
      for (size_t i = 0; i < x.size(); ++i) {
        float& m = am[L.index(i / C, i % C)];
        m = std::max(m, std::fabs(x[i]));
      }
      for (size_t k = 0; k < am.size(); ++k) {
        const double sc = q.scale_data()[k];
        int e;
        CHECK(std::frexp(sc, &e) == 0.5);  // a power of two
        CHECK(am[k] / sc <= 448.0);
        CHECK(am[k] / sc > 224.0);  // and the smallest such
      }
      // Exact scaling: x / s is exact, so the codes equal RTN of x·2^-k computed in double.
      const auto v = dequant(q);
      for (size_t i = 0; i < x.size(); i += 13) {
        const double s = q.scale_at(i / C, i % C);
        const uint8_t want = quant_ref::encode_nearest(quant_ref::kE4M3, static_cast<float>(x[i] / s), true);
        CHECK(v[i] == static_cast<float>(quant_ref::value_of(quant_ref::kE4M3, want) * s));
      }
    }
  }
}

TEST_CASE("Zero rows get scale 1 and dequantize to exact zeros; INT8 and BF16 tensors", "[quant]") {
  const size_t R = 6, C = 50;
  auto x = random_matrix(R, C, 3);
  std::fill(x.begin() + 2 * C, x.begin() + 3 * C, 0.0f);
  for (auto f : {QuantFormat::E4M3, QuantFormat::E5M2, QuantFormat::INT8}) {
    QuantTensor q(R, C, f);
    REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
    CHECK(q.scale_data()[2] == 1.0f);
    const auto v = dequant(q);
    for (size_t c = 0; c < C; ++c) CHECK(v[2 * C + c] == 0.0f);
  }
  SECTION("INT8: absmax → ±127, error ≤ scale/2") {
    QuantTensor q(R, C, QuantFormat::INT8);
    REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
    const auto v = dequant(q);
    for (size_t i = 0; i < x.size(); ++i) {
      const double s = q.scale_at(i / C, 0);
      REQUIRE(std::fabs(double(v[i]) - x[i]) <= 0.5 * s * (1 + 1e-6) + std::fabs(x[i]) * 0x1p-23);
      if (x[i] != 0 && std::fabs(x[i]) == absmax_of(x, i / C, i / C + 1, 0, C, C))
        CHECK(std::fabs(v[i] / s) == Approx(127.0).epsilon(1e-6));
    }
  }
  SECTION("BF16: unscaled, equal to per-element RNE, two bytes per element") {
    QuantTensor q(R, C, QuantFormat::BF16);
    REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
    CHECK(q.scale_count() == 0);
    CHECK(q.code_bytes() == R * C * 2);
    const auto v = dequant(q);
    for (size_t i = 0; i < x.size(); ++i) REQUIRE(v[i] == bf16_decode(bf16_encode_rne(x[i])));
  }
}

TEST_CASE("NaN/Inf input is counted and leaves the tensor untouched; SR without a key throws", "[quant]") {
  const size_t R = 8, C = 40;
  auto x = random_matrix(R, C, 4);
  for (auto g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor, ScaleGranularity::Block128}) {
    for (auto f : {QuantFormat::E4M3, QuantFormat::BF16, QuantFormat::INT8}) {
      QuantTensor q(R, C, f, g);
      REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
      const auto c0 = codes(q);
      const auto s0 = scales(q);
      auto bad = x;
      bad[5] = std::nanf("");
      bad[3 * C + 7] = -INFINITY;
      bad[7 * C] = INFINITY;
      CHECK(q.quantize_from(bad.data(), Rounding::RTN) == 3);
      CHECK(codes(q) == c0);
      CHECK(scales(q) == s0);
    }
  }
  QuantTensor q(R, C, QuantFormat::E4M3);
  CHECK_THROWS_AS((void)q.quantize_from(x.data(), Rounding::SR, nullptr), Error);
}

TEST_CASE("SR: same key → same codes, different step or tensor → different codes, row ranges = whole", "[quant]") {
  const size_t R = 260, C = 131;  // C not a multiple of 4: Philox groups straddle rows
  const auto x = random_matrix(R, C, 5);
  for (auto g : {ScaleGranularity::PerRow, ScaleGranularity::Block128}) {
    QuantTensor a(R, C, QuantFormat::E4M3, g), b(R, C, QuantFormat::E4M3, g), parts(R, C, QuantFormat::E4M3, g);
    const SrKey k{1234, 10, 3};
    REQUIRE(a.quantize_from(x.data(), Rounding::SR, &k) == 0);
    REQUIRE(b.quantize_from(x.data(), Rounding::SR, &k) == 0);
    CHECK(codes(a) == codes(b));
    // Rows [0,128), [128,256), [256,260): valid bands for both granularities.
    for (size_t r0 : {size_t{0}, size_t{128}, size_t{256}}) {
      const size_t r1 = std::min(R, r0 + 128);
      REQUIRE(parts.quantize_rows_from(r0, r1, x.data() + r0 * C, Rounding::SR, &k) == 0);
    }
    CHECK(codes(parts) == codes(a));
    CHECK(scales(parts) == scales(a));
    // The documented definition: element i uses random_bits(key, i), i the flat index.
    const auto ca = codes(a);
    for (size_t i = 0; i < x.size(); ++i)
      REQUIRE(ca[i] == e4m3_encode_sr(x[i] / a.scale_at(i / C, i % C), random_bits(k, i)));
    for (SrKey other : {SrKey{1234, 11, 3}, SrKey{1234, 10, 4}, SrKey{1235, 10, 3}}) {
      REQUIRE(b.quantize_from(x.data(), Rounding::SR, &other) == 0);
      const auto ca = codes(a), cb = codes(b);
      size_t differ = 0;
      for (size_t i = 0; i < ca.size(); ++i) differ += ca[i] != cb[i];
      CHECK(differ > ca.size() / 10);
    }
  }
  QuantTensor t(R, C, QuantFormat::E4M3, ScaleGranularity::Block128);
  CHECK_THROWS_AS((void)t.quantize_rows_from(1, 129, x.data() + C, Rounding::RTN), Error);
}

TEST_CASE("Results do not depend on the OpenMP thread count", "[quant]") {
  const size_t R = 512, C = 384;  // large enough to take the parallel paths
  const auto x = random_matrix(R, C, 6);
  const SrKey k{77, 2, 1};
  for (auto f : {QuantFormat::E4M3, QuantFormat::E5M2, QuantFormat::BF16, QuantFormat::INT8})
    for (auto g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor, ScaleGranularity::Block128})
      for (auto rnd : {Rounding::RTN, Rounding::SR}) {
        std::vector<std::vector<uint8_t>> cs;
        std::vector<std::vector<float>> ss, vs, fq;
        for (int threads : {1, 3, 4}) {
          omp_set_num_threads(threads);
          QuantTensor q(R, C, f, g);
          REQUIRE(q.quantize_from(x.data(), rnd, &k) == 0);
          cs.push_back(codes(q));
          ss.push_back(scales(q));
          vs.push_back(dequant(q));
          std::vector<float> out(x.size());
          quantize_dequantize_rows(f, x.data(), out.data(), R, C);
          fq.push_back(out);
        }
        omp_set_num_threads(omp_get_num_procs());
        for (size_t i = 1; i < cs.size(); ++i) {
          CHECK(cs[i] == cs[0]);
          CHECK(ss[i] == ss[0]);
          CHECK(vs[i] == vs[0]);
          CHECK(fq[i] == fq[0]);
        }
      }
}

TEST_CASE("dequantize_rows, code/scale byte counts, raw round trip and checkpoint checks", "[quant]") {
  const size_t R = 20, C = 33;
  const auto x = random_matrix(R, C, 7);
  QuantTensor q(R, C, QuantFormat::E4M3, ScaleGranularity::PerRow);
  REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
  CHECK(q.code_bytes() == R * C);
  CHECK(q.scale_bytes() == R * sizeof(float));
  const auto all = dequant(q);
  std::vector<float> part((12 - 5) * C);
  q.dequantize_rows(5, 12, part.data());
  CHECK(std::equal(part.begin(), part.end(), all.begin() + 5 * C));

  QuantTensor back(R, C, QuantFormat::E4M3, ScaleGranularity::PerRow);
  back.load_raw(q.code_data(), q.code_bytes(), q.scale_data(), q.scale_count());
  CHECK(dequant(back) == all);
  CHECK_THROWS_AS(back.load_raw(q.code_data(), q.code_bytes() - 1, q.scale_data(), q.scale_count()), CheckpointError);
  CHECK_THROWS_AS(back.load_raw(q.code_data(), q.code_bytes(), q.scale_data(), q.scale_count() - 1), CheckpointError);
  auto s = scales(q);
  s[3] = std::nanf("");
  CHECK_THROWS_AS(back.load_raw(q.code_data(), q.code_bytes(), s.data(), s.size()), CheckpointError);
  s[3] = 0.0f;
  CHECK_THROWS_AS(back.load_raw(q.code_data(), q.code_bytes(), s.data(), s.size()), CheckpointError);
  CHECK(dequant(back) == all);  // failed loads change nothing

  QuantTensor b16(R, C, QuantFormat::BF16), b16_back(R, C, QuantFormat::BF16);
  REQUIRE(b16.quantize_from(x.data(), Rounding::RTN) == 0);
  b16_back.load_raw(b16.code_data(), b16.code_bytes(), nullptr, 0);
  CHECK(dequant(b16_back) == dequant(b16));
  CHECK_THROWS_AS(q.value(R * C), Error);
}

TEST_CASE("Per-row fake quantization equals a per-row QuantTensor round trip, in place too", "[quant]") {
  const size_t R = 64, C = 96;
  auto x = random_matrix(R, C, 8);
  for (auto f : {QuantFormat::E4M3, QuantFormat::E5M2}) {
    QuantTensor q(R, C, f, ScaleGranularity::PerRow);
    REQUIRE(q.quantize_from(x.data(), Rounding::RTN) == 0);
    std::vector<float> out(x.size());
    CHECK((f == QuantFormat::E4M3 ? quantize_dequantize_rows_e4m3(x.data(), out.data(), R, C)
                                  : quantize_dequantize_rows_e5m2(x.data(), out.data(), R, C)) == 0);
    CHECK(out == dequant(q));
    auto in_place = x;
    quantize_dequantize_rows(f, in_place.data(), in_place.data(), R, C);
    CHECK(in_place == out);
  }
  x[10] = std::nanf("");
  x[200] = 0.0f;
  const float row2_absmax = absmax_of(x, 2, 3, 0, C, C);  // 200 = row 2, col 8
  x[200] = INFINITY;
  std::vector<float> out(x.size());
  CHECK(quantize_dequantize_rows_e4m3(x.data(), out.data(), R, C) == 2);
  CHECK(std::isnan(out[10]));
  CHECK(out[200] == 448.0f * (row2_absmax / 448.0f));  // Inf saturates; the scale ignores it
}

TEST_CASE("Config names parse to formats, roundings and granularities; unknown names are ConfigErrors", "[quant]") {
  for (auto f : {QuantFormat::E4M3, QuantFormat::E5M2, QuantFormat::BF16, QuantFormat::INT8})
    CHECK(parse_quant_format(to_string(f)) == f);
  for (auto g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor, ScaleGranularity::Block128})
    CHECK(parse_scale_granularity(to_string(g)) == g);
  for (auto r : {Rounding::RTN, Rounding::SR}) CHECK(parse_rounding(to_string(r)) == r);
  CHECK(parse_rounding("sr") == Rounding::SR);
  CHECK_THROWS_AS(parse_quant_format("fp8"), ConfigError);
  CHECK_THROWS_AS(parse_scale_granularity("rows"), ConfigError);
  CHECK_THROWS_AS(parse_rounding("nearest"), ConfigError);
  CHECK(format_max(QuantFormat::E4M3) == 448.0f);
  CHECK(format_max(QuantFormat::E5M2) == 57344.0f);
  CHECK(format_max(QuantFormat::INT8) == 127.0f);
  CHECK(format_max(QuantFormat::BF16) == bf16_decode(0x7F7F));
  // Scale edge cases: zero block → 1; tiny absmax is floored at the smallest normal float.
  CHECK(scale_from_absmax(0.0f, 448.0f, false) == 1.0f);
  CHECK(scale_from_absmax(1e-43f, 448.0f, false) == kMinScale);
  CHECK(scale_from_absmax(448.0f, 448.0f, true) == 1.0f);
  CHECK(scale_from_absmax(449.0f, 448.0f, true) == 2.0f);
  CHECK(scale_from_absmax(672.0f, 448.0f, true) == 2.0f);   // 1.5 rounds up
  CHECK(scale_from_absmax(672.0f, 448.0f, false) == 1.5f);
  CHECK(scale_from_absmax(0.4375f, 448.0f, true) == std::ldexp(1.0f, -10));  // exactly 2^-10 stays
}

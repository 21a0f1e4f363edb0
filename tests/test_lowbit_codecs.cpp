// Sub-byte weight codecs (quant/lowbit.h) and the packed tensor layer (quant/lowbit_tensor.h):
// every code of every format, RTN against a float64 reference, SR unbiasedness within a stated
// statistical bound, packing, group absmax and absmean scales (fp32 and bf16), zero/NaN/Inf,
// reproducible SR independent of row splits and thread count, and exact bytes per parameter.
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "quant/lowbit.h"
#include "quant/lowbit_tensor.h"

using namespace eco;

namespace {
struct FormatUnder {
  const char* name;
  LowbitFormat format;
  int bits, lo, hi;
};
const FormatUnder kFormats[] = {
    {"int4", LowbitFormat::INT4, 4, -7, 7},
    {"int2", LowbitFormat::INT2, 2, -2, 1},
    {"ternary", LowbitFormat::Ternary, 2, -1, 1},
};

// Nearest integer with ties to even, after clamping to [lo, hi]; NaN → 0. Float64 reference.
int reference_rtn(double y, int lo, int hi) {
  if (std::isnan(y)) return 0;
  y = std::min<double>(hi, std::max<double>(lo, y));
  const double f = std::floor(y), d = y - f;
  int q = static_cast<int>(f);
  if (d > 0.5 || (d == 0.5 && (q & 1))) ++q;
  return q;
}

std::vector<float> random_matrix(size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> mag(-2.0f, 2.0f);
  std::vector<float> x(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    const float m = 0.02f * std::pow(10.0f, mag(rng));  // rows of very different magnitude
    for (size_t c = 0; c < cols; ++c) x[r * cols + c] = m * n(rng);
  }
  return x;
}

LowbitLayout make_layout(LowbitFormat f, size_t rows, size_t cols, LowbitScaleGranularity g, size_t group = 128,
                         LowbitScaleDtype d = LowbitScaleDtype::F32) {
  LowbitLayout l;
  l.format = f;
  l.rows = rows;
  l.cols = cols;
  l.granularity = g;
  l.group_size = group;
  l.scale_dtype = d;
  return l;
}

std::vector<float> dequant(const LowbitTensor& t) {
  std::vector<float> out(t.layout.numel());
  t.dequantize(out.data());
  return out;
}

float bf16_rne(float x) { return bf16_decode(bf16_encode_rne(x)); }
}  // namespace

TEST_CASE("Low-bit codecs: every code round-trips; fields are two's complement; constants agree", "[lowbit]") {
  for (const auto& f : kFormats) {
    INFO(f.name);
    CHECK(lowbit_bits(f.format) == f.bits);
    CHECK(lowbit_min_code(f.format) == f.lo);
    CHECK(lowbit_max_code(f.format) == f.hi);
    for (int q = f.lo; q <= f.hi; ++q) {
      INFO("code value " << q);
      const uint8_t c = lowbit_encode_rtn(f.format, static_cast<float>(q));
      CHECK(c == static_cast<uint8_t>(q & ((1 << f.bits) - 1)));
      CHECK(c >> f.bits == 0);
      CHECK(lowbit_decode(f.format, c) == static_cast<float>(q));
      // Exact grid values are never moved by SR, whatever the random bits.
      for (uint32_t r : {0u, 1u, 0x80000000u, 0xFFFFFFFFu}) CHECK(lowbit_encode_sr(f.format, static_cast<float>(q), r) == c);
    }
  }
  // The codec decodes every field by sign extension: INT4 0x8 is −8 and INT2 field 2 is −2 (the
  // ternary encoders never produce field 2; INT4 never produces 0x8).
  CHECK(Int4Codec::decode(0x8) == -8.0f);
  CHECK(Int4Codec::decode(0xF) == -1.0f);
  CHECK(Int4Codec::decode(0x7) == 7.0f);
  CHECK(Int2Codec::decode(0x2) == -2.0f);
  CHECK(TernaryCodec::decode(0x3) == -1.0f);
  // Decoders ignore the bits above the field.
  CHECK(Int4Codec::decode(0xF3) == 3.0f);
  CHECK(TernaryCodec::decode(0xFD) == 1.0f);
  // -0 and tiny values encode as 0.
  for (const auto& f : kFormats) {
    CHECK(lowbit_encode_rtn(f.format, -0.0f) == 0);
    CHECK(lowbit_encode_rtn(f.format, -1e-30f) == 0);
  }
}

TEST_CASE("Low-bit RTN equals nearest-even with clamping over a fine sweep, ties included", "[lowbit]") {
  for (const auto& f : kFormats) {
    INFO(f.name);
    int mismatches = 0;
    // Every multiple of 1/256 over the grid and one step beyond it: all midpoints are on it.
    for (int k = (f.lo - 2) * 256; k <= (f.hi + 2) * 256; ++k) {
      const float y = static_cast<float>(k) / 256.0f;
      const int want = reference_rtn(y, f.lo, f.hi);
      const int got = static_cast<int>(lowbit_decode(f.format, lowbit_encode_rtn(f.format, y)));
      if (got != want && mismatches++ < 5) UNSCOPED_INFO("y=" << y << " got " << got << " want " << want);
      // Neighbours of every midpoint round away from it.
      if (k % 128 == 0 && k % 256 != 0) {
        const float below = std::nextafter(y, -1e9f), above = std::nextafter(y, 1e9f);
        CHECK(lowbit_decode(f.format, lowbit_encode_rtn(f.format, below)) == reference_rtn(below, f.lo, f.hi));
        CHECK(lowbit_decode(f.format, lowbit_encode_rtn(f.format, above)) == reference_rtn(above, f.lo, f.hi));
      }
    }
    CHECK(mismatches == 0);
  }
  // Ties to even, spot values.
  CHECK(Int4Codec::decode(Int4Codec::encode_rtn(0.5f)) == 0.0f);
  CHECK(Int4Codec::decode(Int4Codec::encode_rtn(1.5f)) == 2.0f);
  CHECK(Int4Codec::decode(Int4Codec::encode_rtn(-2.5f)) == -2.0f);
  CHECK(Int4Codec::decode(Int4Codec::encode_rtn(6.5f)) == 6.0f);
  CHECK(Int2Codec::decode(Int2Codec::encode_rtn(-1.5f)) == -2.0f);
  CHECK(TernaryCodec::decode(TernaryCodec::encode_rtn(-0.5f)) == 0.0f);
  // Specials: NaN → 0, ±Inf and overflow clamp.
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const auto& f : kFormats) {
    INFO(f.name);
    CHECK(lowbit_encode_rtn(f.format, nan) == 0);
    CHECK(lowbit_encode_sr(f.format, nan, 0u) == 0);
    CHECK(lowbit_decode(f.format, lowbit_encode_rtn(f.format, inf)) == f.hi);
    CHECK(lowbit_decode(f.format, lowbit_encode_rtn(f.format, -inf)) == f.lo);
    CHECK(lowbit_decode(f.format, lowbit_encode_sr(f.format, 1e30f, 0u)) == f.hi);
    CHECK(lowbit_decode(f.format, lowbit_encode_sr(f.format, -1e30f, 0u)) == f.lo);
  }
}

TEST_CASE("Low-bit SR: threshold rule exact, unbiased within 5 sigma, clamped values deterministic", "[lowbit]") {
  // y = 2.25: away from zero iff r < 0.25 · 2^32 = 2^30.
  CHECK(Int4Codec::decode(Int4Codec::encode_sr(2.25f, (1u << 30) - 1)) == 3.0f);
  CHECK(Int4Codec::decode(Int4Codec::encode_sr(2.25f, 1u << 30)) == 2.0f);
  CHECK(Int4Codec::decode(Int4Codec::encode_sr(-2.25f, (1u << 30) - 1)) == -3.0f);
  CHECK(Int4Codec::decode(Int4Codec::encode_sr(-2.25f, 1u << 30)) == -2.0f);
  CHECK(Int2Codec::decode(Int2Codec::encode_sr(-1.75f, 0xBFFFFFFFu)) == -2.0f);
  CHECK(Int2Codec::decode(Int2Codec::encode_sr(-1.75f, 0xC0000000u)) == -1.0f);

  // Mean of N draws of decode(SR(y)) vs y. Each draw is lo + Bernoulli(f), so the mean has
  // standard deviation sqrt(f(1−f)/N); a 5-sigma bound fails by chance with p ≈ 6e-7 per value.
  struct Probe {
    LowbitFormat format;
    float y;
  };
  const Probe probes[] = {{LowbitFormat::INT4, 0.3f},    {LowbitFormat::INT4, -1.7f},  {LowbitFormat::INT4, 2.49f},
                          {LowbitFormat::INT4, -6.01f},  {LowbitFormat::INT4, 6.999f}, {LowbitFormat::INT4, 0.001f},
                          {LowbitFormat::INT2, -1.25f},  {LowbitFormat::INT2, 0.7f},   {LowbitFormat::INT2, -0.1f},
                          {LowbitFormat::Ternary, 0.37f}, {LowbitFormat::Ternary, -0.9f}, {LowbitFormat::Ternary, 0.5f}};
  const int N = 200000;
  RandomKey key{12345, 7, 3};
  uint64_t idx = 0;
  for (const Probe& p : probes) {
    double sum = 0.0;
    for (int i = 0; i < N; ++i) sum += lowbit_decode(p.format, lowbit_encode_sr(p.format, p.y, random_bits(key, idx++)));
    const double mean = sum / N;
    const double f = std::fabs(p.y) - std::floor(std::fabs(p.y));
    const double sigma = std::sqrt(f * (1.0 - f) / N);
    INFO(to_string(p.format) << " y=" << p.y << " mean=" << mean << " sigma=" << sigma);
    CHECK(std::fabs(mean - p.y) <= 5.0 * sigma + 1e-9);
  }
  // Beyond the grid, SR is the clamp and no randomness is left.
  for (uint32_t r : {0u, 12345u, 0xFFFFFFFFu}) {
    CHECK(Int4Codec::decode(Int4Codec::encode_sr(7.6f, r)) == 7.0f);
    CHECK(Int2Codec::decode(Int2Codec::encode_sr(-2.4f, r)) == -2.0f);
    CHECK(Int2Codec::decode(Int2Codec::encode_sr(1.3f, r)) == 1.0f);
    CHECK(TernaryCodec::decode(TernaryCodec::encode_sr(-1.01f, r)) == -1.0f);
  }
}

TEST_CASE("Packing: low bits hold the first element; random round trips; neighbours untouched", "[lowbit]") {
  uint8_t b[2] = {0, 0};
  packed_set<4>(b, 0, 0xA);
  CHECK(b[0] == 0x0A);
  packed_set<4>(b, 1, 0x3);
  CHECK(b[0] == 0x3A);
  packed_set<4>(b, 2, 0xF);
  CHECK(b[1] == 0x0F);
  uint8_t q[1] = {0};
  for (size_t i = 0; i < 4; ++i) packed_set<2>(q, i, static_cast<uint8_t>((i + 1) & 3));  // 1, 2, 3, 0
  CHECK(q[0] == 0x39);
  CHECK(packed_get<2>(q, 1) == 2);
  const uint8_t four[4] = {1, 2, 3, 0};
  CHECK(packed_byte<2>(four, 4) == 0x39);
  CHECK(packed_byte<2>(four, 2) == 0x09);  // missing tail codes are 0
  const uint8_t two[2] = {0xA, 0x3};
  CHECK(packed_byte<4>(two, 2) == 0x3A);

  CHECK(packed_byte_count(0, 4) == 0);
  CHECK(packed_byte_count(1, 4) == 1);
  CHECK(packed_byte_count(3, 4) == 2);
  CHECK(packed_byte_count(5, 2) == 2);
  CHECK(packed_byte_count(8, 2) == 2);
  CHECK(packed_byte_count(9, 2) == 3);

  std::mt19937 rng(7);
  for (int bits : {2, 4}) {
    for (size_t n : {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{7}, size_t{8}, size_t{9}, size_t{31},
                     size_t{33}, size_t{1001}}) {
      INFO("bits " << bits << " n " << n);
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
      std::vector<uint8_t> bytes(packed_byte_count(n, bits), 0);
      for (size_t i = 0; i < n; ++i) packed_set(bytes.data(), i, bits, codes[i]);
      bool ok = true;
      for (size_t i = 0; i < n; ++i) ok = ok && packed_get(bytes.data(), i, bits) == codes[i];
      CHECK(ok);
      // Whole-byte packing gives the same bytes.
      const size_t per = 8 / bits;
      for (size_t k = 0; k < bytes.size(); ++k) {
        const uint8_t whole = bits == 4 ? packed_byte<4>(codes.data() + k * per, std::min(per, n - k * per))
                                        : packed_byte<2>(codes.data() + k * per, std::min(per, n - k * per));
        CHECK(whole == bytes[k]);
      }
      // Setting one element (with garbage in the high bits of the argument) leaves every other
      // bit of the array as it was.
      std::vector<uint8_t> noise(bytes.size());
      for (auto& v : noise) v = static_cast<uint8_t>(rng());
      for (int trial = 0; trial < 20; ++trial) {
        const size_t i = rng() % n;
        const uint8_t code = static_cast<uint8_t>(rng());
        std::vector<uint8_t> after = noise;
        packed_set(after.data(), i, bits, code);
        CHECK(packed_get(after.data(), i, bits) == (code & ((1u << bits) - 1u)));
        const uint8_t field_mask = static_cast<uint8_t>(((1u << bits) - 1u) << ((i % per) * bits));
        bool untouched = true;
        for (size_t k = 0; k < after.size(); ++k) {
          const uint8_t keep = k == i / per ? static_cast<uint8_t>(~field_mask) : 0xFF;
          untouched = untouched && (after[k] & keep) == (noise[k] & keep);
        }
        CHECK(untouched);
      }
    }
  }
}

TEST_CASE("INT4 group scales along K: absmax maps to ±7, half-step error, bf16 scales consistent", "[lowbit]") {
  const size_t R = 5, C = 200;  // 200 is not a multiple of 32, 64 or 128: every row ends in a partial group
  const auto x = random_matrix(R, C, 11);
  for (size_t g : {size_t{32}, size_t{64}, size_t{128}}) {
    for (LowbitScaleDtype d : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
      INFO("group " << g << " dtype " << to_string(d));
      LowbitTensor t(make_layout(LowbitFormat::INT4, R, C, LowbitScaleGranularity::Group, g, d));
      REQUIRE(t.layout.scales_per_row() == (C + g - 1) / g);
      REQUIRE(t.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
      const auto out = dequant(t);
      for (size_t r = 0; r < R; ++r) {
        for (size_t c0 = 0; c0 < C; c0 += g) {
          const size_t c1 = std::min(C, c0 + g);
          float absmax = 0.0f;
          size_t arg = c0;
          for (size_t c = c0; c < c1; ++c)
            if (std::fabs(x[r * C + c]) > absmax) absmax = std::fabs(x[r * C + c]), arg = c;
          const float s = t.scale_at(r, c0);
          const float exact = absmax / 7.0f;
          if (d == LowbitScaleDtype::F32) {
            CHECK(s == exact);
          } else {
            CHECK(s == bf16_rne(s));  // representable in bf16
            CHECK(s >= exact);        // rounded up: the absmax is never clipped
            CHECK(s <= exact * (1.0f + 1.0f / 128.0f));
          }
          CHECK(std::abs(t.code_at(r, arg)) == 7);
          CHECK(t.code_at(r, arg) * x[r * C + arg] > 0.0f);
          for (size_t c = c0; c < c1; ++c) {
            // Codes come from the stored scale; the value is within half a step of x.
            CHECK(t.code_at(r, c) == reference_rtn(static_cast<double>(x[r * C + c] / s), -7, 7));
            CHECK(out[r * C + c] == static_cast<float>(t.code_at(r, c)) * s);
            CHECK(std::fabs(out[r * C + c] - x[r * C + c]) <= 0.5f * s * (1.0f + 1e-6f));
          }
        }
      }
    }
  }
}

TEST_CASE("INT4 per-row and per-tensor absmax scales", "[lowbit]") {
  const size_t R = 7, C = 50;
  const auto x = random_matrix(R, C, 12);
  LowbitTensor row(make_layout(LowbitFormat::INT4, R, C, LowbitScaleGranularity::PerRow));
  LowbitTensor ten(make_layout(LowbitFormat::INT4, R, C, LowbitScaleGranularity::PerTensor));
  REQUIRE(row.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
  REQUIRE(ten.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
  float all = 0.0f;
  for (size_t r = 0; r < R; ++r) {
    float m = 0.0f;
    for (size_t c = 0; c < C; ++c) m = std::max(m, std::fabs(x[r * C + c]));
    CHECK(row.scale_at(r, 0) == m / 7.0f);
    CHECK(row.scale_at(r, C - 1) == m / 7.0f);
    all = std::max(all, m);
  }
  CHECK(ten.scale_at(R - 1, C - 1) == all / 7.0f);
  CHECK(ten.layout.scale_count() == 1);
}

TEST_CASE("Absmean scales (INT2, ternary) per tensor, per row and per group vs a float64 reference", "[lowbit]") {
  const size_t R = 9, C = 130;
  auto x = random_matrix(R, C, 13);
  for (LowbitFormat f : {LowbitFormat::INT2, LowbitFormat::Ternary}) {
    for (LowbitScaleDtype d : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
      INFO(to_string(f) << " " << to_string(d));
      auto want_scale = [&](double mean) {
        const float m = static_cast<float>(mean);
        return d == LowbitScaleDtype::F32 ? m : bf16_rne(m);
      };
      LowbitTensor ten(make_layout(f, R, C, LowbitScaleGranularity::PerTensor, 128, d));
      LowbitTensor row(make_layout(f, R, C, LowbitScaleGranularity::PerRow, 128, d));
      LowbitTensor grp(make_layout(f, R, C, LowbitScaleGranularity::Group, 64, d));
      REQUIRE(ten.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
      REQUIRE(row.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
      REQUIRE(grp.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
      double total = 0.0;
      for (size_t r = 0; r < R; ++r) {
        double sum = 0.0;
        for (size_t c = 0; c < C; ++c) sum += std::fabs(static_cast<double>(x[r * C + c]));
        total += sum;
        const float s = row.scale_at(r, 0);
        CHECK(std::fabs(s - sum / C) <= (d == LowbitScaleDtype::F32 ? 1e-6 : 4e-3) * (sum / C));
        CHECK(s == want_scale(sum / C));
        for (size_t c0 = 0; c0 < C; c0 += 64) {
          const size_t c1 = std::min(C, c0 + 64);
          double gs = 0.0;
          for (size_t c = c0; c < c1; ++c) gs += std::fabs(static_cast<double>(x[r * C + c]));
          CHECK(grp.scale_at(r, c0) == want_scale(gs / static_cast<double>(c1 - c0)));
        }
      }
      CHECK(ten.scale_at(0, 0) == want_scale(total / static_cast<double>(R * C)));
      // Every element: code = RTN of x / stored scale on the format's grid, value within half a
      // step of the clamped x.
      const int lo = lowbit_min_code(f), hi = lowbit_max_code(f);
      const auto out = dequant(row);
      for (size_t r = 0; r < R; ++r) {
        const float s = row.scale_at(r, 0);
        for (size_t c = 0; c < C; ++c) {
          const float xv = x[r * C + c];
          CHECK(row.code_at(r, c) == reference_rtn(static_cast<double>(xv / s), lo, hi));
          const float clamped = std::min(hi * s, std::max(lo * s, xv));
          CHECK(std::fabs(out[r * C + c] - clamped) <= 0.5f * s * (1.0f + 1e-6f));
        }
      }
    }
  }
}

TEST_CASE("Scale maintenance: kept scales make re-quantization exact; re-deriving absmean shrinks it",
          "[lowbit]") {
  const size_t R = 16, C = 96;
  const auto x = random_matrix(R, C, 14);
  for (const auto& f : kFormats) {
    for (auto g : {LowbitScaleGranularity::PerTensor, LowbitScaleGranularity::PerRow, LowbitScaleGranularity::Group}) {
      INFO(f.name << " " << to_string(g));
      LowbitTensor t(make_layout(f.format, R, C, g, 32));
      REQUIRE(t.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
      const auto w = dequant(t);
      LowbitTensor again = t;
      RandomKey key{1, 2, 3};
      REQUIRE(again.quantize(w.data(), Rounding::SR, LowbitScaleUpdate::Keep, &key) == 0);
      CHECK(again.codes == t.codes);  // grid values are fixed points of RTN and SR under the same scale
      CHECK(again.scales == t.scales);
      if (f.format == LowbitFormat::INT4) {
        // Absmax of the dequantized group is 7·s: recomputing gives the same scale back.
        REQUIRE(again.quantize(w.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
        CHECK(again.codes == t.codes);
        CHECK(again.scales == t.scales);
      } else {
        // mean |q·s| = s · (fraction of nonzero codes) < s: an absmean scale recomputed from its
        // own quantized weights shrinks every step, which is why it is kept after the first one.
        REQUIRE(again.quantize(w.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
        CHECK(again.scale_at(0, 0) < t.scale_at(0, 0));
      }
    }
  }
}

TEST_CASE("Low-bit SR tensors: reproducible, split-independent, thread-independent, unbiased", "[lowbit]") {
  const size_t R = 64, C = 600;  // 38400 elements: above the OpenMP threshold
  const auto x = random_matrix(R, C, 15);
  for (const auto& f : kFormats) {
    INFO(f.name);
    const auto layout = make_layout(f.format, R, C, f.format == LowbitFormat::INT4 ? LowbitScaleGranularity::Group
                                                                                   : LowbitScaleGranularity::PerRow,
                                    64);
    const RandomKey key{99, 5, 17};
    LowbitTensor a(layout), b(layout), c(layout);
    REQUIRE(a.quantize(x.data(), Rounding::SR, LowbitScaleUpdate::Recompute, &key) == 0);
    REQUIRE(b.quantize(x.data(), Rounding::SR, LowbitScaleUpdate::Recompute, &key) == 0);
    CHECK(a.codes == b.codes);
    // Row ranges of odd sizes give the same codes and scales.
    for (size_t r0 = 0; r0 < R;) {
      const size_t r1 = std::min(R, r0 + 7);
      REQUIRE(lowbit_quantize_rows(layout, r0, r1, x.data() + r0 * C, Rounding::SR, &key,
                                   LowbitScaleUpdate::Recompute, c.codes.data(), c.scales.data()) == 0);
      r0 = r1;
    }
    CHECK(c.codes == a.codes);
    CHECK(c.scales == a.scales);
    // Thread count does not matter.
    const int saved = omp_get_max_threads();
    for (int threads : {1, 3}) {
      omp_set_num_threads(threads);
      LowbitTensor d(layout);
      REQUIRE(d.quantize(x.data(), Rounding::SR, LowbitScaleUpdate::Recompute, &key) == 0);
      CHECK(d.codes == a.codes);
      CHECK(d.scales == a.scales);
    }
    omp_set_num_threads(saved);
    // Another step draws other bits.
    RandomKey next = key;
    next.step += 1;
    REQUIRE(b.quantize(x.data(), Rounding::SR, LowbitScaleUpdate::Recompute, &next) == 0);
    CHECK(b.codes != a.codes);
  }

  // Unbiased per element: K draws with the scale kept; each draw is a two-point variable with
  // gap s, so the mean's standard deviation is s·sqrt(f(1−f)/K) (0 for values on the grid).
  const size_t r = 4, cols = 32, K = 4000;
  const auto y = random_matrix(r, cols, 16);
  for (const auto& f : kFormats) {
    INFO(f.name);
    LowbitTensor t(make_layout(f.format, r, cols, LowbitScaleGranularity::PerRow));
    REQUIRE(t.quantize(y.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
    std::vector<double> sum(r * cols, 0.0);
    for (uint32_t step = 0; step < K; ++step) {
      const RandomKey k{3, step, 1};
      REQUIRE(t.quantize(y.data(), Rounding::SR, LowbitScaleUpdate::Keep, &k) == 0);
      const auto v = dequant(t);
      for (size_t i = 0; i < v.size(); ++i) sum[i] += v[i];
    }
    int bad = 0;
    for (size_t i = 0; i < sum.size(); ++i) {
      const double s = t.scale_at(i / cols, 0);
      const double clamped = std::min(f.hi * s, std::max(f.lo * s, static_cast<double>(y[i])));
      const double u = std::fabs(clamped) / s, frac = u - std::floor(u);
      const double sigma = s * std::sqrt(frac * (1.0 - frac) / K);
      if (std::fabs(sum[i] / K - clamped) > 5.0 * sigma + 1e-6 * s) ++bad;
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("Zero, NaN and Inf: zero groups decode to 0 with scale 1, specials counted and excluded",
          "[lowbit]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (LowbitScaleDtype d : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
    INFO(to_string(d));
    // INT4, group 32, 3 groups: all zero; NaN/+Inf/−Inf mixed with finite values; all NaN.
    const size_t C = 96;
    std::vector<float> x(C, 0.0f);
    for (size_t c = 32; c < 64; ++c) x[c] = 0.01f * (static_cast<float>(c) - 40.0f);
    x[33] = nan;
    x[34] = inf;
    x[35] = -inf;
    for (size_t c = 64; c < 96; ++c) x[c] = nan;
    LowbitTensor t(make_layout(LowbitFormat::INT4, 1, C, LowbitScaleGranularity::Group, 32, d));
    CHECK(t.quantize(x.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 3 + 32);
    const auto out = dequant(t);
    CHECK(t.scale_at(0, 0) == 1.0f);
    CHECK(t.scale_at(0, 64) == 1.0f);
    for (size_t c = 0; c < 32; ++c) CHECK(out[c] == 0.0f);
    for (size_t c = 64; c < 96; ++c) CHECK(out[c] == 0.0f);
    const float s = t.scale_at(0, 32);
    CHECK(s == lowbit_scale_from_absmax(std::fabs(x[63]), 7.0f, d));  // x[63] = 0.23 is the finite absmax
    CHECK(t.code_at(0, 33) == 0);
    CHECK(t.code_at(0, 34) == 7);
    CHECK(t.code_at(0, 35) == -7);
    CHECK(t.code_at(0, 63) == 7);
    for (size_t c = 0; c < C; ++c) CHECK(std::isfinite(out[c]));

    // Absmean: NaN and Inf are left out of the mean (over the finite count); all-zero → scale 1.
    std::vector<float> y = {0.5f, -1.5f, nan, inf, 1.0f, 0.0f, 0.0f, 0.0f};
    LowbitTensor tt(make_layout(LowbitFormat::Ternary, 2, 4, LowbitScaleGranularity::PerRow, 128, d));
    CHECK(tt.quantize(y.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 2);
    CHECK(tt.scale_at(0, 0) == 1.0f);  // mean(0.5, 1.5) = 1
    CHECK(tt.code_at(0, 2) == 0);
    CHECK(tt.code_at(0, 3) == 1);
    CHECK(tt.scale_at(1, 0) == 0.25f);  // zeros count: mean(1, 0, 0, 0)
  }
  {
    std::vector<float> y = {0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f, 0.0f, 0.0f};
    LowbitTensor tt(make_layout(LowbitFormat::INT2, 2, 4, LowbitScaleGranularity::PerRow));
    CHECK(tt.quantize(y.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
    CHECK(tt.scale_at(0, 0) == 1.0f);   // all zero: placeholder scale 1, codes 0
    CHECK(tt.scale_at(1, 0) == 0.25f);  // 1 → 4 steps → clamps to +1
    CHECK(tt.code_at(1, 0) == 1);
    const auto out = dequant(tt);
    for (size_t c = 0; c < 4; ++c) CHECK(out[c] == 0.0f);
  }
  // Tiny groups: the scale floors at 2^-126 and x / scale stays finite.
  {
    std::vector<float> y(32, 1e-40f);
    LowbitTensor t(make_layout(LowbitFormat::INT4, 1, 32, LowbitScaleGranularity::Group, 32));
    CHECK(t.quantize(y.data(), Rounding::RTN, LowbitScaleUpdate::Recompute) == 0);
    CHECK(t.scale_at(0, 0) == kLowbitMinScale);
    CHECK(t.code_at(0, 0) == 0);
  }
  CHECK(lowbit_scale_from_absmax(0.0f, 7.0f, LowbitScaleDtype::BF16) == 1.0f);
  CHECK(lowbit_scale_from_absmean(nan, LowbitScaleDtype::F32) == 1.0f);
}

TEST_CASE("Low-bit layout: exact bytes per parameter, row padding, scale storage", "[lowbit]") {
  using G = LowbitScaleGranularity;
  using D = LowbitScaleDtype;
  CHECK(make_layout(LowbitFormat::INT4, 256, 1024, G::Group, 128).bytes_per_param() == 0.5 + 4.0 / 128);
  CHECK(make_layout(LowbitFormat::INT4, 256, 1024, G::Group, 64).bytes_per_param() == 0.5 + 4.0 / 64);
  CHECK(make_layout(LowbitFormat::INT4, 256, 1024, G::Group, 32).bytes_per_param() == 0.5 + 4.0 / 32);
  CHECK(make_layout(LowbitFormat::INT4, 256, 1024, G::Group, 128, D::BF16).bytes_per_param() == 0.5 + 2.0 / 128);
  CHECK(make_layout(LowbitFormat::INT4, 256, 1024, G::Group, 32, D::BF16).bytes_per_param() == 0.5 + 2.0 / 32);
  CHECK(make_layout(LowbitFormat::Ternary, 256, 1024, G::PerRow).bytes_per_param() == 0.25 + 4.0 / 1024);
  CHECK(make_layout(LowbitFormat::INT2, 256, 1024, G::PerTensor).bytes_per_param() == 0.25 + 4.0 / (256 * 1024));
  CHECK(make_layout(LowbitFormat::Ternary, 256, 1024, G::PerRow, 128, D::BF16).bytes_per_param() ==
        0.25 + 2.0 / 1024);

  // Odd shapes: every row starts on a byte boundary, the last group is partial.
  const auto odd = make_layout(LowbitFormat::INT4, 3, 33, G::Group, 32);
  CHECK(odd.row_bytes() == 17);
  CHECK(odd.code_bytes() == 51);
  CHECK(odd.scales_per_row() == 2);
  CHECK(odd.scale_count() == 6);
  CHECK(odd.scale_bytes() == 24);
  CHECK(odd.total_bytes() == 75);
  CHECK(odd.bytes_per_param() == 75.0 / 99.0);
  CHECK(odd.scale_index(2, 32) == 5);
  const auto odd2 = make_layout(LowbitFormat::Ternary, 3, 5, G::PerTensor);
  CHECK(odd2.row_bytes() == 2);
  CHECK(odd2.scale_count() == 1);
  CHECK(odd2.scales_per_row() == 0);
  CHECK(odd2.total_bytes() == 6 + 4);

  // Padding bits are written as zero, whatever the buffer held.
  for (const auto& f : kFormats) {
    const auto l = make_layout(f.format, 3, 5, G::PerRow);
    std::vector<float> x(15, 0.3f);
    std::vector<uint8_t> codes(l.code_bytes(), 0xFF), scales(l.scale_bytes(), 0xFF);
    REQUIRE(lowbit_quantize_rtn(l, x.data(), LowbitScaleUpdate::Recompute, codes.data(), scales.data()) == 0);
    for (size_t r = 0; r < 3; ++r) {
      const uint8_t last = codes[r * l.row_bytes() + l.row_bytes() - 1];
      const unsigned used_bits = static_cast<unsigned>((5 * f.bits) % 8);
      if (used_bits) CHECK((last >> used_bits) == 0);
    }
  }

  // Scale storage is little-endian and bf16 keeps the top half of the float.
  uint8_t buf[8] = {};
  lowbit_scale_store(buf, 1, LowbitScaleDtype::F32, 1.0f);  // 0x3F800000
  CHECK(buf[4] == 0x00);
  CHECK(buf[7] == 0x3F);
  CHECK(lowbit_scale_load(buf, 1, LowbitScaleDtype::F32) == 1.0f);
  lowbit_scale_store(buf, 0, LowbitScaleDtype::BF16, -2.0f);  // 0xC000
  CHECK(buf[0] == 0x00);
  CHECK(buf[1] == 0xC0);
  CHECK(lowbit_scale_load(buf, 0, LowbitScaleDtype::BF16) == -2.0f);
  // Rounding a scale up to bf16.
  CHECK(bf16_round_up_positive(1.0f) == 1.0f);
  CHECK(bf16_round_up_positive(std::nextafter(1.0f, 2.0f)) == 1.0078125f);
  CHECK(bf16_round_up_positive(std::nextafter(2.0f, 0.0f)) == 2.0f);  // carries into the exponent
}

TEST_CASE("Low-bit config names and errors", "[lowbit]") {
  for (const auto& f : kFormats) CHECK(parse_lowbit_format(to_string(f.format)) == f.format);
  for (auto g : {LowbitScaleGranularity::PerTensor, LowbitScaleGranularity::PerRow, LowbitScaleGranularity::Group})
    CHECK(parse_lowbit_granularity(to_string(g)) == g);
  for (auto d : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) CHECK(parse_lowbit_scale_dtype(to_string(d)) == d);
  CHECK_THROWS_AS(parse_lowbit_format("int3"), ConfigError);
  CHECK_THROWS_AS(parse_lowbit_granularity("block128"), ConfigError);
  CHECK_THROWS_AS(parse_lowbit_scale_dtype("fp16"), ConfigError);
  CHECK_THROWS_AS(LowbitTensor(make_layout(LowbitFormat::INT4, 4, 64, LowbitScaleGranularity::Group, 48)),
                  ConfigError);
  CHECK_NOTHROW(make_layout(LowbitFormat::INT4, 4, 64, LowbitScaleGranularity::PerRow, 48).validate());

  LowbitTensor t(make_layout(LowbitFormat::Ternary, 4, 8, LowbitScaleGranularity::PerTensor));
  std::vector<float> x(32, 0.1f);
  CHECK_THROWS_AS(t.quantize(x.data(), Rounding::SR, LowbitScaleUpdate::Recompute), Error);  // no key
  CHECK_THROWS_AS(lowbit_quantize_rows(t.layout, 1, 3, x.data(), Rounding::RTN, nullptr,
                                       LowbitScaleUpdate::Recompute, t.codes.data(), t.scales.data()),
                  Error);
  CHECK_NOTHROW(lowbit_quantize_rows(t.layout, 1, 3, x.data(), Rounding::RTN, nullptr, LowbitScaleUpdate::Keep,
                                     t.codes.data(), t.scales.data()));
  CHECK_THROWS_AS(lowbit_quantize_rows(t.layout, 2, 5, x.data(), Rounding::RTN, nullptr, LowbitScaleUpdate::Keep,
                                       t.codes.data(), t.scales.data()),
                  Error);
}

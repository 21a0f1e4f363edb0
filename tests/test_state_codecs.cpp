// Block-wise low-bit optimizer states (optim/state_codec.h, optim/state_block.h): the dynamic maps
// against their definition, SOLO's log quantizer on the paper's hand-made block, v stays positive,
// m's sign is kept, SR is unbiased on the log index (v) and on the value (m), packing round trips
// without touching neighbours, results do not depend on how a tensor is split, bytes per parameter
// are exact, and NaN/Inf inputs do what state_codec.h says.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "optim/state_block.h"
#include "optim/state_codec.h"

using namespace eco;

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// torchao create_dynamic_map(signed=True, max_exponent_bits=b−1, total_bits=b), in double.
std::vector<double> dynamic_map_reference(int bits) {
  const int max_exp = bits - 1, non_sign = bits - 1;
  std::vector<double> data;
  auto add_means = [&](int items, int i) {
    std::vector<double> bnd(items);
    for (int j = 0; j < items; ++j) bnd[j] = 0.1 + 0.9 * j / (items - 1);
    for (int j = 0; j + 1 < items; ++j) {
      const double mean = (bnd[j] + bnd[j + 1]) / 2.0 * std::pow(10.0, -(max_exp - 1) + i);
      data.push_back(mean);
      data.push_back(-mean);
    }
  };
  for (int i = 0; i < max_exp; ++i) add_means((1 << (i + non_sign - max_exp)) + 1, i);
  data.push_back(0.0);
  data.push_back(1.0);
  std::sort(data.begin(), data.end());
  return data;
}

RandomKey key_of(uint32_t step, uint32_t stream = 7) {
  RandomKey k;
  k.seed = 0x1234567890ABCDEFull;
  k.step = step;
  k.stream_id = stream;
  return k;
}

const int kAllBits[] = {2, 3, 4, 8};
const int kLowBits[] = {2, 3, 4};
}  // namespace

TEST_CASE("dynamic maps: 2^b ascending levels equal to torchao create_dynamic_map", "[state]") {
  for (int bits : kLowBits) {
    const auto ref = dynamic_map_reference(bits);
    REQUIRE(ref.size() == (1u << bits));
    for (uint32_t c = 0; c < ref.size(); ++c) CHECK(dyn_map_level(bits, c) == static_cast<float>(ref[c]));
    CHECK(dyn_map_level(bits, m_zero_code(bits)) == 0.0f);
    CHECK(dyn_map_level(bits, (1u << bits) - 1) == 1.0f);
  }
  CHECK(dyn_map_level(2, 0) == -0.55f);
  CHECK(dyn_map_level(3, 0) == -0.775f);
  CHECK(dyn_map_level(4, 0) == -0.8875f);
}

TEST_CASE("m: nearest level by midpoints (tie up), signed block scale puts the absmax on +1", "[state]") {
  // 2-bit map {-0.55, 0, 0.55, 1}: midpoints -0.275, 0.275, 0.775.
  CHECK(m_encode_rtn(0.7749f, 1.0f, 2) == 2);
  CHECK(m_encode_rtn(0.775f, 1.0f, 2) == 3);  // tie goes up
  CHECK(m_encode_rtn(0.27f, 1.0f, 2) == 1);
  CHECK(m_encode_rtn(-0.3f, 1.0f, 2) == 0);
  CHECK(m_encode_rtn(-5.0f, 1.0f, 2) == 0);   // clips to -0.55
  // A block led by a negative entry: the scale is negative and that entry decodes exactly.
  const float block[4] = {-2.0f, 0.5f, 1.9f, -0.01f};
  const float s = m_block_scale_of(block, 4, 2);
  CHECK(s == -2.0f);
  CHECK(m_decode(m_encode_rtn(-2.0f, s, 2), s, 2) == -2.0f);
  CHECK(m_decode(m_encode_rtn(1.9f, s, 2), s, 2) == Approx(1.1f));  // opposite side clips at 0.55·2
  // Ties between +a and -a go to +a whatever the order.
  const float tie1[2] = {-3.0f, 3.0f}, tie2[2] = {3.0f, -3.0f};
  CHECK(m_block_scale_of(tie1, 2, 4) == 3.0f);
  CHECK(m_block_scale_of(tie2, 2, 4) == 3.0f);
  CHECK(m_block_scale_of(tie1, 2, 8) == Approx(3.0f / 127.0f));
  // Every level decodes to itself (RTN and SR with any bits).
  for (int bits : kLowBits)
    for (uint32_t c = 0; c < (1u << bits); ++c) {
      const float x = dyn_map_level(bits, c) * 0.5f;  // a power-of-two scale: x / scale is exact
      CHECK(m_encode_rtn(x, 0.5f, bits) == c);
      CHECK(m_encode_sr(x, 0.5f, bits, 0u) == c);
      CHECK(m_encode_sr(x, 0.5f, bits, 0xFFFFFFFFu) == c);
    }
}

TEST_CASE("m: the sign is never flipped, by RTN or SR, at any width", "[state]") {
  std::mt19937 gen(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ue(-30.0f, 5.0f);
  size_t vanished = 0, total = 0;
  for (int trial = 0; trial < 200; ++trial) {
    // Heavy-tailed blocks, with an outlier of either sign and many tiny entries.
    float x[kStateBlock];
    for (int i = 0; i < kStateBlock; ++i) x[i] = nd(gen) * std::exp2(ue(gen));
    x[trial % kStateBlock] = (trial % 2 ? -1.0f : 1.0f) * 1e3f;
    for (int bits : kAllBits) {
      const float s = m_block_scale_of(x, kStateBlock, bits);
      for (int i = 0; i < kStateBlock; ++i) {
        const uint32_t r = random_bits(key_of(trial), i);
        for (uint32_t c : {m_encode_rtn(x[i], s, bits), m_encode_sr(x[i], s, bits, r)}) {
          const float d = m_decode(c, s, bits);
          ++total;
          if (d == 0.0f) ++vanished;
          else REQUIRE(std::signbit(d) == std::signbit(x[i]));
        }
      }
    }
  }
  CHECK(vanished < total);  // most tiny entries vanish to 0, which is allowed; none flip
}

TEST_CASE("m INT8: scale = absmax/127, RTN error <= scale/2, SR error < scale, block by block", "[state]") {
  std::mt19937 gen(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t n = 1000;  // 7 full blocks and a short one
  std::vector<float> x(n), y(n);
  for (size_t i = 0; i < n; ++i) x[i] = nd(gen) * (i < 500 ? 1.0f : 1e-3f);
  for (Rounding rounding : {Rounding::RTN, Rounding::SR}) {
    BlockMoment m(MomentKind::Signed, 8, n);
    CHECK(m.blocks() == 8);
    CHECK(m.block_size(7) == n - 7 * 128);
    CHECK(m.encode(x.data(), key_of(1), rounding) == 0);
    m.decode(y.data());
    for (size_t b = 0; b < m.blocks(); ++b) {
      float amax = 0.0f;
      for (size_t i = b * 128; i < std::min(n, b * 128 + 128); ++i) amax = std::max(amax, std::fabs(x[i]));
      CHECK(m.scale(b) == amax / 127.0f);
      for (size_t i = b * 128; i < std::min(n, b * 128 + 128); ++i) {
        const float err = std::fabs(y[i] - x[i]);
        if (rounding == Rounding::RTN) REQUIRE(err <= 0.5f * m.scale(b) * (1.0f + 1e-5f));
        else REQUIRE(err < m.scale(b) * (1.0f + 1e-5f));
      }
    }
  }
}

TEST_CASE("m: SR is unbiased on the value (dynamic maps and INT8)", "[state]") {
  const int draws = 40000;
  for (int bits : kAllBits) {
    const float scale = bits == 8 ? 1.0f / 127.0f : 1.0f;
    for (float x : {0.003f, -0.02f, 0.1f, -0.3f, 0.5f, 0.93f, -0.6f}) {
      double sum = 0.0;
      for (int j = 0; j < draws; ++j) sum += m_decode(m_encode_sr(x, scale, bits, random_bits(key_of(9), j)), scale, bits);
      // The two bracketing levels are at most 0.45 apart (2-bit, 0.55 → 1): the draws' sd ≤ gap/2.
      const double gap = bits == 8 ? scale : 0.45;
      const double in_range = x < dyn_map_level(bits, 0) && bits != 8 ? dyn_map_level(bits, 0) : x;
      CHECK(std::fabs(sum / draws - in_range) < 5.0 * 0.5 * gap / std::sqrt(double(draws)));
    }
  }
}

TEST_CASE("v: SOLO's log quantizer on the paper's hand-made block (2 bits, p = 0.1)", "[state]") {
  const float x[11] = {0.06f, 0.08f, 0.21f, 0.22f, 0.29f, 0.54f, 0.54f, 0.58f, 0.77f, 0.90f, 0.91f};
  const LogBlock b = v_block_params_of(x, 11, 2, 0.1f);
  CHECK(b.d == 0.91f);
  // Quantile at position 0.1·10 = 1 of the sorted block: 0.08; α = (0.08/0.91)^(1/3).
  const double alpha = std::cbrt(0.08 / 0.91);
  CHECK(b.alpha == Approx(alpha).epsilon(1e-6));
  CHECK(b.alpha == Approx(0.4446).margin(5e-5));
  const double levels[4] = {0.91, 0.4046, 0.1799, 0.08};
  for (uint32_t c = 0; c < 4; ++c) CHECK(v_decode(c, b) == Approx(levels[c]).epsilon(3e-4));
  CHECK(v_decode(3, b) == Approx(0.08).epsilon(1e-5));  // the bottom level is the quantile itself
  // RTN codes: y(0.54) = 0.644 → 1; y(0.21) = 1.809 → 2; 0.06 < quantile → 3; max → 0.
  CHECK(v_encode_rtn(0.54f, b, 2) == 1);
  CHECK(v_encode_rtn(0.21f, b, 2) == 2);
  CHECK(v_encode_rtn(0.06f, b, 2) == 3);
  CHECK(v_encode_rtn(0.91f, b, 2) == 0);
  // SR: 0.54 → code 1 with probability 0.644 (else 0); 0.21 → code 2 with probability 0.809 (else 1).
  const int draws = 100000;
  int up054 = 0, up021 = 0;
  for (int j = 0; j < draws; ++j) {
    const uint32_t c1 = v_encode_sr(0.54f, b, 2, random_bits(key_of(2), j));
    const uint32_t c2 = v_encode_sr(0.21f, b, 2, random_bits(key_of(3), j));
    REQUIRE((c1 == 0 || c1 == 1));
    REQUIRE((c2 == 1 || c2 == 2));
    up054 += c1 == 1;
    up021 += c2 == 2;
  }
  const double y054 = std::log(0.54 / 0.91) / std::log(alpha), y021 = std::log(0.21 / 0.91) / std::log(alpha);
  CHECK(y054 == Approx(0.644).margin(1e-3));
  CHECK(y021 == Approx(1.809).margin(1e-3));
  const double tol = 5.0 * 0.5 / std::sqrt(double(draws));
  CHECK(std::fabs(double(up054) / draws - y054) < tol);
  CHECK(std::fabs(double(up021 - 0) / draws - (y021 - 1.0)) < tol);
}

TEST_CASE("v: the quantile is over positive values, floored; α = 1 and all-zero blocks", "[state]") {
  // 64 zeros and 64 positives: the zeros do not collapse the base (the reference's x_q = 0 case).
  float x[kStateBlock];
  for (int i = 0; i < kStateBlock; ++i) x[i] = i < 64 ? 0.0f : static_cast<float>(i - 63);
  const LogBlock b = v_block_params_of(x, kStateBlock, 4, 0.1f);
  CHECK(b.d == 64.0f);
  const double q = 1.0 + 0.1 * 63;  // positives 1..64: position 6.3 → 7.3
  CHECK(b.alpha == Approx(std::pow(q / 64.0, 1.0 / 15.0)).epsilon(1e-5));
  CHECK(v_decode(v_encode_sr(0.0f, b, 4, 0u), b) == Approx(q).epsilon(1e-4));  // zeros → bottom level
  // ≥ 90% equal to the max: α = 1, every code decodes to d (no 0/0).
  for (int i = 0; i < kStateBlock; ++i) x[i] = i < 10 ? 1e-3f : 2.0f;
  const LogBlock one = v_block_params_of(x, kStateBlock, 2, 0.1f);
  CHECK(one.alpha == 1.0f);
  CHECK(v_encode_sr(1e-3f, one, 2, 0u) == 0);
  CHECK(v_decode(v_encode_sr(1e-3f, one, 2, 0u), one) == 2.0f);
  // A huge range: the ratio is floored at 2^-64.
  const float wide[3] = {1e30f, 1e-30f, 1e-35f};
  const LogBlock w = v_block_params_of(wide, 3, 2, 0.0f);
  CHECK(std::pow(double(w.alpha), 3.0) == Approx(std::ldexp(1.0, -64)).epsilon(1e-4));
  // No positive value: d = 0, everything decodes to exactly 0.
  const float zeros[4] = {0.0f, -0.0f, 0.0f, 0.0f};
  const LogBlock z = v_block_params_of(zeros, 4, 3, 0.1f);
  CHECK(z.d == 0.0f);
  for (uint32_t c = 0; c < 8; ++c) CHECK(v_decode(c, z) == 0.0f);
}

TEST_CASE("v stays positive: random and adversarial blocks, every width, RTN and SR", "[state]") {
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> ue(-40.0f, 40.0f);
  std::vector<std::vector<float>> blocks;
  for (int t = 0; t < 60; ++t) {  // log-uniform over 2^±40
    std::vector<float> x(kStateBlock);
    for (float& v : x) v = std::exp2(ue(gen));
    blocks.push_back(x);
  }
  {  // tiny values next to huge ones, subnormals, zeros
    std::vector<float> x(kStateBlock, 0.0f);
    x[0] = 3e38f;
    x[1] = 1e-45f;
    x[2] = 1e-38f;
    x[3] = 1.0f;
    blocks.push_back(x);
    std::vector<float> y(kStateBlock, 1e-40f);  // a block of subnormals only
    y[7] = 2e-40f;
    blocks.push_back(y);
    std::vector<float> z(kStateBlock, 0.0f);  // one positive among zeros
    z[100] = 1e-20f;
    blocks.push_back(z);
    std::vector<float> w(kStateBlock);
    for (int i = 0; i < kStateBlock; ++i) w[i] = i % 2 ? 1e-30f : 1e30f;
    blocks.push_back(w);
  }
  for (int bits : kAllBits) {
    for (size_t t = 0; t < blocks.size(); ++t) {
      BlockMoment v(MomentKind::Log, bits, kStateBlock, 0, bits == 8 ? 0.0f : 0.1f);
      for (Rounding rounding : {Rounding::SR, Rounding::RTN}) {
        v.encode(blocks[t].data(), key_of(static_cast<uint32_t>(t)), rounding);
        std::vector<float> out(kStateBlock);
        v.decode(out.data());
        for (int i = 0; i < kStateBlock; ++i) {
          REQUIRE(out[i] > 0.0f);
          REQUIRE(std::isfinite(out[i]));
          REQUIRE(out[i] <= v.scale(0));
          // Never more than one level below the value (SR rounds down at most one level).
          if (blocks[t][i] > 0.0f && v.log_block(0).alpha < 1.0f)
            REQUIRE(out[i] >= blocks[t][i] * v.log_block(0).alpha * (1.0f - 1e-4f) - 3e-45f);
        }
      }
    }
  }
}

TEST_CASE("v: SR on the log index is unbiased; the decoded value is biased up by at most Jensen's factor", "[state]") {
  const int draws = 40000;
  for (int bits : kAllBits) {
    LogBlock b;
    b.d = 3.0f;
    b.alpha = bits == 8 ? 0.97f : bits == 4 ? 0.6f : bits == 3 ? 0.5f : 0.44f;
    const int top = (1 << bits) - 1;
    for (double y : {0.3, 0.5, 1.77, 0.5 * top, top - 0.4}) {
      const float x = static_cast<float>(b.d * std::pow(double(b.alpha), y));
      double sum_code = 0.0, sum_v = 0.0;
      for (int j = 0; j < draws; ++j) {
        const uint32_t c = v_encode_sr(x, b, bits, random_bits(key_of(4, bits), j));
        REQUIRE(c >= std::floor(y) - 0.0);
        REQUIRE(c <= std::ceil(y));
        sum_code += c;
        sum_v += v_decode(c, b);
      }
      // Bernoulli draws: sd ≤ 1/2; plus the log2 polynomial's error in y (< 1e-5 here).
      const double y_exact = std::log(double(x) / b.d) / std::log(double(b.alpha));
      CHECK(std::fabs(sum_code / draws - y_exact) < 5.0 * 0.5 / std::sqrt(double(draws)) + 1e-5);
      // E[v̂]/v = (1−f)·α^(−f) + f·α^(1−f) ≥ 1.
      const double f = y_exact - std::floor(y_exact), a = b.alpha;
      const double jensen = (1 - f) * std::pow(a, -f) + f * std::pow(a, 1 - f);
      const double sd_v = 0.5 * (1.0 / a - 1.0);  // relative spread of the two levels around v
      CHECK(sum_v / draws / x == Approx(jensen).margin(5.0 * sd_v / std::sqrt(double(draws)) + 1e-5));
      CHECK(jensen >= 1.0);
    }
  }
}

TEST_CASE("log2_poly: within 3e-7 of log2 over the normal range", "[state]") {
  std::mt19937 gen(8);
  std::uniform_real_distribution<float> ue(-125.0f, 127.0f);
  double worst = 0.0;
  for (int i = 0; i < 200000; ++i) {
    const float x = std::exp2(ue(gen));
    worst = std::max(worst, std::fabs(double(log2_poly(x)) - std::log2(double(x))));
  }
  for (float x : {1.0f, 2.0f, 0.5f, 1.41421356f, 1.41421366f, 0.70710677f})
    worst = std::max(worst, std::fabs(double(log2_poly(x)) - std::log2(double(x))));
  CHECK(worst < 3e-7 * 128);  // absolute, at |log2 x| up to 127: a few ulp of the result
  CHECK(log2_poly(1.0f) == 0.0f);
  CHECK(log2_poly(8.0f) == 3.0f);
}

TEST_CASE("packing: round trip at 2/3/4/8 bits, and a write never touches a neighbour", "[state]") {
  std::mt19937 gen(1);
  for (int bits : kAllBits) {
    for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{13}, size_t{128}, size_t{1001}}) {
      std::vector<uint8_t> buf(state_code_bytes(n, bits), 0);
      CHECK(buf.size() == (n * bits + 7) / 8);
      std::vector<uint32_t> ref(n);
      for (size_t i = 0; i < n; ++i) {
        ref[i] = gen() & ((1u << bits) - 1u);
        state_code_set(buf.data(), i, bits, ref[i]);
      }
      for (size_t i = 0; i < n; ++i) REQUIRE(state_code_get(buf.data(), i, bits) == ref[i]);
      // Overwrite each element with every code; all others stay as they were.
      for (size_t i = 0; i < n; i += (n > 64 ? 37 : 1)) {
        for (uint32_t c = 0; c < (1u << bits); c += (bits == 8 ? 51 : 1)) {
          state_code_set(buf.data(), i, bits, c);
          ref[i] = c;
          REQUIRE(state_code_get(buf.data(), i, bits) == c);
          if (i > 0) REQUIRE(state_code_get(buf.data(), i - 1, bits) == ref[i - 1]);
          if (i + 1 < n) REQUIRE(state_code_get(buf.data(), i + 1, bits) == ref[i + 1]);
        }
      }
      for (size_t i = 0; i < n; ++i) REQUIRE(state_code_get(buf.data(), i, bits) == ref[i]);
    }
  }
  // The 3-bit layout: 8 codes in 3 bytes, element i at bits 3i.. (codes 2 and 5 straddle bytes).
  uint8_t b3[3] = {0, 0, 0};
  for (uint32_t i = 0; i < 8; ++i) state_code_set(b3, i, 3, i);
  const uint32_t word = b3[0] | (uint32_t(b3[1]) << 8) | (uint32_t(b3[2]) << 16);
  for (uint32_t i = 0; i < 8; ++i) CHECK(((word >> (3 * i)) & 7u) == i);
}

TEST_CASE("bytes per parameter are exact, scales and packing included", "[state]") {
  CHECK(block_state_bytes_per_param(BlockStateFormat::Int8) == 2.09375);
  CHECK(block_state_bytes_per_param(BlockStateFormat::Solo4) == 1.09375);
  CHECK(block_state_bytes_per_param(BlockStateFormat::Solo3) == 0.84375);
  CHECK(block_state_bytes_per_param(BlockStateFormat::Solo2) == 0.59375);
  // n = 1000: 8 blocks; codes ceil(1000·b/8) bytes, padded to whole floats (the block parameters
  // follow them in one buffer).
  CHECK(m_state_bytes(3, 1000) == 376 + 32);
  CHECK(v_state_bytes(3, 1000) == 376 + 64);
  CHECK(m_state_bytes(2, 1001) == 252 + 32);
  CHECK(v_state_bytes(8, 1) == 4 + 8);
  CHECK(block_state_bytes(BlockStateFormat::Solo4, 1000) == 500 + 32 + 500 + 64);
  for (int bits : kAllBits)
    for (size_t n : {size_t{5}, size_t{128}, size_t{1000}}) {
      BlockMoment m(MomentKind::Signed, bits, n), v(MomentKind::Log, bits, n);
      CHECK(m.bytes() == m.codes().size() + m.blocks() * 4);
      CHECK(v.bytes() == v.codes().size() + v.blocks() * 8);
      CHECK(m.bytes() == m_state_bytes(bits, n));
      CHECK(v.bytes() == v_state_bytes(bits, n));
    }
}

TEST_CASE("formats: names, specs and SOLO's precision-specific beta1", "[state]") {
  for (BlockStateFormat f : {BlockStateFormat::Int8, BlockStateFormat::Solo4, BlockStateFormat::Solo3, BlockStateFormat::Solo2})
    CHECK(parse_block_state_format(to_string(f)) == f);
  CHECK_THROWS_AS(parse_block_state_format("solo1"), ConfigError);
  CHECK(block_state_spec(BlockStateFormat::Solo3).m_bits == 3);
  CHECK(block_state_spec(BlockStateFormat::Solo3).v_bits == 3);
  CHECK(block_state_spec(BlockStateFormat::Int8).v_quantile == 0.0f);
  CHECK(solo_default_beta1(8) == 0.9f);
  CHECK(solo_default_beta1(4) == 0.8f);
  CHECK(solo_default_beta1(3) == 0.65f);
  CHECK(solo_default_beta1(2) == 0.5f);
  // Each at or below the paper's bound for the 5-bit reference (research/solo-dqt.md §1.3).
  CHECK(solo_default_beta1(4) <= 0.820f);
  CHECK(solo_default_beta1(3) <= 0.694f);
  CHECK(solo_default_beta1(2) <= 0.527f);
  CHECK_THROWS_AS(BlockMoment(MomentKind::Signed, 5, 10), Error);
  CHECK_THROWS_AS(BlockMoment(MomentKind::Log, 4, 10, 64), Error);  // a shard must start on a block
}

TEST_CASE("keying: codes equal random_bits(key, tensor index) and do not depend on the split", "[state]") {
  std::mt19937 gen(21);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t n = 128 * 5 + 77;
  std::vector<float> m(n), v(n);
  for (size_t i = 0; i < n; ++i) {
    m[i] = nd(gen) * std::exp2(float(i % 17) - 8.0f);
    v[i] = m[i] * m[i] + 1e-9f * float(i % 3);
  }
  const RandomKey key = key_of(77, 3);
  for (int bits : kAllBits) {
    for (MomentKind kind : {MomentKind::Signed, MomentKind::Log}) {
      const std::vector<float>& x = kind == MomentKind::Signed ? m : v;
      BlockMoment whole(kind, bits, n);
      whole.encode(x.data(), key, Rounding::SR);
      // Per element against the header functions with random_bits(key, i).
      for (size_t b = 0; b < whole.blocks(); ++b) {
        const int cnt = static_cast<int>(whole.block_size(b));
        const float* xb = x.data() + b * 128;
        for (int i = 0; i < cnt; ++i) {
          const uint32_t r = random_bits(key, b * 128 + i);
          const uint32_t c = kind == MomentKind::Signed
                                 ? m_encode_sr(xb[i], m_block_scale_of(xb, cnt, bits), bits, r)
                                 : v_encode_sr(xb[i], v_block_params_of(xb, cnt, bits, 0.1f), bits, r);
          REQUIRE(whole.code(b * 128 + i) == c);
        }
      }
      // Two shards [0, 256) and [256, n): the same codes, block parameters and decoded values.
      BlockMoment s0(kind, bits, 256, 0), s1(kind, bits, n - 256, 256);
      s0.encode(x.data(), key, Rounding::SR);
      s1.encode(x.data() + 256, key, Rounding::SR);
      std::vector<float> dw(n), d0(256), d1(n - 256);
      whole.decode(dw.data());
      s0.decode(d0.data());
      s1.decode(d1.data());
      for (size_t i = 0; i < n; ++i) REQUIRE(dw[i] == (i < 256 ? d0[i] : d1[i - 256]));
      for (size_t i = 0; i < n - 256; ++i) REQUIRE(s1.code(i) == whole.code(256 + i));
      // Block by block in reverse order equals the whole-tensor call.
      BlockMoment rev(kind, bits, n);
      for (size_t b = rev.blocks(); b-- > 0;) rev.encode_block(b, x.data() + b * 128, key, Rounding::SR);
      REQUIRE(rev.codes() == whole.codes());
      // A different step draws different bits (some code changes somewhere).
      BlockMoment other(kind, bits, n);
      other.encode(x.data(), key_of(78, 3), Rounding::SR);
      CHECK(other.codes() != whole.codes());
    }
  }
}

TEST_CASE("NaN and Inf inputs: counted, and mapped as state_codec.h states", "[state]") {
  for (int bits : kAllBits) {
    // m: scale over finite values; NaN → 0; ±Inf → the end levels of their sign.
    std::vector<float> m = {1.0f, -0.5f, kNaN, kInf, -kInf, 0.25f};
    BlockMoment bm(MomentKind::Signed, bits, m.size());
    CHECK(bm.encode(m.data(), key_of(1), Rounding::SR) == 3);
    std::vector<float> out(m.size());
    bm.decode(out.data());
    CHECK(out[0] == Approx(1.0f));
    CHECK(out[2] == 0.0f);
    CHECK(out[3] == Approx(1.0f));  // +Inf → the top level
    CHECK(out[4] == Approx(bits == 8 ? -1.0f : dyn_map_level(bits, 0)));
    for (float o : out) CHECK(std::isfinite(o));
    // v: NaN and +Inf → d; negatives → bottom level; stays positive.
    std::vector<float> v = {4.0f, kNaN, kInf, -1.0f, 1.0f, 0.5f, 2.0f};
    BlockMoment bv(MomentKind::Log, bits, v.size(), 0, 0.1f);
    CHECK(bv.encode(v.data(), key_of(1), Rounding::SR) == 2);
    std::vector<float> ov(v.size());
    bv.decode(ov.data());
    CHECK(bv.scale(0) == 4.0f);
    CHECK(ov[1] == 4.0f);
    CHECK(ov[2] == 4.0f);
    CHECK(ov[3] > 0.0f);
    CHECK(ov[3] <= ov[5]);
    for (float o : ov) CHECK((std::isfinite(o) && o > 0.0f));
    // A block of non-finite values only: everything decodes to 0.
    std::vector<float> bad = {kNaN, kInf, -kInf};
    BlockMoment mb(MomentKind::Signed, bits, 3), vb(MomentKind::Log, bits, 3);
    mb.encode(bad.data(), key_of(2), Rounding::RTN);
    vb.encode(bad.data(), key_of(2), Rounding::RTN);
    std::vector<float> o1(3), o2(3);
    mb.decode(o1.data());
    vb.decode(o2.data());
    for (int i = 0; i < 3; ++i) CHECK((o1[i] == 0.0f && o2[i] == 0.0f));
  }
}

TEST_CASE("ECO injection into a 2-bit m: SR keeps it in expectation, RTN loses a share", "[state]") {
  // The injection when the weight's whole update is lost: Δ = (1/β1 − 1)·m (DESIGN.md §4 with
  // e = −η·m̂/d), at SOLO's 2-bit β1 = 0.5 that is Δ = m; and a small one, Δ = 0.11·m (β1 = 0.9);
  // on a random half of the elements (the others' updates landed), so the block scale does not
  // simply grow with the injection. bench/bench_state_codecs measures the realistic mixture.
  std::mt19937 gen(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t n = 64 * kStateBlock;
  std::vector<float> m(n);
  std::vector<bool> lost(n);
  for (size_t i = 0; i < n; ++i) {
    m[i] = nd(gen) * std::exp(nd(gen));
    lost[i] = (gen() & 1u) != 0;
  }
  for (double rel : {0.11, 1.0}) {
    std::vector<float> x1(n), q0(n), q1(n);
    for (size_t i = 0; i < n; ++i) x1[i] = lost[i] ? static_cast<float>(m[i] * (1.0 + rel)) : m[i];
    auto kept = [&](Rounding rounding, int reps) {
      double sum = 0.0, total = 0.0;
      for (int k = 0; k < reps; ++k) {
        BlockMoment a(MomentKind::Signed, 2, n), b(MomentKind::Signed, 2, n);
        a.encode(m.data(), key_of(k, 1), rounding);
        b.encode(x1.data(), key_of(k, 2), rounding);
        a.decode(q0.data());
        b.decode(q1.data());
        for (size_t i = 0; i < n; ++i) {
          const double inj = double(x1[i]) - m[i];
          if (inj == 0.0) continue;
          sum += (inj > 0 ? 1.0 : -1.0) * (double(q1[i]) - q0[i]);
          total += std::fabs(inj);
        }
      }
      return sum / total;
    };
    const double sr = kept(Rounding::SR, 200), rtn = kept(Rounding::RTN, 1);
    INFO("rel " << rel << ": kept SR " << sr << ", RTN " << rtn);
    // SR is unbiased inside the map's range; only the clip at −0.55 (negative side) loses a little.
    CHECK(sr > 0.9);
    CHECK(sr < 1.05);
    CHECK(rtn < sr - 0.1);
  }
}

// The block-parallel pieces the GPU kernel is built from (src/cuda/cuda_block_states.cu), against
// the sequential CPU code they must reproduce bit for bit.
TEST_CASE("block-parallel pieces: byte-wise packing, ranked quantile and tree absmax equal the CPU's", "[state]") {
  std::mt19937 rng(20261130);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(0, 3);
  for (int trial = 0; trial < 400; ++trial) {
    const int count = trial % 3 == 0 ? 1 + trial % kStateBlock : kStateBlock;  // partial blocks too
    const int bits = std::array<int, 4>{2, 3, 4, 8}[static_cast<size_t>(trial % 4)];
    INFO("trial " << trial << ", " << count << " values, " << bits << " bits");
    std::vector<float> x(count);
    for (float& v : x) {
      switch (small(rng)) {
        case 0: v = static_cast<float>(small(rng)) * 0.25f; break;  // many ties, zeros
        case 1: v = -normal(rng); break;
        default: v = normal(rng) * normal(rng);
      }
    }
    if (trial % 7 == 0) x[static_cast<size_t>(trial) % x.size()] = kNaN;
    if (trial % 11 == 0) x[0] = kInf;
    if (trial % 5 == 1)  // all ±0 (random signs): the signed absmax keeps the last zero's sign
      for (float& v : x) v = rng() & 1u ? -0.0f : 0.0f;

    // Packing: byte j built alone equals the stream state_code_set writes code by code.
    std::vector<uint32_t> codes(count);
    for (int i = 0; i < count; ++i) codes[i] = static_cast<uint32_t>(rng()) & ((1u << bits) - 1u);
    std::vector<uint8_t> serial(state_code_bytes(static_cast<uint64_t>(count), bits), 0);
    for (int i = 0; i < count; ++i) state_code_set(serial.data(), static_cast<uint64_t>(i), bits, codes[i]);
    for (size_t j = 0; j < serial.size(); ++j)
      REQUIRE(state_packed_byte(codes.data(), count, bits, static_cast<int>(j)) == serial[j]);

    // The v quantile from ranks equals v_block_params_of's (nth_element).
    std::vector<float> v(count);
    for (int i = 0; i < count; ++i) v[i] = std::isnan(x[i]) ? x[i] : x[i] * x[i] * (trial % 5 == 0 ? 1.0f : 1e-6f);
    for (float p : {0.0f, 0.1f, 0.5f, 1.0f}) {
      const LogBlock want = v_block_params_of(v.data(), count, bits, p);
      int np = 0;
      float max = 0.0f;
      for (float y : v)
        if (y > 0.0f && std::isfinite(y)) {
          ++np;
          max = std::max(max, y);
        }
      LogBlock got;
      if (np > 0) {
        const int lo = quantile_low_index(np, p), hi = lo + 1 < np ? lo + 1 : lo;
        float x_lo = -1.0f, x_hi = -1.0f;
        int holders_lo = 0, holders_hi = 0;
        for (int t = 0; t < count; ++t) {
          if (!(v[t] > 0.0f && std::isfinite(v[t]))) continue;
          const int rank = positive_rank(v.data(), count, t);
          if (rank == lo) x_lo = v[t], ++holders_lo;
          if (rank == hi) x_hi = v[t], ++holders_hi;
        }
        REQUIRE(holders_lo == 1);  // each rank held once, so the GPU's shared write has one writer
        REQUIRE(holders_hi == 1);
        got = v_block_params(max, quantile_between(x_lo, x_hi, np, p), bits);
      }
      REQUIRE(std::memcmp(&got.d, &want.d, sizeof(float)) == 0);
      REQUIRE(std::memcmp(&got.alpha, &want.alpha, sizeof(float)) == 0);
    }

    // The signed absmax by a pairwise tree (the GPU's order) equals m_block_scale_of's fold.
    std::vector<float> tree(kStateBlock, 0.0f);
    std::copy(x.begin(), x.end(), tree.begin());
    for (int stride = kStateBlock / 2; stride > 0; stride /= 2)
      for (int t = 0; t < stride; ++t) tree[t] = signed_absmax_combine(tree[t], tree[t + stride]);
    const float got = m_block_scale(signed_absmax_from_tree(tree[0], x[count - 1]), bits);
    const float want = m_block_scale_of(x.data(), count, bits);
    REQUIRE(std::memcmp(&got, &want, sizeof(float)) == 0);
  }
}

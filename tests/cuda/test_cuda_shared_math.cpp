// GPU vs CPU, bit for bit: shared_math_element (FP8/BF16/INT8 codecs with RTN and SR, the Philox
// stream, one AdamW step with ECO's injection and an SR-stored weight) compiled by nvcc and run on
// the GPU must give exactly what the host build of the same source gives. The codecs' correctness
// itself is tested against independent references in tests/test_fp8_codecs.cpp and friends.
// Skipped (ctest exit 4) where there is no GPU.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "../test_util.h"
#include "core/float_bits.h"
#include "quant/fp8.h"
#include "shared_math_kernels.h"

using eco_cuda_test::AdamArgs;
using eco_cuda_test::SharedMathOut;
using eco::float_to_bits;

namespace {

// Inputs that reach every branch of the codecs: every E4M3 and E5M2 value, the midpoints between
// neighbours and their float neighbours, specials, subnormals, and random floats over a wide
// exponent range.
std::vector<float> codec_inputs() {
  std::vector<float> xs;
  for (int c = 0; c < 256; ++c) {
    for (float v : {eco::e4m3_decode(static_cast<uint8_t>(c)), eco::e5m2_decode(static_cast<uint8_t>(c))}) {
      xs.push_back(v);
      xs.push_back(std::nextafter(v, INFINITY));
      xs.push_back(std::nextafter(v, -INFINITY));
    }
  }
  for (int c = 0; c < 255; ++c) {
    for (int fmt = 0; fmt < 2; ++fmt) {
      auto decode = [fmt](int code) { return fmt ? eco::e5m2_decode(code) : eco::e4m3_decode(code); };
      const float a = decode(c), b = decode(c + 1);
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      const float mid = 0.5f * (a + b);
      xs.insert(xs.end(), {mid, std::nextafter(mid, INFINITY), std::nextafter(mid, -INFINITY), -mid});
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  xs.insert(xs.end(), {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(), 1e-45f, -1e-45f, 1e-38f,
                       3.4e38f, -3.4e38f, 127.5f, -127.5f, 126.5f, 500.0f, 70000.0f});
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> ex(-30, 20), sign(0, 1);
  while (xs.size() < (1u << 20)) xs.push_back((sign(rng) ? -1.0f : 1.0f) * std::ldexp(mant(rng), ex(rng)));
  return xs;
}

}  // namespace

TEST_CASE("GPU and CPU builds of the ECO_HD math agree bit for bit", "[cuda]") {
  std::string why;
  if (eco_cuda_test::cuda_device_count(&why) == 0) eco_test::skip("no GPU: " + why);

  const std::vector<float> x = codec_inputs();
  const size_t n = x.size();
  std::vector<float> g(n), m(n), v(n);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (size_t i = 0; i < n; ++i) {
    g[i] = 1e-3f * nd(rng);
    m[i] = 1e-3f * nd(rng);
    v[i] = 1e-6f * std::fabs(nd(rng));
  }
  const AdamArgs a{/*lr=*/3e-4f, 0.9f, 0.98f, 1e-9f, 0.1f, /*t=*/17, /*scale=*/0.02f / 448.0f, 1337, 42, 7};
  std::vector<SharedMathOut> gpu(n);
  const std::string err = eco_cuda_test::run_shared_math(x.data(), g.data(), m.data(), v.data(), n, a, gpu.data());
  REQUIRE(err.empty());

  const eco::AdamStepConsts c = eco::make_adam_consts(a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.t);
  size_t mismatched = 0, adam_compared = 0;
  for (size_t i = 0; i < n; ++i) {
    const SharedMathOut want = eco_cuda_test::shared_math_element(x[i], g[i], m[i], v[i], i, a, c);
    const SharedMathOut& got = gpu[i];
    auto same_bits = [](float p, float q) { return float_to_bits(p) == float_to_bits(q); };
    bool same = got.random == want.random && got.e4m3_rtn == want.e4m3_rtn && got.e4m3_sr == want.e4m3_sr &&
                got.e5m2_rtn == want.e5m2_rtn && got.e5m2_sr == want.e5m2_sr && got.int8_rtn == want.int8_rtn &&
                got.int8_sr == want.int8_sr && got.bf16_rtn == want.bf16_rtn && got.bf16_sr == want.bf16_sr &&
                same_bits(got.e4m3_decoded, want.e4m3_decoded) && same_bits(got.e5m2_decoded, want.e5m2_decoded);
    // The optimizer path is compared for finite weights only: a NaN's payload may legitimately
    // differ between the two processors' arithmetic.
    if (std::isfinite(x[i]) && std::fabs(x[i]) < 1e30f) {
      ++adam_compared;
      same = same && got.w_code == want.w_code && same_bits(got.m, want.m) && same_bits(got.v, want.v);
    }
    if (!same && ++mismatched <= 5)
      UNSCOPED_INFO("element " << i << " x=" << x[i] << " (bits " << std::hex << float_to_bits(x[i]) << std::dec
                                << ")");
  }
  INFO(n << " elements, " << adam_compared << " optimizer steps compared");
  CHECK(mismatched == 0);
}

// The project's flags keep a*b+c as two roundings even where the target has FMA: this file is
// built with -mfma (tests/CMakeLists.txt), so without -ffp-contract=off GCC would fuse mul_add.
#include <cmath>

#include <catch2/catch.hpp>

#include "optim/update_rule.h"
#include "test_util.h"

namespace {
__attribute__((noinline)) float mul_add(float a, float b, float c) { return a * b + c; }
}  // namespace

TEST_CASE("a*b+c is not contracted into an FMA by the host compiler") {
  if (!__builtin_cpu_supports("fma")) eco_test::skip("this CPU has no FMA instructions to run the -mfma build");
  const float a = 1.0f + 0x1.0p-12f;
  volatile float product = a * a;  // rounded once here
  const float two_roundings = product + -1.0f;
  const float fused = std::fma(a, a, -1.0f);
  REQUIRE(fused != two_roundings);  // the inputs tell the two apart
  CHECK(mul_add(a, a, -1.0f) == two_roundings);
  // The shared optimizer math is compiled by the same rules.
  eco::AdamStepConsts c = eco::make_adam_consts(1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  float m = 0.25f, v = 0.5f;
  const float d = eco::adam_moments(a, m, v, c);
  volatile float m1 = c.beta1 * 0.25f;
  volatile float m2 = (1.0f - c.beta1) * a;
  CHECK(m == m1 + m2);
  CHECK(std::isfinite(d));
}

#pragma once
// Eight-lane float vectors (GCC vector extensions) and the transcendental functions the CPU ops
// need (exp, sigmoid), written so that the build's baseline ISA (SSE, two ops per vector) and an
// AVX2 clone of the same function give bit-identical results: every operation is a single IEEE
// rounding per lane, nothing is contracted into an FMA (no target here enables FMA) and every
// reduction runs in a fixed lane order. glibc's scalar expf is ~10x slower than this, and the
// softmax over a 50k vocabulary calls exp twice per logit per step.
#include <bit>
#include <cstdint>
#include <cstring>

#include "core/exp_poly.h"

// No vector crosses a call boundary (see ECO_VEC), so GCC's warning that returning one by value
// depends on -mavx is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace eco::vec {

// Always inlined, and vectors are passed by reference, so no vector crosses a call boundary.
#define ECO_VEC inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

ECO_VEC v8f load(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
ECO_VEC void store(float* p, const v8f& v) { std::memcpy(p, &v, sizeof v); }
ECO_VEC v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }

ECO_VEC v8f vmax(const v8f& a, const v8f& b) { return a > b ? a : b; }

// Lane sum in a fixed pairwise order.
ECO_VEC float hsum(const v8f& v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
ECO_VEC float hmax(const v8f& v) {
  float m = v[0];
  for (int i = 1; i < 8; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// Σ x[i]·y[i] over n floats, 8 lanes then a fixed-order lane sum and a sequential tail.
ECO_VEC float dot(const float* x, const float* y, int n) {
  v8f acc = splat(0.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) acc += load(x + i) * load(y + i);
  float s = hsum(acc);
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}
ECO_VEC float sum(const float* x, int n) {
  v8f acc = splat(0.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) acc += load(x + i);
  float s = hsum(acc);
  for (; i < n; ++i) s += x[i];
  return s;
}

// exp(x) on eight lanes: the sequence of core/exp_poly.h (the CUDA kernels run it per element),
// lane by lane the same roundings.
ECO_VEC v8f exp(const v8f& in) {
  namespace k = eco::exp_poly;
  v8f x = in < splat(k::kClampLo) ? splat(k::kClampLo) : in;
  x = x > splat(k::kClampHi) ? splat(k::kClampHi) : x;
  const v8f shifter = splat(k::kShifter);
  const v8f t = x * splat(k::kLog2e) + shifter;
  const v8f n = t - shifter;
  v8f r = x - n * splat(k::kLn2Hi);
  r = r - n * splat(k::kLn2Lo);
  v8f p = splat(k::kP0);
  p = p * r + splat(k::kP1);
  p = p * r + splat(k::kP2);
  p = p * r + splat(k::kP3);
  p = p * r + splat(k::kP4);
  p = p * r + splat(k::kP5);
  p = p * r * r + r + splat(1.0f);
  const v8i ni = std::bit_cast<v8i>(t) - std::bit_cast<v8i>(shifter);
  const v8f scale = std::bit_cast<v8f>((ni + 127) << 23);
  return p * scale;
}

// 1 / (1 + exp(-x)), accurate at both tails (no cancellation).
ECO_VEC v8f sigmoid(const v8f& x) { return splat(1.0f) / (splat(1.0f) + exp(-x)); }

// Scalar versions through lane 0, for loop tails: identical results to the vector lanes.
ECO_VEC float exp1(float x) { return exp(splat(x))[0]; }
ECO_VEC float sigmoid1(float x) { return sigmoid(splat(x))[0]; }

}  // namespace eco::vec

// Elementwise layers: GELU (tanh form), SwiGLU, residual add. The transcendental ones go through
// the 8-lane exp of vec_math.h with an AVX2 clone (bit-identical to the baseline build).
// GELU's tanh is written as a sigmoid, 0.5·(1 + tanh(u)) = σ(2u), which has no cancellation at
// large negative inputs.
#include <algorithm>

#include "cpu/cpu_kernels.h"
#include "cpu/vec_math.h"

namespace eco::cpu {
namespace {

constexpr size_t kChunk = 8192;  // elements per parallel task
constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluK1 = 0.044715f;

template <class Body>
void parallel_chunks(size_t n, Body body) {
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t lo = static_cast<size_t>(c) * kChunk;
    body(lo, std::min(n, lo + kChunk) - lo);
  }
}

__attribute__((target_clones("avx2", "default"))) void gelu_fwd_span(float* out, const float* inp, size_t n) {
  using namespace vec;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f x = load(inp + i);
    const v8f u = splat(kGeluK0) * (x + splat(kGeluK1) * x * x * x);
    store(out + i, x * sigmoid(u + u));
  }
  for (; i < n; ++i) {
    const float x = inp[i];
    const float u = kGeluK0 * (x + kGeluK1 * x * x * x);
    out[i] = x * sigmoid1(u + u);
  }
}

__attribute__((target_clones("avx2", "default"))) void gelu_bwd_span(float* dinp, const float* inp,
                                                                     const float* dout, size_t n) {
  using namespace vec;
  // d/dx [x·σ(2u)] = σ + x·σ(1−σ)·2u',  u' = k0·(1 + 3·k1·x²)
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f x = load(inp + i);
    const v8f u = splat(kGeluK0) * (x + splat(kGeluK1) * x * x * x);
    const v8f s = sigmoid(u + u);
    const v8f du = splat(2.0f * kGeluK0) * (splat(1.0f) + splat(3.0f * kGeluK1) * x * x);
    store(dinp + i, load(dout + i) * (s + x * s * (splat(1.0f) - s) * du));
  }
  for (; i < n; ++i) {
    const float x = inp[i];
    const float u = kGeluK0 * (x + kGeluK1 * x * x * x);
    const float s = sigmoid1(u + u);
    const float du = (2.0f * kGeluK0) * (1.0f + (3.0f * kGeluK1) * x * x);
    dinp[i] = dout[i] * (s + x * s * (1.0f - s) * du);
  }
}

__attribute__((target_clones("avx2", "default"))) void swiglu_fwd_row(float* out, const float* gate,
                                                                      const float* up, int H) {
  using namespace vec;
  int i = 0;
  for (; i + 8 <= H; i += 8) {
    const v8f g = load(gate + i);
    store(out + i, g * sigmoid(g) * load(up + i));
  }
  for (; i < H; ++i) out[i] = gate[i] * sigmoid1(gate[i]) * up[i];
}

__attribute__((target_clones("avx2", "default"))) void swiglu_bwd_row(float* dgate, float* dup, const float* gate,
                                                                      const float* up, const float* dout, int H) {
  using namespace vec;
  // out = g·σ(g)·u:  d/dg = u·(σ + g·σ(1−σ)),  d/du = g·σ(g)
  int i = 0;
  for (; i + 8 <= H; i += 8) {
    const v8f g = load(gate + i), u = load(up + i), dy = load(dout + i);
    const v8f s = sigmoid(g);
    store(dgate + i, dy * u * (s + g * s * (splat(1.0f) - s)));
    store(dup + i, dy * g * s);
  }
  for (; i < H; ++i) {
    const float g = gate[i], s = sigmoid1(g);
    dgate[i] = dout[i] * up[i] * (s + g * s * (1.0f - s));
    dup[i] = dout[i] * g * s;
  }
}

}  // namespace

void gelu_forward(float* out, const float* inp, size_t n) {
  parallel_chunks(n, [&](size_t lo, size_t len) { gelu_fwd_span(out + lo, inp + lo, len); });
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  parallel_chunks(n, [&](size_t lo, size_t len) { gelu_bwd_span(dinp + lo, inp + lo, dout + lo, len); });
}

void swiglu_forward(float* out, const float* inp, int N, int H) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* row = inp + static_cast<size_t>(n) * 2 * H;
    swiglu_fwd_row(out + static_cast<size_t>(n) * H, row, row + H, H);
  }
}

void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* row = inp + static_cast<size_t>(n) * 2 * H;
    float* drow = dinp + static_cast<size_t>(n) * 2 * H;
    swiglu_bwd_row(drow, drow + H, row, row + H, dout + static_cast<size_t>(n) * H, H);
  }
}

void residual_forward(float* out, const float* a, const float* b, size_t n) {
  parallel_chunks(n, [&](size_t lo, size_t len) {
    for (size_t i = lo; i < lo + len; ++i) out[i] = a[i] + b[i];
  });
}

void residual_backward(float* da, float* db, const float* dout, size_t n) {
  parallel_chunks(n, [&](size_t lo, size_t len) {
    for (size_t i = lo; i < lo + len; ++i) {
      da[i] += dout[i];
      db[i] += dout[i];
    }
  });
}

}  // namespace eco::cpu

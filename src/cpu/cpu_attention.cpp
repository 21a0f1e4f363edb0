// Causal multi-head attention from llm.c's fused qkv layout. One (batch, head) pair per task: the
// scores, P·V and the four backward products are small single-threaded GEMMs on strided views of
// qkv, and the (b, h) pairs are spread over the OpenMP team (disjoint outputs, so deterministic).
#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/vec_math.h"

namespace eco::cpu {
namespace {

// In place: x[0..n) ← softmax(x[0..n)); x[n..T) ← 0 (the causal mask).
__attribute__((target_clones("avx2", "default"))) void causal_softmax_row(float* x, int n, int T) {
  using namespace vec;
  float mx = x[0];
  int i = 0;
  if (n >= 8) {
    v8f m = load(x);
    for (i = 8; i + 8 <= n; i += 8) m = vmax(m, load(x + i));
    mx = hmax(m);
  }
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  v8f acc = splat(0.0f);
  i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f e = vec::exp(load(x + i) - splat(mx));
    store(x + i, e);
    acc += e;
  }
  float sum = hsum(acc);
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (i = 0; i < n; ++i) x[i] *= inv;
  for (i = n; i < T; ++i) x[i] = 0.0f;
}

}  // namespace

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  blas_single_threaded();
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    const float* q = qkv + static_cast<size_t>(b) * T * C3 + h * hs;
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* P = att + static_cast<size_t>(bh) * T * T;
    // Full T×T scores (the masked half is cheap at these T and keeps the GEMM a single call).
    sgemm(false, true, T, T, hs, scale, q, C3, k, C3, 0.0f, P, T);
    for (int t = 0; t < T; ++t) causal_softmax_row(P + static_cast<size_t>(t) * T, t + 1, T);
    sgemm(false, false, T, hs, T, 1.0f, P, T, v, C3, 0.0f, out + static_cast<size_t>(b) * T * C + h * hs, C);
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C,
                        int NH) {
  const int hs = C / NH;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  blas_single_threaded();
#pragma omp parallel
  {
    std::vector<float> dS(static_cast<size_t>(T) * T);
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; ++bh) {
      const int b = bh / NH, h = bh % NH;
      const size_t qoff = static_cast<size_t>(b) * T * C3 + h * hs;
      const float* q = qkv + qoff;
      const float* k = q + C;
      const float* v = q + 2 * C;
      const float* P = att + static_cast<size_t>(bh) * T * T;
      const float* dO = dout + static_cast<size_t>(b) * T * C + h * hs;
      // dP = dO·Vᵀ, then the softmax backward dS = P ⊙ (dP − rowsum(P ⊙ dP)), times the score scale.
      sgemm(false, true, T, T, hs, 1.0f, dO, C, v, C3, 0.0f, dS.data(), T);
      for (int t = 0; t < T; ++t) {
        const float* p = P + static_cast<size_t>(t) * T;
        float* ds = dS.data() + static_cast<size_t>(t) * T;
        float dot = 0.0f;
        for (int j = 0; j <= t; ++j) dot += p[j] * ds[j];
        for (int j = 0; j <= t; ++j) ds[j] = p[j] * (ds[j] - dot) * scale;
        for (int j = t + 1; j < T; ++j) ds[j] = 0.0f;
      }
      float* dq = dqkv + qoff;
      sgemm(false, false, T, hs, T, 1.0f, dS.data(), T, k, C3, 0.0f, dq, C3);      // dQ = dS·K
      sgemm(true, false, T, hs, T, 1.0f, dS.data(), T, q, C3, 0.0f, dq + C, C3);   // dK = dSᵀ·Q
      sgemm(true, false, T, hs, T, 1.0f, P, T, dO, C, 0.0f, dq + 2 * C, C3);        // dV = Pᵀ·dO
    }
  }
}

}  // namespace eco::cpu

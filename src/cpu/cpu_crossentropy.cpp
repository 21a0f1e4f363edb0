// Softmax + cross-entropy over the (padded) vocabulary, one row per token. With GPT-2's 50k
// vocabulary this is the largest non-GEMM cost of a step: each row is read for the max, read for
// Σ exp, and in the backward read and overwritten once more (exp again instead of storing a second
// B·T·V probability buffer). A row (200 KB) stays in L2 between the passes.
#include <cmath>

#include "cpu/cpu_kernels.h"
#include "cpu/vec_math.h"

namespace eco::cpu {
namespace {

// log Σ_{i<V} exp(x[i]), with the max subtracted first.
__attribute__((target_clones("avx2", "default"))) float row_logsumexp(const float* x, int V) {
  using namespace vec;
  float mx = x[0];
  int i = 0;
  if (V >= 8) {
    v8f m = load(x);
    for (i = 8; i + 8 <= V; i += 8) m = vmax(m, load(x + i));
    mx = hmax(m);
  }
  for (; i < V; ++i) mx = x[i] > mx ? x[i] : mx;
  // Four independent accumulators hide the add latency; combined in a fixed order.
  v8f a0 = splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
  const v8f vm = splat(mx);
  i = 0;
  for (; i + 32 <= V; i += 32) {
    a0 += vec::exp(load(x + i) - vm);
    a1 += vec::exp(load(x + i + 8) - vm);
    a2 += vec::exp(load(x + i + 16) - vm);
    a3 += vec::exp(load(x + i + 24) - vm);
  }
  for (; i + 8 <= V; i += 8) a0 += vec::exp(load(x + i) - vm);
  float s = hsum((a0 + a1) + (a2 + a3));
  for (; i < V; ++i) s += exp1(x[i] - mx);
  return mx + std::log(s);
}

// d[i] = dloss·exp(x[i] − lse) for i < V, 0 for the padding; d may alias x.
__attribute__((target_clones("avx2", "default"))) void row_softmax_grad(float* d, const float* x, float lse,
                                                                        float dloss, int V, int Vp) {
  using namespace vec;
  const v8f vl = splat(lse), vd = splat(dloss);
  int i = 0;
  for (; i + 8 <= V; i += 8) store(d + i, vd * vec::exp(load(x + i) - vl));
  for (; i < V; ++i) d[i] = dloss * exp1(x[i] - lse);
  for (; i < Vp; ++i) d[i] = 0.0f;
}

}  // namespace

void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N, int V,
                          int Vp) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<size_t>(n) * Vp;
    const float l = row_logsumexp(x, V);
    lse[n] = l;
    losses[n] = l - x[targets[n]];
  }
}

void crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, float dloss,
                           int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<size_t>(n) * Vp;
    float* d = dlogits + static_cast<size_t>(n) * Vp;
    row_softmax_grad(d, x, lse[n], dloss, V, Vp);
    d[targets[n]] -= dloss;
  }
}

}  // namespace eco::cpu

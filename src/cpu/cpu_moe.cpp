// The sparse-MoE kernels of the CPU backend: routing (the shared per-token math of core/moe_math.h),
// the dispatch plan, and the gather / combine that move token rows between the token order and the
// expert-grouped order. Every output row is written by exactly one thread, so results are
// bit-identical whatever the thread count.
#include <vector>

#include "core/moe_math.h"
#include "cpu/cpu_kernels.h"

namespace eco::cpu {

void moe_route(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits, const float* bias,
               int N, int E, int K, bool renormalize) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const size_t ne = static_cast<size_t>(n) * E, nk = static_cast<size_t>(n) * K;
    lse[n] = moe_math::route_token(probs + ne, expert_idx + nk, gates + nk, logits + ne, bias, E, K, renormalize);
  }
}

// Sequential: one pass to count, one to place. N*K is at most a few hundred thousand assignments.
void moe_dispatch_plan(int32_t* counts, int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx, int N, int K,
                       int E, int capacity) {
  const size_t NK = static_cast<size_t>(N) * K;
  std::vector<int32_t> routed(static_cast<size_t>(E), 0);
  for (size_t a = 0; a < NK; ++a) ++routed[static_cast<size_t>(expert_idx[a])];
  std::vector<int32_t> start(static_cast<size_t>(E), 0), filled(static_cast<size_t>(E), 0);
  int32_t row = 0;
  for (int e = 0; e < E; ++e) {
    const int32_t kept = capacity > 0 && routed[e] > capacity ? capacity : routed[e];
    counts[e] = kept;
    counts[E + e] = routed[e];
    start[e] = row;
    row += kept;
  }
  for (size_t a = 0; a < NK; ++a) {  // assignment a = n*K + j: token order, then choice order
    const size_t e = static_cast<size_t>(expert_idx[a]);
    if (filled[e] < counts[e]) {
      const int32_t r = start[e] + filled[e]++;
      slot_of[a] = r;
      token_of[r] = static_cast<int32_t>(a / static_cast<size_t>(K));
    } else {
      slot_of[a] = -1;
    }
  }
}

void moe_gather(float* out, const float* x, const int32_t* token_of, int rows, int C) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const float* src = x + static_cast<size_t>(token_of[r]) * C;
    float* dst = out + static_cast<size_t>(r) * C;
    for (int c = 0; c < C; ++c) dst[c] = src[c];
  }
}

void moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_of, int N, int K, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* d = dx + static_cast<size_t>(n) * C;
    for (int c = 0; c < C; ++c) d[c] = 0.0f;
    for (int j = 0; j < K; ++j) {
      const int32_t s = slot_of[static_cast<size_t>(n) * K + j];
      if (s < 0) continue;
      const float* src = dxp + static_cast<size_t>(s) * C;
      for (int c = 0; c < C; ++c) d[c] += src[c];
    }
  }
}

void moe_combine(float* y, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* out = y + static_cast<size_t>(n) * C;
    for (int c = 0; c < C; ++c) out[c] = 0.0f;
    for (int j = 0; j < K; ++j) {
      const size_t a = static_cast<size_t>(n) * K + j;
      if (slot_of[a] < 0) continue;
      const float g = gates[a];
      const float* src = expert_out + static_cast<size_t>(slot_of[a]) * C;
      for (int c = 0; c < C; ++c) out[c] += g * src[c];
    }
  }
}

void moe_combine_backward(float* dexpert_out, float* dgates, const float* dy, const float* expert_out,
                          const float* gates, const int32_t* slot_of, int N, int K, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* d = dy + static_cast<size_t>(n) * C;
    for (int j = 0; j < K; ++j) {
      const size_t a = static_cast<size_t>(n) * K + j;
      if (slot_of[a] < 0) {
        dgates[a] = 0.0f;
        continue;
      }
      const size_t row = static_cast<size_t>(slot_of[a]) * C;
      const float g = gates[a];
      float dot = 0.0f;
      for (int c = 0; c < C; ++c) {
        dexpert_out[row + c] = g * d[c];
        dot += d[c] * expert_out[row + c];
      }
      dgates[a] = dot;
    }
  }
}

void moe_router_backward(float* dlogits, const float* probs, const float* lse, const int32_t* expert_idx,
                         const float* gates, const float* dgates, const int32_t* routed, float aux_scale, float z_scale,
                         int N, int E, int K, bool renormalize) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const size_t ne = static_cast<size_t>(n) * E, nk = static_cast<size_t>(n) * K;
    moe_math::router_backward_token(dlogits + ne, probs + ne, lse[n], expert_idx + nk, gates + nk, dgates + nk, routed,
                                    aux_scale, z_scale, E, K, renormalize);
  }
}

void moe_accumulate_prob_sums(float* sums, const float* probs, int N, int E) {
#pragma omp parallel for schedule(static)
  for (int e = 0; e < E; ++e) {
    double s = 0.0;
    for (int n = 0; n < N; ++n) s += probs[static_cast<size_t>(n) * E + e];
    sums[e] = static_cast<float>(static_cast<double>(sums[e]) + s);
  }
}

}  // namespace eco::cpu

#pragma once
// Per-token MoE router math shared by the CPU and CUDA backends (ECO_HD, core/hd.h): the softmax
// with the shared exponential (core/exp_poly.h), the top-k selection and the router backward, each
// in one fixed operation order, so both backends route every token identically and their gradients
// agree bit for bit (the log-sum-exp, which uses the platform's log, to an ulp).
#include <cmath>
#include <cstdint>

#include "core/exp_poly.h"
#include "core/hd.h"

namespace eco::moe_math {

// One token: probs[E] = softmax(logits[E]); returns log Σ exp(logits). The K experts with the
// largest probs[e] + bias[e] (bias may be nullptr) go to idx[K] in descending order, ties to the
// lower expert index; a NaN score never wins, so NaN logits still select K distinct experts (the
// NaN reaches the loss, where the trainer catches it). gates[j] = probs[idx[j]] / (renormalize ?
// their sum : 1).
ECO_HD float route_token(float* probs, int32_t* idx, float* gates, const float* logits, const float* bias, int E,
                         int K, bool renormalize) {
  float mx = logits[0];
  for (int e = 1; e < E; ++e) mx = logits[e] > mx ? logits[e] : mx;
  float sum = 0.0f;
  for (int e = 0; e < E; ++e) {
    probs[e] = exp_poly::exp(logits[e] - mx);
    sum += probs[e];
  }
  const float inv = 1.0f / sum;
  for (int e = 0; e < E; ++e) probs[e] = probs[e] * inv;
  float selected = 0.0f;
  for (int j = 0; j < K; ++j) {
    int best = -1;
    float best_score = 0.0f;
    for (int e = 0; e < E; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken = taken || idx[i] == e;
      if (taken) continue;
      const float score = bias ? probs[e] + bias[e] : probs[e];
      if (best < 0 || score > best_score) {
        best = e;
        best_score = score;
      }
    }
    idx[j] = best;
    gates[j] = probs[best];
    selected += probs[best];
  }
  if (renormalize) {
    const float inv_sel = 1.0f / selected;
    for (int j = 0; j < K; ++j) gates[j] = gates[j] * inv_sel;
  }
  return mx + logf(sum);
}

// The gate part of dL/dprobs[e] for one token: 0 unless e is selected (ops.h, moe_router_backward).
ECO_HD float gate_grad(int e, const float* probs, const int32_t* idx, const float* gates, const float* dgates, int K,
                       bool renormalize) {
  int j = -1;
  for (int i = 0; i < K; ++i) j = idx[i] == e ? i : j;
  if (j < 0) return 0.0f;
  if (!renormalize) return dgates[j];
  float dot = 0.0f, selected = 0.0f;
  for (int i = 0; i < K; ++i) {
    dot += dgates[i] * gates[i];
    selected += probs[idx[i]];
  }
  return (dgates[j] - dot) / selected;
}

// dlogits[e] of one token (ops.h, moe_router_backward). O(E·K): E and K are small.
ECO_HD void router_backward_token(float* dlogits, const float* probs, float lse, const int32_t* idx,
                                  const float* gates, const float* dgates, const int32_t* routed, float aux_scale,
                                  float z_scale, int E, int K, bool renormalize) {
  float s = 0.0f;  // Σ_e probs[e]·dprobs[e], in expert order
  for (int e = 0; e < E; ++e) {
    const float dp = aux_scale * static_cast<float>(routed[e]) + gate_grad(e, probs, idx, gates, dgates, K, renormalize);
    s += probs[e] * dp;
  }
  const float z = z_scale * lse;
  for (int e = 0; e < E; ++e) {
    const float dp = aux_scale * static_cast<float>(routed[e]) + gate_grad(e, probs, idx, gates, dgates, K, renormalize);
    dlogits[e] = probs[e] * (dp - s) + z * probs[e];
  }
}

}  // namespace eco::moe_math

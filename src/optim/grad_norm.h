#pragma once
// Global gradient norm and clipping. The norm is summed in double over fixed-size chunks in a
// fixed order, so it does not depend on the thread count (needed for bit-exact resume). The host
// functions serve the CPU backend (CpuOps::accumulate_sum_squares) and tests; the trainer reaches
// them through Ops, so the gradients never leave the backend.
#include <cstddef>

namespace eco {

// Σ g² in double, chunked; NaN/Inf if any value is non-finite.
double sum_of_squares(const float* x, size_t n);

// sqrt(Σ g²); returns NaN/Inf if any gradient is non-finite.
double global_grad_norm(const float* grads, size_t n);

// The factor min(1, max_norm / norm) that clips to max_norm: 1 when max_norm <= 0, when the norm
// is not finite or when it is within the limit.
float clip_factor(double norm, double max_norm);

// Scales grads by clip_factor(norm, max_norm) when it is not 1; returns the factor.
float clip_grads(float* grads, size_t n, double norm, double max_norm);

}  // namespace eco

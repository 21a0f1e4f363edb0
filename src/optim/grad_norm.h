#pragma once
// Global gradient norm and clipping. The norm is summed in double over fixed-size chunks in a
// fixed order, so it does not depend on the thread count (needed for bit-exact resume).
#include <cstddef>

namespace eco {

// sqrt(Σ g²); returns NaN/Inf if any gradient is non-finite.
double global_grad_norm(const float* grads, size_t n);

// Scales grads by min(1, max_norm / norm) when max_norm > 0 and norm is finite; returns the factor.
float clip_grads(float* grads, size_t n, double norm, double max_norm);

}  // namespace eco

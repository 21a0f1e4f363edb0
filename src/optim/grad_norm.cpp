#include "optim/grad_norm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace eco {

double sum_of_squares(const float* x, size_t n) {
  constexpr size_t kChunk = 1 << 16;
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t lo = static_cast<size_t>(c) * kChunk, hi = std::min(n, lo + kChunk);
    double s = 0.0;
    for (size_t i = lo; i < hi; ++i) s += static_cast<double>(x[i]) * x[i];
    partial[static_cast<size_t>(c)] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

double global_grad_norm(const float* grads, size_t n) { return std::sqrt(sum_of_squares(grads, n)); }

float clip_factor(double norm, double max_norm) {
  if (max_norm <= 0.0 || !std::isfinite(norm) || norm <= max_norm) return 1.0f;
  return static_cast<float>(max_norm / (norm + 1e-6));
}

float clip_grads(float* grads, size_t n, double norm, double max_norm) {
  const float scale = clip_factor(norm, max_norm);
  if (scale == 1.0f) return scale;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) grads[i] *= scale;
  return scale;
}

}  // namespace eco

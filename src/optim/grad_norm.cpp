#include "optim/grad_norm.h"

#include <cmath>
#include <vector>

namespace eco {

double global_grad_norm(const float* grads, size_t n) {
  constexpr size_t kChunk = 1 << 16;
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    size_t lo = static_cast<size_t>(c) * kChunk, hi = std::min(n, lo + kChunk);
    double s = 0.0;
    for (size_t i = lo; i < hi; ++i) s += static_cast<double>(grads[i]) * grads[i];
    partial[c] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

float clip_grads(float* grads, size_t n, double norm, double max_norm) {
  if (max_norm <= 0.0 || !std::isfinite(norm) || norm <= max_norm) return 1.0f;
  const float scale = static_cast<float>(max_norm / (norm + 1e-6));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) grads[i] *= scale;
  return scale;
}

}  // namespace eco

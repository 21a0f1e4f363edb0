#pragma once
// The timed training iteration the GPU training benchmarks share (bench_gpu_train, bench_gpu_moe):
// forward + backward + optimizer step on fixed tokens, one warm-up iteration, then `steps` timed
// ones between two device synchronisations; the peak of the backend's allocations is tracked.
#if defined(ECO_WITH_CUDA)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "cuda/cuda_ops.h"
#include "train/model_weights.h"

namespace eco_bench {

struct TrainingTiming {
  double tokens_per_s = 0.0;
  size_t peak_bytes = 0;
};

inline TrainingTiming time_training(eco::ModelWeights& w, eco::cuda::CudaOps& ops, const std::vector<int32_t>& tokens,
                                    int B, int T, int steps) {
  int64_t* bad = static_cast<int64_t*>(ops.alloc(sizeof(int64_t)));
  ops.fill_zero(bad, sizeof(int64_t));
  double* loss = static_cast<double*>(ops.alloc(sizeof(double)));
  TrainingTiming r;
  auto iteration = [&](int t) {
    w.model().zero_grad();
    w.model().forward_accumulate_loss(tokens.data(), tokens.data(), B, T, loss);
    w.model().backward();
    w.step(1e-4f, t, 1.0f, bad);
    r.peak_bytes = std::max(r.peak_bytes, ops.allocated_bytes());
  };
  iteration(1);  // warm-up: allocations, descriptor caches
  ops.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) iteration(s + 2);
  ops.synchronize();
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_s = static_cast<double>(B) * T * steps / sec;
  ops.free(bad);
  ops.free(loss);
  return r;
}

}  // namespace eco_bench
#endif

// CudaOps: softmax + cross-entropy over the padded vocabulary (CPU twin: src/cpu/cpu_crossentropy.cpp).
//
// Forward: one warp per row, and the warp IS the CPU's accumulator set: row_logsumexp keeps four
// 8-lane accumulators a0..a3 that take 32 consecutive logits per step, so warp lane j plays lane
// j%8 of a(j/8), then the lanes are combined with shuffles in the CPU's fixed order
// ((a0+a1)+(a2+a3), then hsum), and lane 0 adds the scalar tail in order. The exponential is the
// CPU's polynomial (core/exp_poly.h), so Σ exp is the CPU's to the bit and reads are coalesced.
// Only the final log differs: glibc's logf (< 1 ulp) vs log in double rounded to float here
// (correctly rounded), so lse and the loss may differ from the CPU's by about one ulp of log Σ.
//
// Backward: one block per row, dlogits[i] = dloss·exp(x[i] − lse) − dloss·[i = target], 0 for the
// padding; each element is read and written by one thread, so dlogits may alias logits. Given the
// same lse it equals the CPU's bit for bit.
#include <algorithm>

#include "core/exp_poly.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"

namespace eco::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kRowsPerBlock = 4;  // forward: one warp per row
constexpr int kBackwardThreads = 256;

__global__ void crossentropy_forward_kernel(float* losses, float* lse, const float* logits, const int32_t* targets,
                                            int N, int V, int Vp) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (row >= N) return;  // whole warps leave together: the shuffles below see full warps
  const float* x = logits + static_cast<size_t>(row) * Vp;

  // The max is the same value in any order (up to the sign of a zero, which changes no result
  // below), so a plain warp reduction gives the CPU's.
  float mx = x[0];
  for (int i = lane; i < V; i += 32) mx = x[i] > mx ? x[i] : mx;
  for (int off = 16; off > 0; off /= 2) {
    const float o = __shfl_xor_sync(kFullMask, mx, off);
    mx = o > mx ? o : mx;
  }

  // Σ exp(x − max) in row_logsumexp's order; lane j = lane j%8 of accumulator a(j/8).
  float acc = 0.0f;
  int i = 0;
  for (; i + 32 <= V; i += 32) acc += exp_poly::exp(x[i + lane] - mx);
  for (; i + 8 <= V; i += 8)
    if (lane < 8) acc += exp_poly::exp(x[i + lane] - mx);
  // (a0 + a1) + (a2 + a3), lane by lane: lanes 0..7 end up with the 8-lane vector v.
  acc += __shfl_down_sync(kFullMask, acc, 8);
  acc += __shfl_down_sync(kFullMask, acc, 16);
  // hsum(v) = ((v0+v4) + (v1+v5)) + ((v2+v6) + (v3+v7)), in lane 0.
  acc += __shfl_down_sync(kFullMask, acc, 4);
  acc += __shfl_down_sync(kFullMask, acc, 1);
  acc += __shfl_down_sync(kFullMask, acc, 2);
  if (lane != 0) return;
  float s = acc;
  for (; i < V; ++i) s += exp_poly::exp(x[i] - mx);
  const float l = mx + static_cast<float>(log(static_cast<double>(s)));
  lse[row] = l;
  losses[row] = l - x[targets[row]];
}

__global__ void crossentropy_backward_kernel(float* dlogits, const float* logits, const float* lse,
                                             const int32_t* targets, float dloss, int V, int Vp) {
  const size_t row = blockIdx.x;
  const float* x = logits + row * Vp;
  float* d = dlogits + row * Vp;
  const float l = lse[row];
  const int target = targets[row];
  for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
    float g = 0.0f;
    if (i < V) {
      g = dloss * exp_poly::exp(x[i] - l);
      if (i == target) g -= dloss;  // the CPU's d[target] -= dloss, after the store
    }
    d[i] = g;
  }
}

}  // namespace

void CudaOps::crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N,
                                   int V, int Vp) {
  if (N <= 0) return;
  const unsigned blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  crossentropy_forward_kernel<<<blocks, kRowsPerBlock * 32, 0, stream_>>>(losses, lse, logits, targets, N, V, Vp);
  ECO_CUDA_CHECK_LAUNCH("crossentropy_forward_kernel");
}

void CudaOps::crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                                    float dloss, int N, int V, int Vp) {
  if (N <= 0) return;
  crossentropy_backward_kernel<<<static_cast<unsigned>(N), kBackwardThreads, 0, stream_>>>(dlogits, logits, lse,
                                                                                          targets, dloss, V, Vp);
  ECO_CUDA_CHECK_LAUNCH("crossentropy_backward_kernel");
}

}  // namespace eco::cuda

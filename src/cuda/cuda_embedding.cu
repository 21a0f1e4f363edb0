// CudaOps: token + learned-position embedding (CPU twin: src/cpu/cpu_embedding.cpp), equal to
// CpuOps bit for bit.
//
// The backward must add the rows of dout into dwte by token id without float atomics (whose order,
// and so whose rounding, changes run to run). The CPU walks the tokens in order for each channel;
// so do we, with more parallelism: thread (c, p) owns channel c of the vocabulary rows whose id is
// p modulo kTokenPartitions, walks all B·T tokens in order and adds only its own. Every dwte
// element therefore receives its contributions in token order, from one thread — the CPU's sums.
// dwpe[t] += Σ_b dout[b,t] with b in order, one thread per (t, c).
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"

namespace eco::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChannelThreads = 128;
constexpr int kTokenPartitions = 64;

unsigned blocks_for(size_t n) {
  return static_cast<unsigned>(std::min<size_t>((n + kThreads - 1) / kThreads, size_t{1} << 20));
}

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                                         size_t rows, int T, int C) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < rows * C; i += size_t{gridDim.x} * blockDim.x) {
    const size_t bt = i / C, c = i % C;
    const float e = wte[static_cast<size_t>(tokens[bt]) * C + c];
    out[i] = wpe ? e + wpe[(bt % T) * C + c] : e;
  }
}

// grid (channel blocks, kTokenPartitions); the branch on the partition is uniform per block.
__global__ void embedding_backward_wte_kernel(float* __restrict__ dwte, const float* __restrict__ dout,
                                              const int32_t* __restrict__ tokens, int rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const unsigned partition = blockIdx.y;
  for (int bt = 0; bt < rows; ++bt) {
    const int32_t tok = tokens[bt];
    if (static_cast<uint32_t>(tok) % kTokenPartitions != partition) continue;
    dwte[static_cast<size_t>(tok) * C + c] += dout[static_cast<size_t>(bt) * C + c];
  }
}

__global__ void embedding_backward_wpe_kernel(float* dwpe, const float* dout, int B, int T, int C) {
  const size_t n = static_cast<size_t>(T) * C;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    float acc = dwpe[i];
    for (int b = 0; b < B; ++b) acc += dout[static_cast<size_t>(b) * n + i];
    dwpe[i] = acc;
  }
}

}  // namespace

void CudaOps::embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                                int C) {
  const size_t rows = static_cast<size_t>(B) * T;
  if (rows == 0 || C <= 0) return;
  embedding_forward_kernel<<<blocks_for(rows * C), kThreads, 0, stream_>>>(out, tokens, wte, wpe, rows, T, C);
  ECO_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void CudaOps::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                                 int C) {
  if (B <= 0 || T <= 0 || C <= 0) return;
  const dim3 grid((C + kChannelThreads - 1) / kChannelThreads, kTokenPartitions);
  embedding_backward_wte_kernel<<<grid, kChannelThreads, 0, stream_>>>(dwte, dout, tokens, B * T, C);
  ECO_CUDA_CHECK_LAUNCH("embedding_backward_wte_kernel");
  if (!dwpe) return;
  embedding_backward_wpe_kernel<<<blocks_for(static_cast<size_t>(T) * C), kThreads, 0, stream_>>>(dwpe, dout, B, T,
                                                                                                  C);
  ECO_CUDA_CHECK_LAUNCH("embedding_backward_wpe_kernel");
}

}  // namespace eco::cuda

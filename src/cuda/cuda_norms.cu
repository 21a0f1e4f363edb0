// CudaOps: LayerNorm and RMSNorm (CPU twin: src/cpu/cpu_norms.cpp), equal to CpuOps bit for bit.
//
// Row sums: the CPU sums a row with 8-lane vectors (lane l takes elements l, l+8, ...), combines
// the lanes in a fixed pairwise order and adds the C % 8 tail in order. Here a group of 8 threads
// owns a row and does exactly that (thread l = vector lane l, shuffles for the lane sum, thread 0
// for the tail); sqrt and division are IEEE-rounded on both sides (--fmad=false, no fast math), so
// mean, rstd and the outputs are the CPU's.
//
// Parameter gradients: the CPU sums dweight/dbias over chunks of 32 rows into per-chunk partials
// (each from 0, rows in order) and then adds the partials in chunk order. Here one block of 32
// row groups is one chunk: it computes its rows' sums, then each thread walks its columns down the
// 32 rows, writing the chunk's partials to a stream-ordered scratch buffer and the input
// gradient; a second kernel adds the partials in chunk order into the parameter gradients. No
// atomics: deterministic and the CPU's order.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"

namespace eco::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kLanes = 8;                           // vec_math.h's vector width
constexpr int kRowsPerBlock = 32;                   // = cpu_norms.cpp's kRowsPerChunk
constexpr int kThreads = kLanes * kRowsPerBlock;    // 256
constexpr int kReduceThreads = 256;

// Σ_{i<C} term(i) in vec_math.h's order, called by all 32 lanes of the warp (4 row groups);
// lane = this thread's lane in its group of 8; `active` false for a group past the last row (it
// shuffles along but evaluates no term). Every lane of the group gets the sum.
template <class Term>
__device__ float row_sum(int lane, int C, bool active, Term term) {
  const int body = C / kLanes * kLanes;
  float acc = 0.0f;
  if (active)
    for (int i = lane; i < body; i += kLanes) acc += term(i);
  // hsum = ((v0+v4) + (v1+v5)) + ((v2+v6) + (v3+v7)), in group lane 0.
  acc += __shfl_down_sync(kFullMask, acc, 4, kLanes);
  acc += __shfl_down_sync(kFullMask, acc, 1, kLanes);
  acc += __shfl_down_sync(kFullMask, acc, 2, kLanes);
  if (active && lane == 0)
    for (int i = body; i < C; ++i) acc += term(i);
  return __shfl_sync(kFullMask, acc, 0, kLanes);
}

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                         const float* bias, int N, int C, float eps) {
  const int lane = threadIdx.x % kLanes;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kLanes;
  const bool active = row < N;
  const float* x = inp + static_cast<size_t>(active ? row : 0) * C;
  const float m = row_sum(lane, C, active, [&](int i) { return x[i]; }) / static_cast<float>(C);
  const float ssd = row_sum(lane, C, active, [&](int i) {
    const float d = x[i] - m;
    return d * d;
  });
  const float r = 1.0f / sqrtf(ssd / static_cast<float>(C) + eps);  // two-pass variance, as the CPU
  if (!active) return;
  float* y = out + static_cast<size_t>(row) * C;
  for (int i = lane; i < C; i += kLanes) y[i] = (x[i] - m) * r * weight[i] + bias[i];
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                                       float eps) {
  const int lane = threadIdx.x % kLanes;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kLanes;
  const bool active = row < N;
  const float* x = inp + static_cast<size_t>(active ? row : 0) * C;
  const float ms = row_sum(lane, C, active, [&](int i) { return x[i] * x[i]; }) / static_cast<float>(C);
  const float r = 1.0f / sqrtf(ms + eps);
  if (!active) return;
  float* y = out + static_cast<size_t>(row) * C;
  for (int i = lane; i < C; i += kLanes) y[i] = x[i] * r * weight[i];
  if (lane == 0) rstd[row] = r;
}

// One block = one chunk of kRowsPerBlock rows. dinp +=; partial[chunk] gets the chunk's Σ dy·x̂
// (and Σ dy for LayerNorm, `C` floats after it). RMSNorm passes mean == nullptr (m = 0, as the
// CPU's grad_sums(..., 0.0f, ...)) and has no mean(g) term.
template <bool kLayerNorm>
__global__ void norm_backward_kernel(float* dinp, float* partial, const float* dout, const float* inp,
                                     const float* weight, const float* mean, const float* rstd, int N, int C) {
  __shared__ float s_m[kRowsPerBlock], s_r[kRowsPerBlock], s_mean_g[kRowsPerBlock], s_mean_gx[kRowsPerBlock];
  const int row0 = blockIdx.x * kRowsPerBlock;
  const int rows = min(kRowsPerBlock, N - row0);

  // Phase 1: per row, mean(g) and mean(g·x̂) with g = dy·w, in the CPU's grad_sums order.
  {
    const int lane = threadIdx.x % kLanes;
    const int k = threadIdx.x / kLanes;
    const bool active = k < rows;
    const size_t off = static_cast<size_t>(row0 + (active ? k : 0)) * C;
    const float* x = inp + off;
    const float* dy = dout + off;
    const float m = (kLayerNorm && active) ? mean[row0 + k] : 0.0f;
    const float r = active ? rstd[row0 + k] : 0.0f;
    const float sg = kLayerNorm ? row_sum(lane, C, active, [&](int i) { return dy[i] * weight[i]; }) : 0.0f;
    const float sgx = row_sum(lane, C, active, [&](int i) {
      const float g = dy[i] * weight[i];
      return g * ((x[i] - m) * r);
    });
    if (active && lane == 0) {
      s_m[k] = m;
      s_r[k] = r;
      s_mean_g[k] = sg / static_cast<float>(C);
      s_mean_gx[k] = sgx / static_cast<float>(C);
    }
  }
  __syncthreads();

  // Phase 2: each thread walks its columns down the chunk's rows in order.
  const size_t stride = (kLayerNorm ? 2 : 1) * static_cast<size_t>(C);
  float* pw = partial + blockIdx.x * stride;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float w = weight[c];
    float acc_w = 0.0f, acc_b = 0.0f;
    for (int k = 0; k < rows; ++k) {
      const size_t idx = static_cast<size_t>(row0 + k) * C + c;
      const float dy = dout[idx];
      const float r = s_r[k];
      if (kLayerNorm) {
        const float xhat = (inp[idx] - s_m[k]) * r;
        acc_w += dy * xhat;
        acc_b += dy;
        dinp[idx] += (dy * w - s_mean_g[k] - xhat * s_mean_gx[k]) * r;
      } else {
        const float xhat = inp[idx] * r;
        acc_w += dy * xhat;
        dinp[idx] += (dy * w - xhat * s_mean_gx[k]) * r;
      }
    }
    pw[c] = acc_w;
    if (kLayerNorm) pw[C + c] = acc_b;
  }
}

// dparam[c] += Σ_chunks partial[chunk·stride + c], chunks in order (the CPU's reduce_chunks).
__global__ void reduce_chunks_kernel(float* dparam, const float* partial, int chunks, size_t stride, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int ch = 0; ch < chunks; ++ch) acc += partial[ch * stride + c];
  dparam[c] += acc;
}

// Partials in stream-ordered memory, returned to the pool on the stream after the kernels queued
// before the end of the scope (also when a launch check throws). CudaOps has no persistent
// scratch for them.
class StreamScratch {
 public:
  StreamScratch(size_t floats, cudaStream_t stream) : stream_(stream) {
    ECO_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p_), floats * sizeof(float), stream_));
  }
  ~StreamScratch() {
    if (p_) cudaFreeAsync(p_, stream_);  // destructors must not throw; a failure here resurfaces later
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  float* get() const { return p_; }

 private:
  float* p_ = nullptr;
  cudaStream_t stream_;
};

unsigned row_blocks(int N) { return static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock); }

void launch_reduce_chunks(cudaStream_t stream, float* dparam, const float* partial, int chunks, size_t stride,
                          int C) {
  const unsigned blocks = static_cast<unsigned>((C + kReduceThreads - 1) / kReduceThreads);
  reduce_chunks_kernel<<<blocks, kReduceThreads, 0, stream>>>(dparam, partial, chunks, stride, C);
  ECO_CUDA_CHECK_LAUNCH("reduce_chunks_kernel");
}

}  // namespace

void CudaOps::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                const float* bias, int N, int C, float eps) {
  if (N <= 0 || C <= 0) return;
  layernorm_forward_kernel<<<row_blocks(N), kThreads, 0, stream_>>>(out, mean, rstd, inp, weight, bias, N, C, eps);
  ECO_CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
}

void CudaOps::rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                              float eps) {
  if (N <= 0 || C <= 0) return;
  rmsnorm_forward_kernel<<<row_blocks(N), kThreads, 0, stream_>>>(out, rstd, inp, weight, N, C, eps);
  ECO_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void CudaOps::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                 const float* weight, const float* mean, const float* rstd, int N, int C) {
  if (N <= 0 || C <= 0) return;
  const int chunks = static_cast<int>(row_blocks(N));
  const size_t stride = 2 * static_cast<size_t>(C);
  const StreamScratch scratch(chunks * stride, stream_);
  float* partial = scratch.get();
  norm_backward_kernel<true><<<chunks, kThreads, 0, stream_>>>(dinp, partial, dout, inp, weight, mean, rstd, N, C);
  ECO_CUDA_CHECK_LAUNCH("norm_backward_kernel<layernorm>");
  launch_reduce_chunks(stream_, dweight, partial, chunks, stride, C);
  launch_reduce_chunks(stream_, dbias, partial + C, chunks, stride, C);
}

void CudaOps::rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                               const float* rstd, int N, int C) {
  if (N <= 0 || C <= 0) return;
  const int chunks = static_cast<int>(row_blocks(N));
  const size_t stride = static_cast<size_t>(C);
  const StreamScratch scratch(chunks * stride, stream_);
  float* partial = scratch.get();
  norm_backward_kernel<false>
      <<<chunks, kThreads, 0, stream_>>>(dinp, partial, dout, inp, weight, nullptr, rstd, N, C);
  ECO_CUDA_CHECK_LAUNCH("norm_backward_kernel<rmsnorm>");
  launch_reduce_chunks(stream_, dweight, partial, chunks, stride, C);
}

}  // namespace eco::cuda

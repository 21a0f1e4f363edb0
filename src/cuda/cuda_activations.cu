// CudaOps: the element-wise layers — GELU (tanh form), SwiGLU, residual add — and RoPE. Each
// element is computed by one thread with the CPU twin's formula in the CPU twin's operation order
// (src/cpu/cpu_activations.cpp, cpu_rope.cpp). The library is compiled with --fmad=false and
// default IEEE division, and the exponential is the CPU's own polynomial
// (core/exp_poly.h) rather than CUDA's expf, so every output equals CpuOps's bit for bit
// (tests/cuda/test_cuda_elementwise.cpp).
#include <algorithm>

#include "core/exp_poly.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"

namespace eco::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2/pi), as cpu_activations.cpp
constexpr float kGeluK1 = 0.044715f;

unsigned blocks_for(size_t n) {
  return static_cast<unsigned>(std::min<size_t>((n + kThreads - 1) / kThreads, size_t{1} << 20));
}

__global__ void gelu_forward_kernel(float* out, const float* inp, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    const float x = inp[i];
    const float u = kGeluK0 * (x + kGeluK1 * x * x * x);
    out[i] = x * exp_poly::sigmoid(u + u);
  }
}

__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    const float x = inp[i];
    const float u = kGeluK0 * (x + kGeluK1 * x * x * x);
    const float s = exp_poly::sigmoid(u + u);
    const float du = (2.0f * kGeluK0) * (1.0f + (3.0f * kGeluK1) * x * x);
    dinp[i] = dout[i] * (s + x * s * (1.0f - s) * du);
  }
}

// inp rows are [gate | up], H each.
__global__ void swiglu_forward_kernel(float* out, const float* inp, size_t N, size_t H) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < N * H; i += size_t{gridDim.x} * blockDim.x) {
    const size_t row = i / H, j = i % H;
    const float g = inp[row * 2 * H + j], up = inp[row * 2 * H + H + j];
    out[i] = g * exp_poly::sigmoid(g) * up;
  }
}

__global__ void swiglu_backward_kernel(float* dinp, const float* inp, const float* dout, size_t N, size_t H) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < N * H; i += size_t{gridDim.x} * blockDim.x) {
    const size_t row = i / H, j = i % H;
    const size_t gi = row * 2 * H + j, ui = gi + H;
    const float g = inp[gi], up = inp[ui], dy = dout[i];
    const float s = exp_poly::sigmoid(g);
    dinp[gi] = dy * up * (s + g * s * (1.0f - s));
    dinp[ui] = dy * g * s;
  }
}

// out may alias a or b: each element is read and written by one thread.
__global__ void residual_forward_kernel(float* out, const float* a, const float* b, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    out[i] = a[i] + b[i];
}

// No __restrict__: like the CPU loop, the second add rereads dout after da was written, so any
// aliasing among da, db and dout gives the CPU's result.
__global__ void residual_backward_kernel(float* da, float* db, const float* dout, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

// One thread per rotated pair (row, head, i); sign = +1 rotates, -1 applies the transpose.
__global__ void rope_kernel(float* x, const float* cos, const float* sin, size_t rows, int T, int row_stride,
                            int n_heads, int head_dim, float sign) {
  const size_t half = static_cast<size_t>(head_dim / 2);
  const size_t total = rows * n_heads * half;
  for (size_t idx = blockIdx.x * size_t{blockDim.x} + threadIdx.x; idx < total;
       idx += size_t{gridDim.x} * blockDim.x) {
    const size_t i = idx % half;
    const size_t rest = idx / half;
    const size_t h = rest % n_heads;
    const size_t bt = rest / n_heads;
    const size_t t = bt % static_cast<size_t>(T);
    const float c = cos[t * half + i];
    const float si = sign * sin[t * half + i];
    float* a = x + bt * row_stride + h * head_dim + i;
    float* b = a + half;
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * si;
    *b = x0 * si + x1 * c;
  }
}

void launch_rope(cudaStream_t stream, float* x, const float* cos, const float* sin, int B, int T, int row_stride,
                 int n_heads, int head_dim, float sign) {
  const size_t rows = static_cast<size_t>(B) * T;
  const size_t total = rows * n_heads * static_cast<size_t>(head_dim / 2);
  if (total == 0) return;
  rope_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, cos, sin, rows, T, row_stride, n_heads, head_dim, sign);
  ECO_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace

void CudaOps::gelu_forward(float* out, const float* inp, size_t n) {
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(out, inp, n);
  ECO_CUDA_CHECK_LAUNCH("gelu_forward_kernel");
}

void CudaOps::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(dinp, inp, dout, n);
  ECO_CUDA_CHECK_LAUNCH("gelu_backward_kernel");
}

void CudaOps::swiglu_forward(float* out, const float* inp, int N, int H) {
  const size_t n = static_cast<size_t>(N) * H;
  if (n == 0) return;
  swiglu_forward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(out, inp, N, H);
  ECO_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void CudaOps::swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) {
  const size_t n = static_cast<size_t>(N) * H;
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(dinp, inp, dout, N, H);
  ECO_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

void CudaOps::residual_forward(float* out, const float* a, const float* b, size_t n) {
  if (n == 0) return;
  residual_forward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(out, a, b, n);
  ECO_CUDA_CHECK_LAUNCH("residual_forward_kernel");
}

void CudaOps::residual_backward(float* da, float* db, const float* dout, size_t n) {
  if (n == 0) return;
  residual_backward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(da, db, dout, n);
  ECO_CUDA_CHECK_LAUNCH("residual_backward_kernel");
}

void CudaOps::rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                           int head_dim) {
  launch_rope(stream_, x, cos, sin, B, T, row_stride, n_heads, head_dim, 1.0f);
}

void CudaOps::rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride,
                            int n_heads, int head_dim) {
  launch_rope(stream_, dx, cos, sin, B, T, row_stride, n_heads, head_dim, -1.0f);
}

}  // namespace eco::cuda

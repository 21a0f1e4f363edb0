// LayerNorm and RMSNorm. Rows are independent in the forward pass and in the input gradient; the
// weight/bias gradients sum over rows, which is done in fixed chunks of rows whose partial sums
// are then added in chunk order, so the result depends neither on the schedule nor on the thread
// count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/vec_math.h"

namespace eco::cpu {
namespace {

constexpr int kRowsPerChunk = 32;

// Σ (x[i] − m)² with 8 lanes.
float sum_sq_dev(const float* x, float m, int n) {
  using namespace vec;
  v8f acc = splat(0.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f d = load(x + i) - splat(m);
    acc += d * d;
  }
  float s = hsum(acc);
  for (; i < n; ++i) s += (x[i] - m) * (x[i] - m);
  return s;
}

// Σ g[i] and Σ g[i]·x̂[i] with g = dy·w and x̂ = (x − m)·r (m = 0 for RMSNorm).
void grad_sums(const float* dy, const float* w, const float* x, float m, float r, int n, float* sum_g,
               float* sum_gx) {
  using namespace vec;
  v8f ag = splat(0.0f), agx = splat(0.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f g = load(dy + i) * load(w + i);
    ag += g;
    agx += g * ((load(x + i) - splat(m)) * splat(r));
  }
  float sg = hsum(ag), sgx = hsum(agx);
  for (; i < n; ++i) {
    const float g = dy[i] * w[i];
    sg += g;
    sgx += g * ((x[i] - m) * r);
  }
  *sum_g = sg;
  *sum_gx = sgx;
}

// dparam[c] += Σ_chunks partial[chunk][c], columns split over threads, chunks in order.
void reduce_chunks(float* dparam, const float* partial, int chunks, size_t stride, int C) {
  constexpr int kCols = 64;
  const int blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kCols;
    const int len = std::min(C, c0 + kCols) - c0;
    float acc[kCols] = {};
    for (int ch = 0; ch < chunks; ++ch) {
      const float* p = partial + ch * stride + c0;
      for (int j = 0; j < len; ++j) acc[j] += p[j];
    }
    for (int j = 0; j < len; ++j) dparam[c0 + j] += acc[j];
  }
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<size_t>(n) * C;
    float* y = out + static_cast<size_t>(n) * C;
    const float m = vec::sum(x, C) / static_cast<float>(C);
    const float var = sum_sq_dev(x, m, C) / static_cast<float>(C);  // two-pass: no cancellation
    const float r = 1.0f / std::sqrt(var + eps);
    for (int i = 0; i < C; ++i) y[i] = (x[i] - m) * r * weight[i] + bias[i];
    mean[n] = m;
    rstd[n] = r;
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
  const int chunks = (N + kRowsPerChunk - 1) / kRowsPerChunk;
  const size_t stride = 2 * static_cast<size_t>(C);
  std::vector<float> partial(chunks * stride, 0.0f);
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < chunks; ++ch) {
    float* pw = partial.data() + ch * stride;
    float* pb = pw + C;
    const int n1 = std::min(N, (ch + 1) * kRowsPerChunk);
    for (int n = ch * kRowsPerChunk; n < n1; ++n) {
      const float* x = inp + static_cast<size_t>(n) * C;
      const float* dy = dout + static_cast<size_t>(n) * C;
      float* dx = dinp + static_cast<size_t>(n) * C;
      const float m = mean[n], r = rstd[n];
      float sg, sgx;
      grad_sums(dy, weight, x, m, r, C, &sg, &sgx);
      const float mean_g = sg / static_cast<float>(C), mean_gx = sgx / static_cast<float>(C);
      for (int i = 0; i < C; ++i) {
        const float xhat = (x[i] - m) * r;
        pw[i] += dy[i] * xhat;
        pb[i] += dy[i];
        dx[i] += (dy[i] * weight[i] - mean_g - xhat * mean_gx) * r;
      }
    }
  }
  reduce_chunks(dweight, partial.data(), chunks, stride, C);
  reduce_chunks(dbias, partial.data() + C, chunks, stride, C);
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<size_t>(n) * C;
    float* y = out + static_cast<size_t>(n) * C;
    const float ms = vec::dot(x, x, C) / static_cast<float>(C);
    const float r = 1.0f / std::sqrt(ms + eps);
    for (int i = 0; i < C; ++i) y[i] = x[i] * r * weight[i];
    rstd[n] = r;
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C) {
  const int chunks = (N + kRowsPerChunk - 1) / kRowsPerChunk;
  const size_t stride = static_cast<size_t>(C);
  std::vector<float> partial(chunks * stride, 0.0f);
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < chunks; ++ch) {
    float* pw = partial.data() + ch * stride;
    const int n1 = std::min(N, (ch + 1) * kRowsPerChunk);
    for (int n = ch * kRowsPerChunk; n < n1; ++n) {
      const float* x = inp + static_cast<size_t>(n) * C;
      const float* dy = dout + static_cast<size_t>(n) * C;
      float* dx = dinp + static_cast<size_t>(n) * C;
      const float r = rstd[n];
      float sg, sgx;
      grad_sums(dy, weight, x, 0.0f, r, C, &sg, &sgx);
      // y = x̂·w with x̂ = x·r: dx = r·(g − x̂·mean(g·x̂)), g = dy·w.
      const float mean_gx = sgx / static_cast<float>(C);
      for (int i = 0; i < C; ++i) {
        const float xhat = x[i] * r;
        pw[i] += dy[i] * xhat;
        dx[i] += (dy[i] * weight[i] - xhat * mean_gx) * r;
      }
    }
  }
  reduce_chunks(dweight, partial.data(), chunks, stride, C);
}

}  // namespace eco::cpu

// GEMMs: OpenBLAS single-threaded per call, split across the OpenMP team by us (see cpu_ops.h).
#include <omp.h>

#include <algorithm>

#include <cblas.h>

#include "cpu/cpu_kernels.h"

namespace eco::cpu {
namespace {

// Below this many flops a GEMM is not worth waking the team for.
constexpr double kParallelGemmFlops = 4.0e6;
// Split boundaries on multiples of 64 rows/columns: whole micro-kernel tiles and cache lines.
constexpr int kSplitAlign = 64;

void blas_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha,
              A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

void blas_single_threaded() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const bool nested = omp_in_parallel();
  if (!nested) blas_single_threaded();
  const int team = nested ? 1 : omp_get_max_threads();
  if (team == 1 || 2.0 * M * N * K < kParallelGemmFlops) {
    blas_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool split_n = N >= M;
  const int dim = split_n ? N : M;
  int chunk = (dim + team - 1) / team;
  chunk = (chunk + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  const int parts = (dim + chunk - 1) / chunk;
#pragma omp parallel for schedule(static, 1) num_threads(team)
  for (int p = 0; p < parts; ++p) {
    const int lo = p * chunk;
    const int len = std::min(dim, lo + chunk) - lo;
    if (split_n) {
      // Columns [lo, lo+len) of C: B's columns (or rows, if B is transposed).
      const float* Bp = trans_b ? B + static_cast<size_t>(lo) * ldb : B + lo;
      blas_sgemm(trans_a, trans_b, M, len, K, alpha, A, lda, Bp, ldb, beta, C + lo, ldc);
    } else {
      // Rows [lo, lo+len) of C: A's rows (or columns, if A is transposed).
      const float* Ap = trans_a ? A + lo : A + static_cast<size_t>(lo) * lda;
      blas_sgemm(trans_a, trans_b, len, N, K, alpha, Ap, lda, B, ldb, beta, C + static_cast<size_t>(lo) * ldc, ldc);
    }
  }
}

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
  sgemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
  if (!bias) return;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* row = out + static_cast<size_t>(n) * OC;
    for (int o = 0; o < OC; ++o) row[o] += bias[o];
  }
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
  if (dinp) sgemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, 0.0f, dinp, C);
  sgemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  if (!dbias) return;
  // Each thread owns a block of columns and sums the rows in order: deterministic, no atomics.
  constexpr int kCols = 64;
  const int blocks = (OC + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < blocks; ++blk) {
    const int o0 = blk * kCols;
    const int len = std::min(OC, o0 + kCols) - o0;
    float acc[kCols] = {};
    for (int n = 0; n < N; ++n) {
      const float* row = dout + static_cast<size_t>(n) * OC + o0;
      for (int j = 0; j < len; ++j) acc[j] += row[j];
    }
    for (int j = 0; j < len; ++j) dbias[o0 + j] += acc[j];
  }
}

}  // namespace eco::cpu

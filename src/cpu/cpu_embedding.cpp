// Token + learned-position embedding. The backward scatter-adds rows by token id; threads own
// disjoint blocks of channels and walk the tokens in order, so repeated tokens accumulate in a
// fixed order without atomics.
#include <algorithm>
#include <cstring>

#include "cpu/cpu_kernels.h"

namespace eco::cpu {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    float* y = out + static_cast<size_t>(bt) * C;
    const float* e = wte + static_cast<size_t>(tokens[bt]) * C;
    if (wpe) {
      const float* p = wpe + static_cast<size_t>(bt % T) * C;
      for (int i = 0; i < C; ++i) y[i] = e[i] + p[i];
    } else {
      std::memcpy(y, e, sizeof(float) * C);
    }
  }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C) {
  constexpr int kCols = 64;
  const int blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kCols;
    const int len = std::min(C, c0 + kCols) - c0;
    for (int bt = 0; bt < B * T; ++bt) {
      const float* g = dout + static_cast<size_t>(bt) * C + c0;
      float* e = dwte + static_cast<size_t>(tokens[bt]) * C + c0;
      for (int j = 0; j < len; ++j) e[j] += g[j];
    }
    if (!dwpe) continue;
    for (int t = 0; t < T; ++t) {
      float* p = dwpe + static_cast<size_t>(t) * C + c0;
      for (int b = 0; b < B; ++b) {
        const float* g = dout + (static_cast<size_t>(b) * T + t) * C + c0;
        for (int j = 0; j < len; ++j) p[j] += g[j];
      }
    }
  }
}

}  // namespace eco::cpu

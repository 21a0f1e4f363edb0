// Rotary position embedding (half-split pairing as in GPT-NeoX / Hugging Face Llama): channel i
// of a head pairs with channel i + head_dim/2 and the pair rotates by t·θ_i. RoPE has no
// parameters and is orthogonal, so its backward is the inverse rotation, done in place.
#include "cpu/cpu_kernels.h"

namespace eco::cpu {
namespace {

// sign = +1: forward rotation; -1: its transpose.
void rotate(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads, int head_dim,
            float sign) {
  const int half = head_dim / 2;
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    const int t = bt % T;
    const float* c = cos + static_cast<size_t>(t) * half;
    const float* s = sin + static_cast<size_t>(t) * half;
    float* row = x + static_cast<size_t>(bt) * row_stride;
    for (int h = 0; h < n_heads; ++h) {
      float* a = row + static_cast<size_t>(h) * head_dim;
      float* b = a + half;
      for (int i = 0; i < half; ++i) {
        const float si = sign * s[i];
        const float x0 = a[i], x1 = b[i];
        a[i] = x0 * c[i] - x1 * si;
        b[i] = x0 * si + x1 * c[i];
      }
    }
  }
}

}  // namespace

void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                  int head_dim) {
  rotate(x, cos, sin, B, T, row_stride, n_heads, head_dim, 1.0f);
}

void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                   int head_dim) {
  rotate(dx, cos, sin, B, T, row_stride, n_heads, head_dim, -1.0f);
}

}  // namespace eco::cpu

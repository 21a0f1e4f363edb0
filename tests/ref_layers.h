#pragma once
// Float64 reference forward functions for every layer of the dense GPT, written from the
// definitions (plain loops, no shared code with src/cpu), plus finite-difference helpers. The
// layer tests differentiate these numerically; the model tests assemble them into a whole model.
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace ref {

using Vec = std::vector<double>;

inline Vec embedding(const std::vector<int32_t>& tok, const Vec& wte, const Vec* wpe, int B, int T, int C) {
  Vec out(static_cast<size_t>(B) * T * C);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        double v = wte[static_cast<size_t>(tok[b * T + t]) * C + c];
        if (wpe) v += (*wpe)[static_cast<size_t>(t) * C + c];
        out[(static_cast<size_t>(b) * T + t) * C + c] = v;
      }
  return out;
}

inline Vec layernorm(const Vec& x, const Vec& w, const Vec& b, int N, int C, double eps) {
  Vec out(x.size());
  for (int n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    v /= C;
    for (int c = 0; c < C; ++c) out[n * C + c] = (x[n * C + c] - m) / std::sqrt(v + eps) * w[c] + b[c];
  }
  return out;
}

inline Vec rmsnorm(const Vec& x, const Vec& w, int N, int C, double eps) {
  Vec out(x.size());
  for (int n = 0; n < N; ++n) {
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c];
    ms /= C;
    for (int c = 0; c < C; ++c) out[n * C + c] = x[n * C + c] / std::sqrt(ms + eps) * w[c];
  }
  return out;
}

// out[N,OC] = x[N,C]·W[OC,C]ᵀ + b
inline Vec linear(const Vec& x, const Vec& W, const Vec* b, int N, int C, int OC) {
  Vec out(static_cast<size_t>(N) * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = b ? (*b)[o] : 0.0;
      for (int c = 0; c < C; ++c) s += x[static_cast<size_t>(n) * C + c] * W[static_cast<size_t>(o) * C + c];
      out[static_cast<size_t>(n) * OC + o] = s;
    }
  return out;
}

// Causal attention from qkv[B,T,3C] → out[B,T,C].
inline Vec attention(const Vec& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  Vec out(static_cast<size_t>(B) * T * C, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        auto q = [&](int i) { return qkv[(static_cast<size_t>(b) * T + t) * 3 * C + h * hs + i]; };
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hs; ++i) d += q(i) * qkv[(static_cast<size_t>(b) * T + j) * 3 * C + C + h * hs + i];
          s[j] = d / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int j = 0; j <= t; ++j) z += std::exp(s[j] - mx);
        for (int j = 0; j <= t; ++j) {
          const double p = std::exp(s[j] - mx) / z;
          for (int i = 0; i < hs; ++i)
            out[(static_cast<size_t>(b) * T + t) * C + h * hs + i] +=
                p * qkv[(static_cast<size_t>(b) * T + j) * 3 * C + 2 * C + h * hs + i];
        }
      }
  return out;
}

// RoPE tables [maxT, hd/2]: angle t·θ^(−2i/hd).
inline void rope_tables(int maxT, int hd, double theta, Vec* cos, Vec* sin) {
  cos->assign(static_cast<size_t>(maxT) * hd / 2, 0.0);
  sin->assign(cos->size(), 0.0);
  for (int t = 0; t < maxT; ++t)
    for (int i = 0; i < hd / 2; ++i) {
      const double a = t * std::pow(theta, -2.0 * i / hd);
      (*cos)[static_cast<size_t>(t) * hd / 2 + i] = std::cos(a);
      (*sin)[static_cast<size_t>(t) * hd / 2 + i] = std::sin(a);
    }
}

// Rotates channel pairs (i, i+hd/2) of the first n_heads heads of each row (row b*T+t at position t).
inline Vec rope(const Vec& x, int B, int T, int stride, int n_heads, int hd, double theta) {
  Vec out = x;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < n_heads; ++h)
        for (int i = 0; i < hd / 2; ++i) {
          const double a = t * std::pow(theta, -2.0 * i / hd);
          const size_t i0 = (static_cast<size_t>(b) * T + t) * stride + h * hd + i, i1 = i0 + hd / 2;
          out[i0] = x[i0] * std::cos(a) - x[i1] * std::sin(a);
          out[i1] = x[i0] * std::sin(a) + x[i1] * std::cos(a);
        }
  return out;
}

inline double gelu1(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
inline Vec gelu(const Vec& x) {
  Vec out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = gelu1(x[i]);
  return out;
}

// inp[N,2H] = [gate | up] → silu(gate)·up
inline Vec swiglu(const Vec& x, int N, int H) {
  Vec out(static_cast<size_t>(N) * H);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < H; ++j) {
      const double g = x[static_cast<size_t>(n) * 2 * H + j], u = x[static_cast<size_t>(n) * 2 * H + H + j];
      out[static_cast<size_t>(n) * H + j] = g / (1.0 + std::exp(-g)) * u;
    }
  return out;
}

inline Vec add(const Vec& a, const Vec& b) {
  Vec out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  return out;
}

// Per-row −log softmax(logits[n, 0..V))[target].
inline Vec crossentropy(const Vec& logits, const std::vector<int32_t>& tgt, int N, int V, int Vp) {
  Vec out(N);
  for (int n = 0; n < N; ++n) {
    double mx = -1e300;
    for (int v = 0; v < V; ++v) mx = std::max(mx, logits[static_cast<size_t>(n) * Vp + v]);
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(logits[static_cast<size_t>(n) * Vp + v] - mx);
    out[n] = mx + std::log(z) - logits[static_cast<size_t>(n) * Vp + tgt[n]];
  }
  return out;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of f w.r.t. every entry of x (f reads x by reference). Step h relative to
// max(1, |x_i|).
inline Vec fd_grad(Vec& x, const std::function<double()>& f, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i], step = h * std::max(1.0, std::fabs(x0));
    x[i] = x0 + step;
    const double fp = f();
    x[i] = x0 - step;
    const double fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / (2 * step);
  }
  return g;
}

}  // namespace ref

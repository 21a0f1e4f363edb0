// GPU vs CPU: causal multi-head attention. The CPU saves the full softmax probabilities, the GPU
// only the log-sum-exp of each query row (B·NH·T floats) and recomputes the rest in the backward;
// both must give the same out and dqkv. Skipped (ctest exit 4) where there is no GPU.
//
// Tolerances are first-order error bounds computed per element in double from the inputs
// (u = 2^-24). For one implementation and query row i:
//   scores: |δs_ij| ≤ (hs+1)·u·S_ij, S_ij = scale·Σ_d|q_id·k_jd|;
//   probabilities: relative error ρ_i = 2(hs+1)·u·max_j S_ij (the score's own error and the
//     normaliser's) + (4T + 16)·u (the normalising sum, up to T online rescalings at 2u each, exp's few ulps);
//   out_id = Σ_j p_ij·v_jd: ≤ (ρ_i + (T+1)·u)·Σ_j p_ij·|v_jd|;
//   dP_ij = dO_i·v_j: ≤ hs·u·A_ij, A_ij = Σ_d|dO_id·v_jd|;
//   D_i = Σ_j p_ij·dP_ij: E_D_i = Σ_j p_ij·((ρ_i + T·u)·|dP_ij| + hs·u·A_ij);
//   dS_ij = p_ij·(dP_ij − D_i)·scale: E_dS_ij = scale·p_ij·(ρ_i·|dP_ij − D_i| + hs·u·A_ij + E_D_i
//     + 3u·(|dP_ij| + |D_i|));
//   dq_id = Σ_j dS_ij·k_jd: Σ_j (E_dS_ij + T·u·|dS_ij|)·|k_jd|; dk likewise with q; dv_jd =
//     Σ_i p_ij·dO_id: Σ_i (ρ_i + T·u)·p_ij·|dO_id|.
// The test allows 4× that: 2 for the two implementations, 2 for second-order terms.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda_test_util.h"

using eco_cuda_test::download;
using eco_cuda_test::poisoned;
using eco_cuda_test::random_floats;
using eco_cuda_test::upload;

namespace {

constexpr double kU = 0x1p-24;
constexpr double kSafety = 4.0;

// Reference bounds (see the top of the file) for out[B,T,C], dqkv[B,T,3C] and the lse[B,NH,T].
struct Bounds {
  std::vector<double> out, dqkv, lse_ref, lse_tol;
};

Bounds attention_bounds(const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const double scale = 1.0f / std::sqrt(static_cast<float>(hs));
  Bounds r;
  r.out.assign(static_cast<size_t>(B) * T * C, 0.0);
  r.dqkv.assign(static_cast<size_t>(B) * T * C3, 0.0);
  r.lse_ref.assign(static_cast<size_t>(B) * NH * T, 0.0);
  r.lse_tol.assign(r.lse_ref.size(), 0.0);
  std::vector<double> p(T), S(T), dP(T), A(T), dS(T), EdS(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      auto q = [&](int t, int d) { return static_cast<double>(qkv[(static_cast<size_t>(b) * T + t) * C3 + h * hs + d]); };
      auto k = [&](int t, int d) { return static_cast<double>(qkv[(static_cast<size_t>(b) * T + t) * C3 + C + h * hs + d]); };
      auto v = [&](int t, int d) {
        return static_cast<double>(qkv[(static_cast<size_t>(b) * T + t) * C3 + 2 * C + h * hs + d]);
      };
      auto g = [&](int t, int d) { return static_cast<double>(dout[(static_cast<size_t>(b) * T + t) * C + h * hs + d]); };
      // Per query row: the row's quantities, then its contributions to dq (row i) and dk, dv (rows j).
      for (int i = 0; i < T; ++i) {
        double mx = -INFINITY, Smax = 0.0;
        std::vector<double> s(i + 1);
        for (int j = 0; j <= i; ++j) {
          double dot = 0.0, mag = 0.0;
          for (int d = 0; d < hs; ++d) {
            dot += q(i, d) * k(j, d);
            mag += std::fabs(q(i, d) * k(j, d));
          }
          s[j] = dot * scale;
          S[j] = mag * scale;
          Smax = std::max(Smax, S[j]);
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= i; ++j) sum += std::exp(s[j] - mx);
        for (int j = 0; j <= i; ++j) p[j] = std::exp(s[j] - mx) / sum;
        const double rho = 2.0 * (hs + 1) * kU * Smax + (4.0 * T + 16.0) * kU;
        const size_t lidx = (static_cast<size_t>(b) * NH + h) * T + i;
        r.lse_ref[lidx] = mx + std::log(sum);
        r.lse_tol[lidx] = kSafety * (2.0 * (hs + 1) * kU * Smax + (T + 8.0) * kU * (1.0 + std::fabs(r.lse_ref[lidx])));
        for (int d = 0; d < hs; ++d) {
          double m = 0.0;
          for (int j = 0; j <= i; ++j) m += p[j] * std::fabs(v(j, d));
          r.out[(static_cast<size_t>(b) * T + i) * C + h * hs + d] = kSafety * (rho + (T + 1.0) * kU) * m;
        }
        double D = 0.0, ED = 0.0;
        for (int j = 0; j <= i; ++j) {
          double dp = 0.0, a = 0.0;
          for (int d = 0; d < hs; ++d) {
            dp += g(i, d) * v(j, d);
            a += std::fabs(g(i, d) * v(j, d));
          }
          dP[j] = dp;
          A[j] = a;
          D += p[j] * dp;
        }
        for (int j = 0; j <= i; ++j) ED += p[j] * ((rho + T * kU) * std::fabs(dP[j]) + hs * kU * A[j]);
        for (int j = 0; j <= i; ++j) {
          dS[j] = p[j] * (dP[j] - D) * scale;
          EdS[j] = scale * p[j] *
                       (rho * std::fabs(dP[j] - D) + hs * kU * A[j] + ED + 3.0 * kU * (std::fabs(dP[j]) + std::fabs(D))) +
                   T * kU * std::fabs(dS[j]);
        }
        for (int d = 0; d < hs; ++d) {
          double mq = 0.0;
          for (int j = 0; j <= i; ++j) mq += EdS[j] * std::fabs(k(j, d));
          r.dqkv[(static_cast<size_t>(b) * T + i) * C3 + h * hs + d] += kSafety * mq;
        }
        for (int j = 0; j <= i; ++j)
          for (int d = 0; d < hs; ++d) {
            const size_t row = (static_cast<size_t>(b) * T + j) * C3 + h * hs + d;
            r.dqkv[row + C] += kSafety * EdS[j] * std::fabs(q(i, d));
            r.dqkv[row + 2 * C] += kSafety * (rho + T * kU) * p[j] * std::fabs(g(i, d));
          }
      }
    }
  for (double& t : r.out) t += 1e-37;
  for (double& t : r.dqkv) t += 1e-37;
  return r;
}

struct Worst {
  double ratio = 0.0;
  size_t index = 0, bad = 0;
};
Worst judge(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& tol) {
  Worst w;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = std::isfinite(got[i]) ? std::fabs(static_cast<double>(got[i]) - want[i]) / tol[i] : INFINITY;
    if (r > 1.0) ++w.bad;
    if (!(r <= w.ratio)) {
      w.ratio = r;
      w.index = i;
    }
  }
  return w;
}

}  // namespace

TEST_CASE("CUDA attention matches the CPU twin with O(T) saved memory", "[cuda][attention]") {
  eco_cuda_test::require_gpu();
  eco::CpuOps cpu;
  eco::cuda::CudaOps gpu;
  struct Shape {
    int B, T, C, NH;
  };
  // Head sizes 4..200 (every register bound of the kernels), T across the 64-row blocks and the
  // 32-row tiles, T = 1.
  const Shape shapes[] = {{1, 1, 8, 2},   {2, 7, 12, 3},  {2, 65, 64, 2}, {1, 130, 128, 2},
                          {3, 33, 48, 4}, {1, 40, 96, 1}, {1, 33, 200, 1}, {2, 97, 256, 4}};
  uint32_t seed = 900;
  for (const Shape& s : shapes) {
    DYNAMIC_SECTION("B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH) {
      const size_t n_qkv = static_cast<size_t>(s.B) * s.T * 3 * s.C;
      const size_t n_out = static_cast<size_t>(s.B) * s.T * s.C;
      // Scores of order 1..3: softmax rows neither uniform nor one-hot.
      const auto qkv = random_floats(n_qkv, ++seed, 1.5f);
      const auto dout = random_floats(n_out, ++seed);

      std::vector<float> out(n_out), att(cpu.attention_saved_floats(s.B, s.T, s.NH)), dqkv(n_qkv);
      cpu.attention_forward(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
      cpu.attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), s.B, s.T, s.C, s.NH);

      const size_t saved = gpu.attention_saved_floats(s.B, s.T, s.NH);
      CHECK(saved == static_cast<size_t>(s.B) * s.NH * s.T);  // the log-sum-exp only: O(T)
      const float* g_qkv = upload(gpu, qkv);
      const float* g_dout = upload(gpu, dout);
      float* g_out = poisoned<float>(gpu, n_out);
      float* g_saved = poisoned<float>(gpu, saved);
      float* g_dqkv = poisoned<float>(gpu, n_qkv);
      gpu.attention_forward(g_out, g_saved, g_qkv, s.B, s.T, s.C, s.NH);
      gpu.attention_backward(g_dqkv, g_dout, g_qkv, g_saved, s.B, s.T, s.C, s.NH);

      const Bounds bound = attention_bounds(qkv, dout, s.B, s.T, s.C, s.NH);
      {
        const Worst w = judge(download(gpu, g_out, n_out), out, bound.out);
        INFO("out: worst element " << w.index << " at " << w.ratio << " of its bound");
        CHECK(w.bad == 0);
      }
      {
        const auto lse = download(gpu, g_saved, saved);
        size_t bad = 0;
        for (size_t i = 0; i < saved; ++i)
          if (!(std::fabs(lse[i] - bound.lse_ref[i]) <= bound.lse_tol[i])) ++bad;
        INFO("saved log-sum-exp values off the float64 reference: " << bad);
        CHECK(bad == 0);
      }
      const auto got = download(gpu, g_dqkv, n_qkv);
      {
        const Worst w = judge(got, dqkv, bound.dqkv);
        INFO("dqkv: worst element " << w.index << " (row " << w.index / (3 * s.C) << ", channel "
                                    << w.index % (3 * s.C) << ") at " << w.ratio << " of its bound");
        CHECK(w.bad == 0);
      }
      // Deterministic (no atomics): a second backward gives the same bits.
      float* g_dqkv2 = poisoned<float>(gpu, n_qkv);
      gpu.attention_backward(g_dqkv2, g_dout, g_qkv, g_saved, s.B, s.T, s.C, s.NH);
      CHECK(eco_cuda_test::first_bit_difference(download(gpu, g_dqkv2, n_qkv), got) == -1);
    }
  }
}

TEST_CASE("CUDA attention rejects a head size it has no kernel for", "[cuda][attention]") {
  eco_cuda_test::require_gpu();
  eco::cuda::CudaOps gpu;
  float* buf = gpu.alloc_floats(3 * 600);
  CHECK_THROWS_AS(gpu.attention_forward(buf, buf, buf, 1, 1, 600, 2), eco::Error);  // hs = 300
  CHECK_THROWS_AS(gpu.attention_forward(buf, buf, buf, 1, 1, 10, 3), eco::Error);   // C % NH != 0
}

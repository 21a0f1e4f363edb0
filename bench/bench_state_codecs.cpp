// ECO folds the weight's rounding error into m before m is re-quantized (DESIGN.md §4): how much of
// that injection does a low-bit m keep? Two measurements on an Adam-like toy (gradients with a
// per-coordinate mean and log-normal noise level, no loss: the gradients do not depend on w), FP8
// E4M3 weights with per-row absmax scales, SR on the weights (eco_sr), v in fp32 so only m's format
// varies.
//   A. One step, codec level: m (fp32, from the eco_sr trajectory) and the injection Δ of that step;
//      kept = Σ sgn(Δ)·(E[q(m+Δ)] − E[q(m)]) / Σ|Δ| over block-wise re-quantization of m, E over
//      `draws` SR draws; also the share of injections RTN drops entirely (q(m+Δ) = q(m)), and the
//      re-quantization noise rms(q(m+Δ) − (m+Δ)) / rms(Δ).
//   B. The whole loop over `steps` steps: distance of the final weights to the fp32 master-weight run
//      (fp32 m) relative to how far that run moved, for master weights + q(m) (the cost of the m
//      format alone), eco_sr + q(m), and sr without ECO + q(m); plus "along" = the projection of the
//      motion on the master's (1 = moved as far as the master).
// Usage: bench_state_codecs [steps=300] [draws=32]
#include <algorithm>
#include <cmath>
#include <map>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/philox.h"
#include "optim/state_block.h"
#include "optim/update_rule.h"
#include "quant/bf16.h"
#include "quant/fp8.h"

using namespace eco;

namespace {
constexpr size_t kRows = 32, kCols = 1024, kN = kRows * kCols;
constexpr uint64_t kSeed = 20240611;

struct MCodec {
  std::string name;
  int bits;  // 32 = fp32, 16 = bf16, else a block-wise width
  Rounding rounding;
};

std::vector<MCodec> codecs() {
  std::vector<MCodec> c = {{"fp32", 32, Rounding::RTN}, {"bf16 rtn", 16, Rounding::RTN}, {"bf16 sr", 16, Rounding::SR}};
  for (int b : {8, 4, 3, 2})
    for (Rounding r : {Rounding::RTN, Rounding::SR})
      c.push_back({(b == 8 ? std::string("int8") : "dyn" + std::to_string(b)) + (r == Rounding::SR ? " sr" : " rtn"), b, r});
  return c;
}

float beta1_of(const MCodec& c) { return c.bits >= 8 ? 0.9f : solo_default_beta1(c.bits); }

// m stored in codec c and read back (what the next step sees).
void store_m(const MCodec& c, std::vector<float>& m, const RandomKey& key) {
  if (c.bits == 32) return;
  if (c.bits == 16) {
    for (size_t i = 0; i < m.size(); ++i)
      m[i] = bf16_decode(c.rounding == Rounding::SR ? bf16_encode_sr(m[i], random_bits(key, i)) : bf16_encode_rne(m[i]));
    return;
  }
  BlockMoment q(MomentKind::Signed, c.bits, m.size());
  q.encode(m.data(), key, c.rounding);
  q.decode(m.data());
}

// Gradients: g_t,i = μ_i + σ_i·ξ_t,i with σ_i log-normal around 1e-3 and μ_i ~ 0.3·σ_i·N(0, 1);
// drawn once, every run replays the same sequence.
struct GradientStream {
  std::vector<float> all;
  explicit GradientStream(int steps) : all(static_cast<size_t>(steps) * kN) {
    std::mt19937 gen(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> mu(kN), sigma(kN);
    for (size_t i = 0; i < kN; ++i) {
      sigma[i] = 1e-3f * std::exp(nd(gen));
      mu[i] = 0.3f * sigma[i] * nd(gen);
    }
    for (size_t k = 0; k < all.size(); ++k) all[k] = mu[k % kN] + sigma[k % kN] * nd(gen);
  }
  void at(int t, std::vector<float>& g) const {
    std::copy_n(all.begin() + static_cast<size_t>(t - 1) * kN, kN, g.begin());
  }
};

enum class WeightRule { Master, EcoSr, Sr };

struct RunResult {
  std::vector<float> w;
  std::vector<float> m_last, inj_last;  // m after the moment update and Δ of the last step (EcoSr)
};

// `steps` AdamW steps (β2 0.999, ε 1e-8, no decay, constant lr) from the same initial weights.
RunResult run(const GradientStream& gs, const std::vector<float>& w0, WeightRule rule, const MCodec& mc,
              float beta1, float lr, int steps) {
  std::vector<float> w = w0, m(kN, 0.0f), v(kN, 0.0f), g(kN), wt(kN), d(kN);
  RunResult out;
  for (int t = 1; t <= steps; ++t) {
    gs.at(t, g);
    const AdamStepConsts c = make_adam_consts(lr, beta1, 0.999f, 1e-8f, 0.0f, t);
    for (size_t i = 0; i < kN; ++i) {
      d[i] = adam_moments(g[i], m[i], v[i], c);
      wt[i] = adamw_new_weight(w[i], m[i], d[i], c);
    }
    if (rule == WeightRule::Master) {
      w = wt;
    } else {
      RandomKey wk{kSeed, static_cast<uint32_t>(t), 0};
      for (size_t r = 0; r < kRows; ++r) {
        float amax = 0.0f;
        for (size_t j = 0; j < kCols; ++j) amax = std::max(amax, std::fabs(wt[r * kCols + j]));
        const float s = amax > 0.0f ? amax / kE4M3Max : 1.0f;
        for (size_t j = 0; j < kCols; ++j) {
          const size_t i = r * kCols + j;
          w[i] = e4m3_decode(e4m3_encode_sr(wt[i] / s, random_bits(wk, i))) * s;
        }
      }
      if (rule == WeightRule::EcoSr) {
        if (t == steps) out.m_last = m;
        std::vector<float> inj(kN);
        for (size_t i = 0; i < kN; ++i) {
          inj[i] = eco_adam_injection(wt[i] - w[i], d[i], c);
          m[i] += inj[i];
        }
        if (t == steps) out.inj_last = inj;
      }
    }
    store_m(mc, m, RandomKey{kSeed, static_cast<uint32_t>(t), 1});
  }
  out.w = w;
  return out;
}

double dot(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& o) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - o[i]) * (double(b[i]) - o[i]);
  return s;
}

// Part A for one codec: kept share, dropped share (RTN: code unchanged), noise / injection.
void codec_level(const MCodec& c, const std::vector<float>& m, const std::vector<float>& inj, int draws) {
  std::vector<float> x1(kN), q0(kN), q1(kN);
  std::vector<double> e0(kN, 0.0), e1(kN, 0.0);
  for (size_t i = 0; i < kN; ++i) x1[i] = m[i] + inj[i];
  const int reps = c.rounding == Rounding::SR ? draws : 1;
  double noise2 = 0.0, inj2 = 0.0;
  size_t unchanged = 0, nonzero = 0;
  for (int k = 0; k < reps; ++k) {
    q0 = m;
    q1 = x1;
    store_m(c, q0, RandomKey{kSeed, static_cast<uint32_t>(k), 5});
    store_m(c, q1, RandomKey{kSeed, static_cast<uint32_t>(k), 6});
    for (size_t i = 0; i < kN; ++i) {
      e0[i] += q0[i];
      e1[i] += q1[i];
      if (k == 0) {
        noise2 += (double(q1[i]) - x1[i]) * (double(q1[i]) - x1[i]);
        inj2 += double(inj[i]) * inj[i];
        if (inj[i] != 0.0f) {
          ++nonzero;
          unchanged += q0[i] == q1[i];
        }
      }
    }
  }
  double kept = 0.0, total = 0.0;
  for (size_t i = 0; i < kN; ++i) {
    kept += (inj[i] > 0 ? 1.0 : inj[i] < 0 ? -1.0 : 0.0) * (e1[i] - e0[i]) / reps;
    total += std::fabs(inj[i]);
  }
  std::printf("  %-9s  kept %7.1f%%   dropped (q unchanged) %5.1f%%   noise/injection %6.2f\n", c.name.c_str(),
              100.0 * kept / total, 100.0 * unchanged / std::max<size_t>(nonzero, 1), std::sqrt(noise2 / inj2));
}
}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 300;
  const int draws = argc > 2 ? std::atoi(argv[2]) : 32;
  const GradientStream gs(steps);
  std::vector<float> w0(kN);
  {
    std::mt19937 gen(2);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    for (float& x : w0) x = nd(gen);
  }
  const auto cs = codecs();
  std::printf("ECO injection through a block-wise m (%zu x %zu weights, E4M3 SR, %d steps, v fp32)\n", kRows, kCols, steps);
  for (float lr : {1e-3f, 1e-4f}) {
    std::printf("\n== lr %.0e ==\n", lr);
    std::printf("A. one step, codec level (m and the injection from the eco_sr run with fp32 m; %d SR draws)\n", draws);
    for (float b1 : {0.9f, 0.8f, 0.65f, 0.5f}) {
      const RunResult ref = run(gs, w0, WeightRule::EcoSr, cs[0], b1, lr, steps);
      double m2 = 0.0, i2 = 0.0;
      std::vector<double> ratio;
      for (size_t i = 0; i < kN; ++i) {
        m2 += double(ref.m_last[i]) * ref.m_last[i];
        i2 += double(ref.inj_last[i]) * ref.inj_last[i];
        if (ref.m_last[i] != 0.0f) ratio.push_back(std::fabs(ref.inj_last[i] / ref.m_last[i]));
      }
      std::nth_element(ratio.begin(), ratio.begin() + ratio.size() / 2, ratio.end());
      std::printf(" beta1 %.2f: rms(Δ)/rms(m) %.3f, median |Δ/m| %.3f\n", b1, std::sqrt(i2 / m2), ratio[ratio.size() / 2]);
      for (const MCodec& c : cs)
        if (c.bits >= 16 || beta1_of(c) == b1) codec_level(c, ref.m_last, ref.inj_last, draws);
    }
    std::printf("B. whole loop: |w - w_master| / |w_master - w0|  (along = share of the master's motion)\n");
    std::map<float, RunResult> masters;  // the fp32 reference per beta1
    for (const MCodec& c : cs) {
      const float b1 = beta1_of(c);
      if (!masters.count(b1)) masters[b1] = run(gs, w0, WeightRule::Master, cs[0], b1, lr, steps);
      const RunResult& master = masters[b1];
      const double base = dot(master.w, master.w, w0);
      std::printf("  %-9s (beta1 %.2f)", c.name.c_str(), b1);
      for (WeightRule rule : {WeightRule::Master, WeightRule::EcoSr, WeightRule::Sr}) {
        const RunResult r = run(gs, w0, rule, c, b1, lr, steps);
        double dist2 = 0.0;
        for (size_t i = 0; i < kN; ++i) dist2 += (double(r.w[i]) - master.w[i]) * (double(r.w[i]) - master.w[i]);
        const char* name = rule == WeightRule::Master ? "master+q(m)" : rule == WeightRule::EcoSr ? "eco_sr+q(m)" : "sr+q(m)";
        std::printf("   %s %.3f (along %.2f)", name, std::sqrt(dist2 / base), dot(r.w, master.w, w0) / base);
      }
      std::printf("\n");
    }
  }
  return 0;
}

// AdamW (fp32 mode), the LR schedule and gradient clipping against independent references.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "cpu/cpu_ops.h"
#include "optim/weight_optimizer.h"
#include "optim/grad_norm.h"
#include "optim/lr_schedule.h"

using namespace eco;

TEST_CASE("LR schedule: warmup from the init ratio, cosine / linear / constant to the final ratio", "[optim]") {
  LrSchedule s;
  s.peak_lr = 1.0;
  s.total_steps = 101;
  s.warmup_steps = 10;
  s.warmup_init_ratio = 0.01;
  s.final_lr_ratio = 0.1;
  CHECK(s.lr_at(0) == Approx(0.01));
  CHECK(s.lr_at(5) == Approx(0.01 + 0.99 * 0.5));
  CHECK(s.lr_at(10) == Approx(1.0));
  CHECK(s.lr_at(100) == Approx(0.1));
  // Cosine midpoint of the decay: halfway between peak and final.
  CHECK(s.lr_at(55) == Approx(0.55));
  for (int64_t t = 11; t <= 100; ++t) CHECK(s.lr_at(t) <= s.lr_at(t - 1));
  s.decay = DecayKind::Linear;
  CHECK(s.lr_at(55) == Approx(0.55));
  CHECK(s.lr_at(32) == Approx(1.0 - 0.9 * 22.0 / 90.0));
  s.decay = DecayKind::Constant;
  CHECK(s.lr_at(99) == Approx(1.0));
  s.warmup_steps = 0;
  s.decay = DecayKind::Cosine;
  CHECK(s.lr_at(0) == Approx(1.0));
}

TEST_CASE("AdamW matches a float64 reference over several steps, decay only where asked", "[optim]") {
  std::vector<float> w = {0.5f, -0.25f, 1.0f, 0.0f, 2.0f, 0.1f, -0.1f, 0.3f};
  std::vector<float> g(8);
  std::vector<OptimTensor> tensors(2);
  tensors[0] = {"w", 1, 5, false, true, w.data(), g.data()};
  tensors[1] = {"b", 1, 3, false, false, w.data() + 5, g.data() + 5};
  OptimizerSpec spec;
  spec.beta1 = 0.9f;
  spec.beta2 = 0.95f;
  spec.eps = 1e-8f;
  spec.weight_decay = 0.1f;
  CpuOps ops;
  WeightOptimizer opt(ops, tensors, spec);
  std::vector<double> wr(w.begin(), w.end()), m(8, 0.0), v(8, 0.0);
  for (int t = 1; t <= 6; ++t) {
    for (int i = 0; i < 8; ++i) g[i] = static_cast<float>(std::sin(1.3 * i + 0.7 * t));
    const double lr = 0.01 * t;
    opt.step(static_cast<float>(lr), t);
    for (int i = 0; i < 8; ++i) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.95 * v[i] + 0.05 * double(g[i]) * g[i];
      double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.95, t));
      double wd = i < 5 ? 0.1 : 0.0;
      wr[i] -= lr * (mhat / (std::sqrt(vhat) + 1e-8) + wd * wr[i]);
    }
  }
  for (int i = 0; i < 8; ++i) CHECK(w[i] == Approx(wr[i]).margin(1e-5));
}

TEST_CASE("global grad norm and clipping", "[optim]") {
  std::vector<float> g(200001);
  double ref = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = static_cast<float>(std::cos(0.001 * i)) * 0.01f;
    ref += double(g[i]) * g[i];
  }
  ref = std::sqrt(ref);
  double norm = global_grad_norm(g.data(), g.size());
  CHECK(norm == Approx(ref).epsilon(1e-12));
  float scale = clip_grads(g.data(), g.size(), norm, 1.0);
  CHECK(scale == Approx(1.0 / ref).epsilon(1e-5));
  CHECK(global_grad_norm(g.data(), g.size()) == Approx(1.0).epsilon(1e-5));
  CHECK(clip_grads(g.data(), g.size(), 0.5, 1.0) == 1.0f);  // below the threshold: untouched
  g[7] = NAN;
  CHECK(std::isnan(global_grad_norm(g.data(), g.size())));
}

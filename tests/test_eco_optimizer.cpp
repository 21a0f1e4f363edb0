// Exploration driver (temporary): prints toy-problem numbers per mode.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <map>

#include "eco_toy_problem.h"
#include "quant/fp8.h"

using namespace eco;
using eco_test::ToyRun;
using eco_test::ToyTensor;

namespace {
OptimizerSpec make_spec(WeightMode mode, OptimizerKind kind) {
  OptimizerSpec s;
  s.mode = mode;
  s.kind = kind;
  s.beta1 = 0.9f;
  s.beta2 = 0.95f;
  s.eps = 1e-8f;
  s.weight_decay = 0.0f;
  s.seed = 1234;
  return s;
}
double half_step(double x, double scale) {
  const double y = std::fabs(x) / scale;
  const int e = std::max(static_cast<int>(std::floor(std::log2(std::max(y, 1e-30)))), -6);
  return 0.5 * std::ldexp(1.0, e - 3) * scale;
}
}  // namespace

TEST_CASE("explore") {
  const std::vector<ToyTensor> shape = {{"w", 16, 64, true, false}};
  for (auto kind : {OptimizerKind::AdamW, OptimizerKind::Sgdm}) {
    const float lr = kind == OptimizerKind::AdamW ? 1e-3f : 2e-2f;
    const int steps = 800;
    std::map<WeightMode, std::vector<std::vector<float>>> traj;
    std::vector<std::vector<float>> master_theta;
    std::vector<std::vector<float>> master_scale;
    for (auto mode : {WeightMode::Master, WeightMode::MasterSr, WeightMode::Naive, WeightMode::Sr, WeightMode::Eco,
                      WeightMode::EcoSr}) {
      ToyRun run(shape, make_spec(mode, kind));
      const double l0 = run.loss();
      int last_change = 0;
      std::vector<float> prev = run.forward(0);
      double max_rms = 0, max_abs = 0;
      for (int t = 1; t <= steps; ++t) {
        run.step(lr, t);
        auto w = run.forward(0);
        if (w != prev) last_change = t;
        prev = w;
        if (mode == WeightMode::Master) {
          master_theta.push_back(run.values(0));
          std::vector<float> sc(16);
          for (int r = 0; r < 16; ++r) sc[r] = run.opt().quantized(0).scale_at(r, 0);
          master_scale.push_back(sc);
        } else {
          double s2 = 0;
          for (size_t j = 0; j < w.size(); ++j) {
            double h = half_step(master_theta[t - 1][j], master_scale[t - 1][j / 64]);
            double d = std::fabs(w[j] - master_theta[t - 1][j]) / h;
            s2 += d * d;
            max_abs = std::max(max_abs, d);
          }
          max_rms = std::max(max_rms, std::sqrt(s2 / w.size()));
        }
      }
      std::printf("%s %-9s loss0 %.4f final %.5f last_change %d max_rms_halfsteps %.3f max_abs %.3f\n",
                  kind == OptimizerKind::AdamW ? "adamw" : "sgdm", to_string(mode), l0, run.loss(), last_change,
                  max_rms, max_abs);
    }
  }
}

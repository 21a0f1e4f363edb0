// Optimizer-step throughput of WeightOptimizer in every weight mode (issue "FP8 weights without
// master copies"): a model of `quantized` 1024×1024 block linears plus fp32 resident tensors (two
// 1024×1024 embeddings/heads and eight 1024-element norms), AdamW, fp32 and bf16 moments. Every
// mode's optimizer lives side by side and they step in turns, best of N steps each, so a load
// change on a shared machine hits all modes alike (2 threads on 2 busy cores are still noisy:
// OMP_NUM_THREADS=1 gives the steadiest ratios). Prints elements/s, the state traffic the step
// must move (GB/s), and ECO's cost against the same rounding without error feedback (eco/naive,
// eco_sr/sr; target ≤ 1.15). A memcpy of the fp32 gradients is the machine's bandwidth yardstick.
// Usage: bench_optimizer [repeats=5] [quantized tensors=14] [dim=1024]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "optim/weight_optimizer.h"

using namespace eco;

namespace {

struct Layout {
  std::vector<OptimTensor> tensors;  // value/grad pointers filled per mode
  size_t quantized_params = 0, fp32_params = 0;
};

Layout make_layout(int quantized, size_t dim) {
  Layout l;
  for (int i = 0; i < quantized; ++i) {
    l.tensors.push_back({"block" + std::to_string(i), dim, dim, true, true, nullptr, nullptr});
    l.quantized_params += dim * dim;
  }
  for (int i = 0; i < 2; ++i) {
    l.tensors.push_back({"embed" + std::to_string(i), dim, dim, false, false, nullptr, nullptr});
    l.fp32_params += dim * dim;
  }
  for (int i = 0; i < 8; ++i) {
    l.tensors.push_back({"norm" + std::to_string(i), 1, dim, false, false, nullptr, nullptr});
    l.fp32_params += dim;
  }
  return l;
}

// Bytes one step must read and write at least: gradients (read), m and v (read + write), fp32
// values or masters (read + write), stored codes and scales (master-free: read + write; master
// modes: write).
double state_traffic_bytes(const WeightOptimizer& opt, const Layout& l, StateFormat states) {
  const double sb = states == StateFormat::Bf16 ? 2 : 4;
  double b = 0;
  for (size_t i = 0; i < l.tensors.size(); ++i) {
    const double n = static_cast<double>(l.tensors[i].rows * l.tensors[i].cols);
    b += 4 * n + 4 * sb * n;                       // g; m, v read + write
    if (l.tensors[i].value) b += 8 * n;            // fp32 value / master read + write
    if (opt.is_quantized(i)) {
      const QuantTensor& q = opt.quantized(i);
      const double stored = static_cast<double>(q.code_bytes() + q.scale_bytes());
      b += opt.has_master(i) ? stored : 2 * stored;
    }
  }
  return b;
}

double seconds_of(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One mode's optimizer over the shared gradients, with its own fp32 value buffers.
class ModeRun {
 public:
  ModeRun(WeightMode mode, StateFormat states, const Layout& base, const std::vector<std::vector<float>>& grads)
      : layout_(base), states_(states) {
    const WeightModeTraits traits = traits_of(mode);
    std::mt19937 rng(7);
    std::normal_distribution<float> init(0.0f, 0.02f);
    std::vector<std::vector<float>> initial(layout_.tensors.size());
    values_.resize(layout_.tensors.size());
    for (size_t i = 0; i < layout_.tensors.size(); ++i) {
      OptimTensor& t = layout_.tensors[i];
      initial[i].resize(t.rows * t.cols);
      for (float& v : initial[i]) v = init(rng);
      t.grad = grads[i].data();
      if (!(traits.quantized && t.quantize) || traits.master) {
        values_[i] = initial[i];  // resident fp32 tensor or master
        t.value = values_[i].data();
      }
    }
    OptimizerSpec spec;
    spec.mode = mode;
    spec.kind = OptimizerKind::AdamW;
    spec.beta1 = 0.9f;
    spec.beta2 = 0.95f;
    spec.weight_decay = 0.1f;
    spec.state_format = states;
    spec.seed = 1;
    opt_ = std::make_unique<WeightOptimizer>(ops_, layout_.tensors, spec);
    for (size_t i = 0; i < layout_.tensors.size(); ++i)
      if (opt_->is_quantized(i)) opt_->init_quantized(i, initial[i].data());
    step();  // warm-up: first touch of the state pages
  }
  double step() {
    return seconds_of([&] { opt_->step(1e-4f, ++t_); });
  }
  double traffic_bytes() const { return state_traffic_bytes(*opt_, layout_, states_); }

 private:
  Layout layout_;
  StateFormat states_;
  std::vector<std::vector<float>> values_;
  CpuOps ops_;
  std::unique_ptr<WeightOptimizer> opt_;
  int64_t t_ = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 5;
  const int quantized = argc > 2 ? std::atoi(argv[2]) : 14;
  const size_t dim = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1024;
  const Layout layout = make_layout(quantized, dim);
  const size_t n = layout.quantized_params + layout.fp32_params;
  std::printf("bench_optimizer: %d quantized %zux%zu tensors + %zu fp32 params = %.2fM params, AdamW, %d OpenMP "
              "threads, best of %d steps\n",
              quantized, dim, dim, layout.fp32_params, n / 1e6, omp_get_max_threads(), repeats);

  {  // Yardstick: copy the fp32 gradients once (read + write 8 B/param).
    std::vector<float> src(n, 1.0f), dst(n, 0.0f);
    double best = 1e30;
    for (int r = 0; r <= repeats; ++r)
      best = std::min(best, seconds_of([&] { std::memcpy(dst.data(), src.data(), n * sizeof(float)); }));
    std::printf("memcpy of %zu floats: %.2f ms, %.2f GB/s (read + write)\n", n, best * 1e3, 8.0 * n / best / 1e9);
  }

  const WeightMode modes[] = {WeightMode::Fp32,  WeightMode::Bf16,  WeightMode::Bf16Sr,
                              WeightMode::Master, WeightMode::MasterSr, WeightMode::Naive,
                              WeightMode::Sr,     WeightMode::Eco,   WeightMode::EcoSr};
  std::vector<std::vector<float>> grads;
  {
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.0f, 1e-3f);
    for (const OptimTensor& t : layout.tensors) {
      grads.emplace_back(t.rows * t.cols);
      for (float& x : grads.back()) x = g(rng);
    }
  }
  for (StateFormat states : {StateFormat::Fp32, StateFormat::Bf16}) {
    // All modes live at once and take their steps in turns, so a load change on a shared machine
    // hits every mode alike; each mode reports its best step.
    std::map<WeightMode, std::unique_ptr<ModeRun>> runs;
    std::map<WeightMode, double> best;
    // Observed: the first optimizer built in the process steps ~20% slower than an identical later
    // one (where its buffers land); a throwaway one keeps that off the first mode of the table.
    { ModeRun throwaway(WeightMode::Fp32, states, layout, grads); }
    for (WeightMode mode : modes) {
      runs[mode] = std::make_unique<ModeRun>(mode, states, layout, grads);
      best[mode] = 1e30;
    }
    // Per-round ratios too: neighbouring steps share the machine's state of the moment, so their
    // median is steadier than a ratio of two best times taken at different moments.
    std::vector<double> eco_naive_rounds, ecosr_sr_rounds;
    for (int r = 0; r < repeats; ++r) {
      std::map<WeightMode, double> t;
      for (WeightMode mode : modes) {
        t[mode] = runs[mode]->step();
        best[mode] = std::min(best[mode], t[mode]);
      }
      eco_naive_rounds.push_back(t[WeightMode::Eco] / t[WeightMode::Naive]);
      ecosr_sr_rounds.push_back(t[WeightMode::EcoSr] / t[WeightMode::Sr]);
    }
    std::printf("\n%s moments\n  %-9s %10s %14s %12s\n", states == StateFormat::Fp32 ? "fp32" : "bf16", "mode",
                "ms/step", "Melem/s", "state GB/s");
    for (WeightMode mode : modes)
      std::printf("  %-9s %10.2f %14.1f %12.2f\n", to_string(mode), best[mode] * 1e3, n / best[mode] / 1e6,
                  runs[mode]->traffic_bytes() / best[mode] / 1e9);
    const double eco_naive = best[WeightMode::Eco] / best[WeightMode::Naive];
    const double ecosr_sr = best[WeightMode::EcoSr] / best[WeightMode::Sr];
    const double eco_naive_med = median(eco_naive_rounds), ecosr_sr_med = median(ecosr_sr_rounds);
    std::printf("  step time eco/naive %.3f (best), %.3f (median of rounds); eco_sr/sr %.3f (best), %.3f (median)\n",
                eco_naive, eco_naive_med, ecosr_sr, ecosr_sr_med);
    std::printf("  target: ECO costs <= 15%% more than the same rounding without it (median of rounds): %s\n",
                eco_naive_med <= 1.15 && ecosr_sr_med <= 1.15 ? "met" : "NOT met");
    std::fflush(stdout);
  }
  return 0;
}

#pragma once
// Shared by the optimizer tests: a toy problem (a few tensors with fixed initial values W0 and
// targets W*, the loss ½‖ŵ − W*‖² summed over tensors, its gradient ŵ − W* taken at the forward
// weights ŵ that the optimizer says the forward must use; the harness owns the fp32 value buffers
// and the gradients, as the trainer does), the tests' hyperparameters, and bitwise comparisons.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "optim/weight_optimizer.h"
#include "quant/quant_tensor.h"

namespace eco_test {

// Deterministic uniform numbers in [lo, hi) (splitmix64), the same on every platform.
class Uniform {
 public:
  explicit Uniform(uint64_t seed) : s_(seed) {}
  double next(double lo, double hi) {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * static_cast<double>(z >> 11) * 0x1.0p-53;
  }

 private:
  uint64_t s_;
};

struct ToyTensor {
  std::string name;
  size_t rows, cols;
  bool quantize;  // a block linear: stored quantized in the quantized modes
  bool decay;
};

inline constexpr double kU = 0x1.0p-24;  // unit roundoff of fp32 round-to-nearest

inline constexpr eco::WeightMode kAllModes[] = {
    eco::WeightMode::Fp32,     eco::WeightMode::Bf16,  eco::WeightMode::Bf16Sr,
    eco::WeightMode::Master,   eco::WeightMode::MasterSr, eco::WeightMode::Naive,
    eco::WeightMode::Sr,       eco::WeightMode::Eco,   eco::WeightMode::EcoSr};

// The tests' hyperparameters: AdamW (β1 0.9, β2 0.95, ε 1e-8) or SGDM (β 0.9), no weight decay.
inline eco::OptimizerSpec make_spec(eco::WeightMode mode, eco::OptimizerKind kind = eco::OptimizerKind::AdamW,
                                    eco::StateFormat states = eco::StateFormat::Fp32) {
  eco::OptimizerSpec s;
  s.mode = mode;
  s.kind = kind;
  s.beta1 = 0.9f;
  s.beta2 = 0.95f;
  s.eps = 1e-8f;
  s.weight_decay = 0.0f;
  s.state_format = states;
  s.seed = 20240611;
  return s;
}

inline std::vector<float> moments(const eco::MomentBuffer& b) {
  std::vector<float> out(b.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = b.get(i);
  return out;
}

inline uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

// Index of the first element whose bit patterns differ; -1 when all are identical (0 when the
// sizes differ).
inline long first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (bits(a[i]) != bits(b[i])) return static_cast<long>(i);
  return -1;
}

inline std::vector<float> row_scales(const eco::QuantTensor& q) {
  std::vector<float> s(q.rows());
  for (size_t r = 0; r < q.rows(); ++r) s[r] = q.scale_at(r, 0);
  return s;
}

// A toy problem: W0 ~ U(-1, 1), W* = W0 + U(-spread, spread) per element (from `data_seed`).
class ToyRun {
 public:
  ToyRun(const std::vector<ToyTensor>& shapes, const eco::OptimizerSpec& spec, uint64_t data_seed = 1,
         double spread = 0.25) {
    const eco::WeightModeTraits traits = eco::traits_of(spec.mode);
    Uniform u(data_seed);
    std::vector<eco::OptimTensor> tensors;
    init_.resize(shapes.size());
    target_.resize(shapes.size());
    values_.resize(shapes.size());
    grads_.resize(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      const ToyTensor& s = shapes[i];
      const size_t n = s.rows * s.cols;
      for (size_t j = 0; j < n; ++j) {
        const float w0 = static_cast<float>(u.next(-1.0, 1.0));
        init_[i].push_back(w0);
        target_[i].push_back(static_cast<float>(w0 + u.next(-spread, spread)));
      }
      grads_[i].assign(n, 0.0f);
      const bool stored_quantized = traits.quantized && s.quantize;
      if (!stored_quantized || traits.master) values_[i] = init_[i];
      eco::OptimTensor t;
      t.name = s.name;
      t.rows = s.rows;
      t.cols = s.cols;
      t.quantize = s.quantize;
      t.weight_decay = s.decay;
      t.value = values_[i].empty() ? nullptr : values_[i].data();
      t.grad = grads_[i].data();
      tensors.push_back(t);
    }
    opt_ = std::make_unique<eco::WeightOptimizer>(ops_, tensors, spec);
    for (size_t i = 0; i < shapes.size(); ++i)
      if (opt_->is_quantized(i)) opt_->init_quantized(i, init_[i].data());
  }
  ToyRun(const ToyRun&) = delete;
  ToyRun& operator=(const ToyRun&) = delete;

  eco::WeightOptimizer& opt() { return *opt_; }
  eco::Ops& ops() { return ops_; }
  const eco::WeightOptimizer& opt() const { return *opt_; }
  size_t size() const { return init_.size(); }

  std::vector<float> forward(size_t i) const {
    std::vector<float> w(init_[i].size());
    opt_->weight_values(i, w.data());
    return w;
  }
  // The fp32 value buffer (master or resident tensor); empty for master-free quantized tensors.
  const std::vector<float>& values(size_t i) const { return values_[i]; }
  const std::vector<float>& target(size_t i) const { return target_[i]; }
  const std::vector<float>& init(size_t i) const { return init_[i]; }
  std::vector<float>& grad(size_t i) { return grads_[i]; }

  // g = ŵ − W* in fp32 (exact up to one rounding), for every tensor.
  void compute_grads() {
    for (size_t i = 0; i < size(); ++i) {
      const std::vector<float> w = forward(i);
      for (size_t j = 0; j < w.size(); ++j) grads_[i][j] = w[j] - target_[i][j];
    }
  }
  void step(float lr, int64_t t) {
    compute_grads();
    opt_->step(lr, t);
  }
  // ½‖ŵ − W*‖² at the forward weights, in double.
  double loss() const {
    double l = 0.0;
    for (size_t i = 0; i < size(); ++i) {
      const std::vector<float> w = forward(i);
      for (size_t j = 0; j < w.size(); ++j) {
        const double d = static_cast<double>(w[j]) - target_[i][j];
        l += 0.5 * d * d;
      }
    }
    return l;
  }

 private:
  std::vector<std::vector<float>> init_, target_, values_, grads_;
  eco::CpuOps ops_;  // the backend of the optimizer state (host memory: the test hooks read it)
  std::unique_ptr<eco::WeightOptimizer> opt_;
};

}  // namespace eco_test

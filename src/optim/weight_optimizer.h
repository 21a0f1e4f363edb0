#pragma once
// The optimizer over every parameter tensor in every weight mode (DESIGN.md §4): AdamW or SGD with
// momentum; fp32 or bf16 moments; for the quantized tensors, the low-precision stored copy with
// or without an fp32 master, RTN or SR, with or without ECO's error feedback. It owns the
// quantized weights and the optimizer state; fp32 values (resident tensors, masters) stay in the
// caller's buffers and are updated in place.
#include <cstdint>
#include <string>
#include <vector>

#include "optim/memory_report.h"
#include "optim/moment_buffer.h"
#include "optim/weight_mode.h"
#include "quant/quant_tensor.h"

namespace eco {

class CheckpointWriter;
struct LoadedCheckpoint;

struct OptimizerSpec {
  WeightMode mode = WeightMode::Fp32;
  OptimizerKind kind = OptimizerKind::AdamW;
  float beta1 = 0.9f;  // β of SGDM
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  QuantFormat weight_format = QuantFormat::E4M3;  // the stored format of the FP8 modes
  ScaleGranularity granularity = ScaleGranularity::PerRow;
  bool pow2_scales = false;
  StateFormat state_format = StateFormat::Fp32;
  uint64_t seed = 0;  // of the stochastic-rounding streams
};

struct OptimTensor {
  std::string name;
  size_t rows = 0, cols = 0;  // 1-D tensors: rows = 1
  bool quantize = false;      // stored quantized when the mode is quantized (the block linears)
  bool weight_decay = false;
  // fp32 values updated in place: the weight itself, or the master of a quantized tensor. Must be
  // nullptr for quantized tensors in master-free modes (there is no high-precision copy) and
  // non-null otherwise.
  float* value = nullptr;
  const float* grad = nullptr;
};

class WeightOptimizer {
 public:
  WeightOptimizer(std::vector<OptimTensor> tensors, const OptimizerSpec& spec);

  const OptimizerSpec& spec() const { return spec_; }
  const std::vector<OptimTensor>& tensors() const { return tensors_; }
  bool is_quantized(size_t i) const { return !quant_[i].empty(); }
  bool has_master(size_t i) const { return is_quantized(i) && traits_.master; }

  // Makes the stored copies from the initial values: for master modes from the masters (`values`
  // ignored), for master-free modes from `values` (the tensor's initial fp32 values, RTN as the
  // paper's ŵ0 = q(w0)). Call once per quantized tensor before the first forward.
  void init_quantized(size_t i, const float* values = nullptr);

  // The fp32 values the forward must use for tensor i: the dequantized stored copy for quantized
  // tensors, the fp32 value otherwise.
  void weight_values(size_t i, float* out) const;

  // One update of every tensor with learning rate lr; t = 1-based update count including this one.
  // Throws NumericsError when an updated weight is not finite (state before the step is lost:
  // resume from the last checkpoint).
  void step(float lr, int64_t t);

  // Counted from the allocated buffers; fp32 values are counted from the OptimTensor pointers.
  MemoryReport memory() const;

  void save(CheckpointWriter& w) const;
  void load(const LoadedCheckpoint& ckpt);  // CheckpointError on any size or format mismatch

  // Test hooks: the stored moments.
  const MomentBuffer& m(size_t i) const { return m_[i]; }
  const MomentBuffer& v(size_t i) const { return v_[i]; }
  const QuantTensor& quantized(size_t i) const { return quant_[i].front(); }

 private:
  void step_fp32_values(size_t i, float lr, int64_t t);
  void step_quantized_only(size_t i, float lr, int64_t t);
  size_t panel_rows(size_t i) const;
  RandomKey key(size_t i, uint32_t stream, int64_t t) const;

  std::vector<OptimTensor> tensors_;
  OptimizerSpec spec_;
  WeightModeTraits traits_;
  // One stored copy per quantized tensor (vector of 0 or 1: QuantTensor has no empty state).
  std::vector<std::vector<QuantTensor>> quant_;
  std::vector<MomentBuffer> m_, v_;
  // Per-panel scratch of the master-free update (a few rows at a time, never a whole-model copy).
  std::vector<float> w_tmp_, d_tmp_, m_tmp_, q_tmp_;
};

}  // namespace eco

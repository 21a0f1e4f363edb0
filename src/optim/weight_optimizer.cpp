#include "optim/weight_optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "optim/update_rule.h"

namespace eco {
namespace {

// SR streams of tensor i: its weights, then its two moments (bf16 states).
enum Stream : uint32_t { kWeightStream = 0, kMStream = 1, kVStream = 2, kStreamsPerTensor = 4 };

// Backend buffer of `bytes`, zeroed (moments start at 0; bf16 code 0 is +0).
void* zeroed(Ops& ops, size_t bytes) {
  void* p = ops.alloc(bytes);
  ops.fill_zero(p, bytes);
  return p;
}

}  // namespace

WeightOptimizer::WeightOptimizer(Ops& ops, std::vector<OptimTensor> tensors, const OptimizerSpec& spec)
    : ops_(ops), tensors_(std::move(tensors)), spec_(spec), traits_(traits_of(spec.mode)) {
  const QuantFormat fmt = traits_.bf16 ? QuantFormat::BF16 : spec_.weight_format;
  const size_t state_bytes = MomentBuffer::element_bytes(spec_.state_format);
  quant_.resize(tensors_.size());
  m_.assign(tensors_.size(), nullptr);
  v_.assign(tensors_.size(), nullptr);
  try {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const OptimTensor& t = tensors_[i];
      if (!t.grad) throw Error("optimizer: tensor " + t.name + " has no gradient buffer");
      const bool quantized = traits_.quantized && t.quantize;
      const bool needs_value = !quantized || traits_.master;
      if (needs_value != (t.value != nullptr))
        throw Error("optimizer: tensor " + t.name + (needs_value ? " needs" : " must not have") +
                    " an fp32 value buffer in mode " + to_string(spec_.mode));
      if (quantized) {
        QuantRef& q = quant_[i];
        q.rows = t.rows;
        q.cols = t.cols;
        q.format = fmt;
        q.granularity = spec_.granularity;
        q.pow2_scales = spec_.pow2_scales;
        q.codes = zeroed(ops_, std::max<size_t>(q.code_bytes(), 1));
        if (q.scale_count()) {
          // All-zero codes with scale 1: an exact zero tensor until init_quantized.
          std::vector<float> ones(q.scale_count(), 1.0f);
          q.scales = static_cast<float*>(ops_.alloc(ones.size() * sizeof(float)));
          ops_.copy_from_host(q.scales, ones.data(), ones.size() * sizeof(float));
        }
      }
      m_[i] = zeroed(ops_, numel(i) * state_bytes);
      if (spec_.kind == OptimizerKind::AdamW) v_[i] = zeroed(ops_, numel(i) * state_bytes);
    }
    own_bad_count_ = static_cast<int64_t*>(zeroed(ops_, sizeof(int64_t)));
  } catch (...) {
    release();  // a throwing constructor runs no destructor: free what was allocated
    throw;
  }
}

WeightOptimizer::~WeightOptimizer() { release(); }

void WeightOptimizer::release() {
  for (QuantRef& q : quant_) {
    if (q.codes) ops_.free(q.codes);
    if (q.scales) ops_.free(q.scales);
    q = QuantRef{};
  }
  for (void*& p : m_) {
    if (p) ops_.free(p);
    p = nullptr;
  }
  for (void*& p : v_) {
    if (p) ops_.free(p);
    p = nullptr;
  }
  if (own_bad_count_) ops_.free(own_bad_count_);
  own_bad_count_ = nullptr;
}

RandomKey WeightOptimizer::key(size_t i, uint32_t stream, int64_t t) const {
  RandomKey k;
  k.seed = spec_.seed;
  k.step = static_cast<uint32_t>(t);
  k.stream_id = static_cast<uint32_t>(i) * kStreamsPerTensor + stream;
  return k;
}

void WeightOptimizer::init_quantized(size_t i, const float* host_values) {
  if (!is_quantized(i)) throw Error("optimizer: tensor " + tensors_[i].name + " is not quantized");
  const QuantRef& q = quant_[i];
  const float* src = tensors_[i].value;
  float* staged = nullptr;
  if (!has_master(i)) {
    if (!host_values) throw Error("optimizer: initial values of " + tensors_[i].name + " are missing");
    staged = ops_.alloc_floats(numel(i));
    ops_.copy_from_host(staged, host_values, numel(i) * sizeof(float));
    src = staged;
  }
  // The initial copy is rounded to nearest in every mode (SR would make the start seed-dependent).
  ops_.fill_zero(own_bad_count_, sizeof(int64_t));
  ops_.quantize_rows(q, 0, q.rows, src, Rounding::RTN, nullptr, own_bad_count_);
  if (staged) ops_.free(staged);
  int64_t bad = 0;
  ops_.copy_to_host(&bad, own_bad_count_, sizeof bad);
  if (bad != 0) throw NumericsError("initial weights of " + tensors_[i].name + " contain NaN or Inf");
}

void WeightOptimizer::weight_values(size_t i, float* host_out) const {
  if (!is_quantized(i)) {
    ops_.copy_to_host(host_out, tensors_[i].value, numel(i) * sizeof(float));
    return;
  }
  float* tmp = ops_.alloc_floats(numel(i));
  ops_.dequantize_rows(tmp, quant_[i], 0, quant_[i].rows);
  ops_.copy_to_host(host_out, tmp, numel(i) * sizeof(float));
  ops_.free(tmp);
}

QuantTensor WeightOptimizer::quantized(size_t i) const {
  const QuantRef& q = quant_[i];
  return QuantTensor::view(q.codes, q.scales, q.rows, q.cols, q.format, q.granularity, q.pow2_scales);
}

void WeightOptimizer::step(float lr, int64_t t, float grad_scale, int64_t* bad_count) {
  int64_t* counter = bad_count ? bad_count : own_bad_count_;
  if (!bad_count) ops_.fill_zero(own_bad_count_, sizeof(int64_t));
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const OptimTensor& ten = tensors_[i];
    const float wd = ten.weight_decay ? spec_.weight_decay : 0.0f;
    OptimStepArgs a;
    a.value = ten.value;
    a.grad = ten.grad;
    a.m = m_[i];
    a.v = v_[i];
    a.quant = quant_[i];
    a.bad_count = counter;
    a.rows = ten.rows;
    a.cols = ten.cols;
    a.row_begin = 0;
    a.row_end = ten.rows;
    a.kind = spec_.kind;
    a.state_format = spec_.state_format;
    a.rounding = traits_.rounding;
    a.error_feedback = traits_.error_feedback;
    a.adam = make_adam_consts(lr, spec_.beta1, spec_.beta2, spec_.eps, wd, t);
    a.sgdm = SgdmStepConsts{lr, spec_.beta1, wd};
    a.grad_scale = grad_scale;
    a.keys = StepKeys{key(i, kWeightStream, t), key(i, kMStream, t), key(i, kVStream, t)};
    ops_.optimizer_step(a);
  }
  if (!bad_count) {
    int64_t bad = 0;
    ops_.copy_to_host(&bad, own_bad_count_, sizeof bad);
    if (bad != 0) throw NumericsError("the update made " + std::to_string(bad) + " weights non-finite");
  }
}

MemoryReport WeightOptimizer::memory() const {
  MemoryReport r;
  const size_t state_bytes = MomentBuffer::element_bytes(spec_.state_format);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const size_t n = numel(i);
    const size_t value_bytes = tensors_[i].value ? n * sizeof(float) : 0;
    const size_t mb = n * state_bytes, vb = v_[i] ? n * state_bytes : 0;
    r.num_params += n;
    r.m_bytes += mb;
    r.v_bytes += vb;
    r.grad_bytes += n * sizeof(float);
    if (is_quantized(i)) {
      const QuantRef& q = quant_[i];
      const size_t scale_bytes = q.scale_count() * sizeof(float);
      r.quantized_params += n;
      r.weight_bytes += q.code_bytes();
      r.scale_bytes += scale_bytes;
      r.master_bytes += value_bytes;
      r.quantized_static_bytes += q.code_bytes() + scale_bytes + value_bytes + mb + vb;
    } else {
      r.weight_bytes += value_bytes;
    }
  }
  // Without quantization the "quantized layers" are the block linears in fp32 (the baseline row).
  if (!traits_.quantized) {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (!tensors_[i].quantize) continue;
      const size_t n = numel(i);
      r.quantized_params += n;
      r.quantized_static_bytes += n * sizeof(float) + n * state_bytes * (v_[i] ? 2 : 1);
    }
  }
  return r;
}

std::vector<StatePiece> WeightOptimizer::state_pieces() const {
  std::vector<StatePiece> pieces;
  const size_t state_bytes = MomentBuffer::element_bytes(spec_.state_format);
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (tensors_[i].value) pieces.push_back({"values.f32", tensors_[i].value, numel(i) * sizeof(float), tensors_[i].name});
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (is_quantized(i)) pieces.push_back({"codes.bin", quant_[i].codes, quant_[i].code_bytes(), tensors_[i].name});
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (is_quantized(i) && quant_[i].scales)
      pieces.push_back({"scales.f32", quant_[i].scales, quant_[i].scale_count() * sizeof(float), tensors_[i].name});
  for (size_t i = 0; i < tensors_.size(); ++i) pieces.push_back({"m.bin", m_[i], numel(i) * state_bytes, tensors_[i].name});
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (v_[i]) pieces.push_back({"v.bin", v_[i], numel(i) * state_bytes, tensors_[i].name});
  return pieces;
}

}  // namespace eco

#include "optim/weight_optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "optim/update_rule.h"
#include "train/checkpoint_store.h"

namespace eco {
namespace {

// SR streams of tensor i: its weights, then its two moments (bf16 states).
enum Stream : uint32_t { kWeightStream = 0, kMStream = 1, kVStream = 2, kStreamsPerTensor = 4 };

size_t numel_of(const OptimTensor& t) { return t.rows * t.cols; }

// ECO's error feedback over a contiguous run of elements: m += injection(w~ − ŵ). Constants by
// value and restrict-qualified pointers, so the compiler hoists the η = 0 guard and vectorizes
// the loop: inside an OpenMP region shared variables are reached through pointers that may alias
// the stores, which blocks both (the scalar loop was ~20% of a master-free step).
void inject_error_adam(int64_t n, const float* __restrict wt, const float* __restrict wq, const float* __restrict d,
                       float* __restrict m, const AdamStepConsts c) {
  for (int64_t j = 0; j < n; ++j) m[j] += eco_adam_injection(wt[j] - wq[j], d[j], c);
}

void inject_error_sgdm(int64_t n, const float* __restrict wt, const float* __restrict wq, float* __restrict m,
                       const SgdmStepConsts c) {
  for (int64_t j = 0; j < n; ++j) m[j] += eco_sgdm_injection(wt[j] - wq[j], c);
}

// Elements per task of the final loop of a master-free step (results do not depend on it).
constexpr int64_t kChunk = 4096;

}  // namespace

WeightOptimizer::WeightOptimizer(std::vector<OptimTensor> tensors, const OptimizerSpec& spec)
    : tensors_(std::move(tensors)), spec_(spec), traits_(traits_of(spec.mode)) {
  const QuantFormat fmt = traits_.bf16 ? QuantFormat::BF16 : spec_.weight_format;
  quant_.resize(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const OptimTensor& t = tensors_[i];
    const size_t n = numel_of(t);
    if (!t.grad) throw Error("optimizer: tensor " + t.name + " has no gradient buffer");
    const bool quantized = traits_.quantized && t.quantize;
    const bool needs_value = !quantized || traits_.master;
    if (needs_value != (t.value != nullptr))
      throw Error("optimizer: tensor " + t.name + (needs_value ? " needs" : " must not have") +
                  " an fp32 value buffer in mode " + to_string(spec_.mode));
    if (quantized) quant_[i].emplace_back(t.rows, t.cols, fmt, spec_.granularity, spec_.pow2_scales);
    m_.emplace_back(n, spec_.state_format);
    v_.emplace_back(spec_.kind == OptimizerKind::AdamW ? n : 0, spec_.state_format);
  }
}

RandomKey WeightOptimizer::key(size_t i, uint32_t stream, int64_t t) const {
  RandomKey k;
  k.seed = spec_.seed;
  k.step = static_cast<uint32_t>(t);
  k.stream_id = static_cast<uint32_t>(i) * kStreamsPerTensor + stream;
  return k;
}

void WeightOptimizer::init_quantized(size_t i, const float* values) {
  if (!is_quantized(i)) throw Error("optimizer: tensor " + tensors_[i].name + " is not quantized");
  const float* src = has_master(i) ? tensors_[i].value : values;
  if (!src) throw Error("optimizer: initial values of " + tensors_[i].name + " are missing");
  // The initial copy is rounded to nearest in every mode (SR would make the start seed-dependent).
  if (quant_[i].front().quantize_from(src, Rounding::RTN) != 0)
    throw NumericsError("initial weights of " + tensors_[i].name + " contain NaN or Inf");
}

void WeightOptimizer::weight_values(size_t i, float* out) const {
  if (is_quantized(i)) quant_[i].front().dequantize_to(out);
  else std::copy(tensors_[i].value, tensors_[i].value + numel_of(tensors_[i]), out);
}

void WeightOptimizer::step(float lr, int64_t t) {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (is_quantized(i) && !has_master(i)) step_quantized_only(i, lr, t);
    else step_fp32_values(i, lr, t);
  }
}

// Resident fp32 tensors and masters: the plain update, then (master modes) re-quantize the copy.
void WeightOptimizer::step_fp32_values(size_t i, float lr, int64_t t) {
  const OptimTensor& ten = tensors_[i];
  const float wd = ten.weight_decay ? spec_.weight_decay : 0.0f;
  const int64_t n = static_cast<int64_t>(numel_of(ten));
  float* w = ten.value;
  const float* g = ten.grad;
  MomentBuffer& mb = m_[i];
  MomentBuffer& vb = v_[i];
  const RandomKey km = key(i, kMStream, t), kv = key(i, kVStream, t);
  const bool adam = spec_.kind == OptimizerKind::AdamW;
  const AdamStepConsts ac = make_adam_consts(lr, spec_.beta1, spec_.beta2, spec_.eps, wd, t);
  const SgdmStepConsts sc{lr, spec_.beta1, wd};
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t j0 = ch * kChunk, len = std::min(kChunk, n - j0);
    float m_scratch[kChunk], v_scratch[kChunk];
    float* m = mb.view(j0, len, m_scratch);
    if (adam) {
      float* v = vb.view(j0, len, v_scratch);
      for (int64_t k = 0; k < len; ++k) {
        const float d = adam_moments(g[j0 + k], m[k], v[k], ac);
        w[j0 + k] = adamw_new_weight(w[j0 + k], m[k], d, ac);
      }
      vb.commit(j0, len, v, kv);
    } else {
      for (int64_t k = 0; k < len; ++k) {
        sgdm_momentum(g[j0 + k], m[k], sc);
        w[j0 + k] = sgdm_new_weight(w[j0 + k], m[k], sc);
      }
    }
    mb.commit(j0, len, m, km);
  }
  if (has_master(i)) {
    const RandomKey kw = key(i, kWeightStream, t);
    if (quant_[i].front().quantize_from(w, traits_.rounding, &kw) != 0)
      throw NumericsError("the update made weights of " + ten.name + " non-finite");
  }
}

size_t WeightOptimizer::panel_rows(size_t i) const {
  const size_t rows = tensors_[i].rows, cols = tensors_[i].cols;
  switch (spec_.granularity) {
    case ScaleGranularity::PerRow: return std::clamp<size_t>(65536 / std::max<size_t>(cols, 1), 1, rows);
    case ScaleGranularity::Block128: return std::min<size_t>(128, rows);
    case ScaleGranularity::PerTensor: return rows;
  }
  return rows;
}

// Master-free update of a quantized tensor, a panel of rows (the rows sharing scales) at a time:
// w = dequant(codes); the optimizer step gives w~ in fp32; w~ is re-quantized (fresh scales); for
// ECO the error e = w~ − dequant(codes') goes into m before m is stored.
void WeightOptimizer::step_quantized_only(size_t i, float lr, int64_t t) {
  const OptimTensor& ten = tensors_[i];
  QuantTensor& q = quant_[i].front();
  const float wd = ten.weight_decay ? spec_.weight_decay : 0.0f;
  const size_t cols = ten.cols, P = panel_rows(i);
  const bool adam = spec_.kind == OptimizerKind::AdamW;
  const AdamStepConsts ac = make_adam_consts(lr, spec_.beta1, spec_.beta2, spec_.eps, wd, t);
  const SgdmStepConsts sc{lr, spec_.beta1, wd};
  const RandomKey kw = key(i, kWeightStream, t), km = key(i, kMStream, t), kv = key(i, kVStream, t);
  MomentBuffer& mb = m_[i];
  MomentBuffer& vb = v_[i];
  w_tmp_.resize(P * cols);
  d_tmp_.resize(P * cols);
  m_tmp_.resize(P * cols);
  q_tmp_.resize(P * cols);
  for (size_t r0 = 0; r0 < ten.rows; r0 += P) {
    const size_t r1 = std::min(ten.rows, r0 + P);
    const int64_t n = static_cast<int64_t>((r1 - r0) * cols);
    const size_t base = r0 * cols;
    const float* g = ten.grad + base;
    float* w = w_tmp_.data();
    float* d = d_tmp_.data();
    // Where this panel's m is updated: in place for fp32 states, else in m_tmp_ (bf16 states are
    // decoded chunk by chunk below and stored back after the ECO injection).
    float* const mt = mb.view(base, 0, m_tmp_.data());
    q.dequantize_rows(r0, r1, w);
    const int64_t step_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t ch = 0; ch < step_chunks; ++ch) {
      const int64_t j0 = ch * kChunk, len = std::min(kChunk, n - j0);
      float* m = mb.view(base + j0, len, mt + j0);
      if (adam) {
        float v_scratch[kChunk];
        float* v = vb.view(base + j0, len, v_scratch);
        for (int64_t k = 0; k < len; ++k) {
          const int64_t j = j0 + k;
          d[j] = adam_moments(g[j], m[k], v[k], ac);
          w[j] = adamw_new_weight(w[j], m[k], d[j], ac);
        }
        vb.commit(base + j0, len, v, kv);
      } else {
        for (int64_t k = 0; k < len; ++k) {
          const int64_t j = j0 + k;
          sgdm_momentum(g[j], m[k], sc);
          w[j] = sgdm_new_weight(w[j], m[k], sc);
        }
      }
    }
    if (q.quantize_rows_from(r0, r1, w, traits_.rounding, &kw) != 0)
      throw NumericsError("the update made weights of " + ten.name + " non-finite");
    // Store m; for ECO first fold in the error e = w~ − dequant(codes'). One parallel region over
    // row-aligned chunks: each task dequantizes its own rows (the nested region in
    // dequantize_rows runs serially), so ECO adds no pass over the panel and no extra fork/join.
    const size_t chunk_rows = std::max<size_t>(1, kChunk / std::max<size_t>(cols, 1));
    const int64_t chunks = static_cast<int64_t>((r1 - r0 + chunk_rows - 1) / chunk_rows);
    float* wq = q_tmp_.data();
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t ra = r0 + static_cast<size_t>(c) * chunk_rows, rb = std::min(r1, ra + chunk_rows);
      const int64_t j0 = static_cast<int64_t>((ra - r0) * cols), j1 = static_cast<int64_t>((rb - r0) * cols);
      if (traits_.error_feedback) {
        q.dequantize_rows(ra, rb, wq + j0);
        if (adam) inject_error_adam(j1 - j0, w + j0, wq + j0, d + j0, mt + j0, ac);
        else inject_error_sgdm(j1 - j0, w + j0, wq + j0, mt + j0, sc);
      }
      mb.commit(base + j0, j1 - j0, mt + j0, km);
    }
  }
}

MemoryReport WeightOptimizer::memory() const {
  MemoryReport r;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const size_t n = numel_of(tensors_[i]);
    const size_t value_bytes = tensors_[i].value ? n * sizeof(float) : 0;
    r.num_params += n;
    r.m_bytes += m_[i].bytes();
    r.v_bytes += v_[i].bytes();
    r.grad_bytes += n * sizeof(float);
    if (is_quantized(i)) {
      const QuantTensor& q = quant_[i].front();
      r.quantized_params += n;
      r.weight_bytes += q.code_bytes();
      r.scale_bytes += q.scale_bytes();
      r.master_bytes += value_bytes;
      r.quantized_static_bytes += q.code_bytes() + q.scale_bytes() + value_bytes + m_[i].bytes() + v_[i].bytes();
    } else {
      r.weight_bytes += value_bytes;
    }
  }
  // Without quantization the "quantized layers" are the block linears in fp32 (the baseline row).
  if (!traits_.quantized) {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (!tensors_[i].quantize) continue;
      const size_t n = numel_of(tensors_[i]);
      r.quantized_params += n;
      r.quantized_static_bytes += n * sizeof(float) + m_[i].bytes() + v_[i].bytes();
    }
  }
  return r;
}

void WeightOptimizer::save(CheckpointWriter& w) const {
  std::vector<uint8_t> values, codes, scales, m, v;
  auto append = [](std::vector<uint8_t>& dst, const void* src, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(src);
    dst.insert(dst.end(), p, p + bytes);
  };
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (tensors_[i].value) append(values, tensors_[i].value, numel_of(tensors_[i]) * sizeof(float));
    if (is_quantized(i)) {
      const QuantTensor& q = quant_[i].front();
      append(codes, q.code_data(), q.code_bytes());
      append(scales, q.scale_data(), q.scale_bytes());
    }
    append(m, m_[i].data(), m_[i].bytes());
    append(v, v_[i].data(), v_[i].bytes());
  }
  w.add_blob("values.f32", values.data(), values.size());
  w.add_blob("codes.bin", codes.data(), codes.size());
  w.add_blob("scales.f32", scales.data(), scales.size());
  w.add_blob("m.bin", m.data(), m.size());
  w.add_blob("v.bin", v.data(), v.size());
}

void WeightOptimizer::load(const LoadedCheckpoint& ckpt) {
  const std::vector<uint8_t> values = ckpt.blob("values.f32"), codes = ckpt.blob("codes.bin"),
                             scales = ckpt.blob("scales.f32"), m = ckpt.blob("m.bin"), v = ckpt.blob("v.bin");
  size_t ov = 0, oc = 0, os = 0, om = 0, ovv = 0;
  auto take = [&](const std::vector<uint8_t>& src, size_t& off, size_t bytes, const char* blob) {
    if (off + bytes > src.size())
      throw CheckpointError(ckpt.dir.string() + ": " + blob + " is smaller than this model and mode need (" +
                            std::to_string(src.size()) + " bytes); was it written with another optim.mode or model?");
    const uint8_t* p = src.data() + off;
    off += bytes;
    return p;
  };
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const size_t n = numel_of(tensors_[i]);
    if (tensors_[i].value) std::copy_n(take(values, ov, n * sizeof(float), "values.f32"), n * sizeof(float),
                                       reinterpret_cast<uint8_t*>(tensors_[i].value));
    if (is_quantized(i)) {
      QuantTensor& q = quant_[i].front();
      const uint8_t* c = take(codes, oc, q.code_bytes(), "codes.bin");
      const uint8_t* s = take(scales, os, q.scale_bytes(), "scales.f32");
      std::vector<float> sc(q.scale_count());
      std::copy_n(s, q.scale_bytes(), reinterpret_cast<uint8_t*>(sc.data()));
      q.load_raw(c, q.code_bytes(), sc.data(), sc.size());
    }
    std::copy_n(take(m, om, m_[i].bytes(), "m.bin"), m_[i].bytes(), static_cast<uint8_t*>(m_[i].data()));
    std::copy_n(take(v, ovv, v_[i].bytes(), "v.bin"), v_[i].bytes(), static_cast<uint8_t*>(v_[i].data()));
  }
  if (ov != values.size() || oc != codes.size() || os != scales.size() || om != m.size() || ovv != v.size())
    throw CheckpointError(ckpt.dir.string() + ": optimizer blobs are larger than this model and mode need; "
                          "was it written with another optim.mode or model?");
}

}  // namespace eco

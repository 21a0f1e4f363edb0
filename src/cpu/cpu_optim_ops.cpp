// CpuOps: quantized operands, the fused optimizer step and the step's reductions, over host memory
// (the CPU backend's "device"). These are the oracle of the CUDA kernels in src/cuda: the same
// ECO_HD per-element math (src/optim/update_rule.h, src/quant codecs), panel by panel.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_ops.h"
#include "optim/grad_norm.h"
#include "optim/moment_buffer.h"
#include "quant/lowbit_tensor.h"
#include "quant/quant_tensor.h"

namespace eco {
namespace {

// Elements per task of the element-wise loops (results do not depend on it).
constexpr int64_t kChunk = 4096;

QuantTensor view_of(const QuantRef& q) {
  return QuantTensor::view(q.codes, q.scales, q.rows, q.cols, q.format, q.granularity, q.pow2_scales);
}

// Rows [r0, r1) of q from x_rows; the packed low-bit formats go through their own codecs (which
// always encode: NaN → code 0, ±Inf → the grid's end). Returns the number of NaN/±Inf inputs.
size_t quantize_ref_rows(const QuantRef& q, size_t r0, size_t r1, const float* x_rows, Rounding rounding,
                         const RandomKey* key, QuantTensor::NonFinite on_non_finite) {
  if (q.lowbit())
    return lowbit_quantize_rows(q.lowbit_layout(), r0, r1, x_rows, rounding, key, q.scale_update,
                                static_cast<uint8_t*>(q.codes), reinterpret_cast<uint8_t*>(q.scales));
  return view_of(q).quantize_rows_from(r0, r1, x_rows, rounding, key, on_non_finite);
}

void dequantize_ref_rows(const QuantRef& q, size_t r0, size_t r1, float* out_rows) {
  if (q.lowbit())
    lowbit_dequantize_rows(q.lowbit_layout(), r0, r1, static_cast<const uint8_t*>(q.codes),
                           reinterpret_cast<const uint8_t*>(q.scales), out_rows);
  else
    view_of(q).dequantize_rows(r0, r1, out_rows);
}

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

// The clipped gradient, formed as the unfused clip-then-step did: one float multiply (exact at 1).
inline float clipped(const float* g, int64_t j, float scale) { return scale == 1.0f ? g[j] : g[j] * scale; }

// The moments-and-weight update of elements [base, base+n) in place (w, m, v as fp32 views);
// d[] receives Adam's denominators when wanted (ECO).
void update_span(const OptimStepArgs& a, MomentBuffer& mb, MomentBuffer& vb, size_t base, int64_t n, float* w, float* mt,
                 float* d) {
  const bool adam = a.kind == OptimizerKind::AdamW;
  const float* g = a.grad + base;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t j0 = ch * kChunk, len = std::min(kChunk, n - j0);
    float m_scratch[kChunk];
    float* m = mt ? mt + j0 : mb.view(base + j0, len, m_scratch);
    if (adam) {
      float v_scratch[kChunk];
      float* v = vb.view(base + j0, len, v_scratch);
      for (int64_t k = 0; k < len; ++k) {
        const int64_t j = j0 + k;
        const float dj = adam_moments(clipped(g, j, a.grad_scale), m[k], v[k], a.adam);
        if (d) d[j] = dj;
        w[j] = adamw_new_weight(w[j], m[k], dj, a.adam);
      }
      vb.commit(base + j0, len, v, a.keys.v);
    } else {
      for (int64_t k = 0; k < len; ++k) {
        const int64_t j = j0 + k;
        sgdm_momentum(clipped(g, j, a.grad_scale), m[k], a.sgdm);
        w[j] = sgdm_new_weight(w[j], m[k], a.sgdm);
      }
    }
    if (!mt) mb.commit(base + j0, len, m, a.keys.m);
  }
}

}  // namespace

void CpuOps::quantize_rows(const QuantRef& q, size_t row_begin, size_t row_end, const float* x, Rounding rounding,
                           const RandomKey* key, int64_t* bad_count) {
  const size_t bad = quantize_ref_rows(q, row_begin, row_end, x, rounding, key, QuantTensor::NonFinite::Encode);
  if (bad_count) *bad_count += static_cast<int64_t>(bad);
}

void CpuOps::dequantize_rows(float* out, const QuantRef& q, size_t row_begin, size_t row_end) {
  dequantize_ref_rows(q, row_begin, row_end, out);
}

void CpuOps::quantized_matmul_forward(float* out, const QuantRef& a, const QuantRef& w, const float* bias, int N, int K,
                                      int OC) {
  if (a.rows != static_cast<size_t>(N) || a.cols != static_cast<size_t>(K) || w.rows != static_cast<size_t>(OC) ||
      w.cols != static_cast<size_t>(K))
    throw Error("quantized_matmul_forward: operands " + std::to_string(a.rows) + "x" + std::to_string(a.cols) + " and " +
                std::to_string(w.rows) + "x" + std::to_string(w.cols) + " do not fit N=" + std::to_string(N) +
                " K=" + std::to_string(K) + " OC=" + std::to_string(OC));
  operand_a_.resize(a.numel());
  operand_w_.resize(w.numel());
  dequantize_rows(operand_a_.data(), a, 0, a.rows);
  dequantize_rows(operand_w_.data(), w, 0, w.rows);
  matmul_forward(out, operand_a_.data(), operand_w_.data(), bias, N, K, OC);
}

void CpuOps::optimizer_step(const OptimStepArgs& a) {
  if (a.row_begin < a.state_row_offset || a.row_end > a.state_rows_end() || a.state_rows_end() > a.rows)
    throw Error("optimizer_step: rows [" + std::to_string(a.row_begin) + ", " + std::to_string(a.row_end) +
                ") are outside the moments' rows [" + std::to_string(a.state_row_offset) + ", " +
                std::to_string(a.state_rows_end()) + ")");
  // The moments are indexed by tensor element (origin: the first element they hold).
  const size_t origin = a.state_row_offset * a.cols, n_state = a.state_rows_end() * a.cols - origin;
  MomentBuffer mb = MomentBuffer::view(a.m, n_state, a.state_format, origin, MomentKind::Signed);
  MomentBuffer vb =
      MomentBuffer::view(a.v, a.kind == OptimizerKind::AdamW ? n_state : 0, a.state_format, origin, MomentKind::Log);
  const size_t cols = a.cols;

  if (!a.master_free()) {
    // The fp32 value (a resident weight or a master) is updated in place; a master's stored copy is
    // re-quantized from it afterwards.
    const size_t base = a.row_begin * cols;
    update_span(a, mb, vb, base, static_cast<int64_t>((a.row_end - a.row_begin) * cols), a.value + base, nullptr,
                nullptr);
    if (a.quantized()) {
      int64_t bad = 0;
      quantize_rows(a.quant, a.row_begin, a.row_end, a.value + base, a.rounding, &a.keys.weight, &bad);
      if (a.bad_count) *a.bad_count += bad;
    }
    return;
  }

  // Master-free, a panel of rows (the rows sharing scales) at a time: w = dequant(codes); the step
  // gives w~ in fp32; w~ is re-quantized (fresh scales, or the kept ones of INT2 / ternary); for ECO
  // the error e = w~ − dequant(codes') goes into m before m is stored.
  const QuantRef& q = a.quant;
  const size_t P = cpu_master_free_panel_rows(a.quant.granularity, a.quant.rows, a.quant.cols);
  if (a.quant.granularity == ScaleGranularity::PerTensor && (a.row_begin != 0 || a.row_end != a.rows))
    throw Error("optimizer_step: a per-tensor-scaled tensor must be updated whole");
  w_tmp_.resize(P * cols);
  d_tmp_.resize(P * cols);
  m_tmp_.resize(P * cols);
  q_tmp_.resize(P * cols);
  for (size_t r0 = a.row_begin; r0 < a.row_end; r0 += P) {
    const size_t r1 = std::min(a.row_end, r0 + P);
    const int64_t n = static_cast<int64_t>((r1 - r0) * cols);
    const size_t base = r0 * cols;
    float* w = w_tmp_.data();
    float* d = d_tmp_.data();
    // Where this panel's m is updated: in place for fp32 states, else in m_tmp_ (bf16 states are
    // decoded and stored back after the ECO injection).
    float* const mt = mb.view(base, static_cast<size_t>(n), m_tmp_.data());
    dequantize_ref_rows(q, r0, r1, w);
    update_span(a, mb, vb, base, n, w, mt, d);
    const size_t bad = quantize_ref_rows(q, r0, r1, w, a.rounding, &a.keys.weight, QuantTensor::NonFinite::Keep);
    if (bad != 0 && a.bad_count) *a.bad_count += static_cast<int64_t>(bad);
    // Store m; for ECO first fold in the error. One parallel region over row-aligned chunks: each
    // task dequantizes its own rows, so ECO adds no pass over the panel and no extra fork/join.
    const size_t chunk_rows = whole_state_blocks(
        std::max<size_t>(1, static_cast<size_t>(kChunk) / std::max<size_t>(cols, 1)), cols, r1 - r0);
    const int64_t chunks = static_cast<int64_t>((r1 - r0 + chunk_rows - 1) / chunk_rows);
    float* wq = q_tmp_.data();
    const bool adam = a.kind == OptimizerKind::AdamW;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t ra = r0 + static_cast<size_t>(c) * chunk_rows, rb = std::min(r1, ra + chunk_rows);
      const int64_t j0 = static_cast<int64_t>((ra - r0) * cols), j1 = static_cast<int64_t>((rb - r0) * cols);
      if (a.error_feedback) {
        dequantize_ref_rows(q, ra, rb, wq + j0);
        if (adam) inject_error_adam(j1 - j0, w + j0, wq + j0, d + j0, mt + j0, a.adam);
        else inject_error_sgdm(j1 - j0, w + j0, wq + j0, mt + j0, a.sgdm);
      }
      mb.commit(base + static_cast<size_t>(j0), static_cast<size_t>(j1 - j0), mt + j0, a.keys.m);
    }
  }
}

void CpuOps::accumulate_sum_squares(double* acc, const float* x, size_t n) { *acc += sum_of_squares(x, n); }

void CpuOps::accumulate_mean(double* acc, const float* x, size_t n) {
  double sum = 0.0;  // in order, in double: the same whatever the thread count
  for (size_t i = 0; i < n; ++i) sum += x[i];
  *acc += static_cast<double>(static_cast<float>(sum / static_cast<double>(n)));
}


}  // namespace eco

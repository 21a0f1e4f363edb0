#pragma once
// The types the ops interface uses for state that lives in backend memory between steps: quantized
// tensors (codes + scales) and the arguments of the fused optimizer step. Plain structs of
// backend pointers and numbers, so the orchestration can describe work without touching memory.
#include <cstddef>
#include <cstdint>

#include "core/philox.h"
#include "optim/update_rule.h"
#include "optim/weight_mode.h"
#include "quant/quant_format.h"
#include "quant/scaling.h"

namespace eco {

// A rows×cols quantized tensor in backend memory: codes row-major (1 byte per element; 2 for BF16)
// and fp32 scales laid out as scale_layout() (none for BF16). x ≈ decode(code)·scale.
struct QuantRef {
  void* codes = nullptr;
  float* scales = nullptr;
  size_t rows = 0, cols = 0;
  QuantFormat format = QuantFormat::E4M3;
  ScaleGranularity granularity = ScaleGranularity::PerRow;
  bool pow2_scales = false;

  ScaleLayout scale_layout() const { return {granularity, rows, cols}; }
  size_t numel() const { return rows * cols; }
  size_t code_bytes() const { return numel() * code_size_bytes(format); }
  size_t scale_count() const { return format_is_scaled(format) ? scale_layout().count() : 0; }
};

// Random streams of one tensor's step: SR of the stored weight, of m, of v (bf16 states). The
// element index of a draw is the flat index in the whole tensor, never a local or per-rank one.
struct StepKeys {
  RandomKey weight, m, v;
};

// One fused optimizer step over rows [row_begin, row_end) of one parameter tensor (DESIGN.md §4):
// g = grad·grad_scale; moments; w~; for quantized tensors re-quantize (fresh scales, RTN or SR),
// and for ECO fold e = w~ − dequant(code') into m before m is stored.
struct OptimStepArgs {
  // Buffers (backend memory).
  float* value = nullptr;       // the fp32 weight, or the master of a quantized tensor; nullptr when master-free
  const float* grad = nullptr;  // the whole tensor's gradient
  void* m = nullptr;            // state_format elements of rows [state_row_offset, row_end) at least
  void* v = nullptr;            // AdamW only; laid out as m
  // The tensor row whose first element is m[0] (and v[0]): 0 when the moments cover the whole
  // tensor; a ZeRO-1 rank keeps only its own rows (row_begin >= state_row_offset). Stochastic
  // rounding of the moments stays keyed by the element's index in the whole tensor.
  size_t state_row_offset = 0;
  QuantRef quant;               // codes == nullptr: the tensor is not quantized
  int64_t* bad_count = nullptr;  // backend int64: grows by the number of non-finite updated weights
  // Which rows; a range must be self-contained for the scale granularity (all rows for per-tensor).
  size_t rows = 1, cols = 0, row_begin = 0, row_end = 1;
  // The rule.
  OptimizerKind kind = OptimizerKind::AdamW;
  StateFormat state_format = StateFormat::Fp32;
  Rounding rounding = Rounding::RTN;
  bool error_feedback = false;  // ECO
  AdamStepConsts adam{};
  SgdmStepConsts sgdm{};
  float grad_scale = 1.0f;  // the clip factor of this step
  StepKeys keys{};

  bool quantized() const { return quant.codes != nullptr; }
  bool master_free() const { return quantized() && value == nullptr; }
};

// Rows the CPU backend updates together in a master-free step: whole scale groups, about 64k
// elements (its scratch is four fp32 panels of this size; the memory plan counts them).
inline size_t cpu_master_free_panel_rows(ScaleGranularity g, size_t rows, size_t cols) {
  switch (g) {
    case ScaleGranularity::PerRow: {
      const size_t by_size = 65536 / (cols > 0 ? cols : 1);
      return by_size < 1 ? 1 : (by_size > rows ? rows : by_size);
    }
    case ScaleGranularity::Block128: return rows < kScaleBlock ? rows : kScaleBlock;
    case ScaleGranularity::PerTensor: return rows;
  }
  return rows;
}

}  // namespace eco

#pragma once
// The types the ops interface uses for state that lives in backend memory between steps: quantized
// tensors (codes + scales) and the arguments of the fused optimizer step. Plain structs of
// backend pointers and numbers, so the orchestration can describe work without touching memory.
#include <cstddef>
#include <cstdint>

#include "core/philox.h"
#include "optim/update_rule.h"
#include "optim/weight_mode.h"
#include "quant/lowbit_tensor.h"
#include "quant/quant_format.h"
#include "quant/scaling.h"

namespace eco {

// A rows×cols quantized tensor in backend memory: codes row-major (1 byte per element; 2 for BF16)
// and fp32 scales laid out as scale_layout() (none for BF16). x ≈ decode(code)·scale.
//
// The packed low-bit formats (INT4, INT2, TERNARY; docs/lowbit.md) follow lowbit_layout(): codes
// 2 or 4 to a byte, each row starting on a byte boundary; `scales` then points at scale_bytes()
// bytes of fp32 or bf16 scales (scale_dtype), whatever its C++ type says. INT4 has one scale per
// group_size columns of a row, and granularity PerRow (its scales never span rows, which is all
// that panel and ZeRO-1 splits need to know); INT2 / ternary have one scale per row (PerRow) or
// per tensor (PerTensor).
struct QuantRef {
  void* codes = nullptr;
  float* scales = nullptr;
  size_t rows = 0, cols = 0;
  QuantFormat format = QuantFormat::E4M3;
  ScaleGranularity granularity = ScaleGranularity::PerRow;
  bool pow2_scales = false;
  // Low-bit formats only.
  size_t group_size = 128;  // INT4
  LowbitScaleDtype scale_dtype = LowbitScaleDtype::F32;
  // Keep: quantizing reuses the stored scales (INT2 / ternary after init: an absmean recomputed
  // from quantized weights shrinks every step); Recompute: fresh scales from the values.
  LowbitScaleUpdate scale_update = LowbitScaleUpdate::Recompute;

  ScaleLayout scale_layout() const { return {granularity, rows, cols}; }
  LowbitLayout lowbit_layout() const {
    LowbitLayout l;
    l.format = format == QuantFormat::INT4 ? LowbitFormat::INT4
               : format == QuantFormat::INT2 ? LowbitFormat::INT2
                                             : LowbitFormat::Ternary;
    l.rows = rows;
    l.cols = cols;
    l.granularity = format == QuantFormat::INT4                    ? LowbitScaleGranularity::Group
                    : granularity == ScaleGranularity::PerTensor ? LowbitScaleGranularity::PerTensor
                                                                   : LowbitScaleGranularity::PerRow;
    l.group_size = group_size;
    l.scale_dtype = scale_dtype;
    return l;
  }
  bool lowbit() const { return is_lowbit(format); }
  size_t numel() const { return rows * cols; }
  // Bytes of one row of codes (rows start there: row r at r·row_code_bytes()).
  size_t row_code_bytes() const { return lowbit() ? lowbit_layout().row_bytes() : cols * code_size_bytes(format); }
  size_t code_bytes() const { return rows * row_code_bytes(); }
  size_t scale_count() const {
    if (lowbit()) return lowbit_layout().scale_count();
    return format_is_scaled(format) ? scale_layout().count() : 0;
  }
  size_t scale_bytes() const { return lowbit() ? lowbit_layout().scale_bytes() : scale_count() * sizeof(float); }
  // Byte offset in the scale array of the first scale of `row` (a row where a split may start).
  size_t scale_byte_offset(size_t row) const {
    if (lowbit()) {
      const LowbitLayout l = lowbit_layout();
      return l.granularity == LowbitScaleGranularity::PerTensor ? 0 : row * l.scales_per_row() * lowbit_scale_size(scale_dtype);
    }
    return scale_count() ? scale_layout().index(row, 0) * sizeof(float) : 0;
  }
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
  // The row after the moments' last (0: the tensor's end). Block-wise moments need it: their block
  // parameters follow the codes of exactly the elements held.
  size_t state_row_end = 0;
  size_t state_rows_end() const { return state_row_end ? state_row_end : rows; }
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

// want_rows rounded down to whole 128-element blocks of a block-wise optimizer state (a multiple
// of 128 / gcd(cols, 128) rows, at least one such unit), or all `rows` when that is fewer.
inline size_t whole_state_blocks(size_t want_rows, size_t cols, size_t rows) {
  size_t g = 128, c = cols;  // gcd(cols, 128)
  while (c != 0) {
    const size_t t = g % c;
    g = c;
    c = t;
  }
  const size_t unit = 128 / g;
  const size_t r = want_rows < unit ? unit : want_rows / unit * unit;
  return r > rows ? rows : r;
}

// Rows the CPU backend updates together in a master-free step: whole scale groups and whole
// blocks of a block-wise optimizer state, about 64k elements (its scratch is four fp32 panels of
// this size; the memory plan counts them).
inline size_t cpu_master_free_panel_rows(ScaleGranularity g, size_t rows, size_t cols) {
  switch (g) {
    case ScaleGranularity::PerRow: {
      const size_t by_size = 65536 / (cols > 0 ? cols : 1);
      return whole_state_blocks(by_size < 1 ? 1 : by_size, cols, rows);
    }
    case ScaleGranularity::Block128: return rows < kScaleBlock ? rows : kScaleBlock;
    case ScaleGranularity::PerTensor: return rows;
  }
  return rows;
}

}  // namespace eco

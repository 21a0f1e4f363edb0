#pragma once
// Host layer over the sub-byte codecs of quant/lowbit.h: the layout of a packed rows×cols weight
// (codes + scales, exact byte counts for the memory planner) and whole-tensor quantize /
// dequantize, which are the CPU oracle for device kernels (docs/lowbit.md "Formats").
//
// Layout of a rows×cols row-major weight ([out, in]; K = in = cols):
//   codes   row r occupies row_bytes() = ceil(cols·bits / 8) bytes starting at r·row_bytes(); a
//           row always starts on a byte boundary (the tail of its last byte is zero padding), so
//           rows can be written concurrently. Inside a row, packing as in lowbit.h.
//   scales  PerTensor: 1; PerRow: one per row; Group: ceil(cols / group_size) per row along K
//           (the last group of a row may be partial), index r·scales_per_row() + c / group_size.
//           fp32 or bf16, little-endian.
// Scale rule by format: INT4 = absmax / 7 (the group's largest |x| maps to code ±7); INT2 and
// ternary = mean |x| (absmean, DQT / BitNet b1.58), over the finite values of the span.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/philox.h"
#include "quant/lowbit.h"
#include "quant/quant_format.h"

namespace eco {

enum class LowbitScaleGranularity : uint8_t { PerTensor, PerRow, Group };

// Whether quantizing derives fresh scales from the values or reuses the stored ones.
// Recompute: INT4 (current scaling, every step, like the FP8 weights). Keep: INT2 / ternary after
// their first quantization (see docs/lowbit.md "Scale maintenance": recomputing an absmean scale
// from already-quantized weights shrinks it every step), and any format under a fixed scale.
enum class LowbitScaleUpdate : uint8_t { Recompute, Keep };

// Config spellings: "int4", "int2", "ternary" / "tensor", "row", "group" / "fp32", "bf16".
const char* to_string(LowbitFormat f);
const char* to_string(LowbitScaleGranularity g);
const char* to_string(LowbitScaleDtype d);
LowbitFormat parse_lowbit_format(const std::string& name);                     // throws ConfigError
LowbitScaleGranularity parse_lowbit_granularity(const std::string& name);      // throws ConfigError
LowbitScaleDtype parse_lowbit_scale_dtype(const std::string& name);            // throws ConfigError

struct LowbitLayout {
  LowbitFormat format = LowbitFormat::INT4;
  size_t rows = 0;
  size_t cols = 0;
  LowbitScaleGranularity granularity = LowbitScaleGranularity::Group;
  size_t group_size = 128;  // Group only: 32, 64 or 128
  LowbitScaleDtype scale_dtype = LowbitScaleDtype::F32;

  // ConfigError naming the bad field (group size not 32/64/128 under Group granularity).
  void validate() const;

  int bits() const { return lowbit_bits(format); }
  size_t numel() const { return rows * cols; }
  size_t row_bytes() const { return packed_byte_count(cols, bits()); }
  size_t code_bytes() const { return rows * row_bytes(); }
  // Columns of one row that share a scale (cols for PerRow and PerTensor).
  size_t scale_span() const { return granularity == LowbitScaleGranularity::Group ? group_size : cols; }
  size_t scales_per_row() const;  // 0 for PerTensor (its one scale belongs to no row)
  size_t scale_count() const;
  size_t scale_bytes() const { return scale_count() * lowbit_scale_size(scale_dtype); }
  size_t total_bytes() const { return code_bytes() + scale_bytes(); }
  // Exact storage per parameter, padding and scales included (e.g. INT4, group 128, fp32 scales,
  // cols a multiple of 128: 0.5 + 4/128 = 0.53125).
  double bytes_per_param() const;
  size_t scale_index(size_t row, size_t col) const;
};

// Quantizes rows [row_begin, row_end) of the tensor: x_rows points at row row_begin (row-major,
// cols floats a row); codes and scales are the WHOLE tensor's arrays (code_bytes() and
// scale_bytes() bytes). With Recompute, the scales of those rows are derived from x first; a
// PerTensor scale needs all rows for that (eco::Error otherwise). With Keep, the stored scales are
// used as they are. SR bits of element (r, c) are random_bits(*key, r·cols + c), so the codes do
// not depend on how rows are split between calls or threads; SR without a key is an eco::Error.
// NaN encodes as code 0, ±Inf clamps to the grid's end; both are left out of the scales. Returns
// the number of NaN/±Inf inputs (the caller decides whether to refuse the step).
size_t lowbit_quantize_rows(const LowbitLayout& layout, size_t row_begin, size_t row_end, const float* x_rows,
                            Rounding rounding, const RandomKey* key, LowbitScaleUpdate update, uint8_t* codes,
                            uint8_t* scales);

// Whole-tensor forms.
size_t lowbit_quantize_rtn(const LowbitLayout& layout, const float* x, LowbitScaleUpdate update, uint8_t* codes,
                           uint8_t* scales);
size_t lowbit_quantize_sr(const LowbitLayout& layout, const float* x, const RandomKey& key, LowbitScaleUpdate update,
                          uint8_t* codes, uint8_t* scales);

// Only the scales, from x (all rows): what Recompute stores. Returns the NaN/±Inf count.
size_t lowbit_compute_scales(const LowbitLayout& layout, const float* x, uint8_t* scales);

// out[r·cols + c] = decode(code(r, c)) · scale(r, c): one fp32 multiply per element.
void lowbit_dequantize_rows(const LowbitLayout& layout, size_t row_begin, size_t row_end, const uint8_t* codes,
                            const uint8_t* scales, float* out_rows);
void lowbit_dequantize(const LowbitLayout& layout, const uint8_t* codes, const uint8_t* scales, float* out);

// Element access (tests, diagnostics): the integer code value and the scale of (row, col).
int lowbit_code_at(const LowbitLayout& layout, const uint8_t* codes, size_t row, size_t col);
float lowbit_scale_at(const LowbitLayout& layout, const uint8_t* scales, size_t row, size_t col);

// An owning tensor: codes all 0 and scales 1 at construction (an exact zero tensor).
struct LowbitTensor {
  LowbitLayout layout;
  std::vector<uint8_t> codes;
  std::vector<uint8_t> scales;

  LowbitTensor() = default;
  explicit LowbitTensor(const LowbitLayout& layout);  // validates the layout

  [[nodiscard]] size_t quantize(const float* x, Rounding rounding, LowbitScaleUpdate update,
                                const RandomKey* key = nullptr) {
    return lowbit_quantize_rows(layout, 0, layout.rows, x, rounding, key, update, codes.data(), scales.data());
  }
  void dequantize(float* out) const { lowbit_dequantize(layout, codes.data(), scales.data(), out); }
  int code_at(size_t row, size_t col) const { return lowbit_code_at(layout, codes.data(), row, col); }
  float scale_at(size_t row, size_t col) const { return lowbit_scale_at(layout, scales.data(), row, col); }
  float value(size_t row, size_t col) const { return static_cast<float>(code_at(row, col)) * scale_at(row, col); }
};

}  // namespace eco

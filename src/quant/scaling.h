#pragma once
// Scales of quantized tensors: x ≈ code_value · scale, one fp32 scale per output row (absmax over
// K; the paper's choice and the default), per tensor, or per 128×128 block. A scale maps its
// block's absmax to the format's largest value (DESIGN.md §4, docs/numerics.md "Scales").
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/hd.h"
#include "core/float_bits.h"

namespace eco {

enum class ScaleGranularity : uint8_t { PerRow, PerTensor, Block128 };
inline constexpr size_t kScaleBlock = 128;

// Config spelling: "row", "tensor", "block128".
const char* to_string(ScaleGranularity g);
ScaleGranularity parse_scale_granularity(const std::string& name);  // throws ConfigError

// Running absmax over finite values only: NaN and ±Inf are left out (they are counted separately
// and make the quantizer refuse the tensor), so one bad value cannot poison a whole row's scale.
ECO_HD float absmax_accumulate(float running, float x) {
  const float a = x < 0.0f ? -x : x;
  return (a > running && is_finite_bits(a)) ? a : running;
}

// The smallest scale: the smallest normal float. Flooring there keeps x / scale finite and exact
// scales normal; only blocks with absmax < format_max · 2^-126 are affected (they use less range).
inline constexpr float kMinScale = 1.17549435e-38f;  // 2^-126

// scale = absmax / format_max in fp32; an all-zero block gets scale 1 (its codes are all ±0 and
// dequantize to exact zeros). With pow2, the scale is rounded UP to a power of two, so
// absmax / scale ≤ format_max still holds and scaling by it is exact.
ECO_HD float scale_from_absmax(float absmax, float format_max, bool pow2) {
  if (!(absmax > 0.0f)) return 1.0f;
  float s = absmax / format_max;
  if (s < kMinScale) s = kMinScale;
  if (pow2) {
    uint32_t u = float_to_bits(s);
    if (u & 0x7FFFFFu) u = (u & 0x7F800000u) + 0x00800000u;  // next binade, mantissa 0
    s = bits_to_float(u);
  }
  return s;
}

// Where the scales of a rows×cols row-major tensor live. PerRow: scales[row]; PerTensor:
// scales[0]; Block128: scales[(row/128)·grid_cols + col/128], edge blocks partial.
struct ScaleLayout {
  ScaleGranularity granularity = ScaleGranularity::PerRow;
  size_t rows = 0;
  size_t cols = 0;

  size_t grid_cols() const {
    switch (granularity) {
      case ScaleGranularity::PerRow:
      case ScaleGranularity::PerTensor: return 1;
      case ScaleGranularity::Block128: break;
    }
    return (cols + kScaleBlock - 1) / kScaleBlock;
  }
  size_t count() const {
    switch (granularity) {
      case ScaleGranularity::PerRow: return rows;
      case ScaleGranularity::PerTensor: return 1;
      case ScaleGranularity::Block128: break;
    }
    return ((rows + kScaleBlock - 1) / kScaleBlock) * grid_cols();
  }
  size_t index(size_t row, size_t col) const {
    switch (granularity) {
      case ScaleGranularity::PerRow: return row;
      case ScaleGranularity::PerTensor: return 0;
      case ScaleGranularity::Block128: break;
    }
    return (row / kScaleBlock) * grid_cols() + col / kScaleBlock;
  }
  // Whether rows [row_begin, row_end) can get their scales without looking at other rows.
  bool rows_are_self_contained(size_t row_begin, size_t row_end) const;
};

// Computes the scales of rows [row_begin, row_end) of x into scales (the whole tensor's scale
// array, indexed as in layout); x_rows points at row row_begin. Returns the number of NaN/±Inf
// values seen (they are left out of the absmax). The range must be self-contained (all rows for
// PerTensor; multiples of 128 rows, or up to the last row, for Block128): eco::Error otherwise.
// Parallel over rows/blocks with OpenMP; the result does not depend on the thread count.
size_t compute_scales(const ScaleLayout& layout, const float* x_rows, size_t row_begin, size_t row_end,
                      float format_max, bool pow2, float* scales);

}  // namespace eco

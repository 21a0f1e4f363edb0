#include "quant/scaling.h"

#include <algorithm>

#include "core/error.h"

namespace eco {

namespace {
// Below this many elements the OpenMP fork costs more than it saves.
constexpr size_t kParallelMinElements = size_t{1} << 15;

// absmax over finite values and the count of non-finite ones, for n contiguous floats.
struct BlockStats {
  float absmax = 0.0f;
  size_t non_finite = 0;
};

BlockStats scan(const float* x, size_t n) {
  BlockStats s;
  for (size_t i = 0; i < n; ++i) {
    s.absmax = absmax_accumulate(s.absmax, x[i]);
    s.non_finite += is_finite_bits(x[i]) ? 0 : 1;
  }
  return s;
}
}  // namespace

const char* to_string(ScaleGranularity g) {
  switch (g) {
    case ScaleGranularity::PerRow: return "row";
    case ScaleGranularity::PerTensor: return "tensor";
    case ScaleGranularity::Block128: return "block128";
  }
  return "?";
}

ScaleGranularity parse_scale_granularity(const std::string& name) {
  if (name == "row") return ScaleGranularity::PerRow;
  if (name == "tensor") return ScaleGranularity::PerTensor;
  if (name == "block128") return ScaleGranularity::Block128;
  throw ConfigError("unknown scale granularity \"" + name +
                    "\"; use row (one scale per output row), tensor, or block128 (128x128 blocks)");
}

bool ScaleLayout::rows_are_self_contained(size_t row_begin, size_t row_end) const {
  if (row_begin > row_end || row_end > rows) return false;
  switch (granularity) {
    case ScaleGranularity::PerRow: return true;
    case ScaleGranularity::PerTensor: return row_begin == 0 && row_end == rows;
    case ScaleGranularity::Block128: break;
  }
  return row_begin % kScaleBlock == 0 && (row_end % kScaleBlock == 0 || row_end == rows);
}

size_t compute_scales(const ScaleLayout& layout, const float* x_rows, size_t row_begin, size_t row_end,
                      float format_max, bool pow2, float* scales) {
  if (!layout.rows_are_self_contained(row_begin, row_end))
    throw Error("compute_scales: rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                ") of a " + std::to_string(layout.rows) + "-row tensor cannot be scaled on their own with " +
                to_string(layout.granularity) + " scales");
  const size_t cols = layout.cols;
  const size_t n_rows = row_end - row_begin;
  const bool parallel = n_rows * cols >= kParallelMinElements;
  size_t non_finite = 0;

  switch (layout.granularity) {
    case ScaleGranularity::PerRow: {
#pragma omp parallel for schedule(static) reduction(+ : non_finite) if (parallel)
      for (size_t r = 0; r < n_rows; ++r) {
        const BlockStats s = scan(x_rows + r * cols, cols);
        scales[row_begin + r] = scale_from_absmax(s.absmax, format_max, pow2);
        non_finite += s.non_finite;
      }
      break;
    }
    case ScaleGranularity::PerTensor: {
      // max is exact and order-free, so the reduction gives the same scale for any thread count.
      float absmax = 0.0f;
#pragma omp parallel for schedule(static) reduction(max : absmax) reduction(+ : non_finite) if (parallel)
      for (size_t r = 0; r < n_rows; ++r) {
        const BlockStats s = scan(x_rows + r * cols, cols);
        absmax = std::max(absmax, s.absmax);
        non_finite += s.non_finite;
      }
      scales[0] = scale_from_absmax(absmax, format_max, pow2);
      break;
    }
    case ScaleGranularity::Block128: {
      const size_t grid_cols = layout.grid_cols();
      const size_t bands = (n_rows + kScaleBlock - 1) / kScaleBlock;
#pragma omp parallel for schedule(static) reduction(+ : non_finite) if (parallel)
      for (size_t t = 0; t < bands * grid_cols; ++t) {
        const size_t band = t / grid_cols, cb = t % grid_cols;
        const size_t r0 = band * kScaleBlock, r1 = std::min(n_rows, r0 + kScaleBlock);
        const size_t c0 = cb * kScaleBlock, width = std::min(cols, c0 + kScaleBlock) - c0;
        BlockStats block;
        for (size_t r = r0; r < r1; ++r) {
          const BlockStats s = scan(x_rows + r * cols + c0, width);
          block.absmax = std::max(block.absmax, s.absmax);
          block.non_finite += s.non_finite;
        }
        scales[layout.index(row_begin + r0, c0)] = scale_from_absmax(block.absmax, format_max, pow2);
        non_finite += block.non_finite;
      }
      break;
    }
  }
  return non_finite;
}

}  // namespace eco

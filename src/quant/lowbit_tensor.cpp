#include "quant/lowbit_tensor.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace eco {

namespace {
// Below this many elements the OpenMP fork costs more than it saves.
constexpr size_t kParallelMinElements = size_t{1} << 15;

// Statistics of one scale span over finite values. The sum is in double and in element order, so
// an absmean does not depend on the thread count (spans are never split between threads).
struct SpanStats {
  double abs_sum = 0.0;
  float absmax = 0.0f;
  size_t finite = 0;
  size_t non_finite = 0;

  void add(const SpanStats& o) {
    abs_sum += o.abs_sum;
    absmax = std::max(absmax, o.absmax);
    finite += o.finite;
    non_finite += o.non_finite;
  }
};

SpanStats scan(const float* x, size_t n) {
  SpanStats s;
  for (size_t i = 0; i < n; ++i) {
    if (!is_finite_bits(x[i])) {
      ++s.non_finite;
      continue;
    }
    const float a = x[i] < 0.0f ? -x[i] : x[i];
    s.abs_sum += static_cast<double>(a);
    s.absmax = std::max(s.absmax, a);
    ++s.finite;
  }
  return s;
}

float scale_from_stats(const LowbitLayout& layout, const SpanStats& s) {
  return lowbit_span_scale(layout.format, layout.scale_dtype, s.abs_sum, s.finite, s.absmax);
}

// Fresh scales for rows [row_begin, row_end) (all rows when PerTensor). Returns the NaN/±Inf count.
size_t store_scales(const LowbitLayout& L, size_t row_begin, size_t row_end, const float* x_rows, uint8_t* scales) {
  const size_t cols = L.cols, n_rows = row_end - row_begin;
  const bool parallel = n_rows * cols >= kParallelMinElements;
  if (L.granularity == LowbitScaleGranularity::PerTensor) {
    // Per-row partial stats in parallel, combined in row order: the same double sum for any
    // thread count.
    std::vector<SpanStats> per_row(n_rows);
#pragma omp parallel for schedule(static) if (parallel)
    for (size_t r = 0; r < n_rows; ++r) per_row[r] = scan(x_rows + r * cols, cols);
    SpanStats all;
    for (const SpanStats& s : per_row) all.add(s);
    lowbit_scale_store(scales, 0, L.scale_dtype, scale_from_stats(L, all));
    return all.non_finite;
  }
  const size_t span = L.scale_span();
  size_t non_finite = 0;
#pragma omp parallel for schedule(static) reduction(+ : non_finite) if (parallel)
  for (size_t r = 0; r < n_rows; ++r) {
    for (size_t c0 = 0; c0 < cols; c0 += span) {
      const SpanStats s = scan(x_rows + r * cols + c0, std::min(cols, c0 + span) - c0);
      lowbit_scale_store(scales, L.scale_index(row_begin + r, c0), L.scale_dtype, scale_from_stats(L, s));
      non_finite += s.non_finite;
    }
  }
  return non_finite;
}

// Codes of one row, built a byte at a time so every byte of the row (padding included) is written
// whole. The SR bits come four elements per Philox call, keyed by the flat index.
template <class C>
void encode_row(const LowbitLayout& L, size_t row, const float* x, Rounding rounding, const RandomKey* key,
                const uint8_t* scales, uint8_t* row_codes) {
  constexpr int kBits = C::kBits;
  constexpr unsigned kPerByte = 8 / kBits;
  const size_t cols = L.cols, span = L.scale_span();
  const uint64_t flat0 = static_cast<uint64_t>(row) * cols;
  Philox4x32 words{};
  uint64_t words_group = ~uint64_t{0};
  unsigned acc = 0, filled = 0;
  size_t byte = 0;
  for (size_t c0 = 0; c0 < cols; c0 += span) {
    const float s = lowbit_scale_load(scales, L.scale_index(row, c0), L.scale_dtype);
    const size_t c1 = std::min(cols, c0 + span);
    for (size_t c = c0; c < c1; ++c) {
      const float y = x[c] / s;  // IEEE division, as the device kernels must do
      uint8_t code;
      if (rounding == Rounding::RTN) {
        code = C::encode_rtn(y);
      } else {
        const uint64_t e = flat0 + c;
        if ((e >> 2) != words_group) {
          words_group = e >> 2;
          words = random_words4(*key, words_group);
        }
        code = C::encode_sr(y, words.v[e & 3u]);
      }
      acc |= static_cast<unsigned>(code) << (filled * kBits);
      if (++filled == kPerByte) {
        row_codes[byte++] = static_cast<uint8_t>(acc);
        acc = 0;
        filled = 0;
      }
    }
  }
  if (filled) row_codes[byte] = static_cast<uint8_t>(acc);
}

void check_rows(const LowbitLayout& L, size_t row_begin, size_t row_end, const char* what) {
  if (row_begin > row_end || row_end > L.rows)
    throw Error(std::string(what) + ": rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                ") are outside a " + std::to_string(L.rows) + "-row tensor");
}
}  // namespace

const char* to_string(LowbitFormat f) {
  switch (f) {
    case LowbitFormat::INT4: return "int4";
    case LowbitFormat::INT2: return "int2";
    case LowbitFormat::Ternary: return "ternary";
  }
  return "?";
}

const char* to_string(LowbitScaleGranularity g) {
  switch (g) {
    case LowbitScaleGranularity::PerTensor: return "tensor";
    case LowbitScaleGranularity::PerRow: return "row";
    case LowbitScaleGranularity::Group: return "group";
  }
  return "?";
}

const char* to_string(LowbitScaleDtype d) { return d == LowbitScaleDtype::F32 ? "fp32" : "bf16"; }

LowbitFormat parse_lowbit_format(const std::string& name) {
  if (name == "int4") return LowbitFormat::INT4;
  if (name == "int2") return LowbitFormat::INT2;
  if (name == "ternary") return LowbitFormat::Ternary;
  throw ConfigError("unknown low-bit weight format \"" + name + "\"; use int4, int2 or ternary");
}

LowbitScaleGranularity parse_lowbit_granularity(const std::string& name) {
  if (name == "tensor") return LowbitScaleGranularity::PerTensor;
  if (name == "row") return LowbitScaleGranularity::PerRow;
  if (name == "group") return LowbitScaleGranularity::Group;
  throw ConfigError("unknown low-bit scale granularity \"" + name +
                    "\"; use tensor, row (one scale per output row) or group (groups along K)");
}

LowbitScaleDtype parse_lowbit_scale_dtype(const std::string& name) {
  if (name == "fp32") return LowbitScaleDtype::F32;
  if (name == "bf16") return LowbitScaleDtype::BF16;
  throw ConfigError("unknown low-bit scale dtype \"" + name + "\"; use fp32 or bf16");
}

void LowbitLayout::validate() const {
  if (granularity == LowbitScaleGranularity::Group && group_size != 32 && group_size != 64 && group_size != 128)
    throw ConfigError("low-bit group size " + std::to_string(group_size) +
                      " is not supported; use 32, 64 or 128 (elements along K sharing one scale)");
}

size_t LowbitLayout::scales_per_row() const {
  switch (granularity) {
    case LowbitScaleGranularity::PerTensor: return 0;
    case LowbitScaleGranularity::PerRow: return 1;
    case LowbitScaleGranularity::Group: break;
  }
  return (cols + group_size - 1) / group_size;
}

size_t LowbitLayout::scale_count() const {
  return granularity == LowbitScaleGranularity::PerTensor ? 1 : rows * scales_per_row();
}

double LowbitLayout::bytes_per_param() const {
  return numel() ? static_cast<double>(total_bytes()) / static_cast<double>(numel()) : 0.0;
}

size_t LowbitLayout::scale_index(size_t row, size_t col) const {
  switch (granularity) {
    case LowbitScaleGranularity::PerTensor: return 0;
    case LowbitScaleGranularity::PerRow: return row;
    case LowbitScaleGranularity::Group: break;
  }
  return row * scales_per_row() + col / group_size;
}

size_t lowbit_compute_scales(const LowbitLayout& layout, const float* x, uint8_t* scales) {
  layout.validate();
  return store_scales(layout, 0, layout.rows, x, scales);
}

size_t lowbit_quantize_rows(const LowbitLayout& layout, size_t row_begin, size_t row_end, const float* x_rows,
                            Rounding rounding, const RandomKey* key, LowbitScaleUpdate update, uint8_t* codes,
                            uint8_t* scales) {
  layout.validate();
  check_rows(layout, row_begin, row_end, "lowbit_quantize_rows");
  if (rounding == Rounding::SR && key == nullptr)
    throw Error("lowbit_quantize_rows: stochastic rounding needs a random key (seed, step, tensor id)");
  const bool recompute = update == LowbitScaleUpdate::Recompute;
  if (recompute && layout.granularity == LowbitScaleGranularity::PerTensor &&
      (row_begin != 0 || row_end != layout.rows))
    throw Error("lowbit_quantize_rows: a per-tensor scale is recomputed from all rows; quantize rows [0, " +
                std::to_string(layout.rows) + ") at once, or keep the stored scale");

  const size_t cols = layout.cols, n_rows = row_end - row_begin, row_bytes = layout.row_bytes();
  size_t non_finite = 0;
  if (recompute) {
    non_finite = store_scales(layout, row_begin, row_end, x_rows, scales);
  } else {
    for (size_t i = 0; i < n_rows * cols; ++i) non_finite += is_finite_bits(x_rows[i]) ? 0 : 1;
  }
  const bool parallel = n_rows * cols >= kParallelMinElements;
  dispatch_lowbit_format(layout.format, [&](auto codec) {
    using C = decltype(codec);
#pragma omp parallel for schedule(static) if (parallel)
    for (size_t r = 0; r < n_rows; ++r)
      encode_row<C>(layout, row_begin + r, x_rows + r * cols, rounding, key, scales,
                    codes + (row_begin + r) * row_bytes);
  });
  return non_finite;
}

size_t lowbit_quantize_rtn(const LowbitLayout& layout, const float* x, LowbitScaleUpdate update, uint8_t* codes,
                           uint8_t* scales) {
  return lowbit_quantize_rows(layout, 0, layout.rows, x, Rounding::RTN, nullptr, update, codes, scales);
}

size_t lowbit_quantize_sr(const LowbitLayout& layout, const float* x, const RandomKey& key, LowbitScaleUpdate update,
                          uint8_t* codes, uint8_t* scales) {
  return lowbit_quantize_rows(layout, 0, layout.rows, x, Rounding::SR, &key, update, codes, scales);
}

void lowbit_dequantize_rows(const LowbitLayout& layout, size_t row_begin, size_t row_end, const uint8_t* codes,
                            const uint8_t* scales, float* out_rows) {
  check_rows(layout, row_begin, row_end, "lowbit_dequantize_rows");
  const size_t cols = layout.cols, n_rows = row_end - row_begin, span = layout.scale_span();
  const size_t row_bytes = layout.row_bytes();
  dispatch_lowbit_format(layout.format, [&](auto codec) {
    using C = decltype(codec);
#pragma omp parallel for schedule(static) if (n_rows * cols >= kParallelMinElements)
    for (size_t i = 0; i < n_rows; ++i) {
      const size_t r = row_begin + i;
      const uint8_t* row = codes + r * row_bytes;
      float* out = out_rows + i * cols;
      for (size_t c0 = 0; c0 < cols; c0 += span) {
        const float s = lowbit_scale_load(scales, layout.scale_index(r, c0), layout.scale_dtype);
        const size_t c1 = std::min(cols, c0 + span);
        for (size_t c = c0; c < c1; ++c) out[c] = C::decode(packed_get<C::kBits>(row, c)) * s;
      }
    }
  });
}

void lowbit_dequantize(const LowbitLayout& layout, const uint8_t* codes, const uint8_t* scales, float* out) {
  lowbit_dequantize_rows(layout, 0, layout.rows, codes, scales, out);
}

int lowbit_code_at(const LowbitLayout& layout, const uint8_t* codes, size_t row, size_t col) {
  const uint8_t c = packed_get(codes + row * layout.row_bytes(), col, layout.bits());
  return static_cast<int>(lowbit_decode(layout.format, c));
}

float lowbit_scale_at(const LowbitLayout& layout, const uint8_t* scales, size_t row, size_t col) {
  return lowbit_scale_load(scales, layout.scale_index(row, col), layout.scale_dtype);
}

LowbitTensor::LowbitTensor(const LowbitLayout& l) : layout(l) {
  layout.validate();
  codes.assign(layout.code_bytes(), 0);
  scales.assign(layout.scale_bytes(), 0);
  for (size_t i = 0; i < layout.scale_count(); ++i) lowbit_scale_store(scales.data(), i, layout.scale_dtype, 1.0f);
}

}  // namespace eco

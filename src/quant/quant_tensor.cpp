#include "quant/quant_tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "quant/quant_loops.h"

namespace eco {

namespace {
constexpr size_t kParallelMinElements = size_t{1} << 15;

template <class C>
typename C::Code* codes_of(uint8_t* c8, uint16_t* c16) {
  if constexpr (sizeof(typename C::Code) == 1) {
    (void)c16;
    return c8;
  } else {
    (void)c8;
    return c16;
  }
}

// The packed low-bit formats have their own layer (quant/lowbit_tensor.h).
void refuse_lowbit(QuantFormat f) {
  if (is_lowbit(f))
    throw Error(std::string("QuantTensor: ") + to_string(f) +
                " is a packed low-bit format; use LowbitTensor / lowbit_quantize_rows (quant/lowbit_tensor.h)");
}

size_t count_non_finite(const float* x, size_t n) {
  size_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (n >= kParallelMinElements)
  for (size_t i = 0; i < n; ++i) bad += is_finite_bits(x[i]) ? 0 : 1;
  return bad;
}

// Calls fn(c0, width) for the column spans of a row that share one scale.
template <class Fn>
void for_each_scale_span(const ScaleLayout& layout, Fn&& fn) {
  const size_t span = layout.granularity == ScaleGranularity::Block128 ? kScaleBlock : layout.cols;
  for (size_t c0 = 0; c0 < layout.cols; c0 += span) fn(c0, std::min(layout.cols, c0 + span) - c0);
}
}  // namespace

QuantTensor::QuantTensor(size_t rows, size_t cols, QuantFormat format, ScaleGranularity granularity,
                         bool pow2_scales)
    : format_(format), layout_{granularity, rows, cols}, pow2_scales_(pow2_scales) {
  refuse_lowbit(format);
  if (format == QuantFormat::BF16) {
    own_codes16_.assign(rows * cols, 0);
  } else {
    own_codes8_.assign(rows * cols, 0);
    own_scales_.assign(layout_.count(), 1.0f);  // all-zero codes with scale 1: an exact zero tensor
  }
  point_at_own_storage();
}

QuantTensor QuantTensor::view(void* codes, float* scales, size_t rows, size_t cols, QuantFormat format,
                              ScaleGranularity granularity, bool pow2_scales) {
  refuse_lowbit(format);
  QuantTensor q;
  q.format_ = format;
  q.layout_ = ScaleLayout{granularity, rows, cols};
  q.pow2_scales_ = pow2_scales;
  q.owning_ = false;
  if (format == QuantFormat::BF16) q.codes16_ = static_cast<uint16_t*>(codes);
  else q.codes8_ = static_cast<uint8_t*>(codes);
  q.scales_ = format_is_scaled(format) ? scales : nullptr;
  return q;
}

void QuantTensor::point_at_own_storage() {
  if (!owning_) return;
  codes8_ = own_codes8_.data();
  codes16_ = own_codes16_.data();
  scales_ = own_scales_.data();
}

QuantTensor::QuantTensor(const QuantTensor& o)
    : format_(o.format_), layout_(o.layout_), pow2_scales_(o.pow2_scales_), own_codes8_(o.own_codes8_),
      own_codes16_(o.own_codes16_), own_scales_(o.own_scales_), owning_(o.owning_), codes8_(o.codes8_),
      codes16_(o.codes16_), scales_(o.scales_) {
  point_at_own_storage();
}

QuantTensor& QuantTensor::operator=(const QuantTensor& o) {
  if (this != &o) {
    QuantTensor copy(o);
    *this = std::move(copy);
  }
  return *this;
}

QuantTensor::QuantTensor(QuantTensor&& o) noexcept
    : format_(o.format_), layout_(o.layout_), pow2_scales_(o.pow2_scales_), own_codes8_(std::move(o.own_codes8_)),
      own_codes16_(std::move(o.own_codes16_)), own_scales_(std::move(o.own_scales_)), owning_(o.owning_),
      codes8_(o.codes8_), codes16_(o.codes16_), scales_(o.scales_) {
  point_at_own_storage();  // a moved vector keeps its buffer, but re-point to be explicit
}

QuantTensor& QuantTensor::operator=(QuantTensor&& o) noexcept {
  format_ = o.format_;
  layout_ = o.layout_;
  pow2_scales_ = o.pow2_scales_;
  own_codes8_ = std::move(o.own_codes8_);
  own_codes16_ = std::move(o.own_codes16_);
  own_scales_ = std::move(o.own_scales_);
  owning_ = o.owning_;
  codes8_ = o.codes8_;
  codes16_ = o.codes16_;
  scales_ = o.scales_;
  point_at_own_storage();
  return *this;
}

void QuantTensor::check_rows(size_t row_begin, size_t row_end, const char* what) const {
  if (row_begin > row_end || row_end > rows())
    throw Error(std::string(what) + ": rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                ") are outside a tensor of " + std::to_string(rows()) + " rows");
}

size_t QuantTensor::quantize_from(const float* x, Rounding rounding, const SrKey* key) {
  return quantize_rows_from(0, rows(), x, rounding, key);
}

size_t QuantTensor::quantize_rows_from(size_t row_begin, size_t row_end, const float* x_rows, Rounding rounding,
                                       const SrKey* key, NonFinite on_non_finite) {
  check_rows(row_begin, row_end, "QuantTensor::quantize_rows_from");
  if (rounding == Rounding::SR && key == nullptr)
    throw Error("QuantTensor: stochastic rounding needs an SrKey (seed, step, tensor id)");
  const size_t cols = layout_.cols;
  const size_t n_rows = row_end - row_begin;
  const size_t n = n_rows * cols;
  if (n == 0) return 0;

  // Pass 1: scales into scratch, so a tensor with NaN/Inf input is left untouched. Only the scales
  // of these rows are written and copied back: a tensor updated panel by panel costs O(rows) in
  // scales, not O(rows²).
  size_t non_finite;
  if (format_is_scaled(format_)) {
    thread_local std::vector<float> scratch;
    if (scratch.size() < scale_count()) scratch.resize(scale_count());
    non_finite = compute_scales(layout_, x_rows, row_begin, row_end, format_max(format_), pow2_scales_, scratch.data());
    if (non_finite > 0 && on_non_finite == NonFinite::Keep) return non_finite;
    const size_t first = layout_.index(row_begin, 0), last = layout_.index(row_end - 1, cols - 1) + 1;
    std::copy(scratch.begin() + static_cast<std::ptrdiff_t>(first), scratch.begin() + static_cast<std::ptrdiff_t>(last),
              scales_ + first);
  } else {
    non_finite = count_non_finite(x_rows, n);
    if (non_finite > 0 && on_non_finite == NonFinite::Keep) return non_finite;
  }

  // Pass 2: codes, one task per row; every element's result depends only on its own value,
  // its scale and its flat index, so the thread count cannot change a bit.
  dispatch_format(format_, [&](auto codec) {
    using C = decltype(codec);
    typename C::Code* codes = codes_of<C>(codes8_, codes16_);
    const float* scales = scales_;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
    for (size_t r = 0; r < n_rows; ++r) {
      const size_t row = row_begin + r;
      for_each_scale_span(layout_, [&](size_t c0, size_t width) {
        const float scale = C::kScaled ? scales[layout_.index(row, c0)] : 1.0f;
        const float* xs = x_rows + r * cols + c0;
        typename C::Code* out = codes + row * cols + c0;
        if (rounding == Rounding::RTN)
          quant_loops::encode_span_rtn<C>(xs, width, scale, out);
        else
          quant_loops::encode_span_sr<C>(xs, width, scale, out, *key, static_cast<uint64_t>(row * cols + c0));
      });
    }
  });
  return non_finite;
}

void QuantTensor::dequantize_to(float* out) const { dequantize_rows(0, rows(), out); }

void QuantTensor::dequantize_rows(size_t row_begin, size_t row_end, float* out) const {
  check_rows(row_begin, row_end, "QuantTensor::dequantize_rows");
  const size_t cols = layout_.cols;
  const size_t n_rows = row_end - row_begin;
  dispatch_format(format_, [&](auto codec) {
    using C = decltype(codec);
    const typename C::Code* codes = codes_of<C>(codes8_, codes16_);
#pragma omp parallel for schedule(static) if (n_rows * cols >= kParallelMinElements)
    for (size_t r = 0; r < n_rows; ++r) {
      const size_t row = row_begin + r;
      for_each_scale_span(layout_, [&](size_t c0, size_t width) {
        const float scale = C::kScaled ? scales_[layout_.index(row, c0)] : 1.0f;
        quant_loops::decode_span<C>(codes + row * cols + c0, width, scale, out + r * cols + c0);
      });
    }
  });
}

float QuantTensor::scale_at(size_t row, size_t col) const {
  return format_is_scaled(format_) ? scales_[layout_.index(row, col)] : 1.0f;
}

float QuantTensor::value(size_t flat_index) const {
  if (flat_index >= numel())
    throw Error("QuantTensor::value: index " + std::to_string(flat_index) + " is outside a tensor of " +
                std::to_string(numel()) + " elements");
  const size_t row = flat_index / cols(), col = flat_index % cols();
  return dispatch_format(format_, [&](auto codec) {
    using C = decltype(codec);
    const float v = C::decode(codes_of<C>(codes8_, codes16_)[flat_index]);
    return C::kScaled ? v * scale_at(row, col) : v;
  });
}

const uint8_t* QuantTensor::code_data() const {
  return format_ == QuantFormat::BF16 ? reinterpret_cast<const uint8_t*>(codes16_) : codes8_;
}

void QuantTensor::load_raw(const uint8_t* codes, size_t n_code_bytes, const float* scales, size_t n_scales) {
  const std::string shape = std::to_string(rows()) + "x" + std::to_string(cols()) + " " + to_string(format_);
  if (n_code_bytes != code_bytes())
    throw CheckpointError("quantized tensor " + shape + ": checkpoint holds " + std::to_string(n_code_bytes) +
                          " code bytes, expected " + std::to_string(code_bytes()) +
                          " (was it written with another model shape or weight format?)");
  if (n_scales != scale_count())
    throw CheckpointError("quantized tensor " + shape + ": checkpoint holds " + std::to_string(n_scales) +
                          " scales, expected " + std::to_string(scale_count()) + " for " +
                          to_string(layout_.granularity) + " scaling (was it written with another optim.scaling?)");
  for (size_t i = 0; i < n_scales; ++i)
    if (!(std::isfinite(scales[i]) && scales[i] > 0.0f))
      throw CheckpointError("quantized tensor " + shape + ": scale " + std::to_string(i) + " is " +
                            std::to_string(scales[i]) + "; scales must be finite and positive (corrupt checkpoint?)");
  std::copy(scales, scales + n_scales, scales_);
  if (n_code_bytes == 0) return;
  if (format_ == QuantFormat::BF16)
    std::memcpy(codes16_, codes, n_code_bytes);
  else
    std::memcpy(codes8_, codes, n_code_bytes);
}

}  // namespace eco

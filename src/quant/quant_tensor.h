#pragma once
// QuantTensor: a rows×cols matrix stored as low-precision codes plus their fp32 scales. The codes
// are private: the only ways to get numbers out apply the scales (dequantize_*, value), so a code
// can never be mistaken for a value. Raw bytes are exposed read-only for checkpoints and device
// uploads, and come back in through load_raw, which checks sizes.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/philox.h"
#include "quant/quant_format.h"
#include "quant/scaling.h"

namespace eco {

// Random stream of stochastic rounding: seed, step and tensor id (RandomKey::stream_id); the
// element index is the flat row-major index in the whole tensor (core/philox.h).
using SrKey = RandomKey;

class QuantTensor {
 public:
  QuantTensor() = default;
  // BF16 is stored unscaled: granularity and pow2_scales are kept but no scales are stored.
  QuantTensor(size_t rows, size_t cols, QuantFormat format, ScaleGranularity granularity = ScaleGranularity::PerRow,
              bool pow2_scales = false);
  // A view over storage owned elsewhere (the CPU backend's buffers): code_bytes() bytes of codes
  // and scale_count() scales (nullptr for BF16). Nothing is initialised; copies stay views.
  static QuantTensor view(void* codes, float* scales, size_t rows, size_t cols, QuantFormat format,
                          ScaleGranularity granularity, bool pow2_scales);
  QuantTensor(const QuantTensor& other);
  QuantTensor& operator=(const QuantTensor& other);
  QuantTensor(QuantTensor&& other) noexcept;
  QuantTensor& operator=(QuantTensor&& other) noexcept;

  size_t rows() const { return layout_.rows; }
  size_t cols() const { return layout_.cols; }
  size_t numel() const { return layout_.rows * layout_.cols; }
  QuantFormat format() const { return format_; }
  ScaleGranularity granularity() const { return layout_.granularity; }
  bool pow2_scales() const { return pow2_scales_; }
  const ScaleLayout& scale_layout() const { return layout_; }

  // Quantizes x (rows×cols, row-major): fresh scales from x's absmax, then codes with the given
  // rounding. SR needs a key (eco::Error without one). Returns the number of NaN/±Inf values in
  // x; when it is not 0 the tensor is left exactly as it was, so a caller can skip the step.
  [[nodiscard]] size_t quantize_from(const float* x, Rounding rounding, const SrKey* key = nullptr);
  // The same for rows [row_begin, row_end) only (x_rows points at row row_begin). The range must
  // be self-contained for the granularity (any rows for PerRow; 128-row bands for Block128; all
  // rows for PerTensor). SR bits depend on the flat index in the whole tensor, so quantizing a
  // tensor in row ranges gives the same codes as quantizing it at once.
  // on_non_finite = Encode instead quantizes anyway (NaN/Inf left out of the absmax; NaN encodes as
  // NaN, ±Inf saturates), as GEMM operands need: a NaN must reach the loss, not vanish.
  enum class NonFinite { Keep, Encode };
  [[nodiscard]] size_t quantize_rows_from(size_t row_begin, size_t row_end, const float* x_rows, Rounding rounding,
                                          const SrKey* key = nullptr, NonFinite on_non_finite = NonFinite::Keep);

  // out[i] = decode(code[i]) · scale(i), one fp32 rounding per element.
  void dequantize_to(float* out) const;
  void dequantize_rows(size_t row_begin, size_t row_end, float* out) const;  // out holds those rows
  float value(size_t flat_index) const;
  float scale_at(size_t row, size_t col) const;  // 1 for BF16

  size_t code_bytes() const { return numel() * code_size_bytes(format_); }
  size_t scale_count() const { return format_is_scaled(format_) ? layout_.count() : 0; }
  size_t scale_bytes() const { return scale_count() * sizeof(float); }

  // Raw storage for checkpoints and device copies: codes row-major (BF16: uint16 in host byte
  // order), scales laid out as in scale_layout().
  const uint8_t* code_data() const;
  const float* scale_data() const { return scales_; }
  // Replaces codes and scales from raw bytes; CheckpointError when a size does not match this
  // tensor's shape and format, or a scale is not a finite positive number.
  void load_raw(const uint8_t* codes, size_t n_code_bytes, const float* scales, size_t n_scales);

 private:
  void check_rows(size_t row_begin, size_t row_end, const char* what) const;
  void point_at_own_storage();

  QuantFormat format_ = QuantFormat::E4M3;
  ScaleLayout layout_{};
  bool pow2_scales_ = false;
  // Storage: the vectors when this tensor owns it, else empty and the pointers lead elsewhere.
  std::vector<uint8_t> own_codes8_;
  std::vector<uint16_t> own_codes16_;
  std::vector<float> own_scales_;
  bool owning_ = true;
  uint8_t* codes8_ = nullptr;    // E4M3, E5M2, INT8
  uint16_t* codes16_ = nullptr;  // BF16
  float* scales_ = nullptr;
};

}  // namespace eco

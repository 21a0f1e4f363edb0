#include "quant/quant_rows.h"

#include "quant/quant_loops.h"
#include "quant/scaling.h"

namespace eco {

namespace {
constexpr size_t kParallelMinElements = size_t{1} << 15;

// One row: absmax, scale, then code and value in one sweep (the row is still in cache).
template <class C>
size_t fake_quant_row(const float* x, float* out, size_t cols) {
  float absmax = 0.0f;
  size_t bad = 0;
  for (size_t c = 0; c < cols; ++c) {
    absmax = absmax_accumulate(absmax, x[c]);
    bad += is_finite_bits(x[c]) ? 0 : 1;
  }
  const float scale = C::kScaled ? scale_from_absmax(absmax, C::kMax, false) : 1.0f;
  if constexpr (sizeof(typename C::Code) == 1) {
    static_assert(C::kScaled, "8-bit codes are all scaled formats");
    const auto& table = quant_loops::decode_table<C>();
    for (size_t c = 0; c < cols; ++c) out[c] = table[C::encode_rtn(quant_loops::to_grid<C>(x[c], scale))] * scale;
  } else {
    for (size_t c = 0; c < cols; ++c) out[c] = C::decode(C::encode_rtn(x[c]));
  }
  return bad;
}
}  // namespace

size_t quantize_dequantize_rows(QuantFormat format, const float* x, float* out, size_t rows, size_t cols) {
  return dispatch_format(format, [&](auto codec) {
    using C = decltype(codec);
    size_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (rows * cols >= kParallelMinElements)
    for (size_t r = 0; r < rows; ++r) bad += fake_quant_row<C>(x + r * cols, out + r * cols, cols);
    return bad;
  });
}

size_t quantize_dequantize_rows_e4m3(const float* x, float* out, size_t rows, size_t cols) {
  return quantize_dequantize_rows(QuantFormat::E4M3, x, out, rows, cols);
}

size_t quantize_dequantize_rows_e5m2(const float* x, float* out, size_t rows, size_t cols) {
  return quantize_dequantize_rows(QuantFormat::E5M2, x, out, rows, cols);
}

}  // namespace eco

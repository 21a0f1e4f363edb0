#pragma once
// Fake quantization of GEMM operands on the CPU: each row (one token of activations, or one row of
// output gradients) gets its own absmax scale, is rounded to nearest-even to the 8-bit code and
// dequantized back to fp32, which is exactly what an FP8 GEMM with per-row scales consumes.
#include <cstddef>

#include "quant/quant_format.h"

namespace eco {

// out[r, :] = decode(encode_rtn(x[r, :] / s_r)) · s_r, s_r = absmax(x[r, :]) / format max
// (scale_from_absmax, not rounded to a power of two). out may equal x. Returns the number of
// NaN/±Inf inputs: they are left out of the absmax; NaN stays NaN, ±Inf saturates (BF16: stays ±Inf).
size_t quantize_dequantize_rows(QuantFormat format, const float* x, float* out, size_t rows, size_t cols);

// Forward GEMM inputs (activations): E4M3.
size_t quantize_dequantize_rows_e4m3(const float* x, float* out, size_t rows, size_t cols);
// Backward output gradients in the FP8 backward: E5M2 (wider range, less precision).
size_t quantize_dequantize_rows_e5m2(const float* x, float* out, size_t rows, size_t cols);

}  // namespace eco

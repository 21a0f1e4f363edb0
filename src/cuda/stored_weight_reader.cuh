#pragma once
// Device-side readers of a stored quantized weight: value(i) = decode(code of flat element i) ·
// its scale, for every QuantFormat (the byte / bf16 codecs and the packed low-bit ones). The
// optimizer's master-free kernels and the dequantizer are templates over a reader, so one kernel
// body serves every format and the per-element formula is the CPU's (quant_loops.h,
// lowbit_tensor.cpp: one fp32 multiply of the decoded code by the stored scale).
// Included by .cu files only.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "model/ops_state.h"
#include "quant/lowbit.h"
#include "quant/quant_format.h"
#include "quant/scaling.h"

namespace eco::cuda {

// The scale of element (row, col), as ScaleLayout::index lays them out.
__device__ inline size_t scale_index(ScaleGranularity g, size_t cols, size_t row, size_t col) {
  if (g == ScaleGranularity::PerRow) return row;
  if (g == ScaleGranularity::PerTensor) return 0;
  const size_t grid_cols = (cols + kScaleBlock - 1) / kScaleBlock;
  return (row / kScaleBlock) * grid_cols + col / kScaleBlock;
}

// E4M3, E5M2, BF16, INT8: a code per element (1 or 2 bytes), fp32 scales as ScaleLayout.
template <class C>
struct CodecReader {
  using Codec = C;
  const typename C::Code* codes;
  const float* scales;
  ScaleGranularity granularity;
  size_t cols;

  __device__ float operator()(size_t i) const {
    const float c = C::decode(codes[i]);
    return C::kScaled ? c * scales[scale_index(granularity, cols, i / cols, i % cols)] : c;
  }
};

// INT4, INT2, ternary: packed codes, rows byte-aligned; fp32 or bf16 scales (LowbitLayout).
template <LowbitFormat F>
struct LowbitReader {
  using Codec = LowbitCodec<F>;
  const uint8_t* codes;
  const uint8_t* scales;
  size_t cols, row_bytes;
  size_t span;            // columns sharing a scale
  size_t spans_per_row;   // 0: one scale for the whole tensor
  LowbitScaleDtype dtype;

  __device__ float operator()(size_t i) const {
    const size_t r = i / cols, c = i % cols;
    const float s = lowbit_scale_load(scales, spans_per_row ? r * spans_per_row + c / span : 0, dtype);
    return Codec::decode(packed_get<Codec::kBits>(codes + r * row_bytes, c)) * s;
  }
};

template <LowbitFormat F>
LowbitReader<F> lowbit_reader(const QuantRef& q) {
  const LowbitLayout l = q.lowbit_layout();
  return LowbitReader<F>{static_cast<const uint8_t*>(q.codes), reinterpret_cast<const uint8_t*>(q.scales),
                         l.cols, l.row_bytes(), l.scale_span(), l.scales_per_row(), l.scale_dtype};
}

template <QuantFormat F>
CodecReader<Codec<F>> codec_reader(const QuantRef& q) {
  return CodecReader<Codec<F>>{static_cast<const typename Codec<F>::Code*>(q.codes), q.scales, q.granularity, q.cols};
}

// Calls fn(reader) with the reader of q's format: one switch per launch, none per element.
template <class Fn>
void with_reader(const QuantRef& q, Fn&& fn) {
  switch (q.format) {
    case QuantFormat::E4M3: return fn(codec_reader<QuantFormat::E4M3>(q));
    case QuantFormat::E5M2: return fn(codec_reader<QuantFormat::E5M2>(q));
    case QuantFormat::BF16: return fn(codec_reader<QuantFormat::BF16>(q));
    case QuantFormat::INT8: return fn(codec_reader<QuantFormat::INT8>(q));
    case QuantFormat::INT4: return fn(lowbit_reader<LowbitFormat::INT4>(q));
    case QuantFormat::INT2: return fn(lowbit_reader<LowbitFormat::INT2>(q));
    case QuantFormat::TERNARY: return fn(lowbit_reader<LowbitFormat::Ternary>(q));
  }
  throw Error("with_reader: unknown weight format");
}

}  // namespace eco::cuda

// The row quantizer of the packed low-bit weight formats (INT4, INT2, ternary) on the GPU: scales
// from span statistics, then codes a byte per thread. The CPU twin is lowbit_quantize_rows
// (src/quant/lowbit_tensor.cpp); tests/cuda/test_cuda_optim.cpp compares the two bit for bit.
//
// The span statistics are summed in double in element order by one thread per span (a group of
// 32..128 columns, a row, or for a per-tensor scale one thread per row and one to combine the rows
// in order), because an absmean must be the CPU's exactly: a tree sum rounds differently. That is
// cheap for INT4's groups; for INT2 / ternary it runs only when a scale is recomputed, which is at
// initialization (afterwards their scales are kept, docs/lowbit.md "Scale maintenance").
#include <cstdint>

#include "core/error.h"
#include "core/float_bits.h"
#include "core/philox.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_lowbit.h"
#include "quant/lowbit.h"
#include "quant/lowbit_tensor.h"

namespace eco::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(size_t n) { return static_cast<unsigned>(std::min<size_t>((n + kThreads - 1) / kThreads, 1u << 20)); }

// Statistics of one span over its finite values, as lowbit_tensor.cpp's scan().
struct SpanStats {
  double abs_sum;
  float absmax;
  unsigned long long finite, non_finite;
};

__device__ SpanStats scan_span(const float* x, size_t n) {
  SpanStats s{0.0, 0.0f, 0, 0};
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (!is_finite_bits(v)) {
      ++s.non_finite;
      continue;
    }
    const float a = v < 0.0f ? -v : v;
    s.abs_sum += static_cast<double>(a);
    s.absmax = s.absmax < a ? a : s.absmax;
    ++s.finite;
  }
  return s;
}

// One thread per (row, span) of rows [row_begin, row_end): the span's scale, stored.
__global__ void span_scales_kernel(const float* x_rows, size_t row_begin, size_t n_rows, size_t cols, size_t span,
                                   size_t spans_per_row, LowbitFormat format, LowbitScaleDtype dtype, uint8_t* scales,
                                   unsigned long long* bad_count) {
  const size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (k >= n_rows * spans_per_row) return;
  const size_t r = k / spans_per_row, c0 = (k % spans_per_row) * span;
  const size_t len = (c0 + span < cols ? c0 + span : cols) - c0;
  const SpanStats s = scan_span(x_rows + r * cols + c0, len);
  lowbit_scale_store(scales, (row_begin + r) * spans_per_row + k % spans_per_row, dtype,
                     lowbit_span_scale(format, dtype, s.abs_sum, static_cast<size_t>(s.finite), s.absmax));
  if (s.non_finite && bad_count) atomicAdd(bad_count, s.non_finite);
}

// Per-tensor scale, first half: each row's statistics.
__global__ void row_stats_kernel(const float* x, size_t rows, size_t cols, SpanStats* out) {
  const size_t r = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (r < rows) out[r] = scan_span(x + r * cols, cols);
}

// Second half: the rows combined in row order (the CPU's order), the scale stored.
__global__ void combine_rows_kernel(const SpanStats* rows_stats, size_t rows, LowbitFormat format,
                                    LowbitScaleDtype dtype, uint8_t* scales, unsigned long long* bad_count) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  SpanStats all{0.0, 0.0f, 0, 0};
  for (size_t r = 0; r < rows; ++r) {
    all.abs_sum += rows_stats[r].abs_sum;
    all.absmax = all.absmax < rows_stats[r].absmax ? rows_stats[r].absmax : all.absmax;
    all.finite += rows_stats[r].finite;
    all.non_finite += rows_stats[r].non_finite;
  }
  lowbit_scale_store(scales, 0, dtype, lowbit_span_scale(format, dtype, all.abs_sum, static_cast<size_t>(all.finite), all.absmax));
  if (all.non_finite && bad_count) atomicAdd(bad_count, all.non_finite);
}

// One thread per byte of codes of rows [row_begin, row_begin + n_rows): up to 8/kBits codes from
// x / scale, packed whole (padding bits of a row's last byte are 0, as the CPU writes them).
// count_non_finite: the scales were kept, so nothing else has counted the NaN/Inf inputs.
template <class C>
__global__ void encode_bytes_kernel(const float* x_rows, size_t row_begin, size_t n_rows, size_t cols,
                                    size_t row_bytes, size_t span, size_t spans_per_row, LowbitScaleDtype dtype,
                                    const uint8_t* scales, bool sr, RandomKey key, bool count_non_finite,
                                    unsigned long long* bad_count, uint8_t* codes) {
  constexpr size_t kPerByte = 8 / C::kBits;
  const size_t total = n_rows * row_bytes;
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = k / row_bytes, byte = k % row_bytes, row = row_begin + r;
    const size_t c0 = byte * kPerByte;
    uint8_t byte_codes[kPerByte] = {};
    size_t count = 0;
    unsigned long long bad = 0;
    for (size_t c = c0; c < cols && c < c0 + kPerByte; ++c, ++count) {
      const float v = x_rows[r * cols + c];
      const float s = lowbit_scale_load(scales, spans_per_row ? row * spans_per_row + c / span : 0, dtype);
      const float y = v / s;  // IEEE division, as encode_row on the CPU
      byte_codes[count] = sr ? C::encode_sr(y, random_bits(key, static_cast<uint64_t>(row) * cols + c))
                             : C::encode_rtn(y);
      bad += is_finite_bits(v) ? 0 : 1;
    }
    codes[row * row_bytes + byte] = packed_byte<C::kBits>(byte_codes, count);
    if (count_non_finite && bad && bad_count) atomicAdd(bad_count, bad);
  }
}

}  // namespace

void lowbit_quantize_rows_device(const QuantRef& q, size_t row_begin, size_t row_end, const float* x_rows,
                                 Rounding rounding, const RandomKey* key, int64_t* bad_count, cudaStream_t stream) {
  const LowbitLayout l = q.lowbit_layout();
  l.validate();
  if (row_begin > row_end || row_end > l.rows)
    throw Error("quantize_rows: rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                ") are outside a " + std::to_string(l.rows) + "-row tensor");
  if (row_end == row_begin || l.cols == 0) return;
  if (rounding == Rounding::SR && !key)
    throw Error("quantize_rows: stochastic rounding needs a random key (seed, step, tensor id)");
  const bool recompute = q.scale_update == LowbitScaleUpdate::Recompute;
  const bool per_tensor = l.granularity == LowbitScaleGranularity::PerTensor;
  if (recompute && per_tensor && (row_begin != 0 || row_end != l.rows))
    throw Error("quantize_rows: a per-tensor low-bit scale is recomputed from all rows; quantize rows [0, " +
                std::to_string(l.rows) + ") at once, or keep the stored scale");
  auto* bad = reinterpret_cast<unsigned long long*>(bad_count);
  auto* scales = reinterpret_cast<uint8_t*>(q.scales);
  const size_t n_rows = row_end - row_begin, span = l.scale_span(), spans = l.scales_per_row();
  if (recompute && per_tensor) {
    SpanStats* stats = nullptr;
    ECO_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&stats), n_rows * sizeof(SpanStats), stream));
    row_stats_kernel<<<grid_for(n_rows), kThreads, 0, stream>>>(x_rows, n_rows, l.cols, stats);
    ECO_CUDA_CHECK_LAUNCH("row_stats_kernel");
    combine_rows_kernel<<<1, 1, 0, stream>>>(stats, n_rows, l.format, l.scale_dtype, scales, bad);
    ECO_CUDA_CHECK_LAUNCH("combine_rows_kernel");
    ECO_CUDA_CHECK(cudaFreeAsync(stats, stream));
  } else if (recompute) {
    span_scales_kernel<<<grid_for(n_rows * spans), kThreads, 0, stream>>>(x_rows, row_begin, n_rows, l.cols, span, spans,
                                                                         l.format, l.scale_dtype, scales, bad);
    ECO_CUDA_CHECK_LAUNCH("span_scales_kernel");
  }
  const RandomKey k = key ? *key : RandomKey{};
  const size_t row_bytes = l.row_bytes();
  dispatch_lowbit_format(l.format, [&](auto codec) {
    using C = decltype(codec);
    encode_bytes_kernel<C><<<grid_for(n_rows * row_bytes), kThreads, 0, stream>>>(
        x_rows, row_begin, n_rows, l.cols, row_bytes, span, spans, l.scale_dtype, scales, rounding == Rounding::SR, k,
        !recompute, bad, static_cast<uint8_t*>(q.codes));
    ECO_CUDA_CHECK_LAUNCH("encode_bytes_kernel");
  });
}

}  // namespace eco::cuda

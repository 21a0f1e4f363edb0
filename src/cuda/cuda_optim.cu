// CudaOps: quantized operands (row quantizer, dequantizer), the fused optimizer step and the step's
// reductions. Every per-element formula is the shared ECO_HD code the CPU twin runs
// (src/optim/update_rule.h, src/quant codecs, core/philox.h), compiled with --fmad=false, so codes,
// scales, weights and moments equal CpuOps's bit for bit (tests/cuda/test_cuda_optim.cpp).
// Reductions (grad norm, loss mean) are deterministic run to run but summed in another order than
// on the CPU.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/cuda_lowbit.h"
#include "cuda/cuda_ops.h"
#include "cuda/stored_weight_reader.cuh"
#include "optim/update_rule.h"
#include "quant/quant_format.h"
#include "quant/scaling.h"

namespace eco::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kReduceBlocks = 1024;                      // fixed: the sum order depends only on n
constexpr size_t kPanelElements = size_t{4} << 20;       // master-free step: elements per panel

unsigned blocks_for(size_t n) { return static_cast<unsigned>(std::min<size_t>((n + kThreads - 1) / kThreads, 1u << 20)); }

template <class C>
__device__ float to_grid(float x, float scale) {
  if constexpr (C::kScaled) return x / scale;  // IEEE division, as the CPU (quant_loops.h)
  else return x;
}

// Block-wide max (absmax: order-free, so exactly the CPU's) and sum of non-finite counts.
__device__ void block_absmax_and_count(float& absmax, unsigned long long& bad) {
  __shared__ float s_max[kThreads];
  __shared__ unsigned long long s_bad[kThreads];
  s_max[threadIdx.x] = absmax;
  s_bad[threadIdx.x] = bad;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      s_max[threadIdx.x] = fmaxf(s_max[threadIdx.x], s_max[threadIdx.x + stride]);
      s_bad[threadIdx.x] += s_bad[threadIdx.x + stride];
    }
    __syncthreads();
  }
  absmax = s_max[0];
  bad = s_bad[0];
}

// One scale per block of rows/columns: block b of the launch covers rows [row0, row1) x
// columns [col0, col1) of the tensor; x points at row `x_row0`.
template <class C>
__global__ void scales_kernel(const float* x, size_t x_row0, size_t cols, ScaleGranularity g, size_t row_begin,
                              size_t row_end, bool pow2, float* scales, unsigned long long* bad_count) {
  size_t r0, r1, c0, c1;
  if (g == ScaleGranularity::PerRow) {
    r0 = row_begin + blockIdx.x;
    r1 = r0 + 1;
    c0 = 0;
    c1 = cols;
  } else if (g == ScaleGranularity::PerTensor) {
    r0 = row_begin;
    r1 = row_end;
    c0 = 0;
    c1 = cols;
  } else {
    const size_t grid_cols = (cols + kScaleBlock - 1) / kScaleBlock;
    r0 = row_begin + (blockIdx.x / grid_cols) * kScaleBlock;
    r1 = min(row_end, r0 + kScaleBlock);
    c0 = (blockIdx.x % grid_cols) * kScaleBlock;
    c1 = min(cols, c0 + kScaleBlock);
  }
  float absmax = 0.0f;
  unsigned long long bad = 0;
  const size_t width = c1 - c0, n = (r1 - r0) * width;
  for (size_t k = threadIdx.x; k < n; k += blockDim.x) {
    const float v = x[(r0 + k / width - x_row0) * cols + c0 + k % width];
    absmax = absmax_accumulate(absmax, v);
    bad += is_finite_bits(v) ? 0 : 1;
  }
  block_absmax_and_count(absmax, bad);
  if (threadIdx.x == 0) {
    scales[scale_index(g, cols, r0, c0)] = scale_from_absmax(absmax, C::kMax, pow2);
    if (bad && bad_count) atomicAdd(bad_count, bad);
  }
}

// Codes of rows [row_begin, row_end) from x (row row_begin first) and the scales already in place.
template <class C>
__global__ void encode_kernel(const float* x, typename C::Code* codes, const float* scales, size_t cols,
                              ScaleGranularity g, size_t row_begin, size_t n, bool sr, RandomKey key,
                              unsigned long long* bad_count) {
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t flat = row_begin * cols + k, row = flat / cols, col = flat % cols;
    const float v = x[k];
    const float scale = C::kScaled ? scales[scale_index(g, cols, row, col)] : 1.0f;
    const float y = to_grid<C>(v, scale);
    codes[flat] = sr ? C::encode_sr(y, random_bits(key, flat)) : C::encode_rtn(y);
    // Scaled formats count non-finite values with the scales; BF16 has none, so count here.
    if (!C::kScaled && !is_finite_bits(v) && bad_count) atomicAdd(bad_count, 1ull);
  }
}

// out[k] = the stored weight's element first + k, in any format (stored_weight_reader.cuh).
template <class R>
__global__ void decode_kernel(float* out, R weight, size_t first, size_t n) {
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[k] = weight(first + k);
}

// ---- the optimizer step ----

__device__ float load_state(const void* p, size_t i, StateFormat f) {
  return f == StateFormat::Fp32 ? static_cast<const float*>(p)[i] : bf16_decode(static_cast<const uint16_t*>(p)[i]);
}

// bf16 states are stored with SR keyed by the element's index in the whole tensor (MomentBuffer);
// element i lives at p[i − origin] (origin = state_row_offset · cols: ZeRO-1 keeps its own rows).
__device__ void store_state(void* p, size_t i, size_t origin, float x, StateFormat f, const RandomKey& key) {
  if (f == StateFormat::Fp32) static_cast<float*>(p)[i - origin] = x;
  else static_cast<uint16_t*>(p)[i - origin] = bf16_encode_sr(x, random_bits(key, i));
}

__device__ float clipped(const float* g, size_t i, float scale) { return scale == 1.0f ? g[i] : g[i] * scale; }

// Moments and new weight of element i (w in, w~ out); returns Adam's d (1 for SGDM). v is stored
// here; m is returned updated in `m` for the caller to store (after ECO's injection).
__device__ float update_element(const OptimStepArgs& a, size_t i, float& w, float& m) {
  const float g = clipped(a.grad, i, a.grad_scale);
  const size_t origin = a.state_row_offset * a.cols;
  m = load_state(a.m, i - origin, a.state_format);
  if (a.kind == OptimizerKind::AdamW) {
    float v = load_state(a.v, i - origin, a.state_format);
    const float d = adam_moments(g, m, v, a.adam);
    w = adamw_new_weight(w, m, d, a.adam);
    store_state(a.v, i, origin, v, a.state_format, a.keys.v);
    return d;
  }
  sgdm_momentum(g, m, a.sgdm);
  w = sgdm_new_weight(w, m, a.sgdm);
  return 1.0f;
}

// Tensors with an fp32 value (resident weights, masters): the whole update in place.
__global__ void step_values_kernel(OptimStepArgs a, size_t base, size_t n) {
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t i = base + k;
    float w = a.value[i], m;
    update_element(a, i, w, m);
    a.value[i] = w;
    store_state(a.m, i, a.state_row_offset * a.cols, m, a.state_format, a.keys.m);
  }
}

// Master-free, first half: w = dequant(code, old scale); the update; w~, d and the new m (before
// ECO's injection) go to scratch for the re-quantization and the second half.
template <class R>
__global__ void step_master_free_kernel(OptimStepArgs a, R weight, size_t base, size_t n, float* wt, float* d,
                                        float* mt) {
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t i = base + k;
    float w = weight(i), m;
    d[k] = update_element(a, i, w, m);
    wt[k] = w;
    mt[k] = m;
  }
}

// Master-free, second half: for ECO e = w~ − dequant(code', scale') folded into m; store m.
template <class R>
__global__ void finish_m_kernel(OptimStepArgs a, R weight, size_t base, size_t n, const float* wt, const float* d,
                                const float* mt) {
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t i = base + k;
    float m = mt[k];
    if (a.error_feedback) {
      const float wq = weight(i);
      m += a.kind == OptimizerKind::AdamW ? eco_adam_injection(wt[k] - wq, d[k], a.adam)
                                          : eco_sgdm_injection(wt[k] - wq, a.sgdm);
    }
    store_state(a.m, i, a.state_row_offset * a.cols, m, a.state_format, a.keys.m);
  }
}

// ---- reductions ----

// Per-block partial sums in double (x² or x), grid-strided over a fixed grid: deterministic.
__global__ void partial_sums_kernel(const float* x, size_t n, bool squares, double* partial) {
  __shared__ double s[kThreads];
  double acc = 0.0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const double v = x[i];
    acc += squares ? v * v : v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

// Sums the partials in order; mean_of > 0: adds (double)(float)(sum / mean_of) instead of the sum.
__global__ void finish_sum_kernel(const double* partial, int count, double* acc, size_t mean_of) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double total = 0.0;
  for (int b = 0; b < count; ++b) total += partial[b];
  *acc += mean_of ? static_cast<double>(static_cast<float>(total / static_cast<double>(mean_of))) : total;
}

template <class Fn>
void with_codec(QuantFormat f, Fn&& fn) {
  switch (f) {
    case QuantFormat::E4M3: return fn(Codec<QuantFormat::E4M3>{});
    case QuantFormat::E5M2: return fn(Codec<QuantFormat::E5M2>{});
    case QuantFormat::BF16: return fn(Codec<QuantFormat::BF16>{});
    case QuantFormat::INT8: return fn(Codec<QuantFormat::INT8>{});
    case QuantFormat::INT4:
    case QuantFormat::INT2:
    case QuantFormat::TERNARY: break;  // packed: cuda_lowbit.cu
  }
  throw Error(std::string("with_codec: ") + to_string(f) + " is not a byte or bf16 code format");
}

// Rows per panel of the master-free step: whole scale groups (and whole 128-element blocks of
// block-wise moments), about kPanelElements elements.
size_t panel_rows(const QuantRef& q, bool block_states) {
  const size_t by_size = std::max<size_t>(1, kPanelElements / std::max<size_t>(q.cols, 1));
  switch (q.granularity) {
    case ScaleGranularity::PerRow:
      return block_states ? whole_state_blocks(by_size, q.cols, q.rows) : std::min(q.rows, by_size);
    case ScaleGranularity::Block128: return std::min(q.rows, std::max<size_t>(1, by_size / kScaleBlock) * kScaleBlock);
    case ScaleGranularity::PerTensor: return q.rows;
  }
  return q.rows;
}

}  // namespace

void CudaOps::quantize_rows(const QuantRef& q, size_t row_begin, size_t row_end, const float* x, Rounding rounding,
                            const RandomKey* key, int64_t* bad_count) {
  if (q.lowbit()) return lowbit_quantize_rows_device(q, row_begin, row_end, x, rounding, key, bad_count, stream_);
  if (row_end <= row_begin || q.cols == 0) return;
  if (rounding == Rounding::SR && !key) throw Error("quantize_rows: stochastic rounding needs a RandomKey");
  const bool self_contained =
      q.granularity == ScaleGranularity::PerRow ||
      (q.granularity == ScaleGranularity::PerTensor && row_begin == 0 && row_end == q.rows) ||
      (q.granularity == ScaleGranularity::Block128 && row_begin % kScaleBlock == 0 &&
       (row_end % kScaleBlock == 0 || row_end == q.rows));
  if (!self_contained)
    throw Error("quantize_rows: rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) + ") of a " +
                std::to_string(q.rows) + "-row tensor cannot be scaled on their own");
  auto* bad = reinterpret_cast<unsigned long long*>(bad_count);
  const size_t n = (row_end - row_begin) * q.cols;
  const RandomKey k = key ? *key : RandomKey{};
  with_codec(q.format, [&](auto codec) {
    using C = decltype(codec);
    if constexpr (C::kScaled) {
      unsigned blocks = 1;
      if (q.granularity == ScaleGranularity::PerRow) blocks = static_cast<unsigned>(row_end - row_begin);
      if (q.granularity == ScaleGranularity::Block128)
        blocks = static_cast<unsigned>(((row_end - row_begin + kScaleBlock - 1) / kScaleBlock) *
                                       ((q.cols + kScaleBlock - 1) / kScaleBlock));
      scales_kernel<C><<<blocks, kThreads, 0, stream_>>>(x, row_begin, q.cols, q.granularity, row_begin, row_end,
                                                         q.pow2_scales, q.scales, bad);
      ECO_CUDA_CHECK_LAUNCH("scales_kernel");
    }
    encode_kernel<C><<<blocks_for(n), kThreads, 0, stream_>>>(x, static_cast<typename C::Code*>(q.codes), q.scales,
                                                              q.cols, q.granularity, row_begin, n,
                                                              rounding == Rounding::SR, k, bad);
    ECO_CUDA_CHECK_LAUNCH("encode_kernel");
  });
}

void CudaOps::dequantize_rows(float* out, const QuantRef& q, size_t row_begin, size_t row_end) {
  if (row_end <= row_begin || q.cols == 0) return;
  if (row_end > q.rows)
    throw Error("dequantize_rows: rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                ") are outside a " + std::to_string(q.rows) + "-row tensor");
  const size_t n = (row_end - row_begin) * q.cols;
  with_reader(q, [&](auto weight) {
    decode_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(out, weight, row_begin * q.cols, n);
    ECO_CUDA_CHECK_LAUNCH("decode_kernel");
  });
}

float* CudaOps::scratch_floats(size_t n) {
  const size_t bytes = n * sizeof(float);
  if (bytes > scratch_bytes_) {
    if (scratch_) {
      ECO_CUDA_CHECK(cudaStreamSynchronize(stream_));
      ECO_CUDA_CHECK(cudaFree(scratch_));
      scratch_ = nullptr;
    }
    ECO_CUDA_CHECK(cudaMalloc(&scratch_, bytes));
    scratch_bytes_ = bytes;
  }
  return static_cast<float*>(scratch_);
}

void CudaOps::optimizer_step(const OptimStepArgs& a) {
  const size_t cols = a.cols;
  if (a.row_end <= a.row_begin || cols == 0) return;
  if (a.row_begin < a.state_row_offset || a.row_end > a.state_rows_end() || a.state_rows_end() > a.rows)
    throw Error("optimizer_step: rows [" + std::to_string(a.row_begin) + ", " + std::to_string(a.row_end) +
                ") are outside the moments' rows [" + std::to_string(a.state_row_offset) + ", " +
                std::to_string(a.state_rows_end()) + ")");
  const bool block_states = is_block_state(a.state_format);
  if (!a.master_free()) {
    const size_t base = a.row_begin * cols, n = (a.row_end - a.row_begin) * cols;
    if (block_states) {
      block_state_update(a, base, n, nullptr, nullptr, nullptr, stream_);
    } else {
      step_values_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(a, base, n);
      ECO_CUDA_CHECK_LAUNCH("step_values_kernel");
    }
    if (a.quantized()) quantize_rows(a.quant, a.row_begin, a.row_end, a.value + base, a.rounding, &a.keys.weight, a.bad_count);
    return;
  }
  if (a.quant.granularity == ScaleGranularity::PerTensor && (a.row_begin != 0 || a.row_end != a.rows))
    throw Error("optimizer_step: a per-tensor-scaled tensor must be updated whole");
  // Master-free, a panel at a time: w = dequant(codes); the step gives w~ (and d, the new m) in
  // scratch; w~ is re-quantized; for ECO e = w~ − dequant(codes') goes into m before m is stored.
  const size_t P = panel_rows(a.quant, block_states);
  float* wt = scratch_floats(3 * std::min(P, a.row_end - a.row_begin) * cols);
  for (size_t r0 = a.row_begin; r0 < a.row_end; r0 += P) {
    const size_t r1 = std::min(a.row_end, r0 + P), n = (r1 - r0) * cols, base = r0 * cols;
    float* d = wt + n;
    float* mt = d + n;
    if (block_states) {
      block_state_update(a, base, n, wt, d, mt, stream_);
      quantize_rows(a.quant, r0, r1, wt, a.rounding, &a.keys.weight, a.bad_count);
      block_state_finish_m(a, base, n, wt, d, mt, stream_);
      continue;
    }
    with_reader(a.quant, [&](auto weight) {
      step_master_free_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(a, weight, base, n, wt, d, mt);
      ECO_CUDA_CHECK_LAUNCH("step_master_free_kernel");
      quantize_rows(a.quant, r0, r1, wt, a.rounding, &a.keys.weight, a.bad_count);
      finish_m_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(a, weight, base, n, wt, d, mt);
      ECO_CUDA_CHECK_LAUNCH("finish_m_kernel");
    });
  }
}

double* CudaOps::reduction_partials() {
  if (!partials_) ECO_CUDA_CHECK(cudaMalloc(&partials_, kReduceBlocks * sizeof(double)));
  return static_cast<double*>(partials_);
}

void CudaOps::accumulate_sum_squares(double* acc, const float* x, size_t n) {
  double* partial = reduction_partials();
  partial_sums_kernel<<<kReduceBlocks, kThreads, 0, stream_>>>(x, n, /*squares=*/true, partial);
  ECO_CUDA_CHECK_LAUNCH("partial_sums_kernel");
  finish_sum_kernel<<<1, 1, 0, stream_>>>(partial, kReduceBlocks, acc, 0);
  ECO_CUDA_CHECK_LAUNCH("finish_sum_kernel");
}

void CudaOps::accumulate_mean(double* acc, const float* x, size_t n) {
  if (n == 0) throw Error("accumulate_mean of nothing");
  double* partial = reduction_partials();
  partial_sums_kernel<<<kReduceBlocks, kThreads, 0, stream_>>>(x, n, /*squares=*/false, partial);
  ECO_CUDA_CHECK_LAUNCH("partial_sums_kernel");
  finish_sum_kernel<<<1, 1, 0, stream_>>>(partial, kReduceBlocks, acc, n);
  ECO_CUDA_CHECK_LAUNCH("finish_sum_kernel");
}


}  // namespace eco::cuda

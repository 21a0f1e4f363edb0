// The fused optimizer step with block-wise low-bit moments (int8, solo4/3/2, m8v4) on the GPU. One
// CUDA block of 128 threads per 128-element state block, one thread per element: decode m and v,
// the AdamW / SGDM update (update_rule.h), then the block's parameters by block reductions and the
// codes with SR (state_codec.h), packed a byte per thread. The CPU twin is CpuOps::optimizer_step
// over MomentBuffer's block views; every formula is the shared ECO_HD one and each reduction gives
// the CPU's result exactly (max and signed absmax are order-free; the v quantile's two order
// statistics are found by ranking, not by a float sum), so codes and block parameters are equal
// bit for bit (tests/cuda/test_cuda_optim.cpp).
#include <string>

#include "core/error.h"
#include "core/float_bits.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_lowbit.h"
#include "cuda/stored_weight_reader.cuh"
#include "optim/moment_buffer.h"
#include "optim/state_block.h"
#include "optim/state_codec.h"
#include "optim/update_rule.h"

namespace eco::cuda {
namespace {

constexpr int kBlock = kStateBlock;  // threads per CUDA block: one per element of a state block

// One moment's storage as BlockMoment lays it out: packed codes (padded to whole floats), then one
// fp32 scale per block (m), or d and α per block (v).
struct MomentRef {
  uint8_t* codes = nullptr;
  float* scale = nullptr;
  float* alpha = nullptr;
  int bits = 8;
};

MomentRef moment_ref(void* storage, size_t n, int bits, MomentKind kind) {
  if (!storage) return {};
  const size_t blocks = (n + kStateBlock - 1) / kStateBlock;
  const size_t total = kind == MomentKind::Signed ? m_state_bytes(bits, n) : v_state_bytes(bits, n);
  const size_t params = kind == MomentKind::Signed ? 1 : 2;
  auto* p = static_cast<uint8_t*>(storage);
  MomentRef r;
  r.codes = p;
  r.scale = reinterpret_cast<float*>(p + total - blocks * params * sizeof(float));
  r.alpha = kind == MomentKind::Log ? r.scale + blocks : nullptr;
  r.bits = bits;
  return r;
}

// Element j of the buffer (tensor element origin + j).
__device__ float decode_m(const MomentRef& r, size_t j) {
  return m_decode(state_code_get(r.codes, j, r.bits), r.scale[j / kStateBlock], r.bits);
}
__device__ float decode_v(const MomentRef& r, size_t j) {
  const size_t b = j / kStateBlock;
  return v_decode(state_code_get(r.codes, j, r.bits), LogBlock{r.scale[b], r.alpha[b]});
}

__device__ float clipped(const float* g, size_t i, float scale) { return scale == 1.0f ? g[i] : g[i] * scale; }

// Reads no weight: the tensors with an fp32 value.
struct NoWeight {
  __device__ float operator()(size_t) const { return 0.0f; }
};

// Scratch of one state block's encode, in shared memory.
struct BlockShared {
  float x[kBlock];
  float red[kBlock];
  uint32_t code[kBlock];
  float order_lo, order_hi;
};

// Stores code[0 .. count) packed, thread j building byte j whole (state_packed_byte). A partial
// block's last byte gets zero padding bits, which is what the CPU leaves there (the storage starts
// zeroed and state_code_set never touches bits past the last code).
__device__ void store_codes(uint8_t* block_codes, const uint32_t* code, int count, int bits) {
  __syncthreads();
  const int nbytes = (count * bits + 7) / 8;
  for (int j = threadIdx.x; j < nbytes; j += blockDim.x) block_codes[j] = state_packed_byte(code, count, bits, j);
}

// The block's signed absmax as m_block_scale_of computes it: a tree of signed_absmax_combine, then
// signed_absmax_from_tree for the all-zero case.
__device__ float block_signed_absmax(BlockShared& s, int count) {
  const int t = threadIdx.x;
  s.red[t] = t < count ? s.x[t] : 0.0f;
  __syncthreads();
  for (int stride = kBlock / 2; stride > 0; stride /= 2) {
    if (t < stride) s.red[t] = signed_absmax_combine(s.red[t], s.red[t + stride]);
    __syncthreads();
  }
  const float r = signed_absmax_from_tree(s.red[0], s.x[count - 1]);
  __syncthreads();
  return r;
}

// m's block: scale from the block, codes with SR keyed by tensor element `first + t`.
__device__ void encode_m_block(BlockShared& s, const MomentRef& m, size_t buf_first, uint64_t tensor_first, int count,
                               float x, const RandomKey& key) {
  const int t = threadIdx.x;
  __syncthreads();
  s.x[t] = t < count ? x : 0.0f;
  __syncthreads();
  const float scale = m_block_scale(block_signed_absmax(s, count), m.bits);
  if (t == 0) m.scale[buf_first / kStateBlock] = scale;
  if (t < count) s.code[t] = m_encode_sr(x, scale, m.bits, random_bits(key, tensor_first + t));
  store_codes(m.codes + buf_first * m.bits / 8, s.code, count, m.bits);
}

// v's block: d = the largest positive finite value, α from the p-quantile of the positive values
// (v_block_params_of), whose two order statistics x_(lo), x_(lo+1) are found by ranking each
// positive value (positive_rank); codes with SR on the log index.
__device__ void encode_v_block(BlockShared& s, const MomentRef& v, size_t buf_first, uint64_t tensor_first, int count,
                               float x, float quantile, const RandomKey& key) {
  const int t = threadIdx.x;
  __syncthreads();
  s.x[t] = t < count ? x : 0.0f;
  const bool positive = t < count && x > 0.0f && is_finite_bits(x);
  s.red[t] = positive ? x : 0.0f;
  const int np = __syncthreads_count(positive);
  for (int stride = kBlock / 2; stride > 0; stride /= 2) {
    if (t < stride) s.red[t] = fmaxf(s.red[t], s.red[t + stride]);
    __syncthreads();
  }
  const float max = s.red[0];
  LogBlock lb;
  if (np > 0) {
    const int lo = quantile_low_index(np, quantile);
    const int hi = lo + 1 < np ? lo + 1 : lo;
    if (positive) {
      const int rank = positive_rank(s.x, count, t);
      if (rank == lo) s.order_lo = x;
      if (rank == hi) s.order_hi = x;
    }
    __syncthreads();
    lb = v_block_params(max, quantile_between(s.order_lo, s.order_hi, np, quantile), v.bits);
  }
  if (t == 0) {
    v.scale[buf_first / kStateBlock] = lb.d;
    v.alpha[buf_first / kStateBlock] = lb.alpha;
  }
  if (t < count) s.code[t] = v_encode_sr(x, lb, v.bits, random_bits(key, tensor_first + t));
  store_codes(v.codes + buf_first * v.bits / 8, s.code, count, v.bits);
}

struct Span {
  size_t base, end;   // tensor elements [base, end) of this launch
  size_t origin;      // tensor element of the moments' first element
  float quantile;     // v's
};

// Decode, update, encode v; then either store the value and encode m, or (master-free) leave w~,
// d and m in scratch for the weight's re-quantization and finish_m_kernel.
template <class R>
__global__ void __launch_bounds__(kBlock)
    update_kernel(OptimStepArgs a, R weight, Span sp, MomentRef m, MomentRef v, float* wt, float* dd, float* mt) {
  __shared__ BlockShared s;
  const size_t first = sp.base + static_cast<size_t>(blockIdx.x) * kBlock;
  const int count = static_cast<int>(sp.end - first < size_t{kBlock} ? sp.end - first : size_t{kBlock});
  const int t = threadIdx.x;
  const size_t i = first + t;
  const bool adam = a.kind == OptimizerKind::AdamW;
  float w = 0.0f, mv = 0.0f, vv = 0.0f, d = 1.0f;
  if (t < count) {
    const float g = clipped(a.grad, i, a.grad_scale);
    w = a.value ? a.value[i] : weight(i);
    mv = decode_m(m, i - sp.origin);
    if (adam) {
      vv = decode_v(v, i - sp.origin);
      d = adam_moments(g, mv, vv, a.adam);
      w = adamw_new_weight(w, mv, d, a.adam);
    } else {
      sgdm_momentum(g, mv, a.sgdm);
      w = sgdm_new_weight(w, mv, a.sgdm);
    }
  }
  if (adam) encode_v_block(s, v, first - sp.origin, first, count, vv, sp.quantile, a.keys.v);
  if (a.value) {
    if (t < count) a.value[i] = w;
    encode_m_block(s, m, first - sp.origin, first, count, mv, a.keys.m);
  } else if (t < count) {
    wt[i - sp.base] = w;
    dd[i - sp.base] = d;
    mt[i - sp.base] = mv;
  }
}

// Master-free, after the re-quantization: ECO's e = w~ − dequant(code') into m; encode m.
template <class R>
__global__ void __launch_bounds__(kBlock) finish_m_kernel(OptimStepArgs a, R weight, Span sp, MomentRef m,
                                                          const float* wt, const float* dd, const float* mt) {
  __shared__ BlockShared s;
  const size_t first = sp.base + static_cast<size_t>(blockIdx.x) * kBlock;
  const int count = static_cast<int>(sp.end - first < size_t{kBlock} ? sp.end - first : size_t{kBlock});
  const int t = threadIdx.x;
  const size_t k = first + t - sp.base;
  float mv = 0.0f;
  if (t < count) {
    mv = mt[k];
    if (a.error_feedback) {
      const float e = wt[k] - weight(first + t);
      mv += a.kind == OptimizerKind::AdamW ? eco_adam_injection(e, dd[k], a.adam) : eco_sgdm_injection(e, a.sgdm);
    }
  }
  encode_m_block(s, m, first - sp.origin, first, count, mv, a.keys.m);
}

struct Launch {
  Span span;
  MomentRef m, v;
  unsigned blocks;
};

Launch prepare(const OptimStepArgs& a, size_t base, size_t n) {
  const BlockStateSpec spec = block_state_spec(a.state_format);
  Launch l;
  l.span.origin = a.state_row_offset * a.cols;
  l.span.base = base;
  l.span.end = base + n;
  l.span.quantile = spec.v_quantile;
  const size_t total = a.state_rows_end() * a.cols;  // the moments end here
  if (l.span.origin % kStateBlock != 0 || (base - l.span.origin) % kStateBlock != 0 ||
      (l.span.end % kStateBlock != 0 && l.span.end != total))
    throw Error("optimizer_step: block-wise optimizer states are updated in whole 128-element blocks; elements [" +
                std::to_string(base) + ", " + std::to_string(base + n) + ") of moments over elements [" +
                std::to_string(l.span.origin) + ", " + std::to_string(total) + ") are not");
  const size_t n_state = total - l.span.origin;
  l.m = moment_ref(a.m, n_state, spec.m_bits, MomentKind::Signed);
  l.v = a.kind == OptimizerKind::AdamW ? moment_ref(a.v, n_state, spec.v_bits, MomentKind::Log) : MomentRef{};
  l.blocks = static_cast<unsigned>((n + kStateBlock - 1) / kStateBlock);
  return l;
}

}  // namespace

void block_state_update(const OptimStepArgs& a, size_t base, size_t n, float* wt, float* d, float* mt,
                        cudaStream_t stream) {
  if (n == 0) return;
  const Launch l = prepare(a, base, n);
  if (a.value) {
    update_kernel<<<l.blocks, kBlock, 0, stream>>>(a, NoWeight{}, l.span, l.m, l.v, wt, d, mt);
  } else {
    with_reader(a.quant, [&](auto reader) {
      update_kernel<<<l.blocks, kBlock, 0, stream>>>(a, reader, l.span, l.m, l.v, wt, d, mt);
    });
  }
  ECO_CUDA_CHECK_LAUNCH("block_state update_kernel");
}

void block_state_finish_m(const OptimStepArgs& a, size_t base, size_t n, const float* wt, const float* d,
                          const float* mt, cudaStream_t stream) {
  if (n == 0) return;
  const Launch l = prepare(a, base, n);
  with_reader(a.quant, [&](auto reader) {
    finish_m_kernel<<<l.blocks, kBlock, 0, stream>>>(a, reader, l.span, l.m, wt, d, mt);
  });
  ECO_CUDA_CHECK_LAUNCH("block_state finish_m_kernel");
}

}  // namespace eco::cuda

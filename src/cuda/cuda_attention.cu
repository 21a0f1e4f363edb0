// Causal multi-head attention, flash-style: the T×T probabilities are never stored. The forward
// keeps only the log-sum-exp of each query row (B·NH·T floats, attention_saved_floats); the
// backward recomputes p_ij = exp(s_ij − lse_i) from q, k and that lse.
//
// Layout (as the CPU twin, src/cpu/cpu_attention.cpp): qkv[B,T,3C] = q | k | v, head h at channels
// [h·hs, (h+1)·hs) of each part, hs = C/NH; out[B,T,C]; scores s_ij = (q_i·k_j)·(1/sqrt(hs)).
//
// Kernels: one thread per row (a query row, or a key row in the dk/dv kernel) holds that row's
// vectors and accumulators in registers; the block streams tiles of the other side's rows through
// shared memory (every thread reads the same element: a broadcast). All sums run in fp32 in a fixed
// order per row, no atomics, so results are deterministic:
//   forward   per query: online softmax over key tiles → out_i, lse_i.
//   backward  (1) per query: D_i = Σ_j p_ij·dP_ij (dP_ij = dO_i·v_j, as the CPU's rowsum(P⊙dP)),
//                 then dq_i = Σ_j dS_ij·k_j with dS_ij = p_ij·(dP_ij − D_i)·scale;
//             (2) per key:   dv_j = Σ_i p_ij·dO_i, dk_j = Σ_i dS_ij·q_i, looping over query tiles.
// Head sizes up to 256 (registers sized by a template bound D ≥ hs).
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"

namespace eco::cuda {
namespace {

constexpr int kRowThreads = 64;  // rows (threads) per block
constexpr int kTile = 32;        // streamed rows per shared-memory tile
constexpr int kMaxHeadDim = 256;

// Shared-memory stride of a row a thread reads on its own: odd, so 32 threads reading element d
// of 32 consecutive rows hit 32 different banks.
__host__ __device__ inline int own_stride(int hs) { return hs | 1; }

struct AttnDims {
  int T, C, NH, hs;
  float scale;
};

template <int D>
__global__ void __launch_bounds__(kRowThreads) attention_forward_kernel(float* out, float* lse, const float* qkv,
                                                                        AttnDims a) {
  extern __shared__ float smem[];
  float* sk = smem;                 // [kTile][hs]
  float* sv = smem + kTile * a.hs;  // [kTile][hs]
  const int hs = a.hs;
  const int bh = blockIdx.x;
  const int b = bh / a.NH, h = bh % a.NH;
  const size_t C3 = 3 * static_cast<size_t>(a.C);
  const float* base = qkv + static_cast<size_t>(b) * a.T * C3 + static_cast<size_t>(h) * hs;
  const int q0 = blockIdx.y * kRowThreads;
  const int i = q0 + threadIdx.x;
  const bool active = i < a.T;

  float q[D], acc[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = (active && d < hs) ? base[static_cast<size_t>(i) * C3 + d] : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int last_key = min(a.T, q0 + kRowThreads) - 1;  // the block's last query sees keys 0..last_key
  for (int j0 = 0; j0 <= last_key; j0 += kTile) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTile * hs; idx += kRowThreads) {
      const int r = idx / hs, d = idx % hs, j = j0 + r;
      const float* row = base + static_cast<size_t>(j) * C3;
      sk[idx] = j < a.T ? row[a.C + d] : 0.0f;
      sv[idx] = j < a.T ? row[2 * a.C + d] : 0.0f;
    }
    __syncthreads();
    if (!active) continue;
    // Online softmax one key at a time: the running max moves rarely after the first keys, so
    // the rescale branch is cheap, and no per-tile score array is kept in registers.
#pragma unroll 1
    for (int r = 0; r < kTile && j0 + r <= i; ++r) {
      const float* kr = sk + r * hs;
      const float* vr = sv + r * hs;
      float dot = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d)
        if (d < hs) dot += q[d] * kr[d];
      const float s = dot * a.scale;
      if (s > m) {
        // Key 0 comes first and every query sees it, so after it m is finite; before it
        // corr = exp(-inf) = 0 and l, acc are still 0.
        const float corr = expf(m - s);
        l = l * corr;
#pragma unroll
        for (int d = 0; d < D; ++d) acc[d] = acc[d] * corr;
        m = s;
      }
      const float p = expf(s - m);
      l = l + p;
#pragma unroll
      for (int d = 0; d < D; ++d)
        if (d < hs) acc[d] += p * vr[d];
    }
  }
  if (!active) return;
  const float inv = 1.0f / l;
  float* o = out + (static_cast<size_t>(b) * a.T + i) * a.C + static_cast<size_t>(h) * hs;
#pragma unroll
  for (int d = 0; d < D; ++d)
    if (d < hs) o[d] = acc[d] * inv;
  lse[static_cast<size_t>(bh) * a.T + i] = m + logf(l);
}

// Backward (1): one thread per query row: D_i, then dq_i. Writes D_i to dsum for kernel (2).
template <int D>
__global__ void __launch_bounds__(kRowThreads) attention_backward_dq_kernel(float* dqkv, float* dsum,
                                                                            const float* dout, const float* qkv,
                                                                            const float* lse, AttnDims a) {
  extern __shared__ float smem[];
  float* sk = smem;
  float* sv = smem + kTile * a.hs;
  const int hs = a.hs;
  const int bh = blockIdx.x;
  const int b = bh / a.NH, h = bh % a.NH;
  const size_t C3 = 3 * static_cast<size_t>(a.C);
  const float* base = qkv + static_cast<size_t>(b) * a.T * C3 + static_cast<size_t>(h) * hs;
  const int q0 = blockIdx.y * kRowThreads;
  const int i = q0 + threadIdx.x;
  const bool active = i < a.T;

  float q[D], g[D], acc[D];
  const float* dO = dout + (static_cast<size_t>(b) * a.T + (active ? i : 0)) * a.C + static_cast<size_t>(h) * hs;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = (active && d < hs) ? base[static_cast<size_t>(i) * C3 + d] : 0.0f;
    g[d] = (active && d < hs) ? dO[d] : 0.0f;
    acc[d] = 0.0f;
  }
  const float L = active ? lse[static_cast<size_t>(bh) * a.T + i] : 0.0f;
  const int last_key = min(a.T, q0 + kRowThreads) - 1;
  float Di = 0.0f;
#pragma unroll 1
  for (int pass = 0; pass < 2; ++pass) {
#pragma unroll 1
    for (int j0 = 0; j0 <= last_key; j0 += kTile) {
      __syncthreads();
      for (int idx = threadIdx.x; idx < kTile * hs; idx += kRowThreads) {
        const int r = idx / hs, d = idx % hs, j = j0 + r;
        const float* row = base + static_cast<size_t>(j) * C3;
        sk[idx] = j < a.T ? row[a.C + d] : 0.0f;
        sv[idx] = j < a.T ? row[2 * a.C + d] : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
#pragma unroll 1
      for (int r = 0; r < kTile && j0 + r <= i; ++r) {
        const float* kr = sk + r * hs;
        const float* vr = sv + r * hs;
        float qk = 0.0f, dp = 0.0f;
#pragma unroll
        for (int d = 0; d < D; ++d)
          if (d < hs) {
            qk += q[d] * kr[d];
            dp += g[d] * vr[d];
          }
        const float p = expf(qk * a.scale - L);
        if (pass == 0) {
          Di += p * dp;
        } else {
          const float ds = p * (dp - Di) * a.scale;
#pragma unroll
          for (int d = 0; d < D; ++d)
            if (d < hs) acc[d] += ds * kr[d];
        }
      }
    }
  }
  if (!active) return;
  dsum[static_cast<size_t>(bh) * a.T + i] = Di;
  float* dq = dqkv + (static_cast<size_t>(b) * a.T + i) * C3 + static_cast<size_t>(h) * hs;
#pragma unroll
  for (int d = 0; d < D; ++d)
    if (d < hs) dq[d] = acc[d];
}

// Backward (2): one thread per key row j: dv_j and dk_j over the queries i >= j, streamed in tiles
// of q_i, dO_i, lse_i, D_i. k_j and v_j sit in shared memory (padded rows) to leave registers for
// the two accumulators.
template <int D>
__global__ void __launch_bounds__(kRowThreads) attention_backward_dkv_kernel(float* dqkv, const float* dout,
                                                                             const float* qkv, const float* lse,
                                                                             const float* dsum, AttnDims a) {
  extern __shared__ float smem[];
  const int hs = a.hs;
  const int os = own_stride(hs);
  float* sko = smem;                         // [kRowThreads][os] own k rows
  float* svo = sko + kRowThreads * os;       // [kRowThreads][os] own v rows
  float* sq = svo + kRowThreads * os;        // [kTile][hs]
  float* sg = sq + kTile * hs;               // [kTile][hs] dO rows
  float* sl = sg + kTile * hs;               // [kTile] lse
  float* sd = sl + kTile;                    // [kTile] D
  const int bh = blockIdx.x;
  const int b = bh / a.NH, h = bh % a.NH;
  const size_t C3 = 3 * static_cast<size_t>(a.C);
  const float* base = qkv + static_cast<size_t>(b) * a.T * C3 + static_cast<size_t>(h) * hs;
  const float* gbase = dout + static_cast<size_t>(b) * a.T * a.C + static_cast<size_t>(h) * hs;
  const int k0 = blockIdx.y * kRowThreads;
  const int j = k0 + threadIdx.x;
  const bool active = j < a.T;

  for (int idx = threadIdx.x; idx < kRowThreads * hs; idx += kRowThreads) {
    const int r = idx / hs, d = idx % hs, jj = k0 + r;
    const float* row = base + static_cast<size_t>(jj) * C3;
    sko[r * os + d] = jj < a.T ? row[a.C + d] : 0.0f;
    svo[r * os + d] = jj < a.T ? row[2 * a.C + d] : 0.0f;
  }
  const float* kj = sko + threadIdx.x * os;
  const float* vj = svo + threadIdx.x * os;
  float dk[D], dv[D];
#pragma unroll
  for (int d = 0; d < D; ++d) dk[d] = dv[d] = 0.0f;

  for (int i0 = k0; i0 < a.T; i0 += kTile) {
    __syncthreads();  // also orders the own-row loads above before their first use
    for (int idx = threadIdx.x; idx < kTile * hs; idx += kRowThreads) {
      const int r = idx / hs, d = idx % hs, i = i0 + r;
      sq[idx] = i < a.T ? base[static_cast<size_t>(i) * C3 + d] : 0.0f;
      sg[idx] = i < a.T ? gbase[static_cast<size_t>(i) * a.C + d] : 0.0f;
    }
    for (int r = threadIdx.x; r < kTile; r += kRowThreads) {
      const int i = i0 + r;
      sl[r] = i < a.T ? lse[static_cast<size_t>(bh) * a.T + i] : 0.0f;
      sd[r] = i < a.T ? dsum[static_cast<size_t>(bh) * a.T + i] : 0.0f;
    }
    __syncthreads();
    if (!active) continue;
#pragma unroll 1
    for (int r = 0; r < kTile; ++r) {
      const int i = i0 + r;
      if (i >= a.T) break;
      if (i < j) continue;
      const float* qr = sq + r * hs;
      const float* gr = sg + r * hs;
      float qk = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d)
        if (d < hs) {
          qk += qr[d] * kj[d];
          dp += gr[d] * vj[d];
        }
      const float p = expf(qk * a.scale - sl[r]);
      const float ds = p * (dp - sd[r]) * a.scale;
#pragma unroll
      for (int d = 0; d < D; ++d)
        if (d < hs) {
          dv[d] += p * gr[d];
          dk[d] += ds * qr[d];
        }
    }
  }
  if (!active) return;
  float* dkv = dqkv + (static_cast<size_t>(b) * a.T + j) * C3 + static_cast<size_t>(h) * hs;
#pragma unroll
  for (int d = 0; d < D; ++d)
    if (d < hs) {
      dkv[a.C + d] = dk[d];
      dkv[2 * a.C + d] = dv[d];
    }
}

AttnDims dims_of(int T, int C, int NH, const char* what) {
  if (NH <= 0 || C <= 0 || C % NH != 0)
    throw Error(std::string(what) + ": C=" + std::to_string(C) + " is not a multiple of NH=" + std::to_string(NH));
  const int hs = C / NH;
  if (hs > kMaxHeadDim)
    throw Error(std::string(what) + ": head size " + std::to_string(hs) + " > " + std::to_string(kMaxHeadDim) +
                " is not supported by the CUDA attention kernels");
  // The same float expression as the CPU twin.
  return {T, C, NH, hs, 1.0f / std::sqrt(static_cast<float>(hs))};
}

// Raises the kernel's dynamic shared-memory limit when it needs more than the default 48 KiB.
template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes, int device, const char* name) {
  if (bytes <= 48 * 1024) return;
  int optin = 0;
  ECO_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > static_cast<size_t>(optin))
    throw Error(std::string(name) + ": needs " + std::to_string(bytes) + " bytes of shared memory, the device has " +
                std::to_string(optin));
  ECO_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// Calls fn(std::integral_constant<int, D>) with the smallest register bound D >= hs.
template <class Fn>
void dispatch_head_dim(int hs, Fn&& fn) {
  if (hs <= 16) return fn(std::integral_constant<int, 16>{});
  if (hs <= 32) return fn(std::integral_constant<int, 32>{});
  if (hs <= 64) return fn(std::integral_constant<int, 64>{});
  if (hs <= 128) return fn(std::integral_constant<int, 128>{});
  return fn(std::integral_constant<int, 256>{});
}

size_t tile_smem(int hs) { return 2 * static_cast<size_t>(kTile) * hs * sizeof(float); }
size_t dkv_smem(int hs) {
  return (2 * static_cast<size_t>(kRowThreads) * own_stride(hs) + 2 * static_cast<size_t>(kTile) * hs + 2 * kTile) *
         sizeof(float);
}

dim3 grid_of(int B, int T, int NH, const char* what) {
  const long long bh = static_cast<long long>(B) * NH;
  const int tiles = (T + kRowThreads - 1) / kRowThreads;
  if (bh > 0x7FFFFFFFLL || tiles > 65535)
    throw Error(std::string(what) + ": B*NH=" + std::to_string(bh) + ", T=" + std::to_string(T) +
                " exceed the CUDA grid");
  return dim3(static_cast<unsigned>(bh), static_cast<unsigned>(tiles));
}

}  // namespace

void CudaOps::attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0) return;
  const AttnDims a = dims_of(T, C, NH, "attention_forward");
  const dim3 grid = grid_of(B, T, NH, "attention_forward");
  const size_t smem = tile_smem(a.hs);
  dispatch_head_dim(a.hs, [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    allow_smem(attention_forward_kernel<D>, smem, device_, "attention_forward");
    attention_forward_kernel<D><<<grid, kRowThreads, smem, stream_>>>(out, att, qkv, a);
  });
  ECO_CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

void CudaOps::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T,
                                 int C, int NH) {
  if (B <= 0 || T <= 0) return;
  const AttnDims a = dims_of(T, C, NH, "attention_backward");
  const dim3 grid = grid_of(B, T, NH, "attention_backward");
  // D_i = rowsum(P⊙dP), B·NH·T floats: in the cuBLASLt workspace when it fits (the stream orders
  // it against GEMMs), else in transient stream-ordered memory.
  const size_t dsum_bytes = static_cast<size_t>(B) * NH * T * sizeof(float);
  void* dsum = workspace_;
  const bool own = dsum_bytes > workspace_bytes_;
  if (own) ECO_CUDA_CHECK(cudaMallocAsync(&dsum, dsum_bytes, stream_));
  struct Free {
    void* p;
    cudaStream_t s;
    ~Free() {
      if (p) cudaFreeAsync(p, s);
    }
  } guard{own ? dsum : nullptr, stream_};
  float* ds = static_cast<float*>(dsum);
  dispatch_head_dim(a.hs, [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    const size_t smem1 = tile_smem(a.hs);
    allow_smem(attention_backward_dq_kernel<D>, smem1, device_, "attention_backward");
    attention_backward_dq_kernel<D><<<grid, kRowThreads, smem1, stream_>>>(dqkv, ds, dout, qkv, att, a);
    ECO_CUDA_CHECK_LAUNCH("attention_backward_dq_kernel");
    const size_t smem2 = dkv_smem(a.hs);
    allow_smem(attention_backward_dkv_kernel<D>, smem2, device_, "attention_backward");
    attention_backward_dkv_kernel<D><<<grid, kRowThreads, smem2, stream_>>>(dqkv, dout, qkv, att, ds, a);
    ECO_CUDA_CHECK_LAUNCH("attention_backward_dkv_kernel");
  });
}

}  // namespace eco::cuda

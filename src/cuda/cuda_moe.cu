// CudaOps: the sparse-MoE kernels — routing, the dispatch plan, gather / combine and their
// backwards (CPU twins: src/cpu/cpu_moe.cpp). Every output element is written by exactly one thread
// and every sum runs in a fixed order, so results never depend on thread timing.
//
// Routing and the router backward run one thread per token through the CPU's own per-token code
// (core/moe_math.h), compiled with --fmad=false: probs, expert_idx, gates and dlogits equal the
// CPU's bit for bit; only lse ends in CUDA's logf instead of glibc's (about an ulp apart).
// Gather, gather backward, combine and the dexpert_out half of the combine backward are one thread
// per element with the CPU's operation order (sums over j from 0.0f, in order): bit-exact.
// Two outputs are sums whose order is the GPU's own, fixed, so deterministic but not bit-equal to
// the CPU's sequential loops: dgates (a warp's tree over C) and the prob sums (per-segment double
// partials added in segment order; the double sum is rounded to float once, so it agrees with the
// CPU except at a rounding boundary).
//
// The dispatch plan is the CPU's plan exactly (it is uniquely defined). The assignments are cut
// into chunks of kChunk; per chunk, each assignment's rank among the chunk's assignments to the
// same expert (warps in order, __match_any_sync within a warp) and the chunk's per-expert counts;
// a per-expert scan over chunks turns counts into offsets and gives routed[e]; one scan over
// experts gives the first row of each expert; then every assignment knows its global rank within
// its expert, which decides keep or drop (rank < capacity) and its row.
#include <algorithm>
#include <string>

#include "core/error.h"
#include "core/moe_math.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"

namespace eco::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kChunk = 1024;                  // assignments per plan chunk = threads of a chunk block
constexpr int kWarpsPerChunk = kChunk / 32;
constexpr int kMaxPlanExperts = 48 * 1024 / 4;  // one int per expert in 48 KiB of shared memory

unsigned blocks_for(size_t n) {
  return static_cast<unsigned>(std::min<size_t>((n + kThreads - 1) / kThreads, size_t{1} << 20));
}

// ---- routing ----

__global__ void route_kernel(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits,
                             const float* bias, int N, int E, int K, bool renormalize) {
  for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
    const size_t ne = static_cast<size_t>(n) * E, nk = static_cast<size_t>(n) * K;
    lse[n] = moe_math::route_token(probs + ne, expert_idx + nk, gates + nk, logits + ne, bias, E, K, renormalize);
  }
}

__global__ void router_backward_kernel(float* dlogits, const float* probs, const float* lse,
                                       const int32_t* expert_idx, const float* gates, const float* dgates,
                                       const int32_t* routed, float aux_scale, float z_scale, int N, int E, int K,
                                       bool renormalize) {
  for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
    const size_t ne = static_cast<size_t>(n) * E, nk = static_cast<size_t>(n) * K;
    moe_math::router_backward_token(dlogits + ne, probs + ne, lse[n], expert_idx + nk, gates + nk, dgates + nk,
                                    routed, aux_scale, z_scale, E, K, renormalize);
  }
}

// ---- the dispatch plan ----

// One block of kChunk threads per chunk; thread t takes assignment a = chunk·kChunk + t.
// rank_of[a] = the number of earlier assignments of this chunk routed to the same expert (a
// temporary, in slot_of); chunk_counts[chunk·E + e] = the chunk's assignments to e. The warps take
// turns on the shared per-expert counters, so ranks follow assignment order; shared atomics would
// give the same counts but ranks in timing order.
__global__ void plan_chunk_rank_kernel(int32_t* rank_of, int32_t* chunk_counts, const int32_t* expert_idx, size_t NK,
                                       int E) {
  extern __shared__ int32_t seen[];  // [E]: assignments to e in the warps before the current one
  for (int e = threadIdx.x; e < E; e += blockDim.x) seen[e] = 0;
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const size_t a = blockIdx.x * size_t{kChunk} + threadIdx.x;
  const int32_t raw = a < NK ? expert_idx[a] : -1;
  const int32_t e = raw >= 0 && raw < E ? raw : -1;  // out of range: never counted, dropped below
  const unsigned peers = __match_any_sync(kFullMask, e);
  const unsigned lower = (1u << lane) - 1u;
  for (int w = 0; w < kWarpsPerChunk; ++w) {
    if (warp == w && e >= 0) {
      rank_of[a] = seen[e] + __popc(peers & lower);
      __syncwarp(peers);  // every peer has read seen[e] before the lowest one adds the group
      if ((peers & lower) == 0) seen[e] += __popc(peers);
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < E; i += blockDim.x) chunk_counts[blockIdx.x * size_t(E) + i] = seen[i];
}

// One warp per expert: chunk_counts[c·E + e] becomes the exclusive prefix over chunks (the
// assignments to e in chunks before c); counts[E + e] = routed, counts[e] = kept.
__global__ void plan_expert_scan_kernel(int32_t* counts, int32_t* chunk_counts, int chunks, int E, int capacity) {
  const int e = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (e >= E) return;  // whole warps leave together: the shuffles below see full warps
  int32_t base = 0;
  for (int c0 = 0; c0 < chunks; c0 += 32) {
    const int c = c0 + lane;
    const size_t at = static_cast<size_t>(c) * E + e;
    const int32_t v = c < chunks ? chunk_counts[at] : 0;
    int32_t incl = v;
    for (int off = 1; off < 32; off *= 2) {
      const int32_t o = __shfl_up_sync(kFullMask, incl, off);
      if (lane >= off) incl += o;
    }
    if (c < chunks) chunk_counts[at] = base + incl - v;
    base += __shfl_sync(kFullMask, incl, 31);
  }
  if (lane == 0) {
    counts[e] = capacity > 0 && base > capacity ? capacity : base;
    counts[E + e] = base;
  }
}

// The first row of each expert: an exclusive scan of the kept counts, in expert order. E is at
// most a few thousand, so one thread is enough.
__global__ void plan_expert_start_kernel(int32_t* start, const int32_t* counts, int E) {
  int32_t row = 0;
  for (int e = 0; e < E; ++e) {
    start[e] = row;
    row += counts[e];
  }
}

// One thread per assignment: global rank within its expert = chunk offset + rank in the chunk.
__global__ void plan_place_kernel(int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx,
                                  const int32_t* chunk_offsets, const int32_t* start, const int32_t* counts, size_t NK,
                                  int K, int E) {
  for (size_t a = blockIdx.x * size_t{blockDim.x} + threadIdx.x; a < NK; a += size_t{gridDim.x} * blockDim.x) {
    const int32_t e = expert_idx[a];
    if (e < 0 || e >= E) {
      slot_of[a] = -1;
      continue;
    }
    const int32_t rank = chunk_offsets[(a / kChunk) * E + e] + slot_of[a];
    if (rank < counts[e]) {
      const int32_t r = start[e] + rank;
      slot_of[a] = r;
      token_of[r] = static_cast<int32_t>(a / static_cast<size_t>(K));
    } else {
      slot_of[a] = -1;
    }
  }
}

// ---- gather / combine ----

__global__ void gather_kernel(float* out, const float* x, const int32_t* token_of, size_t rows, size_t C) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < rows * C; i += size_t{gridDim.x} * blockDim.x) {
    const size_t r = i / C, c = i % C;
    out[i] = x[static_cast<size_t>(token_of[r]) * C + c];
  }
}

// One thread per dx element: 0, then + each kept slot's value, j in order (the CPU's order).
__global__ void gather_backward_kernel(float* dx, const float* dxp, const int32_t* slot_of, size_t N, int K,
                                       size_t C) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < N * C; i += size_t{gridDim.x} * blockDim.x) {
    const size_t n = i / C, c = i % C;
    float d = 0.0f;
    for (int j = 0; j < K; ++j) {
      const int32_t s = slot_of[n * K + j];
      if (s >= 0) d += dxp[static_cast<size_t>(s) * C + c];
    }
    dx[i] = d;
  }
}

__global__ void combine_kernel(float* y, const float* expert_out, const float* gates, const int32_t* slot_of,
                               size_t N, int K, size_t C) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < N * C; i += size_t{gridDim.x} * blockDim.x) {
    const size_t n = i / C, c = i % C;
    float out = 0.0f;
    for (int j = 0; j < K; ++j) {
      const size_t a = n * K + j;
      const int32_t s = slot_of[a];
      if (s >= 0) out += gates[a] * expert_out[static_cast<size_t>(s) * C + c];
    }
    y[i] = out;
  }
}

// One warp per assignment (n, j): lanes stride over C, writing dexpert_out (coalesced) and
// summing their share of the dot; the lanes' partials are combined by a fixed xor tree.
__global__ void combine_backward_kernel(float* dexpert_out, float* dgates, const float* dy, const float* expert_out,
                                        const float* gates, const int32_t* slot_of, size_t NK, int K, size_t C) {
  const int lane = threadIdx.x % 32;
  const size_t warps = size_t{gridDim.x} * blockDim.x / 32;
  for (size_t a = (blockIdx.x * size_t{blockDim.x} + threadIdx.x) / 32; a < NK; a += warps) {
    const int32_t s = slot_of[a];
    if (s < 0) {  // uniform over the warp
      if (lane == 0) dgates[a] = 0.0f;
      continue;
    }
    const float* d = dy + (a / K) * C;
    const size_t row = static_cast<size_t>(s) * C;
    const float g = gates[a];
    float dot = 0.0f;
    for (size_t c = lane; c < C; c += 32) {
      dexpert_out[row + c] = g * d[c];
      dot += d[c] * expert_out[row + c];
    }
    for (int off = 16; off > 0; off /= 2) dot += __shfl_xor_sync(kFullMask, dot, off);
    if (lane == 0) dgates[a] = dot;
  }
}

// ---- router mass per expert ----

// Block (32, kSumRowsY): x = expert within a tile of 32 (coalesced reads of a probs row), y = row
// segment. partial[seg·E + e] = Σ over the segment's rows, in row order, in double.
constexpr int kSumRowsY = 8;
constexpr int kMaxSumSegments = 256;

__global__ void prob_partial_sums_kernel(double* partial, const float* probs, int N, int E, int rows_per_seg) {
  const int e = blockIdx.x * 32 + threadIdx.x;
  const int seg = blockIdx.y * kSumRowsY + threadIdx.y;
  if (e >= E) return;
  const int n0 = seg * rows_per_seg, n1 = N - n0 < rows_per_seg ? N : n0 + rows_per_seg;
  double s = 0.0;
  for (int n = n0; n < n1; ++n) s += probs[static_cast<size_t>(n) * E + e];
  partial[static_cast<size_t>(seg) * E + e] = s;
}

__global__ void prob_sums_finish_kernel(float* sums, const double* partial, int segments, int E) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  double s = 0.0;
  for (int seg = 0; seg < segments; ++seg) s += partial[static_cast<size_t>(seg) * E + e];
  sums[e] = static_cast<float>(static_cast<double>(sums[e]) + s);
}

}  // namespace

void CudaOps::moe_route(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits,
                        const float* bias, int N, int E, int K, bool renormalize) {
  if (N <= 0) return;
  route_kernel<<<blocks_for(N), kThreads, 0, stream_>>>(probs, lse, expert_idx, gates, logits, bias, N, E, K,
                                                        renormalize);
  ECO_CUDA_CHECK_LAUNCH("route_kernel");
}

void CudaOps::moe_dispatch_plan(int32_t* counts, int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx,
                                int N, int K, int E, int capacity) {
  if (E <= 0) return;
  if (E > kMaxPlanExperts)
    throw Error("moe_dispatch_plan on CUDA supports at most " + std::to_string(kMaxPlanExperts) + " experts, got " +
                std::to_string(E) + ": use fewer experts");
  const size_t NK = N > 0 && K > 0 ? static_cast<size_t>(N) * K : 0;
  const int chunks = static_cast<int>((NK + kChunk - 1) / kChunk);
  // Scratch: the chunks' per-expert counts, then the experts' first rows.
  static_assert(sizeof(float) == sizeof(int32_t));
  int32_t* chunk_counts = reinterpret_cast<int32_t*>(scratch_floats((static_cast<size_t>(chunks) + 1) * E));
  int32_t* start = chunk_counts + static_cast<size_t>(chunks) * E;
  if (chunks > 0) {
    plan_chunk_rank_kernel<<<chunks, kChunk, E * sizeof(int32_t), stream_>>>(slot_of, chunk_counts, expert_idx, NK,
                                                                            E);
    ECO_CUDA_CHECK_LAUNCH("plan_chunk_rank_kernel");
  }
  const unsigned scan_blocks = static_cast<unsigned>((static_cast<size_t>(E) * 32 + kThreads - 1) / kThreads);
  plan_expert_scan_kernel<<<scan_blocks, kThreads, 0, stream_>>>(counts, chunk_counts, chunks, E, capacity);
  ECO_CUDA_CHECK_LAUNCH("plan_expert_scan_kernel");
  if (NK == 0) return;
  plan_expert_start_kernel<<<1, 1, 0, stream_>>>(start, counts, E);
  ECO_CUDA_CHECK_LAUNCH("plan_expert_start_kernel");
  plan_place_kernel<<<blocks_for(NK), kThreads, 0, stream_>>>(slot_of, token_of, expert_idx, chunk_counts, start,
                                                              counts, NK, K, E);
  ECO_CUDA_CHECK_LAUNCH("plan_place_kernel");
}

void CudaOps::moe_gather(float* out, const float* x, const int32_t* token_of, int rows, int C) {
  const size_t n = rows > 0 && C > 0 ? static_cast<size_t>(rows) * C : 0;
  if (n == 0) return;
  gather_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(out, x, token_of, rows, C);
  ECO_CUDA_CHECK_LAUNCH("gather_kernel");
}

void CudaOps::moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_of, int N, int K, int C) {
  const size_t n = N > 0 && C > 0 ? static_cast<size_t>(N) * C : 0;
  if (n == 0) return;
  gather_backward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(dx, dxp, slot_of, N, K, C);
  ECO_CUDA_CHECK_LAUNCH("gather_backward_kernel");
}

void CudaOps::moe_combine(float* y, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K,
                          int C) {
  const size_t n = N > 0 && C > 0 ? static_cast<size_t>(N) * C : 0;
  if (n == 0) return;
  combine_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(y, expert_out, gates, slot_of, N, K, C);
  ECO_CUDA_CHECK_LAUNCH("combine_kernel");
}

void CudaOps::moe_combine_backward(float* dexpert_out, float* dgates, const float* dy, const float* expert_out,
                                   const float* gates, const int32_t* slot_of, int N, int K, int C) {
  const size_t NK = N > 0 && K > 0 ? static_cast<size_t>(N) * K : 0;
  if (NK == 0) return;
  combine_backward_kernel<<<blocks_for(NK * 32), kThreads, 0, stream_>>>(dexpert_out, dgates, dy, expert_out, gates,
                                                                         slot_of, NK, K, C > 0 ? C : 0);
  ECO_CUDA_CHECK_LAUNCH("combine_backward_kernel");
}

void CudaOps::moe_router_backward(float* dlogits, const float* probs, const float* lse, const int32_t* expert_idx,
                                  const float* gates, const float* dgates, const int32_t* routed, float aux_scale,
                                  float z_scale, int N, int E, int K, bool renormalize) {
  if (N <= 0) return;
  router_backward_kernel<<<blocks_for(N), kThreads, 0, stream_>>>(dlogits, probs, lse, expert_idx, gates, dgates,
                                                                  routed, aux_scale, z_scale, N, E, K, renormalize);
  ECO_CUDA_CHECK_LAUNCH("router_backward_kernel");
}

void CudaOps::moe_accumulate_prob_sums(float* sums, const float* probs, int N, int E) {
  if (E <= 0 || N <= 0) return;  // sums += 0
  // At least 64 rows per segment, at most kMaxSumSegments segments, a whole number of block rows.
  int segments = std::min(kMaxSumSegments, (N + 63) / 64);
  segments = (segments + kSumRowsY - 1) / kSumRowsY * kSumRowsY;
  const int rows_per_seg = (N + segments - 1) / segments;
  double* partial = reinterpret_cast<double*>(scratch_floats(2 * static_cast<size_t>(segments) * E));
  const dim3 grid(static_cast<unsigned>((E + 31) / 32), static_cast<unsigned>(segments / kSumRowsY));
  prob_partial_sums_kernel<<<grid, dim3(32, kSumRowsY), 0, stream_>>>(partial, probs, N, E, rows_per_seg);
  ECO_CUDA_CHECK_LAUNCH("prob_partial_sums_kernel");
  prob_sums_finish_kernel<<<blocks_for(E), kThreads, 0, stream_>>>(sums, partial, segments, E);
  ECO_CUDA_CHECK_LAUNCH("prob_sums_finish_kernel");
}

}  // namespace eco::cuda

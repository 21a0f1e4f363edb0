#pragma once
// The narrow ops interface: every kernel the dense GPT needs, one forward/backward pair per layer,
// plus buffer management. The model (src/model/gpt.cpp) is written once against it; src/cpu
// implements it with OpenBLAS + OpenMP, a CUDA backend implements the same calls on the device.
//
// Conventions (all tensors row-major, fp32, pointers are buffers of this backend, no ownership):
//   N = B*T rows (tokens); C = channels; OC = output features.
//   Parameter gradients always ACCUMULATE (+=), so gradient accumulation over micro-batches and a
//   tied embedding/head are free.
//   Input gradients are OVERWRITTEN (=), except where noted "+=": the norms and the residual add
//   add into their input gradient, because that input is the residual stream whose gradient the
//   model keeps in one buffer across layers (as llm.c does).
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/ops_state.h"

namespace eco {

class Ops {
 public:
  virtual ~Ops() = default;

  // ---- Buffers (bytes; 64-byte aligned; contents undefined after alloc) ----
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  virtual void fill_zero(void* p, size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // buffer to buffer
  float* alloc_floats(size_t n) { return static_cast<float*>(alloc(n * sizeof(float))); }
  // One line for logs: "cpu (2 threads)", "cuda:0 NVIDIA H200 (139.8 GiB)".
  virtual std::string describe() const = 0;
  int32_t* alloc_ints(size_t n) { return static_cast<int32_t*>(alloc(n * sizeof(int32_t))); }

  // ---- Embedding: out[b,t,:] = wte[tok[b,t],:] + wpe[t,:]  (wpe == nullptr: no learned positions) ----
  virtual void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                                 int C) = 0;
  // dwte += scatter of dout by token id; dwpe += sum over the batch (dwpe may be nullptr).
  virtual void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                                  int C) = 0;

  // ---- LayerNorm over the last dim: out = (x-mean)*rstd*w + b; saves mean[N], rstd[N] ----
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                 const float* bias, int N, int C, float eps) = 0;
  // dinp +=, dweight +=, dbias +=.
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* weight, const float* mean, const float* rstd, int N, int C) = 0;

  // ---- RMSNorm: out = x*rstd*w with rstd = 1/sqrt(mean(x²)+eps); saves rstd[N] ----
  virtual void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                               float eps) = 0;
  // dinp +=, dweight +=.
  virtual void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                                const float* weight, const float* rstd, int N, int C) = 0;

  // ---- Linear: out[N,OC] = inp[N,C] · W[OC,C]ᵀ + bias[OC]  (bias may be nullptr; W as llm.c) ----
  virtual void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                              int OC) = 0;
  // dinp = dout·W (skipped if dinp == nullptr); dweight += doutᵀ·inp; dbias += Σ_rows dout (if not null).
  virtual void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, int N, int C, int OC) = 0;

  // ---- Causal multi-head attention from the fused qkv[B,T,3C] (q | k | v, head h at h*C/NH) ----
  // out[B,T,C]; `saved` holds what this backend keeps for the backward, attention_saved_floats()
  // floats: the CPU saves the softmax probabilities [B,NH,T,T] (zero above the diagonal), the GPU
  // only the log-sum-exp of each row [B,NH,T] and recomputes the rest (flash-style, O(T) memory).
  virtual size_t attention_saved_floats(int B, int T, int NH) const = 0;
  virtual void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) = 0;
  // dqkv = gradient w.r.t. qkv (overwritten).
  virtual void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T,
                                  int C, int NH) = 0;

  // ---- RoPE, in place on the first n_heads*head_dim channels of each row (rows are `row_stride`
  // floats apart; row b*T+t has position t). Pairs (i, i+head_dim/2) rotate by angle t·θ_i;
  // cos/sin are tables [max_T, head_dim/2]. The model passes n_heads = 2*NH to rotate q and k. ----
  virtual void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                            int head_dim) = 0;
  // In place: dx ← Rᵀ dx (the rotation's transpose).
  virtual void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride,
                             int n_heads, int head_dim) = 0;

  // ---- GELU, tanh approximation (GPT-2), elementwise over n ----
  virtual void gelu_forward(float* out, const float* inp, size_t n) = 0;
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) = 0;

  // ---- SwiGLU: inp[N,2H] = [gate | up]; out[N,H] = silu(gate) * up ----
  virtual void swiglu_forward(float* out, const float* inp, int N, int H) = 0;
  virtual void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) = 0;

  // ---- Residual: out = a + b; backward da += dout, db += dout ----
  virtual void residual_forward(float* out, const float* a, const float* b, size_t n) = 0;
  virtual void residual_backward(float* da, float* db, const float* dout, size_t n) = 0;

  // ---- Softmax + cross-entropy over logits[N,Vp]; only the first V columns are classes, the
  // padding columns are ignored (their gradient is 0). targets[N] in [0,V). ----
  // losses[N] = -log softmax(logits)[target]; lse[N] = log Σ exp (saved for backward).
  virtual void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N,
                                    int V, int Vp) = 0;
  // dlogits = dloss · (softmax − onehot(target)); dlogits may alias logits (in place).
  virtual void crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                                     float dloss, int N, int V, int Vp) = 0;

  // ---- Sparse MoE: routing, dispatch and combine (N tokens, E experts, top K) ----
  // Every output is written by index (no atomics), so results do not depend on thread timing.
  // probs[N,E] = softmax(logits[N,E]); lse[N] = log Σ exp(logits). A token's K experts are the K
  // largest probs[n,e] + bias[e] (bias may be nullptr: it changes the selection only), in
  // descending order, ties to the lower expert; gates[n,j] = probs[n, idx[n,j]], divided by the
  // K selected probabilities' sum when renormalize.
  virtual void moe_route(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits,
                         const float* bias, int N, int E, int K, bool renormalize) = 0;
  // The dispatch plan. Assignments (n, j) are grouped by expert, each expert's in token order.
  // counts[e] = rows expert e keeps: all of them (capacity 0, dropless) or the first `capacity`
  // in token order; counts[E + e] = assignments routed to e before any drop. The kept rows are
  // laid out expert after expert: row r holds token token_of[r]; slot_of[n*K+j] = the row of
  // assignment (n, j), or -1 when it was dropped. token_of needs room for N*K rows.
  virtual void moe_dispatch_plan(int32_t* counts, int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx,
                                 int N, int K, int E, int capacity) = 0;
  // out[r,:] = x[token_of[r],:] for r < rows.
  virtual void moe_gather(float* out, const float* x, const int32_t* token_of, int rows, int C) = 0;
  // dx[n,:] = Σ_j dxp[slot_of[n*K+j],:] over the kept slots, j in order (overwritten; 0 if none).
  virtual void moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_of, int N, int K, int C) = 0;
  // y[n,:] = Σ_j gates[n,j]·expert_out[slot_of[n*K+j],:] over the kept slots, j in order (overwritten).
  virtual void moe_combine(float* y, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K,
                           int C) = 0;
  // dexpert_out[slot,:] = gates[n,j]·dy[n,:] for every kept slot (other rows untouched);
  // dgates[n,j] = Σ_c dy[n,c]·expert_out[slot,c], or 0 when dropped.
  virtual void moe_combine_backward(float* dexpert_out, float* dgates, const float* dy, const float* expert_out,
                                    const float* gates, const int32_t* slot_of, int N, int K, int C) = 0;
  // dlogits[N,E] (overwritten) through the softmax from
  //   dprobs[n,e] = gate gradient + aux_scale·routed[e]   (routed = counts + E of the plan)
  // where the gate gradient at e = idx[n,j] is dgates[n,j], or with renormalize
  // (dgates[n,j] − Σ_i dgates[n,i]·gates[n,i]) / Σ_i probs[n,idx[n,i]]; then
  //   dlogits[n,e] = probs[n,e]·(dprobs[n,e] − Σ_e' probs[n,e']·dprobs[n,e']) + z_scale·lse[n]·probs[n,e].
  virtual void moe_router_backward(float* dlogits, const float* probs, const float* lse, const int32_t* expert_idx,
                                   const float* gates, const float* dgates, const int32_t* routed, float aux_scale,
                                   float z_scale, int N, int E, int K, bool renormalize) = 0;
  // sums[e] += Σ_n probs[n,e], n in order (the router's mass per expert, for the aux loss value).
  virtual void moe_accumulate_prob_sums(float* sums, const float* probs, int N, int E) = 0;

  // ---- Quantized operands (codes + scales in backend memory; ops_state.h) ----
  // Rows [row_begin, row_end) of q from the fp32 rows x (x points at row row_begin): fresh scales
  // from the rows' absmax, then codes rounded to nearest or stochastically (SR keyed by *key and the
  // flat index in the whole tensor). If x holds NaN/Inf, q is left as it was and *bad_count (a
  // backend int64, may be nullptr) grows by their number. The range must be self-contained for
  // the granularity (any rows per-row; 128-row bands for 128x128 blocks; all rows per-tensor).
  virtual void quantize_rows(const QuantRef& q, size_t row_begin, size_t row_end, const float* x, Rounding rounding,
                             const RandomKey* key, int64_t* bad_count) = 0;
  // out (rows [row_begin, row_end) of q, row-major fp32) = decode(code)·scale.
  virtual void dequantize_rows(float* out, const QuantRef& q, size_t row_begin, size_t row_end) = 0;
  // out[N,OC] = dequant(a)[N,K] · dequant(w)[OC,K]ᵀ + bias: both operands quantized with one scale
  // per row (the GPU runs an FP8 GEMM; the CPU dequantizes and multiplies in fp32, which is exact
  // for these operands up to the fp32 accumulation).
  virtual void quantized_matmul_forward(float* out, const QuantRef& a, const QuantRef& w, const float* bias, int N,
                                        int K, int OC) = 0;

  // ---- Optimizer and reductions: the step's state never leaves the backend ----
  virtual void optimizer_step(const OptimStepArgs& args) = 0;
  // *acc (backend double) += Σ x[i]² over n, summed in double.
  virtual void accumulate_sum_squares(double* acc, const float* x, size_t n) = 0;
  // *acc (backend double) += (double)(float)(Σ x[i] / n), the mean in double rounded to float (a
  // micro-batch's mean loss, as forward() returns it).
  virtual void accumulate_mean(double* acc, const float* x, size_t n) = 0;
};

}  // namespace eco

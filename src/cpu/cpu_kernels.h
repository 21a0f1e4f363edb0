#pragma once
// The CPU kernels behind CpuOps, one file per layer (cpu_matmul.cpp, cpu_attention.cpp, ...).
// Same signatures and conventions as the ops interface (src/model/ops.h); CpuOps adds timing.
#include <cstddef>
#include <cstdint>

namespace eco::cpu {

// OpenBLAS's own thread pool must stay idle while OpenMP threads call it (cpu_ops.h explains
// why); call this outside any parallel region before a region that calls BLAS.
void blas_single_threaded();

// Row-major C = alpha·op(A)·op(B) + beta·C through OpenBLAS, split across the OpenMP team along
// the larger of M and N (each thread owns whole output rows/columns and the full K, so the result
// does not depend on scheduling). Called inside a parallel region it runs on the calling thread.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc);

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC);

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C,
                        int NH);

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int N, int C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C);
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C);

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C);

void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                  int head_dim);
void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                   int head_dim);

void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n);
void swiglu_forward(float* out, const float* inp, int N, int H);
void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H);
void residual_forward(float* out, const float* a, const float* b, size_t n);
void residual_backward(float* da, float* db, const float* dout, size_t n);

void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N, int V,
                          int Vp);
void crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, float dloss,
                           int N, int V, int Vp);

void moe_route(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits, const float* bias,
               int N, int E, int K, bool renormalize);
void moe_dispatch_plan(int32_t* counts, int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx, int N, int K,
                       int E, int capacity);
void moe_gather(float* out, const float* x, const int32_t* token_of, int rows, int C);
void moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_of, int N, int K, int C);
void moe_combine(float* y, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K, int C);
void moe_combine_backward(float* dexpert_out, float* dgates, const float* dy, const float* expert_out,
                          const float* gates, const int32_t* slot_of, int N, int K, int C);
void moe_router_backward(float* dlogits, const float* probs, const float* lse, const int32_t* expert_idx,
                         const float* gates, const float* dgates, const int32_t* routed, float aux_scale, float z_scale,
                         int N, int E, int K, bool renormalize);
void moe_accumulate_prob_sums(float* sums, const float* probs, int N, int E);

}  // namespace eco::cpu

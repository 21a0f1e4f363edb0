#pragma once
// A debugging backend for backend developers: the CPU backend with every buffer it hands out made
// inaccessible (mprotect PROT_NONE) except while one of its own ops runs. Orchestration code that
// dereferences a backend pointer (the one thing device residency forbids, DESIGN.md §2) then
// crashes on the CPU exactly where it would read garbage on a GPU. Enabled for train.device = cpu
// by the environment variable ECO_BACKEND_GUARD=1 (src/train/backend.cpp); slow (two mprotect
// calls per buffer per op), meant for tests and debugging.
#include <cstddef>
#include <map>
#include <string>

#include "cpu/cpu_ops.h"

namespace eco {

class GuardedOps final : public Ops {
 public:
  explicit GuardedOps(int threads = -1);
  ~GuardedOps() override;

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void fill_zero(void* p, size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  std::string describe() const override;
  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C) override;
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C) override;
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias, int N, int C, float eps) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight, const float* mean, const float* rstd, int N, int C) override;
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) override;
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight, const float* rstd, int N, int C) override;
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight, int N, int C, int OC) override;
  size_t attention_saved_floats(int B, int T, int NH) const override;
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) override;
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C, int NH) override;
  void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads, int head_dim) override;
  void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads, int head_dim) override;
  void gelu_forward(float* out, const float* inp, size_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override;
  void swiglu_forward(float* out, const float* inp, int N, int H) override;
  void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) override;
  void residual_forward(float* out, const float* a, const float* b, size_t n) override;
  void residual_backward(float* da, float* db, const float* dout, size_t n) override;
  void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N, int V, int Vp) override;
  void crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, float dloss, int N, int V, int Vp) override;
  void moe_route(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits, const float* bias,
                 int N, int E, int K, bool renormalize) override;
  void moe_dispatch_plan(int32_t* counts, int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx, int N, int K,
                         int E, int capacity) override;
  void moe_gather(float* out, const float* x, const int32_t* token_of, int rows, int C) override;
  void moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_of, int N, int K, int C) override;
  void moe_combine(float* y, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K,
                   int C) override;
  void moe_combine_backward(float* dexpert_out, float* dgates, const float* dy, const float* expert_out,
                            const float* gates, const int32_t* slot_of, int N, int K, int C) override;
  void moe_router_backward(float* dlogits, const float* probs, const float* lse, const int32_t* expert_idx,
                           const float* gates, const float* dgates, const int32_t* routed, float aux_scale,
                           float z_scale, int N, int E, int K, bool renormalize) override;
  void moe_accumulate_prob_sums(float* sums, const float* probs, int N, int E) override;
  void quantize_rows(const QuantRef& q, size_t row_begin, size_t row_end, const float* x, Rounding rounding, const RandomKey* key, int64_t* bad_count) override;
  void dequantize_rows(float* out, const QuantRef& q, size_t row_begin, size_t row_end) override;
  void quantized_matmul_forward(float* out, const QuantRef& a, const QuantRef& w, const float* bias, int N, int K, int OC) override;
  void optimizer_step(const OptimStepArgs& args) override;
  void accumulate_sum_squares(double* acc, const float* x, size_t n) override;
  void accumulate_mean(double* acc, const float* x, size_t n) override;

 private:
  // Opens every buffer for the duration of one op.
  class Unlocked {
   public:
    explicit Unlocked(const GuardedOps& ops);
    ~Unlocked();

   private:
    const GuardedOps& ops_;
  };
  void protect_all(int prot) const;

  mutable CpuOps inner_;
  std::map<void*, size_t> regions_;  // mapping -> mapped bytes (whole pages)
  mutable int open_depth_ = 0;      // ops may call other ops (quantized GEMM -> matmul)
};

}  // namespace eco

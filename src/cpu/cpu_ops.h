#pragma once
// The CPU backend of the ops interface: host memory, GEMMs through OpenBLAS, everything else
// parallel with OpenMP. It is the test oracle and runs the embedded default.
//
// Threading: OpenMP owns all the cores. OpenBLAS (Debian's pthread build) is told to use ONE
// thread and each GEMM is split by us across the OpenMP team (each thread multiplies a block of
// rows or columns). Mixing OpenBLAS's own pool with OpenMP's oversubscribes: both pools busy-wait
// after their work, and on a 2-core machine each steals the other's core.
//
// Determinism: with a fixed thread count every op is bit-identical run to run — static schedules,
// no float atomics, and every reduction (bias, norm weights, position embeddings, the loss) runs
// in a fixed order. Every output element of a GEMM is computed by one thread over the full K.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/ops.h"

namespace eco {

// Profiling categories for the optional per-op timers.
enum class OpKind { Matmul, Attention, Norm, Embedding, Activation, Rope, Residual, CrossEntropy, Moe, Count };
const char* op_kind_name(OpKind k);

struct OpStats {
  double seconds = 0.0;
  double flops = 0.0;  // useful floating-point operations (GEMM multiply-adds count 2)
  int64_t calls = 0;
};

class CpuOps final : public Ops {
 public:
  // Sets OpenBLAS to one thread (see above). threads > 0 sets OpenMP's thread count, 0 = one per
  // core, < 0 leaves OpenMP as it is (tests).
  explicit CpuOps(int threads = -1);
  std::string describe() const override;
  size_t attention_saved_floats(int B, int T, int NH) const override;

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void fill_zero(void* p, size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;

  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                         int C) override;
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                          int C) override;
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int N, int C, float eps) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int N, int C) override;
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                       float eps) override;
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                        const float* rstd, int N, int C) override;
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                      int OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int N, int C, int OC) override;
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) override;
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C,
                          int NH) override;
  void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                    int head_dim) override;
  void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                     int head_dim) override;
  void gelu_forward(float* out, const float* inp, size_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override;
  void swiglu_forward(float* out, const float* inp, int N, int H) override;
  void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) override;
  void residual_forward(float* out, const float* a, const float* b, size_t n) override;
  void residual_backward(float* da, float* db, const float* dout, size_t n) override;
  void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N, int V,
                            int Vp) override;
  void crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                             float dloss, int N, int V, int Vp) override;

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
  void quantize_rows(const QuantRef& q, size_t row_begin, size_t row_end, const float* x, Rounding rounding,
                     const RandomKey* key, int64_t* bad_count) override;
  void dequantize_rows(float* out, const QuantRef& q, size_t row_begin, size_t row_end) override;
  void quantized_matmul_forward(float* out, const QuantRef& a, const QuantRef& w, const float* bias, int N, int K,
                                int OC) override;
  void optimizer_step(const OptimStepArgs& args) override;
  void accumulate_sum_squares(double* acc, const float* x, size_t n) override;
  void accumulate_mean(double* acc, const float* x, size_t n) override;

  // ---- Optional timing counters (off by default; a steady_clock read per op when on) ----
  void set_profiling(bool on) { profiling_ = on; }
  bool profiling() const { return profiling_; }
  void reset_stats() { stats_ = {}; }
  const OpStats& stats(OpKind k) const { return stats_[static_cast<int>(k)]; }
  // One line per category with calls, seconds, share of the total and GFLOP/s where counted.
  std::string stats_report() const;

 private:
  class Timer;  // RAII: adds elapsed time and flops to one category when profiling is on
  bool profiling_ = false;
  // Scratch of the quantized GEMM (dequantized operands) and of the master-free step (one panel).
  std::vector<float> operand_a_, operand_w_;
  std::vector<float> w_tmp_, d_tmp_, m_tmp_, q_tmp_;
  std::array<OpStats, static_cast<int>(OpKind::Count)> stats_{};
};

}  // namespace eco

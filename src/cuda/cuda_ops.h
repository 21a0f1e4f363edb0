#pragma once
// The CUDA backend of the ops interface: device memory, one stream, cuBLASLt GEMMs, hand-written
// kernels for everything else (src/cuda/*.cu, one file per family of ops). Every kernel has a CPU
// twin in src/cpu and a test in tests/cuda comparing the two. Built when nvcc is found; selected
// with train.device = cuda.
//
// Numerics: the library is compiled with --fmad=false, so element-wise kernels round every
// operation as the CPU does; transcendental functions (exp, tanh) come from CUDA's math library
// and may differ from glibc's in the last bit, which the tests state as their tolerance.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "core/error.h"
#include "model/ops.h"

namespace eco::cuda {

class CudaOps final : public Ops {
 public:
  // Selects `device`, creates the stream, the cuBLASLt handle and its workspace. eco::Error when
  // there is no such device.
  explicit CudaOps(int device = 0);
  ~CudaOps() override;
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

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

  // Waits for all queued work; copies to the host already synchronise.
  void synchronize();
  cudaStream_t stream() const { return stream_; }
  // Bytes the device allocator has handed out through this backend (for memory checks).
  size_t allocated_bytes() const { return allocated_bytes_; }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  size_t allocated_bytes_ = 0;
  std::map<void*, size_t> allocations_;
  // Scratch of the master-free optimizer step (grown on demand) and of the reductions' partials.
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  void* partials_ = nullptr;
  float* scratch_floats(size_t n);
  double* reduction_partials();
};

// How quantized_matmul_forward runs (or would run) this operand pair at this shape on `device`:
// "fp8 cuBLASLt (OUTER_VEC_32F)", "bf16 fallback: <why>", "fp32 (block scales)". For tests and
// benchmarks, which report the path next to their figures.
std::string quantized_matmul_path(int device, const QuantRef& a, const QuantRef& w, int N, int K, int OC);

}  // namespace eco::cuda

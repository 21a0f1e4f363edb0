// CpuOps: host buffers, and each op forwarded to its kernel (cpu_kernels.h) with optional timing.
#include "cpu/cpu_ops.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "cpu/cpu_kernels.h"

namespace eco {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Matmul: return "matmul";
    case OpKind::Attention: return "attention";
    case OpKind::Norm: return "norms";
    case OpKind::Embedding: return "embedding";
    case OpKind::Activation: return "gelu/swiglu";
    case OpKind::Rope: return "rope";
    case OpKind::Residual: return "residual";
    case OpKind::CrossEntropy: return "softmax/CE";
    case OpKind::Moe: return "moe routing";
    case OpKind::Count: break;
  }
  return "?";
}

class CpuOps::Timer {
 public:
  Timer(CpuOps& ops, OpKind kind, double flops) : ops_(ops), kind_(kind), flops_(flops) {
    if (ops_.profiling_) start_ = std::chrono::steady_clock::now();
  }
  ~Timer() {
    if (!ops_.profiling_) return;
    OpStats& s = ops_.stats_[static_cast<int>(kind_)];
    s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    s.flops += flops_;
    ++s.calls;
  }

 private:
  CpuOps& ops_;
  OpKind kind_;
  double flops_;
  std::chrono::steady_clock::time_point start_;
};

CpuOps::CpuOps(int threads) {
  cpu::blas_single_threaded();
  if (threads == 0) threads = omp_get_num_procs();
  if (threads > 0) omp_set_num_threads(threads);
}

std::string CpuOps::describe() const { return "cpu (" + std::to_string(omp_get_max_threads()) + " threads)"; }

size_t CpuOps::attention_saved_floats(int B, int T, int NH) const {
  return static_cast<size_t>(B) * NH * T * T;  // the probabilities
}

// ---- buffers ----

void* CpuOps::alloc(size_t bytes) {
  // 64-byte alignment: whole cache lines, and aligned vector loads for any ISA.
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "out of host memory allocating %.1f MiB; reduce the batch size or the model",
                  static_cast<double>(bytes) / (1 << 20));
    throw SystemError(msg);
  }
  return p;
}

void CpuOps::free(void* p) { std::free(p); }
void CpuOps::fill_zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
void CpuOps::copy_from_host(void* dst, const void* host_src, size_t bytes) { std::memcpy(dst, host_src, bytes); }
void CpuOps::copy_to_host(void* host_dst, const void* src, size_t bytes) { std::memcpy(host_dst, src, bytes); }
void CpuOps::copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }

// ---- layers ----

void CpuOps::embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                               int C) {
  Timer t(*this, OpKind::Embedding, 0);
  cpu::embedding_forward(out, tokens, wte, wpe, B, T, C);
}
void CpuOps::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                                int C) {
  Timer t(*this, OpKind::Embedding, 0);
  cpu::embedding_backward(dwte, dwpe, dout, tokens, B, T, C);
}
void CpuOps::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                               const float* bias, int N, int C, float eps) {
  Timer t(*this, OpKind::Norm, 0);
  cpu::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
}
void CpuOps::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                const float* weight, const float* mean, const float* rstd, int N, int C) {
  Timer t(*this, OpKind::Norm, 0);
  cpu::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void CpuOps::rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
  Timer t(*this, OpKind::Norm, 0);
  cpu::rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
}
void CpuOps::rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                              const float* rstd, int N, int C) {
  Timer t(*this, OpKind::Norm, 0);
  cpu::rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
}
void CpuOps::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                            int OC) {
  Timer t(*this, OpKind::Matmul, 2.0 * N * C * OC);
  cpu::matmul_forward(out, inp, weight, bias, N, C, OC);
}
void CpuOps::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                             const float* weight, int N, int C, int OC) {
  Timer t(*this, OpKind::Matmul, (dinp ? 4.0 : 2.0) * N * C * OC);
  cpu::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
}
void CpuOps::attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  // Two T×T×hs products per head (computed over the full square).
  Timer t(*this, OpKind::Attention, 4.0 * B * T * T * C);
  cpu::attention_forward(out, att, qkv, B, T, C, NH);
}
void CpuOps::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T,
                                int C, int NH) {
  Timer t(*this, OpKind::Attention, 8.0 * B * T * T * C);
  cpu::attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
}
void CpuOps::rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                          int head_dim) {
  Timer t(*this, OpKind::Rope, 0);
  cpu::rope_forward(x, cos, sin, B, T, row_stride, n_heads, head_dim);
}
void CpuOps::rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads,
                           int head_dim) {
  Timer t(*this, OpKind::Rope, 0);
  cpu::rope_backward(dx, cos, sin, B, T, row_stride, n_heads, head_dim);
}
void CpuOps::gelu_forward(float* out, const float* inp, size_t n) {
  Timer t(*this, OpKind::Activation, 0);
  cpu::gelu_forward(out, inp, n);
}
void CpuOps::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  Timer t(*this, OpKind::Activation, 0);
  cpu::gelu_backward(dinp, inp, dout, n);
}
void CpuOps::swiglu_forward(float* out, const float* inp, int N, int H) {
  Timer t(*this, OpKind::Activation, 0);
  cpu::swiglu_forward(out, inp, N, H);
}
void CpuOps::swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) {
  Timer t(*this, OpKind::Activation, 0);
  cpu::swiglu_backward(dinp, inp, dout, N, H);
}
void CpuOps::residual_forward(float* out, const float* a, const float* b, size_t n) {
  Timer t(*this, OpKind::Residual, 0);
  cpu::residual_forward(out, a, b, n);
}
void CpuOps::residual_backward(float* da, float* db, const float* dout, size_t n) {
  Timer t(*this, OpKind::Residual, 0);
  cpu::residual_backward(da, db, dout, n);
}
void CpuOps::crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N,
                                  int V, int Vp) {
  Timer t(*this, OpKind::CrossEntropy, 0);
  cpu::crossentropy_forward(losses, lse, logits, targets, N, V, Vp);
}
void CpuOps::crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                                   float dloss, int N, int V, int Vp) {
  Timer t(*this, OpKind::CrossEntropy, 0);
  cpu::crossentropy_backward(dlogits, logits, lse, targets, dloss, N, V, Vp);
}
void CpuOps::moe_route(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits, const float* bias, int N, int E, int K, bool renormalize) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_route(probs, lse, expert_idx, gates, logits, bias, N, E, K, renormalize);
}
void CpuOps::moe_dispatch_plan(int32_t* counts, int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx, int N, int K, int E, int capacity) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_dispatch_plan(counts, slot_of, token_of, expert_idx, N, K, E, capacity);
}
void CpuOps::moe_gather(float* out, const float* x, const int32_t* token_of, int rows, int C) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_gather(out, x, token_of, rows, C);
}
void CpuOps::moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_of, int N, int K, int C) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_gather_backward(dx, dxp, slot_of, N, K, C);
}
void CpuOps::moe_combine(float* y, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K, int C) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_combine(y, expert_out, gates, slot_of, N, K, C);
}
void CpuOps::moe_combine_backward(float* dexpert_out, float* dgates, const float* dy, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K, int C) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_combine_backward(dexpert_out, dgates, dy, expert_out, gates, slot_of, N, K, C);
}
void CpuOps::moe_router_backward(float* dlogits, const float* probs, const float* lse, const int32_t* expert_idx, const float* gates, const float* dgates, const int32_t* routed, float aux_scale, float z_scale, int N, int E, int K, bool renormalize) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_router_backward(dlogits, probs, lse, expert_idx, gates, dgates, routed, aux_scale, z_scale, N, E, K, renormalize);
}
void CpuOps::moe_accumulate_prob_sums(float* sums, const float* probs, int N, int E) {
  Timer t(*this, OpKind::Moe, 0);
  cpu::moe_accumulate_prob_sums(sums, probs, N, E);
}

std::string CpuOps::stats_report() const {
  double total = 0.0;
  for (const OpStats& s : stats_) total += s.seconds;
  std::string out;
  char line[160];
  for (int k = 0; k < static_cast<int>(OpKind::Count); ++k) {
    const OpStats& s = stats_[k];
    if (s.calls == 0) continue;
    std::snprintf(line, sizeof line, "  %-12s %8lld calls %9.3f s %5.1f%%", op_kind_name(static_cast<OpKind>(k)),
                  static_cast<long long>(s.calls), s.seconds, total > 0 ? 100.0 * s.seconds / total : 0.0);
    out += line;
    if (s.flops > 0 && s.seconds > 0) {
      std::snprintf(line, sizeof line, " %8.1f GFLOP/s", s.flops / s.seconds * 1e-9);
      out += line;
    }
    out += "\n";
  }
  std::snprintf(line, sizeof line, "  %-12s %8s       %9.3f s", "total", "", total);
  out += line;
  return out;
}

}  // namespace eco

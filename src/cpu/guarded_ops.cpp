#include "cpu/guarded_ops.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "core/error.h"

namespace eco {

GuardedOps::GuardedOps(int threads) : inner_(threads) {}

GuardedOps::~GuardedOps() {
  for (auto& [p, bytes] : regions_) ::munmap(p, bytes);
}

void GuardedOps::protect_all(int prot) const {
  for (const auto& [p, bytes] : regions_)
    if (::mprotect(p, bytes, prot) != 0) throw SystemError(std::string("GuardedOps: mprotect: ") + std::strerror(errno));
}

GuardedOps::Unlocked::Unlocked(const GuardedOps& ops) : ops_(ops) {
  if (ops_.open_depth_++ == 0) ops_.protect_all(PROT_READ | PROT_WRITE);
}

GuardedOps::Unlocked::~Unlocked() {
  if (--ops_.open_depth_ == 0) ops_.protect_all(PROT_NONE);
}

void* GuardedOps::alloc(size_t bytes) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t mapped = (bytes + page - 1) / page * page + (bytes == 0 ? page : 0);
  void* p = ::mmap(nullptr, mapped, open_depth_ ? PROT_READ | PROT_WRITE : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  regions_[p] = mapped;
  return p;
}

void GuardedOps::free(void* p) {
  if (!p) return;
  auto it = regions_.find(p);
  if (it == regions_.end()) throw Error("GuardedOps::free: not a buffer of this backend");
  ::munmap(it->first, it->second);
  regions_.erase(it);
}

void GuardedOps::fill_zero(void* p, size_t bytes) {
  const Unlocked open(*this);
  inner_.fill_zero(p, bytes);
}

void GuardedOps::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  const Unlocked open(*this);
  inner_.copy_from_host(dst, host_src, bytes);
}

void GuardedOps::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  const Unlocked open(*this);
  inner_.copy_to_host(host_dst, src, bytes);
}

void GuardedOps::copy(void* dst, const void* src, size_t bytes) {
  const Unlocked open(*this);
  inner_.copy(dst, src, bytes);
}

std::string GuardedOps::describe() const {
  return "guarded " + inner_.describe();
}

void GuardedOps::embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C) {
  const Unlocked open(*this);
  inner_.embedding_forward(out, tokens, wte, wpe, B, T, C);
}

void GuardedOps::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C) {
  const Unlocked open(*this);
  inner_.embedding_backward(dwte, dwpe, dout, tokens, B, T, C);
}

void GuardedOps::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias, int N, int C, float eps) {
  const Unlocked open(*this);
  inner_.layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
}

void GuardedOps::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight, const float* mean, const float* rstd, int N, int C) {
  const Unlocked open(*this);
  inner_.layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}

void GuardedOps::rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
  const Unlocked open(*this);
  inner_.rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
}

void GuardedOps::rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight, const float* rstd, int N, int C) {
  const Unlocked open(*this);
  inner_.rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
}

void GuardedOps::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
  const Unlocked open(*this);
  inner_.matmul_forward(out, inp, weight, bias, N, C, OC);
}

void GuardedOps::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight, int N, int C, int OC) {
  const Unlocked open(*this);
  inner_.matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
}

size_t GuardedOps::attention_saved_floats(int B, int T, int NH) const {
  return inner_.attention_saved_floats(B, T, NH);
}

void GuardedOps::attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const Unlocked open(*this);
  inner_.attention_forward(out, att, qkv, B, T, C, NH);
}

void GuardedOps::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C, int NH) {
  const Unlocked open(*this);
  inner_.attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
}

void GuardedOps::rope_forward(float* x, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads, int head_dim) {
  const Unlocked open(*this);
  inner_.rope_forward(x, cos, sin, B, T, row_stride, n_heads, head_dim);
}

void GuardedOps::rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int row_stride, int n_heads, int head_dim) {
  const Unlocked open(*this);
  inner_.rope_backward(dx, cos, sin, B, T, row_stride, n_heads, head_dim);
}

void GuardedOps::gelu_forward(float* out, const float* inp, size_t n) {
  const Unlocked open(*this);
  inner_.gelu_forward(out, inp, n);
}

void GuardedOps::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  const Unlocked open(*this);
  inner_.gelu_backward(dinp, inp, dout, n);
}

void GuardedOps::swiglu_forward(float* out, const float* inp, int N, int H) {
  const Unlocked open(*this);
  inner_.swiglu_forward(out, inp, N, H);
}

void GuardedOps::swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) {
  const Unlocked open(*this);
  inner_.swiglu_backward(dinp, inp, dout, N, H);
}

void GuardedOps::residual_forward(float* out, const float* a, const float* b, size_t n) {
  const Unlocked open(*this);
  inner_.residual_forward(out, a, b, n);
}

void GuardedOps::residual_backward(float* da, float* db, const float* dout, size_t n) {
  const Unlocked open(*this);
  inner_.residual_backward(da, db, dout, n);
}

void GuardedOps::crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int N, int V, int Vp) {
  const Unlocked open(*this);
  inner_.crossentropy_forward(losses, lse, logits, targets, N, V, Vp);
}

void GuardedOps::crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, float dloss, int N, int V, int Vp) {
  const Unlocked open(*this);
  inner_.crossentropy_backward(dlogits, logits, lse, targets, dloss, N, V, Vp);
}

void GuardedOps::moe_route(float* probs, float* lse, int32_t* expert_idx, float* gates, const float* logits, const float* bias, int N, int E, int K, bool renormalize) {
  const Unlocked open(*this);
  inner_.moe_route(probs, lse, expert_idx, gates, logits, bias, N, E, K, renormalize);
}

void GuardedOps::moe_dispatch_plan(int32_t* counts, int32_t* slot_of, int32_t* token_of, const int32_t* expert_idx, int N, int K, int E, int capacity) {
  const Unlocked open(*this);
  inner_.moe_dispatch_plan(counts, slot_of, token_of, expert_idx, N, K, E, capacity);
}

void GuardedOps::moe_gather(float* out, const float* x, const int32_t* token_of, int rows, int C) {
  const Unlocked open(*this);
  inner_.moe_gather(out, x, token_of, rows, C);
}

void GuardedOps::moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_of, int N, int K, int C) {
  const Unlocked open(*this);
  inner_.moe_gather_backward(dx, dxp, slot_of, N, K, C);
}

void GuardedOps::moe_combine(float* y, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K, int C) {
  const Unlocked open(*this);
  inner_.moe_combine(y, expert_out, gates, slot_of, N, K, C);
}

void GuardedOps::moe_combine_backward(float* dexpert_out, float* dgates, const float* dy, const float* expert_out, const float* gates, const int32_t* slot_of, int N, int K, int C) {
  const Unlocked open(*this);
  inner_.moe_combine_backward(dexpert_out, dgates, dy, expert_out, gates, slot_of, N, K, C);
}

void GuardedOps::moe_router_backward(float* dlogits, const float* probs, const float* lse, const int32_t* expert_idx, const float* gates, const float* dgates, const int32_t* routed, float aux_scale, float z_scale, int N, int E, int K, bool renormalize) {
  const Unlocked open(*this);
  inner_.moe_router_backward(dlogits, probs, lse, expert_idx, gates, dgates, routed, aux_scale, z_scale, N, E, K, renormalize);
}

void GuardedOps::moe_accumulate_prob_sums(float* sums, const float* probs, int N, int E) {
  const Unlocked open(*this);
  inner_.moe_accumulate_prob_sums(sums, probs, N, E);
}

void GuardedOps::quantize_rows(const QuantRef& q, size_t row_begin, size_t row_end, const float* x, Rounding rounding, const RandomKey* key, int64_t* bad_count) {
  const Unlocked open(*this);
  inner_.quantize_rows(q, row_begin, row_end, x, rounding, key, bad_count);
}

void GuardedOps::dequantize_rows(float* out, const QuantRef& q, size_t row_begin, size_t row_end) {
  const Unlocked open(*this);
  inner_.dequantize_rows(out, q, row_begin, row_end);
}

void GuardedOps::quantized_matmul_forward(float* out, const QuantRef& a, const QuantRef& w, const float* bias, int N, int K, int OC) {
  const Unlocked open(*this);
  inner_.quantized_matmul_forward(out, a, w, bias, N, K, OC);
}

void GuardedOps::optimizer_step(const OptimStepArgs& args) {
  const Unlocked open(*this);
  inner_.optimizer_step(args);
}

void GuardedOps::accumulate_sum_squares(double* acc, const float* x, size_t n) {
  const Unlocked open(*this);
  inner_.accumulate_sum_squares(acc, x, n);
}

void GuardedOps::accumulate_mean(double* acc, const float* x, size_t n) {
  const Unlocked open(*this);
  inner_.accumulate_mean(acc, x, n);
}

}  // namespace eco

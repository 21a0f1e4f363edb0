// The forward and backward passes, layer by layer over the ops interface.
//
// Backward keeps the gradient of the residual stream in one buffer (dres) for all layers: the
// residual add passes it through unchanged, and each norm's backward adds its input gradient into
// it, so after a block's backward dres holds the gradient w.r.t. the block's input.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/gpt.h"

namespace eco {

// ---- linears: the hooks the FP8 work substitutes ----

const float* GPT::linear_weight(size_t w) const {
  if (!weight_source_ || !tensors_[w].quantizable) return param(w);
  weight_source_->linear_weight_values(w, weight_scratch_);
  return weight_scratch_;
}

// NaN/Inf inputs are not counted here: they reach the loss (or the gradient norm), where the
// trainer detects them and skips the step.
QuantRef GPT::operand_ref(int rows, int cols, QuantFormat format) const {
  QuantRef q;
  q.codes = acts_.operand_codes;
  q.scales = acts_.operand_scales;
  q.rows = static_cast<size_t>(rows);
  q.cols = static_cast<size_t>(cols);
  q.format = format;
  q.granularity = ScaleGranularity::PerRow;
  return q;
}

const float* GPT::linear_input(const float* inp, size_t w, int rows) {
  if (!quant_.quantize_activations || !tensors_[w].quantizable) return inp;
  const QuantRef q = operand_ref(rows, linear_in(w), quant_.act_format);
  ops_.quantize_rows(q, 0, q.rows, inp, Rounding::RTN, nullptr, nullptr);
  ops_.dequantize_rows(acts_.input_q, q, 0, q.rows);
  return acts_.input_q;
}

const float* GPT::linear_output_grad(const float* dout, size_t w, int rows) {
  if (!quant_.quantize_output_grads || !tensors_[w].quantizable) return dout;
  const QuantRef q = operand_ref(rows, linear_out(w), QuantFormat::E5M2);
  ops_.quantize_rows(q, 0, q.rows, dout, Rounding::RTN, nullptr, nullptr);
  ops_.dequantize_rows(acts_.dout_q, q, 0, q.rows);
  return acts_.dout_q;
}

// With a quantized stored weight and quantized activations, the forward is one quantized GEMM of
// the two codes + scales (FP8 on the GPU); NaN/Inf inputs stay NaN/Inf in their codes and reach
// the loss, where the trainer skips the step.
void GPT::linear_forward(float* out, const float* inp, size_t w, size_t b, int N) {
  const QuantRef* wq = weight_source_ && tensors_[w].quantizable ? weight_source_->linear_weight_quant(w) : nullptr;
  if (wq && quant_.quantize_activations) {
    const QuantRef a = operand_ref(N, linear_in(w), quant_.act_format);
    ops_.quantize_rows(a, 0, a.rows, inp, Rounding::RTN, nullptr, nullptr);
    ops_.quantized_matmul_forward(out, a, *wq, param_or_null(b), N, linear_in(w), linear_out(w));
    return;
  }
  ops_.matmul_forward(out, linear_input(inp, w, N), linear_weight(w), param_or_null(b), N, linear_in(w),
                      linear_out(w));
}

// Straight-through estimator: the weight gradient uses the very operand the forward multiplied
// (recomputed bit for bit from the saved fp32 input), and the input gradient passes through the
// quantizer as if it were the identity.
void GPT::linear_backward(float* dinp, const float* dout, const float* inp, size_t w, size_t b, int N) {
  ops_.matmul_backward(dinp, grad(w), grad_or_null(b), linear_output_grad(dout, w, N), linear_input(inp, w, N),
                       linear_weight(w), N, linear_in(w), linear_out(w));
}

void GPT::mlp_forward(float* out, float* h, float* act, const float* inp, size_t fc, size_t fcb, size_t proj,
                      size_t projb, bool swiglu, int N) {
  linear_forward(h, inp, fc, fcb, N);
  const int hidden = linear_in(proj);
  if (swiglu) ops_.swiglu_forward(act, h, N, hidden);
  else ops_.gelu_forward(act, h, static_cast<size_t>(N) * hidden);
  linear_forward(out, act, proj, projb, N);
}

void GPT::mlp_backward(float* dinp, float* dh, float* dact, const float* dout, const float* inp, const float* h,
                       const float* act, size_t fc, size_t fcb, size_t proj, size_t projb, bool swiglu, int N) {
  linear_backward(dact, dout, act, proj, projb, N);
  const int hidden = linear_in(proj);
  if (swiglu) ops_.swiglu_backward(dh, h, dact, N, hidden);
  else ops_.gelu_backward(dh, h, dact, static_cast<size_t>(N) * hidden);
  linear_backward(dinp, dh, inp, fc, fcb, N);
}

// ---- norms: LayerNorm (gpt2) or RMSNorm (llama) ----

void GPT::norm_forward(float* out, float* mean, float* rstd, const float* inp, size_t w, size_t b, int N) {
  if (cfg_.arch == Arch::GPT2)
    ops_.layernorm_forward(out, mean, rstd, inp, param(w), param(b), N, cfg_.d_model, cfg_.norm_eps);
  else
    ops_.rmsnorm_forward(out, rstd, inp, param(w), N, cfg_.d_model, cfg_.norm_eps);
}

void GPT::norm_backward(float* dinp, const float* dout, const float* inp, const float* mean, const float* rstd,
                        size_t w, size_t b, int N) {
  if (cfg_.arch == Arch::GPT2)
    ops_.layernorm_backward(dinp, grad(w), grad(b), dout, inp, param(w), mean, rstd, N, cfg_.d_model);
  else
    ops_.rmsnorm_backward(dinp, grad(w), dout, inp, param(w), rstd, N, cfg_.d_model);
}

// ---- forward ----

float GPT::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  if (!run_forward(inputs, targets, B, T)) return std::numeric_limits<float>::quiet_NaN();
  const int N = B * T;
  std::vector<float> losses(N);
  ops_.copy_to_host(losses.data(), acts_.losses, N * sizeof(float));
  double sum = 0.0;  // in order, in double: the mean is the same whatever the thread count
  for (float v : losses) sum += v;
  return static_cast<float>(sum / N);
}

void GPT::forward_accumulate_loss(const int32_t* inputs, const int32_t* targets, int B, int T, double* loss_acc) {
  if (!targets) throw Error("GPT::forward_accumulate_loss needs targets");
  run_forward(inputs, targets, B, T);
  ops_.accumulate_mean(loss_acc, acts_.losses, static_cast<size_t>(B) * T);
}

bool GPT::run_forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  if (B < 1 || T < 1) throw ConfigError("forward: batch size and sequence length must be positive");
  if (T > cfg_.max_seq_len)
    throw ConfigError("sequence length " + std::to_string(T) + " exceeds model.max_seq_len (" +
                      std::to_string(cfg_.max_seq_len) + ")");
  const int N = B * T;
  const int V = cfg_.vocab_size;
  for (int i = 0; i < N; ++i) {
    const bool bad_in = inputs[i] < 0 || inputs[i] >= V;
    const bool bad_tgt = targets && (targets[i] < 0 || targets[i] >= V);
    if (bad_in || bad_tgt)
      throw DataError("token id " + std::to_string(bad_in ? inputs[i] : targets[i]) + " at position " +
                      std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) +
                      "); the data was tokenized for a different model.vocab_size");
  }
  if (options_.external_linear_weights && !weight_source_)
    throw Error("GPT::forward: the linear weights are external; call set_linear_weight_source() first");
  backward_ready_ = false;
  ensure_activations(B, T);
  last_B_ = B;
  last_T_ = T;
  const int C = cfg_.d_model, NH = cfg_.n_head;
  const bool gpt2 = cfg_.arch == Arch::GPT2;
  ActPointers& a = acts_;
  ops_.copy_from_host(a.tokens, inputs, N * sizeof(int32_t));
  ops_.embedding_forward(a.encoded, a.tokens, param(wte_), gpt2 ? param(wpe_) : nullptr, B, T, C);

  const float* x = a.encoded;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    ActPointers::Layer& s = a.layers[l];
    const LayerParams& p = layers_[static_cast<size_t>(l)];
    norm_forward(s.ln1, s.ln1_mean, s.ln1_rstd, x, p.ln1w, p.ln1b, N);
    linear_forward(s.qkv, s.ln1, p.qkvw, p.qkvb, N);
    if (!gpt2) ops_.rope_forward(s.qkv, rope_cos_, rope_sin_, B, T, 3 * C, 2 * NH, cfg_.head_dim());
    ops_.attention_forward(s.atty, s.att, s.qkv, B, T, C, NH);
    linear_forward(s.attproj, s.atty, p.attprojw, p.attprojb, N);
    ops_.residual_forward(s.res2, x, s.attproj, static_cast<size_t>(N) * C);
    norm_forward(s.ln2, s.ln2_mean, s.ln2_rstd, s.res2, p.ln2w, p.ln2b, N);
    if (p.moe_index >= 0)
      moe_forward(l, N);
    else
      mlp_forward(s.fcproj, s.fch, s.fch_act, s.ln2, p.fcw, p.fcb, p.fcprojw, p.fcprojb, dense_swiglu(), N);
    ops_.residual_forward(s.res3, s.res2, s.fcproj, static_cast<size_t>(N) * C);
    x = s.res3;
  }
  norm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, lnfw_, lnfb_, N);
  ops_.matmul_forward(a.logits, a.lnf, param(head_index()), nullptr, N, C, cfg_.padded_vocab);
  if (!targets) return false;

  ops_.copy_from_host(a.targets, targets, N * sizeof(int32_t));
  ops_.crossentropy_forward(a.losses, a.lse, a.logits, a.targets, N, V, cfg_.padded_vocab);
  backward_ready_ = true;
  return true;
}

// ---- backward ----

void GPT::backward(float loss_scale) {
  if (!backward_ready_)
    throw Error("GPT::backward() needs a forward() with targets first (and runs once per forward)");
  backward_ready_ = false;
  const int B = last_B_, T = last_T_, N = B * T;
  const int C = cfg_.d_model, NH = cfg_.n_head, Vp = cfg_.padded_vocab;
  const bool gpt2 = cfg_.arch == Arch::GPT2;
  ActPointers& a = acts_;
  backward_loss_scale_ = loss_scale;

  float* dlogits = a.logits;
  ops_.crossentropy_backward(dlogits, a.logits, a.lse, a.targets, loss_scale / static_cast<float>(N), N,
                             cfg_.vocab_size, Vp);
  ops_.matmul_backward(a.dln, grad(head_index()), nullptr, dlogits, a.lnf, param(head_index()), N, C, Vp);
  const float* x_last = cfg_.n_layer > 0 ? a.layers.back().res3 : a.encoded;
  ops_.fill_zero(a.dres, static_cast<size_t>(N) * C * sizeof(float));
  norm_backward(a.dres, a.dln, x_last, a.lnf_mean, a.lnf_rstd, lnfw_, lnfb_, N);

  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    ActPointers::Layer& s = a.layers[l];
    const LayerParams& p = layers_[static_cast<size_t>(l)];
    const float* x_in = l == 0 ? a.encoded : a.layers[l - 1].res3;
    // MLP: dres is the gradient of res3 and, through the residual, of fcproj.
    if (p.moe_index >= 0)
      moe_backward(l, N);
    else
      mlp_backward(a.dln, a.dfch, a.dfch_act, a.dres, s.ln2, s.fch, s.fch_act, p.fcw, p.fcb, p.fcprojw, p.fcprojb,
                   dense_swiglu(), N);
    norm_backward(a.dres, a.dln, s.res2, s.ln2_mean, s.ln2_rstd, p.ln2w, p.ln2b, N);
    // Attention: dres is now the gradient of res2 and of attproj.
    linear_backward(a.datty, a.dres, s.atty, p.attprojw, p.attprojb, N);
    ops_.attention_backward(a.dqkv, a.datty, s.qkv, s.att, B, T, C, NH);
    if (!gpt2) ops_.rope_backward(a.dqkv, rope_cos_, rope_sin_, B, T, 3 * C, 2 * NH, cfg_.head_dim());
    linear_backward(a.dln, a.dqkv, s.ln1, p.qkvw, p.qkvb, N);
    norm_backward(a.dres, a.dln, x_in, s.ln1_mean, s.ln1_rstd, p.ln1w, p.ln1b, N);
  }
  ops_.embedding_backward(grad(wte_), gpt2 ? grad(wpe_) : nullptr, a.dres, a.tokens, B, T, C);
}

}  // namespace eco

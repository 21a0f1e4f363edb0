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

// ---- block linears: the hooks the FP8 work substitutes ----

GPT::LinearDims GPT::linear_dims(LinearSlot slot) const {
  const int C = cfg_.d_model, H = cfg_.hidden();
  switch (slot) {
    case LinearSlot::Qkv: return {C, 3 * C};
    case LinearSlot::AttnOut: return {C, C};
    case LinearSlot::MlpIn: return {C, cfg_.arch == Arch::GPT2 ? H : 2 * H};
    case LinearSlot::MlpOut: return {H, C};
  }
  return {0, 0};
}

size_t GPT::linear_weight_offset(int layer, LinearSlot slot) const {
  return tensors_[linear_tensor_index_[static_cast<size_t>(layer)][static_cast<size_t>(slot)]].offset;
}

const float* GPT::linear_weight(int layer, LinearSlot slot) const {
  if (!weight_source_) return params_ + linear_weight_offset(layer, slot);
  weight_source_->linear_weight_values(linear_tensor_index_[static_cast<size_t>(layer)][static_cast<size_t>(slot)],
                                       weight_scratch_);
  return weight_scratch_;
}

// Gradients mirror the parameter layout (and stay fp32 whatever linear_weight() serves).
float* GPT::linear_weight_grad(int layer, LinearSlot slot) { return grads_ + linear_weight_offset(layer, slot); }

const float* GPT::linear_bias(int layer, LinearSlot slot) const {
  if (cfg_.arch != Arch::GPT2) return nullptr;
  const LinearDims d = linear_dims(slot);
  size_t base = 0;
  switch (slot) {
    case LinearSlot::Qkv: base = v_.qkvb; break;
    case LinearSlot::AttnOut: base = v_.attprojb; break;
    case LinearSlot::MlpIn: base = v_.fcb; break;
    case LinearSlot::MlpOut: base = v_.fcprojb; break;
  }
  return params_ + base + static_cast<size_t>(layer) * d.out;
}

float* GPT::linear_bias_grad(int layer, LinearSlot slot) {
  const float* b = linear_bias(layer, slot);
  return b ? grads_ + (b - params_) : nullptr;
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

const float* GPT::linear_input(const float* inp, int rows, int cols) {
  if (!quant_.quantize_activations) return inp;
  const QuantRef q = operand_ref(rows, cols, quant_.act_format);
  ops_.quantize_rows(q, 0, q.rows, inp, Rounding::RTN, nullptr, nullptr);
  ops_.dequantize_rows(acts_.input_q, q, 0, q.rows);
  return acts_.input_q;
}

const float* GPT::linear_output_grad(const float* dout, int rows, int cols) {
  if (!quant_.quantize_output_grads) return dout;
  const QuantRef q = operand_ref(rows, cols, QuantFormat::E5M2);
  ops_.quantize_rows(q, 0, q.rows, dout, Rounding::RTN, nullptr, nullptr);
  ops_.dequantize_rows(acts_.dout_q, q, 0, q.rows);
  return acts_.dout_q;
}

// With a quantized stored weight and quantized activations, the forward is one quantized GEMM of
// the two codes + scales (FP8 on the GPU); NaN/Inf inputs stay NaN/Inf in their codes and reach
// the loss, where the trainer skips the step.
void GPT::linear_forward(float* out, const float* inp, int layer, LinearSlot slot, int N) {
  const LinearDims d = linear_dims(slot);
  const size_t index = linear_tensor_index_[static_cast<size_t>(layer)][static_cast<size_t>(slot)];
  const QuantRef* wq = weight_source_ ? weight_source_->linear_weight_quant(index) : nullptr;
  if (wq && quant_.quantize_activations) {
    const QuantRef a = operand_ref(N, d.in, quant_.act_format);
    ops_.quantize_rows(a, 0, a.rows, inp, Rounding::RTN, nullptr, nullptr);
    ops_.quantized_matmul_forward(out, a, *wq, linear_bias(layer, slot), N, d.in, d.out);
    return;
  }
  ops_.matmul_forward(out, linear_input(inp, N, d.in), linear_weight(layer, slot), linear_bias(layer, slot), N, d.in,
                      d.out);
}

// Straight-through estimator: the weight gradient uses the very operand the forward multiplied
// (recomputed bit for bit from the saved fp32 input), and the input gradient passes through the
// quantizer as if it were the identity.
void GPT::linear_backward(float* dinp, const float* dout, const float* inp, int layer, LinearSlot slot, int N) {
  const LinearDims d = linear_dims(slot);
  ops_.matmul_backward(dinp, linear_weight_grad(layer, slot), linear_bias_grad(layer, slot),
                       linear_output_grad(dout, N, d.out), linear_input(inp, N, d.in), linear_weight(layer, slot), N,
                       d.in, d.out);
}

// ---- norms: LayerNorm (gpt2) or RMSNorm (llama) ----

void GPT::norm_forward(float* out, float* mean, float* rstd, const float* inp, size_t w_off, size_t b_off, int N) {
  if (cfg_.arch == Arch::GPT2)
    ops_.layernorm_forward(out, mean, rstd, inp, params_ + w_off, params_ + b_off, N, cfg_.d_model, cfg_.norm_eps);
  else
    ops_.rmsnorm_forward(out, rstd, inp, params_ + w_off, N, cfg_.d_model, cfg_.norm_eps);
}

void GPT::norm_backward(float* dinp, const float* dout, const float* inp, const float* mean, const float* rstd,
                        size_t w_off, size_t b_off, int N) {
  if (cfg_.arch == Arch::GPT2)
    ops_.layernorm_backward(dinp, grads_ + w_off, grads_ + b_off, dout, inp, params_ + w_off, mean, rstd, N,
                            cfg_.d_model);
  else
    ops_.rmsnorm_backward(dinp, grads_ + w_off, dout, inp, params_ + w_off, rstd, N, cfg_.d_model);
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
  const int C = cfg_.d_model, NH = cfg_.n_head, H = cfg_.hidden();
  const bool gpt2 = cfg_.arch == Arch::GPT2;
  ActPointers& a = acts_;
  ops_.copy_from_host(a.tokens, inputs, N * sizeof(int32_t));
  ops_.embedding_forward(a.encoded, a.tokens, params_ + v_.wte, gpt2 ? params_ + v_.wpe : nullptr, B, T, C);

  const float* x = a.encoded;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    ActPointers::Layer& s = a.layers[l];
    const size_t lc = static_cast<size_t>(l) * C;
    norm_forward(s.ln1, s.ln1_mean, s.ln1_rstd, x, v_.ln1w + lc, gpt2 ? v_.ln1b + lc : 0, N);
    linear_forward(s.qkv, s.ln1, l, LinearSlot::Qkv, N);
    if (!gpt2) ops_.rope_forward(s.qkv, rope_cos_, rope_sin_, B, T, 3 * C, 2 * NH, cfg_.head_dim());
    ops_.attention_forward(s.atty, s.att, s.qkv, B, T, C, NH);
    linear_forward(s.attproj, s.atty, l, LinearSlot::AttnOut, N);
    ops_.residual_forward(s.res2, x, s.attproj, static_cast<size_t>(N) * C);
    norm_forward(s.ln2, s.ln2_mean, s.ln2_rstd, s.res2, v_.ln2w + lc, gpt2 ? v_.ln2b + lc : 0, N);
    linear_forward(s.fch, s.ln2, l, LinearSlot::MlpIn, N);
    if (gpt2) ops_.gelu_forward(s.fch_act, s.fch, static_cast<size_t>(N) * H);
    else ops_.swiglu_forward(s.fch_act, s.fch, N, H);
    linear_forward(s.fcproj, s.fch_act, l, LinearSlot::MlpOut, N);
    ops_.residual_forward(s.res3, s.res2, s.fcproj, static_cast<size_t>(N) * C);
    x = s.res3;
  }
  norm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, v_.lnfw, gpt2 ? v_.lnfb : 0, N);
  ops_.matmul_forward(a.logits, a.lnf, params_ + head_offset(), nullptr, N, C, cfg_.padded_vocab);
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
  const int C = cfg_.d_model, NH = cfg_.n_head, H = cfg_.hidden(), Vp = cfg_.padded_vocab;
  const bool gpt2 = cfg_.arch == Arch::GPT2;
  ActPointers& a = acts_;

  float* dlogits = a.logits;
  ops_.crossentropy_backward(dlogits, a.logits, a.lse, a.targets, loss_scale / static_cast<float>(N), N,
                             cfg_.vocab_size, Vp);
  ops_.matmul_backward(a.dln, grads_ + head_offset(), nullptr, dlogits, a.lnf, params_ + head_offset(), N, C, Vp);
  const float* x_last = cfg_.n_layer > 0 ? a.layers.back().res3 : a.encoded;
  ops_.fill_zero(a.dres, static_cast<size_t>(N) * C * sizeof(float));
  norm_backward(a.dres, a.dln, x_last, a.lnf_mean, a.lnf_rstd, v_.lnfw, gpt2 ? v_.lnfb : 0, N);

  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    ActPointers::Layer& s = a.layers[l];
    const float* x_in = l == 0 ? a.encoded : a.layers[l - 1].res3;
    const size_t lc = static_cast<size_t>(l) * C;
    // MLP: dres is the gradient of res3 and, through the residual, of fcproj.
    linear_backward(a.dfch_act, a.dres, s.fch_act, l, LinearSlot::MlpOut, N);
    if (gpt2) ops_.gelu_backward(a.dfch, s.fch, a.dfch_act, static_cast<size_t>(N) * H);
    else ops_.swiglu_backward(a.dfch, s.fch, a.dfch_act, N, H);
    linear_backward(a.dln, a.dfch, s.ln2, l, LinearSlot::MlpIn, N);
    norm_backward(a.dres, a.dln, s.res2, s.ln2_mean, s.ln2_rstd, v_.ln2w + lc, gpt2 ? v_.ln2b + lc : 0, N);
    // Attention: dres is now the gradient of res2 and of attproj.
    linear_backward(a.datty, a.dres, s.atty, l, LinearSlot::AttnOut, N);
    ops_.attention_backward(a.dqkv, a.datty, s.qkv, s.att, B, T, C, NH);
    if (!gpt2) ops_.rope_backward(a.dqkv, rope_cos_, rope_sin_, B, T, 3 * C, 2 * NH, cfg_.head_dim());
    linear_backward(a.dln, a.dqkv, s.ln1, l, LinearSlot::Qkv, N);
    norm_backward(a.dres, a.dln, x_in, s.ln1_mean, s.ln1_rstd, v_.ln1w + lc, gpt2 ? v_.ln1b + lc : 0, N);
  }
  ops_.embedding_backward(grads_ + v_.wte, gpt2 ? grads_ + v_.wpe : nullptr, a.dres, a.tokens, B, T, C);
}

}  // namespace eco

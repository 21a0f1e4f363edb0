// The activation buffer: every tensor the forward saves for the backward, plus the backward's
// scratch, laid out back to back in one allocation whose size is computed up front (llm.c style).
#include <algorithm>
#include <cstdint>

#include "model/gpt.h"

namespace eco {

GPT::ActPointers GPT::lay_out_activations(const ModelConfig& cfg, const LinearQuantization& quant,
                                          size_t attention_saved_floats, char* base, int B, int T,
                                          bool expert_parallel) {
  const size_t N = static_cast<size_t>(B) * T, C = cfg.d_model, H = cfg.hidden(), Vp = cfg.padded_vocab;
  const bool gpt2 = cfg.arch == Arch::GPT2;
  const size_t mlp_in = gpt2 ? H : 2 * H;
  const MoeConfig& moe = cfg.moe;
  const size_t E = moe.enabled() ? static_cast<size_t>(moe.experts) : 0, K = moe.enabled() ? moe.top_k : 0;
  const size_t R = N * K;  // expert rows: every assignment kept
  const size_t EH = moe.enabled() ? static_cast<size_t>(cfg.expert_hidden()) : 0;
  const size_t EIN = moe.enabled() ? static_cast<size_t>(cfg.expert_in_width()) : 0;
  ActPointers a;
  size_t off = 0;
  // 64-byte aligned slices; with base == nullptr only the total is meaningful.
  auto take = [&](size_t bytes) -> char* {
    char* p = base ? base + off : nullptr;
    off += (bytes + 63) / 64 * 64;
    return p;
  };
  auto f = [&](size_t n) { return reinterpret_cast<float*>(take(n * sizeof(float))); };
  a.tokens = reinterpret_cast<int32_t*>(take(N * sizeof(int32_t)));
  a.targets = reinterpret_cast<int32_t*>(take(N * sizeof(int32_t)));
  a.encoded = f(N * C);
  a.layers.resize(cfg.n_layer);
  auto ints = [&](size_t n) { return reinterpret_cast<int32_t*>(take(n * sizeof(int32_t))); };
  for (int li = 0; li < cfg.n_layer; ++li) {
    ActPointers::Layer& l = a.layers[static_cast<size_t>(li)];
    const bool is_moe = moe.is_moe_layer(li);
    const bool dense_mlp = !is_moe || moe.shared_expert;
    l.ln1 = f(N * C);
    l.ln1_mean = gpt2 ? f(N) : nullptr;
    l.ln1_rstd = f(N);
    l.qkv = f(N * 3 * C);
    l.atty = f(N * C);
    l.att = f(attention_saved_floats);
    l.attproj = f(N * C);
    l.res2 = f(N * C);
    l.ln2 = f(N * C);
    l.ln2_mean = gpt2 ? f(N) : nullptr;
    l.ln2_rstd = f(N);
    l.fch = dense_mlp ? f(N * mlp_in) : nullptr;
    l.fch_act = dense_mlp ? f(N * H) : nullptr;
    l.fcproj = f(N * C);
    l.res3 = f(N * C);
    l.router_logits = l.router_probs = l.router_lse = l.gates = nullptr;
    l.moe_in = l.moe_h = l.moe_act = l.moe_out = l.shared_out = nullptr;
    l.expert_idx = l.slot_of = l.token_of = l.counts = nullptr;
    if (is_moe) {
      l.router_logits = f(N * E);
      l.router_probs = f(N * E);
      l.router_lse = f(N);
      l.gates = f(N * K);
      l.expert_idx = ints(N * K);
      l.slot_of = ints(N * K);
      l.token_of = ints(R);
      l.counts = ints(2 * E);
      // Under expert parallelism these are the rows sent and the outputs received back; the
      // experts' own buffers are the receiving rank's (ExpertParallelLayer).
      l.moe_in = f(R * C);
      l.moe_h = expert_parallel ? nullptr : f(R * EIN);
      l.moe_act = expert_parallel ? nullptr : f(R * EH);
      l.moe_out = f(R * C);
      l.shared_out = moe.shared_expert ? f(N * C) : nullptr;
    }
  }
  a.lnf = f(N * C);
  a.lnf_mean = gpt2 ? f(N) : nullptr;
  a.lnf_rstd = f(N);
  a.logits = f(N * Vp);  // the backward turns it into dlogits in place
  a.losses = f(N);
  a.lse = f(N);
  a.dres = f(N * C);
  a.dln = f(N * C);
  a.dqkv = f(N * 3 * C);
  a.datty = f(N * C);
  a.dfch = f(N * mlp_in);
  a.dfch_act = f(N * H);
  a.dmoe_out = a.dmoe_h = a.dmoe_act = a.dmoe_in = a.dgates = a.drouter = a.dtmp = nullptr;
  if (moe.enabled()) {
    a.dmoe_out = f(R * C);
    a.dmoe_h = expert_parallel ? nullptr : f(R * EIN);
    a.dmoe_act = expert_parallel ? nullptr : f(R * EH);
    a.dmoe_in = f(R * C);
    a.dgates = f(N * K);
    a.drouter = f(N * E);
    a.dtmp = f(N * C);
  }
  // One scratch per operand for all linears: each quantized copy is consumed by the GEMM(s) right
  // after it is made. An expert's GEMMs see at most N rows (a token picks an expert once).
  if (quant.quantize_activations) a.input_q = f(N * std::max({H, C, EH}));
  if (quant.quantize_output_grads) a.dout_q = f(N * std::max({3 * C, C, mlp_in, EIN}));
  if (quant.quantize_activations || quant.quantize_output_grads) {
    // Codes of the widest operand, 2 bytes each (BF16 operands of the bf16 modes), one scale per row.
    a.operand_codes = take(N * std::max({3 * C, C, H, mlp_in, EH, EIN}) * 2);
    a.operand_scales = f(N);
  }
  a.total_bytes = off;
  return a;
}

size_t GPT::activation_bytes(int B, int T) const {
  size_t expert_rows = ep_scratch_rows_ * expert_row_floats();  // backward scratch: the same four row kinds
  for (const ExpertParallelLayer& ep : ep_layers_) expert_rows += ep.capacity * expert_row_floats();
  return lay_out_activations(cfg_, quant_, ops_.attention_saved_floats(B, T, cfg_.n_head), nullptr, B, T,
                             expert_parallel())
             .total_bytes +
         (weight_scratch_floats() + expert_rows) * sizeof(float);
}

size_t GPT::activation_layout_bytes(const ModelConfig& cfg, const LinearQuantization& quant, const Ops& ops, int B,
                                   int T) {
  return activation_layout_bytes(cfg, quant, ops.attention_saved_floats(B, T, cfg.n_head), B, T);
}

size_t GPT::activation_layout_bytes(const ModelConfig& cfg, const LinearQuantization& quant,
                                   size_t attention_saved_floats, int B, int T, bool expert_parallel) {
  return lay_out_activations(cfg, quant, attention_saved_floats, nullptr, B, T, expert_parallel).total_bytes;
}

void GPT::set_linear_quantization(const LinearQuantization& q) {
  const bool relayout = q.quantize_activations != quant_.quantize_activations ||
                        q.quantize_output_grads != quant_.quantize_output_grads;
  quant_ = q;
  backward_ready_ = false;
  if (relayout && act_buffer_) {  // the scratch slices come and go with the switches
    ops_.free(act_buffer_);
    act_buffer_ = nullptr;
    act_B_ = act_T_ = 0;
    acts_ = ActPointers{};
  }
}

void GPT::ensure_activations(int B, int T) {
  if (act_buffer_ && B <= act_B_ && T <= act_T_) return;
  // Grow to cover both the old and the new shape, so alternating shapes do not reallocate.
  const int nb = B > act_B_ ? B : act_B_;
  const int nt = T > act_T_ ? T : act_T_;
  if (act_buffer_) ops_.free(act_buffer_);
  act_buffer_ = nullptr;
  const size_t att = ops_.attention_saved_floats(nb, nt, cfg_.n_head);
  act_buffer_ = static_cast<char*>(ops_.alloc(lay_out_activations(cfg_, quant_, att, nullptr, nb, nt, expert_parallel()).total_bytes));
  act_B_ = nb;
  act_T_ = nt;
  // Pointers for the capacity shape; a smaller (B, T) uses the front of each slice.
  acts_ = lay_out_activations(cfg_, quant_, att, act_buffer_, act_B_, act_T_, expert_parallel());
}

}  // namespace eco

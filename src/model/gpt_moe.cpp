// The sparse MoE block (DESIGN.md §3) and its load-balancing bookkeeping.
//
// Forward of one MoE layer over N tokens: router logits (fp32 GEMM) → softmax, top-k, gates →
// dispatch plan (rows grouped by expert; drops beyond the capacity) → gather the tokens' rows →
// each expert's MLP over its contiguous rows (quantized like any quantizable linear) → combine:
// each token's gate-weighted sum of its rows, written by index. The expert GEMMs need their row
// counts on the host: that is the one device→host copy per MoE layer (as in every MoE trainer).
//
// The router learns through the gates (combine backward → dgates), the Switch load-balancing loss
// and the optional z-loss; the top-k choice itself has no gradient.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/gpt.h"

namespace eco {
namespace {

size_t moe_layer_of(const ModelConfig& cfg, size_t moe_index) {
  size_t seen = 0;
  for (int l = 0; l < cfg.n_layer; ++l) {
    if (!cfg.moe.is_moe_layer(l)) continue;
    if (seen++ == moe_index) return static_cast<size_t>(l);
  }
  return 0;
}

}  // namespace

void GPT::moe_forward(int layer, int N) {
  ActPointers::Layer& s = acts_.layers[static_cast<size_t>(layer)];
  const LayerParams& p = layers_[static_cast<size_t>(layer)];
  const MoeConfig& m = cfg_.moe;
  const int C = cfg_.d_model, E = m.experts, K = m.top_k;
  const size_t mi = static_cast<size_t>(p.moe_index);

  ops_.matmul_forward(s.router_logits, s.ln2, param(p.router), nullptr, N, C, E);
  const float* bias = m.bias_update_rate > 0.0f ? expert_bias_ + mi * E : nullptr;
  ops_.moe_route(s.router_probs, s.router_lse, s.expert_idx, s.gates, s.router_logits, bias, N, E, K, m.renormalize);
  const int capacity =
      m.capacity_factor > 0.0f
          ? std::max(1, static_cast<int>(std::ceil(static_cast<double>(m.capacity_factor) * N * K / E)))
          : 0;
  ops_.moe_dispatch_plan(s.counts, s.slot_of, s.token_of, s.expert_idx, N, K, E, capacity);
  std::vector<int32_t>& counts = moe_counts_[mi];
  ops_.copy_to_host(counts.data(), s.counts, counts.size() * sizeof(int32_t));

  int rows = 0;
  for (int e = 0; e < E; ++e) rows += counts[static_cast<size_t>(e)];
  ops_.moe_gather(s.moe_in, s.ln2, s.token_of, rows, C);
  if (!expert_parallel()) {
    experts_forward(p, whole_model_blocks(counts), s.moe_in, s.moe_h, s.moe_act, s.moe_out);
  } else {
    // The plan groups rows by expert, so each group rank's rows are one contiguous block: send
    // them, run this rank's experts over what arrives, send the outputs back to the same places.
    ExpertParallelLayer& ep = ep_layers_[mi];
    plan_expert_exchange(counts, ep);
    ensure_expert_rows(ep);
    exchange_->exchange(s.moe_in, ep.send_bytes, ep.in, ep.recv_bytes);
    experts_forward(p, ep.blocks, ep.in, ep.h, ep.act, ep.out);
    exchange_->exchange(ep.out, ep.recv_bytes, s.moe_out, ep.send_bytes);
  }
  ops_.moe_combine(s.fcproj, s.moe_out, s.gates, s.slot_of, N, K, C);
  if (m.shared_expert) {
    mlp_forward(s.shared_out, s.fch, s.fch_act, s.ln2, p.fcw, p.fcb, p.fcprojw, p.fcprojb, dense_swiglu(), N);
    ops_.residual_forward(s.fcproj, s.fcproj, s.shared_out, static_cast<size_t>(N) * C);
  }

  ops_.moe_accumulate_prob_sums(moe_prob_sums_ + mi * E, s.router_probs, N, E);
  ops_.accumulate_sum_squares(moe_z_sums_ + mi, s.router_lse, static_cast<size_t>(N));
  double* totals = moe_totals_.values.data() + mi * moe_totals_.layer_stride();  // routed | kept | ... | tokens
  for (int e = 0; e < E; ++e) {
    totals[e] += counts[static_cast<size_t>(E + e)];
    totals[E + e] += counts[static_cast<size_t>(e)];
  }
  totals[3 * E + 1] += N;
}

void GPT::moe_backward(int layer, int N) {
  ActPointers& a = acts_;
  ActPointers::Layer& s = a.layers[static_cast<size_t>(layer)];
  const LayerParams& p = layers_[static_cast<size_t>(layer)];
  const MoeConfig& m = cfg_.moe;
  const int C = cfg_.d_model, E = m.experts, K = m.top_k;
  const std::vector<int32_t>& counts = moe_counts_[static_cast<size_t>(p.moe_index)];
  const size_t NC = static_cast<size_t>(N) * C;

  if (m.shared_expert)
    mlp_backward(a.dln, a.dfch, a.dfch_act, a.dres, s.ln2, s.fch, s.fch_act, p.fcw, p.fcb, p.fcprojw, p.fcprojb,
                 dense_swiglu(), N);
  ops_.moe_combine_backward(a.dmoe_out, a.dgates, a.dres, s.moe_out, s.gates, s.slot_of, N, K, C);
  if (!expert_parallel()) {
    experts_backward(p, whole_model_blocks(counts), a.dmoe_in, a.dmoe_h, a.dmoe_act, a.dmoe_out, s.moe_in, s.moe_h,
                     s.moe_act);
  } else {
    // The reverse of the forward's exchanges: the output gradients to the experts' ranks, the input
    // gradients back. The expert weight gradients stay here (summed over replicas by the trainer).
    const ExpertParallelLayer& ep = ep_layers_[static_cast<size_t>(p.moe_index)];
    ensure_expert_scratch(ep.rows);
    const size_t R = ep_scratch_rows_;
    float* dout = ep_scratch_;
    float* din = dout + R * C;
    float* dh = din + R * C;
    float* dact = dh + R * static_cast<size_t>(cfg_.expert_in_width());
    exchange_->exchange(a.dmoe_out, ep.send_bytes, dout, ep.recv_bytes);
    experts_backward(p, ep.blocks, din, dh, dact, dout, ep.in, ep.h, ep.act);
    exchange_->exchange(din, ep.recv_bytes, a.dmoe_in, ep.send_bytes);
  }
  if (m.shared_expert) {
    ops_.moe_gather_backward(a.dtmp, a.dmoe_in, s.slot_of, N, K, C);
    ops_.residual_forward(a.dln, a.dln, a.dtmp, NC);
  } else {
    ops_.moe_gather_backward(a.dln, a.dmoe_in, s.slot_of, N, K, C);
  }
  // d(aux)/d probs[n,e] = α·E·routed[e] / (N·K·N); d(z)/d logits[n,e] = 2β·lse[n]·probs[n,e] / N.
  const double n = static_cast<double>(N);
  const float aux_scale = static_cast<float>(backward_loss_scale_ * static_cast<double>(m.aux_loss_coef) * E /
                                             (n * n * K));
  const float z_scale = static_cast<float>(backward_loss_scale_ * 2.0 * static_cast<double>(m.z_loss_coef) / n);
  ops_.moe_router_backward(a.drouter, s.router_probs, s.router_lse, s.expert_idx, s.gates, a.dgates, s.counts + E,
                           aux_scale, z_scale, N, E, K, m.renormalize);
  ops_.matmul_backward(a.dtmp, grad(p.router), nullptr, a.drouter, s.ln2, param(p.router), N, C, E);
  ops_.residual_forward(a.dln, a.dln, a.dtmp, NC);
}

std::vector<GPT::ExpertBlock> GPT::whole_model_blocks(const std::vector<int32_t>& counts) const {
  std::vector<ExpertBlock> blocks;
  size_t first = 0;
  for (size_t e = 0; e < static_cast<size_t>(cfg_.moe.experts); ++e) {
    blocks.push_back({e, counts[e], first});
    first += static_cast<size_t>(counts[e]);
  }
  return blocks;
}

void GPT::experts_forward(const LayerParams& p, const std::vector<ExpertBlock>& blocks, const float* in, float* h,
                          float* act, float* out) {
  const size_t C = static_cast<size_t>(cfg_.d_model), EH = static_cast<size_t>(cfg_.expert_hidden()),
               EIN = static_cast<size_t>(cfg_.expert_in_width());
  const bool swiglu = cfg_.moe.activation == MlpActivation::SwiGlu;
  for (const ExpertBlock& b : blocks) {
    if (b.rows == 0) continue;
    const size_t o = b.first_row;
    mlp_forward(out + o * C, h + o * EIN, act + o * EH, in + o * C, p.expert_fc[b.local], npos, p.expert_proj[b.local],
                npos, swiglu, b.rows);
  }
}

void GPT::experts_backward(const LayerParams& p, const std::vector<ExpertBlock>& blocks, float* din, float* dh,
                           float* dact, const float* dout, const float* in, const float* h, const float* act) {
  const size_t C = static_cast<size_t>(cfg_.d_model), EH = static_cast<size_t>(cfg_.expert_hidden()),
               EIN = static_cast<size_t>(cfg_.expert_in_width());
  const bool swiglu = cfg_.moe.activation == MlpActivation::SwiGlu;
  for (const ExpertBlock& b : blocks) {
    if (b.rows == 0) continue;
    const size_t o = b.first_row;
    mlp_backward(din + o * C, dh + o * EIN, dact + o * EH, dout + o * C, in + o * C, h + o * EIN, act + o * EH,
                 p.expert_fc[b.local], npos, p.expert_proj[b.local], npos, swiglu, b.rows);
  }
}

// ---- expert parallelism ----

void GPT::set_expert_exchange(ExpertExchange* exchange) {
  if (exchange && exchange->size() != options_.expert_ranks)
    throw Error("GPT::set_expert_exchange: a group of " + std::to_string(exchange->size()) + " ranks for a model split "
                "over " + std::to_string(options_.expert_ranks));
  if (exchange && exchange->rank() != options_.expert_rank)
    throw Error("GPT::set_expert_exchange: group rank " + std::to_string(exchange->rank()) + " for the model of expert "
                "rank " + std::to_string(options_.expert_rank));
  exchange_ = exchange;
}

size_t GPT::expert_row_floats() const {
  return 2 * static_cast<size_t>(cfg_.d_model) + static_cast<size_t>(cfg_.expert_in_width()) +
         static_cast<size_t>(cfg_.expert_hidden());
}

void GPT::plan_expert_exchange(const std::vector<int32_t>& counts, ExpertParallelLayer& ep) {
  if (!exchange_) throw Error("GPT: the model is split over expert ranks but has no expert exchange");
  const size_t G = static_cast<size_t>(options_.expert_ranks), El = static_cast<size_t>(local_experts());
  const size_t row = static_cast<size_t>(cfg_.d_model) * sizeof(float);
  // counts[0..E) are the kept rows per expert; group rank q holds experts [q·El, (q+1)·El).
  std::vector<int32_t> recv(G * El);
  const std::vector<size_t> count_bytes(G, El * sizeof(int32_t));
  exchange_->exchange_host(counts.data(), count_bytes, recv.data(), count_bytes);
  ep.send_bytes.assign(G, 0);
  ep.recv_bytes.assign(G, 0);
  ep.blocks.clear();
  size_t r = 0;
  for (size_t q = 0; q < G; ++q) {
    for (size_t e = 0; e < El; ++e) ep.send_bytes[q] += static_cast<size_t>(counts[q * El + e]) * row;
    // From group rank q: its rows for each of this rank's experts, expert after expert.
    const size_t first = r;
    for (size_t e = 0; e < El; ++e) {
      const int n = recv[q * El + e];
      if (n < 0) throw Error("GPT: expert rank " + std::to_string(q) + " announced a negative row count");
      ep.blocks.push_back({e, n, r});
      r += static_cast<size_t>(n);
    }
    ep.recv_bytes[q] = (r - first) * row;
  }
  ep.rows = r;
}

void GPT::ensure_expert_rows(ExpertParallelLayer& ep) {
  if (ep.rows <= ep.capacity && ep.in) return;
  if (ep.in) ops_.free(ep.in);
  // Room for a quarter more than asked: the row count moves a little from step to step.
  ep.capacity = std::max<size_t>(1, ep.rows + ep.rows / 4);
  const size_t C = static_cast<size_t>(cfg_.d_model), EIN = static_cast<size_t>(cfg_.expert_in_width()),
               EH = static_cast<size_t>(cfg_.expert_hidden());
  ep.in = ops_.alloc_floats(ep.capacity * expert_row_floats());
  ep.h = ep.in + ep.capacity * C;
  ep.act = ep.h + ep.capacity * EIN;
  ep.out = ep.act + ep.capacity * EH;
}

void GPT::ensure_expert_scratch(size_t rows) {
  if (rows <= ep_scratch_rows_ && ep_scratch_) return;
  if (ep_scratch_) ops_.free(ep_scratch_);
  ep_scratch_rows_ = std::max<size_t>(1, rows + rows / 4);
  ep_scratch_ = ops_.alloc_floats(ep_scratch_rows_ * expert_row_floats());
}

// ---- load-balancing bookkeeping ----

void GPT::reset_moe_totals() {
  if (!cfg_.moe.enabled()) return;
  const size_t layers = static_cast<size_t>(cfg_.moe_layer_count()), E = static_cast<size_t>(cfg_.moe.experts);
  ops_.fill_zero(moe_prob_sums_, layers * E * sizeof(float));
  ops_.fill_zero(moe_z_sums_, layers * sizeof(double));
  moe_totals_.experts = cfg_.moe.experts;
  moe_totals_.values.assign(layers * moe_totals_.layer_stride(), 0.0);
}

// The counts are on the host already (the forward needs them); the router masses and z sums join
// them from the backend.
MoeTotals GPT::read_moe_totals() const {
  if (!cfg_.moe.enabled()) return MoeTotals{};
  const size_t layers = static_cast<size_t>(cfg_.moe_layer_count()), E = static_cast<size_t>(cfg_.moe.experts);
  std::vector<float> probs(layers * E);
  std::vector<double> z(layers);
  ops_.copy_to_host(probs.data(), moe_prob_sums_, probs.size() * sizeof(float));
  ops_.copy_to_host(z.data(), moe_z_sums_, z.size() * sizeof(double));
  MoeTotals t = moe_totals_;
  for (size_t l = 0; l < layers; ++l) {
    double* v = t.values.data() + l * t.layer_stride();
    for (size_t e = 0; e < E; ++e) v[2 * E + e] = probs[l * E + e];
    v[3 * E] = z[l];
  }
  return t;
}

std::vector<MoeLayerStats> GPT::moe_stats(const ModelConfig& cfg, const MoeTotals& totals) {
  std::vector<MoeLayerStats> out;
  const size_t E = static_cast<size_t>(totals.experts);
  for (size_t l = 0; l < totals.layers(); ++l) {
    const double* v = totals.values.data() + l * totals.layer_stride();
    MoeLayerStats st;
    st.layer = static_cast<int>(moe_layer_of(cfg, l));
    const double tokens = v[3 * E + 1];
    double routed = 0.0, kept = 0.0;
    for (size_t e = 0; e < E; ++e) {
      routed += v[e];
      kept += v[E + e];
    }
    if (tokens <= 0.0 || routed <= 0.0) {
      out.push_back(st);
      continue;
    }
    double aux = 0.0, entropy = 0.0, lo = 1e300, hi = 0.0;
    for (size_t e = 0; e < E; ++e) {
      const double f = v[e] / routed, P = v[2 * E + e] / tokens;
      aux += f * P;
      if (f > 0.0) entropy -= f * std::log(f);
      lo = std::min(lo, f);
      hi = std::max(hi, f);
    }
    const double dE = static_cast<double>(E);
    st.aux_loss = static_cast<double>(cfg.moe.aux_loss_coef) * dE * aux;
    st.z_loss = static_cast<double>(cfg.moe.z_loss_coef) * v[3 * E] / tokens;
    st.load_min = lo * dE;
    st.load_max = hi * dE;
    st.load_entropy = E > 1 ? entropy / std::log(dE) : 1.0;
    st.dropped_fraction = 1.0 - kept / routed;
    out.push_back(st);
  }
  return out;
}

void GPT::update_expert_bias(const MoeTotals& totals, float rate) {
  if (!cfg_.moe.enabled() || rate <= 0.0f) return;
  const size_t E = static_cast<size_t>(cfg_.moe.experts);
  if (totals.experts != cfg_.moe.experts || totals.layers() != static_cast<size_t>(cfg_.moe_layer_count()))
    throw Error("update_expert_bias: the totals do not match this model's MoE layers");
  for (size_t l = 0; l < totals.layers(); ++l) {
    const double* routed = totals.values.data() + l * totals.layer_stride();
    double mean = 0.0;
    for (size_t e = 0; e < E; ++e) mean += routed[e];
    mean /= static_cast<double>(E);
    for (size_t e = 0; e < E; ++e) {
      const double d = mean - routed[e];
      expert_bias_host_[l * E + e] += d > 0.0 ? rate : d < 0.0 ? -rate : 0.0f;
    }
  }
  ops_.copy_from_host(expert_bias_, expert_bias_host_.data(), expert_bias_host_.size() * sizeof(float));
}

void GPT::set_expert_bias(const std::vector<float>& bias) {
  if (bias.size() != expert_bias_host_.size())
    throw Error("set_expert_bias: " + std::to_string(bias.size()) + " values for " +
                std::to_string(expert_bias_host_.size()) + " (MoE layers x experts)");
  expert_bias_host_ = bias;
  if (!bias.empty()) ops_.copy_from_host(expert_bias_, bias.data(), bias.size() * sizeof(float));
}

}  // namespace eco

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
  const size_t EH = static_cast<size_t>(cfg_.expert_hidden()), EIN = static_cast<size_t>(cfg_.expert_in_width());
  const bool swiglu = m.activation == MlpActivation::SwiGlu;
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
  size_t o = 0;  // first row of expert e
  for (int e = 0; e < E; ++e) {
    const int n = counts[static_cast<size_t>(e)];
    if (n > 0)
      mlp_forward(s.moe_out + o * C, s.moe_h + o * EIN, s.moe_act + o * EH, s.moe_in + o * C, p.expert_fc[e], npos,
                  p.expert_proj[e], npos, swiglu, n);
    o += static_cast<size_t>(n);
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
  const size_t EH = static_cast<size_t>(cfg_.expert_hidden()), EIN = static_cast<size_t>(cfg_.expert_in_width());
  const bool swiglu = m.activation == MlpActivation::SwiGlu;
  const std::vector<int32_t>& counts = moe_counts_[static_cast<size_t>(p.moe_index)];
  const size_t NC = static_cast<size_t>(N) * C;

  if (m.shared_expert)
    mlp_backward(a.dln, a.dfch, a.dfch_act, a.dres, s.ln2, s.fch, s.fch_act, p.fcw, p.fcb, p.fcprojw, p.fcprojb,
                 dense_swiglu(), N);
  ops_.moe_combine_backward(a.dmoe_out, a.dgates, a.dres, s.moe_out, s.gates, s.slot_of, N, K, C);
  size_t o = 0;
  for (int e = 0; e < E; ++e) {
    const int n = counts[static_cast<size_t>(e)];
    if (n > 0)
      mlp_backward(a.dmoe_in + o * C, a.dmoe_h + o * EIN, a.dmoe_act + o * EH, a.dmoe_out + o * C, s.moe_in + o * C,
                   s.moe_h + o * EIN, s.moe_act + o * EH, p.expert_fc[e], npos, p.expert_proj[e], npos, swiglu, n);
    o += static_cast<size_t>(n);
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

// GPT construction, parameter layout, initialisation and summary. The forward and backward
// passes are in gpt_forward_backward.cpp, the activation layout in gpt_activations.cpp.
#include "model/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"
#include "core/splitmix.h"

namespace eco {
namespace {

// Fills x[0..n) with normal(0, std) draws: splitmix64 → two uniforms → Box-Muller pair.
void fill_normal(float* x, size_t n, double std, uint64_t stream) {
  uint64_t state = stream;
  constexpr double kTwoPi = 6.283185307179586;
  for (size_t i = 0; i < n; i += 2) {
    const double u1 = (static_cast<double>(splitmix64(state) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;          // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1)) * std;
    x[i] = static_cast<float>(r * std::cos(kTwoPi * u2));
    if (i + 1 < n) x[i + 1] = static_cast<float>(r * std::sin(kTwoPi * u2));
  }
}

// Stream id of a tensor: the seed mixed with a hash of the name, so adding a tensor does not move
// the initial values of the others.
uint64_t tensor_stream(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  uint64_t s = seed ^ (h * 0x9E3779B97F4A7C15ull);
  return splitmix64(s);
}

}  // namespace

const char* param_kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Linear: return "linear";
    case ParamKind::Embedding: return "embedding";
    case ParamKind::Head: return "head";
    case ParamKind::Norm: return "norm";
    case ParamKind::Bias: return "bias";
    case ParamKind::Expert: return "expert";
    case ParamKind::Router: return "router";
  }
  return "?";
}

void GPT::check_shape(const ModelConfig& cfg) {
  const auto bad = [](const std::string& what) { throw ConfigError("model: " + what); };
  if (cfg.n_layer < 1 || cfg.n_head < 1 || cfg.d_model < 1) bad("n_layer, n_head and d_model must be positive");
  if (cfg.d_model % cfg.n_head != 0)
    bad("d_model " + std::to_string(cfg.d_model) + " is not divisible by n_head " + std::to_string(cfg.n_head));
  if (cfg.vocab_size < 1 || cfg.padded_vocab < cfg.vocab_size)
    bad("padded_vocab " + std::to_string(cfg.padded_vocab) + " must be >= vocab_size " +
        std::to_string(cfg.vocab_size));
  if (cfg.max_seq_len < 1) bad("max_seq_len must be positive");
  if (cfg.arch == Arch::GPT2 && !cfg.tied_head) bad("the gpt2 architecture always ties the head; set tied_head");
  if (cfg.arch == Arch::Llama && cfg.head_dim() % 2 != 0)
    bad("RoPE needs an even head dimension, d_model/n_head = " + std::to_string(cfg.head_dim()));
  const MoeConfig& moe = cfg.moe;
  if (moe.enabled()) {
    if (moe.top_k < 1 || moe.top_k > moe.experts)
      bad("moe.top_k " + std::to_string(moe.top_k) + " must be in [1, moe.experts = " + std::to_string(moe.experts) +
          "]");
    if (moe.every < 1 || moe.first_layer < 0 || moe.first_layer >= cfg.n_layer)
      bad("moe.first_layer must be a layer index and moe.every positive");
    if (moe.capacity_factor < 0.0f) bad("moe.capacity_factor must be >= 0");
  }
}

void GPT::check_expert_split(const ModelConfig& cfg, const GptOptions& options) {
  if (options.expert_ranks == 1 && options.expert_rank == 0) return;
  if (!cfg.moe.enabled()) throw ConfigError("dist.ep > 1 needs an MoE model (moe.experts > 0)");
  if (options.expert_ranks < 1 || cfg.moe.experts % options.expert_ranks != 0)
    throw ConfigError("dist.ep " + std::to_string(options.expert_ranks) + " does not divide moe.experts (" +
                      std::to_string(cfg.moe.experts) + ")");
  if (options.expert_rank < 0 || options.expert_rank >= options.expert_ranks)
    throw Error("GPT: expert rank " + std::to_string(options.expert_rank) + " outside the group of " +
                std::to_string(options.expert_ranks));
}

GPT::GPT(const ModelConfig& cfg, Ops& ops, GptOptions options) : cfg_(cfg), ops_(ops), options_(options) {
  check_shape(cfg_);
  check_expert_split(cfg_, options_);
  Layout layout = build_layout(cfg_, options_);
  tensors_ = std::move(layout.tensors);
  init_std_ = std::move(layout.init_std);
  layers_ = std::move(layout.layers);
  wte_ = layout.wte;
  wpe_ = layout.wpe;
  lnfw_ = layout.lnfw;
  lnfb_ = layout.lnfb;
  head_ = layout.head;
  num_params_ = layout.num_params;
  resident_params_ = layout.resident_params;
  max_linear_numel_ = layout.max_linear_numel;
  expert_begin_ = layout.expert_begin;
  const MoeConfig& moe = cfg_.moe;
  // Besides params, grads and the weight scratch, what follows is state_buffer_bytes(cfg_).
  params_ = ops_.alloc_floats(resident_params_);
  grads_ = ops_.alloc_floats(num_params_);
  ops_.fill_zero(params_, resident_params_ * sizeof(float));
  // The forward cannot run without a source, but the scratch it fills is part of the model's
  // footprint from the start.
  if (options_.external_linear_weights) weight_scratch_ = ops_.alloc_floats(max_linear_numel_);
  ops_.fill_zero(grads_, num_params_ * sizeof(float));
  if (moe.enabled()) {
    const size_t n = static_cast<size_t>(cfg_.moe_layer_count()) * moe.experts;
    expert_bias_ = ops_.alloc_floats(n);
    ops_.fill_zero(expert_bias_, n * sizeof(float));
    expert_bias_host_.assign(n, 0.0f);
    moe_prob_sums_ = ops_.alloc_floats(n);
    moe_z_sums_ = static_cast<double*>(ops_.alloc(static_cast<size_t>(cfg_.moe_layer_count()) * sizeof(double)));
    moe_counts_.assign(static_cast<size_t>(cfg_.moe_layer_count()), std::vector<int32_t>(2 * static_cast<size_t>(moe.experts)));
    if (expert_parallel()) ep_layers_.resize(static_cast<size_t>(cfg_.moe_layer_count()));
    reset_moe_totals();
  }
  if (cfg_.arch == Arch::Llama) {
    const int half = cfg_.head_dim() / 2;
    std::vector<float> c(static_cast<size_t>(cfg_.max_seq_len) * half), s(c.size());
    for (int t = 0; t < cfg_.max_seq_len; ++t) {
      for (int i = 0; i < half; ++i) {
        const double inv_freq = std::pow(static_cast<double>(cfg_.rope_theta), -2.0 * i / cfg_.head_dim());
        const double angle = t * inv_freq;
        c[static_cast<size_t>(t) * half + i] = static_cast<float>(std::cos(angle));
        s[static_cast<size_t>(t) * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    rope_cos_ = ops_.alloc_floats(c.size());
    rope_sin_ = ops_.alloc_floats(s.size());
    ops_.copy_from_host(rope_cos_, c.data(), c.size() * sizeof(float));
    ops_.copy_from_host(rope_sin_, s.data(), s.size() * sizeof(float));
  }
}

GPT::~GPT() {
  ops_.free(params_);
  ops_.free(grads_);
  if (rope_cos_) ops_.free(rope_cos_);
  if (rope_sin_) ops_.free(rope_sin_);
  if (act_buffer_) ops_.free(act_buffer_);
  if (weight_scratch_) ops_.free(weight_scratch_);
  if (expert_bias_) ops_.free(expert_bias_);
  if (moe_prob_sums_) ops_.free(moe_prob_sums_);
  if (moe_z_sums_) ops_.free(moe_z_sums_);
  for (ExpertParallelLayer& ep : ep_layers_)
    if (ep.in) ops_.free(ep.in);
  if (ep_scratch_) ops_.free(ep_scratch_);
}

// Stacked [L, ...] tensors in llm.c's order (for a dense gpt2 the buffer IS an llm.c checkpoint
// body), one ParamTensor per layer so every linear weight is its own [out, in] matrix. The dense
// MLP of an MoE layer is absent unless it is the shared expert; the routers and experts follow all
// the llm.c tensors. With external linear weights the tensor list and its order stay the same;
// only the offsets move the quantizable tensors behind all the others, so params() can stop where
// they begin.
// Drops the experts other ranks hold and renumbers what is left (LayerParams indices follow).
void GPT::keep_local_experts(Layout& out, const ModelConfig& cfg, const GptOptions& options) {
  const int per_rank = cfg.moe.experts / options.expert_ranks;
  const int lo = options.expert_rank * per_rank, hi = lo + per_rank;
  std::vector<size_t> new_index(out.tensors.size(), npos);
  std::vector<ParamTensor> kept;
  std::vector<float> kept_std;
  for (size_t i = 0; i < out.tensors.size(); ++i) {
    const ParamTensor& t = out.tensors[i];
    if (t.kind == ParamKind::Expert && (t.expert < lo || t.expert >= hi)) continue;
    new_index[i] = kept.size();
    kept.push_back(t);
    kept_std.push_back(out.init_std[i]);
  }
  const auto remap = [&](size_t& x) {
    if (x != npos) x = new_index[x];
  };
  for (LayerParams& lp : out.layers) {
    for (size_t* f : {&lp.ln1w, &lp.ln1b, &lp.qkvw, &lp.qkvb, &lp.attprojw, &lp.attprojb, &lp.ln2w, &lp.ln2b, &lp.fcw,
                      &lp.fcb, &lp.fcprojw, &lp.fcprojb, &lp.router})
      remap(*f);
    for (std::vector<size_t>* v : {&lp.expert_fc, &lp.expert_proj}) {
      if (v->empty()) continue;
      std::vector<size_t> local(v->begin() + lo, v->begin() + hi);
      for (size_t& x : local) remap(x);
      *v = std::move(local);
    }
  }
  for (size_t* f : {&out.wte, &out.wpe, &out.lnfw, &out.lnfb, &out.head}) remap(*f);
  out.tensors = std::move(kept);
  out.init_std = std::move(kept_std);
}

GPT::Layout GPT::build_layout(const ModelConfig& cfg, const GptOptions& options) {
  Layout out;
  const int64_t L = cfg.n_layer, C = cfg.d_model, H = cfg.hidden(), Vp = cfg.padded_vocab;
  const bool gpt2 = cfg.arch == Arch::GPT2;
  const MoeConfig& moe = cfg.moe;
  const int64_t mlp_in = gpt2 ? H : 2 * H;  // llama: gate and up in one [2H, C] matrix
  const float std = cfg.init_std;
  const float proj_std = static_cast<float>(cfg.init_std / std::sqrt(2.0 * static_cast<double>(L)));
  const bool quantize_dense = !moe.enabled() || moe.quantize_dense_linears;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, ParamKind kind, float init) {
    size_t numel = 1;
    for (int64_t d : shape) numel *= static_cast<size_t>(d);
    ParamTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.numel = numel;
    t.kind = kind;
    t.weight_decay = t.shape.size() == 2 && kind != ParamKind::Router;
    t.quantizable = kind == ParamKind::Expert || (kind == ParamKind::Linear && quantize_dense);
    out.tensors.push_back(std::move(t));
    out.init_std.push_back(init);
    return out.tensors.size() - 1;
  };
  out.layers.assign(static_cast<size_t>(L), LayerParams{});
  auto stacked = [&](size_t LayerParams::*field, const std::string& suffix, const std::vector<int64_t>& shape,
                     ParamKind kind, float init, bool dense_mlp = false) {
    for (int64_t l = 0; l < L; ++l) {
      const bool has_dense_mlp = !moe.is_moe_layer(static_cast<int>(l)) || moe.shared_expert;
      if (dense_mlp && !has_dense_mlp) continue;
      out.layers[static_cast<size_t>(l)].*field = add("h." + std::to_string(l) + "." + suffix, shape, kind, init);
    }
  };
  constexpr float kZeros = 0.0f, kOnes = -1.0f;
  out.wte = add("wte", {Vp, C}, ParamKind::Embedding, std);
  if (gpt2) out.wpe = add("wpe", {cfg.max_seq_len, C}, ParamKind::Embedding, std);
  stacked(&LayerParams::ln1w, "ln1.w", {C}, ParamKind::Norm, kOnes);
  if (gpt2) stacked(&LayerParams::ln1b, "ln1.b", {C}, ParamKind::Norm, kZeros);
  stacked(&LayerParams::qkvw, "qkv.w", {3 * C, C}, ParamKind::Linear, std);
  if (gpt2) stacked(&LayerParams::qkvb, "qkv.b", {3 * C}, ParamKind::Bias, kZeros);
  stacked(&LayerParams::attprojw, "attproj.w", {C, C}, ParamKind::Linear, proj_std);
  if (gpt2) stacked(&LayerParams::attprojb, "attproj.b", {C}, ParamKind::Bias, kZeros);
  stacked(&LayerParams::ln2w, "ln2.w", {C}, ParamKind::Norm, kOnes);
  if (gpt2) stacked(&LayerParams::ln2b, "ln2.b", {C}, ParamKind::Norm, kZeros);
  stacked(&LayerParams::fcw, "fc.w", {mlp_in, C}, ParamKind::Linear, std, true);
  if (gpt2) stacked(&LayerParams::fcb, "fc.b", {mlp_in}, ParamKind::Bias, kZeros, true);
  stacked(&LayerParams::fcprojw, "fcproj.w", {C, H}, ParamKind::Linear, proj_std, true);
  if (gpt2) stacked(&LayerParams::fcprojb, "fcproj.b", {C}, ParamKind::Bias, kZeros, true);
  out.lnfw = add("lnf.w", {C}, ParamKind::Norm, kOnes);
  if (gpt2) out.lnfb = add("lnf.b", {C}, ParamKind::Norm, kZeros);
  if (!cfg.tied_head) out.head = add("head.w", {Vp, C}, ParamKind::Head, std);
  // Experts: no biases (as the MoE trainers), the expert MLP's own activation.
  int moe_index = 0;
  for (int64_t l = 0; l < L; ++l) {
    if (!moe.is_moe_layer(static_cast<int>(l))) continue;
    LayerParams& lp = out.layers[static_cast<size_t>(l)];
    const std::string pre = "h." + std::to_string(l) + ".";
    lp.moe_index = moe_index++;
    lp.router = add(pre + "router.w", {moe.experts, C}, ParamKind::Router, std);
    for (int e = 0; e < moe.experts; ++e) {
      const std::string ex = pre + "expert." + std::to_string(e) + ".";
      const size_t fc = add(ex + "fc.w", {cfg.expert_in_width(), C}, ParamKind::Expert, std);
      const size_t proj = add(ex + "fcproj.w", {C, cfg.expert_hidden()}, ParamKind::Expert, proj_std);
      out.tensors[fc].expert = out.tensors[proj].expert = e;
      lp.expert_fc.push_back(fc);
      lp.expert_proj.push_back(proj);
    }
  }
  for (size_t i = 0; i < out.tensors.size(); ++i) out.tensors[i].global_index = i;
  if (options.expert_ranks > 1) keep_local_experts(out, cfg, options);

  // Offsets: the tensors every rank holds first (in list order, so a dense gpt2's buffer stays an
  // llm.c checkpoint body; with external linear weights the quantizable ones after the others, so
  // params() can stop where they begin), then the experts.
  size_t off = 0;
  const bool external = options.external_linear_weights;
  auto place = [&](auto&& wanted) {
    for (ParamTensor& t : out.tensors) {
      if (!wanted(t)) continue;
      t.offset = off;
      off += t.numel;
    }
  };
  const auto expert = [](const ParamTensor& t) { return t.kind == ParamKind::Expert; };
  if (external) {
    place([&](const ParamTensor& t) { return !t.quantizable && !expert(t); });
    out.resident_params = off;
    place([&](const ParamTensor& t) { return t.quantizable && !expert(t); });
  } else {
    place([&](const ParamTensor& t) { return !expert(t); });
  }
  out.expert_begin = off;
  place(expert);
  if (!external) out.resident_params = off;
  out.num_params = off;
  for (const ParamTensor& t : out.tensors)
    if (t.quantizable && t.numel > out.max_linear_numel) out.max_linear_numel = t.numel;
  return out;
}

std::vector<ParamTensor> GPT::parameter_tensors(const ModelConfig& cfg, GptOptions options) {
  check_shape(cfg);
  check_expert_split(cfg, options);
  return build_layout(cfg, options).tensors;
}

size_t GPT::state_buffer_bytes(const ModelConfig& cfg) {
  size_t bytes = 0;
  if (cfg.moe.enabled()) {
    const size_t layers = static_cast<size_t>(cfg.moe_layer_count());
    bytes += 2 * layers * static_cast<size_t>(cfg.moe.experts) * sizeof(float) + layers * sizeof(double);
  }
  if (cfg.arch == Arch::Llama) bytes += 2 * static_cast<size_t>(cfg.max_seq_len) * (cfg.head_dim() / 2) * sizeof(float);
  return bytes;
}

const ParamTensor& GPT::tensor(const std::string& name) const {
  for (const ParamTensor& t : tensors_)
    if (t.name == name) return t;
  throw Error("model has no parameter tensor \"" + name + "\"");
}

void GPT::init_tensor_values(size_t tensor_index, uint64_t seed, float* host_out) const {
  if (tensor_index >= tensors_.size())
    throw Error("init_tensor_values: tensor index " + std::to_string(tensor_index) + " out of range (" +
                std::to_string(tensors_.size()) + " tensors)");
  const ParamTensor& t = tensors_[tensor_index];
  const float init = init_std_[tensor_index];
  std::fill(host_out, host_out + t.numel, init < 0.0f ? 1.0f : 0.0f);
  if (init > 0.0f) {
    // Rows past the real vocabulary stay 0 (llm.c's padding): no token selects them and their
    // logits must not take probability mass.
    size_t n = t.numel;
    if (t.name == "wte" || t.name == "head.w") n = static_cast<size_t>(cfg_.vocab_size) * cfg_.d_model;
    fill_normal(host_out, n, init, tensor_stream(seed, t.name));
  }
}

void GPT::init_weights(uint64_t seed) {
  std::vector<float> host;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const ParamTensor& t = tensors_[i];
    if (t.offset >= resident_params_) continue;  // external: its owner initialises it
    host.resize(t.numel);
    init_tensor_values(i, seed, host.data());
    ops_.copy_from_host(params_ + t.offset, host.data(), t.numel * sizeof(float));
  }
}

void GPT::download_params(float* host) const {
  ops_.copy_to_host(host, params_, resident_params_ * sizeof(float));
}
void GPT::upload_params(const float* host) { ops_.copy_from_host(params_, host, resident_params_ * sizeof(float)); }

void GPT::set_linear_weight_source(const LinearWeightSource* source) {
  if (!source && options_.external_linear_weights)
    throw Error("GPT::set_linear_weight_source(nullptr): this model has no fp32 linear weights of its own "
                "(external_linear_weights); it needs a source");
  weight_source_ = source;
  if (source && !weight_scratch_) weight_scratch_ = ops_.alloc_floats(max_linear_numel_);
  if (!source && weight_scratch_) {
    ops_.free(weight_scratch_);
    weight_scratch_ = nullptr;
  }
}

size_t GPT::weight_scratch_floats() const { return weight_scratch_ ? max_linear_numel_ : 0; }

size_t GPT::num_non_embedding_params() const {
  size_t n = num_params_;
  for (const ParamTensor& t : tensors_)
    if (t.kind == ParamKind::Embedding || t.kind == ParamKind::Head) n -= t.numel;
  return n;
}

size_t GPT::num_active_params() const {
  if (!cfg_.moe.enabled()) return num_params_;
  size_t inactive = 0;
  for (const ParamTensor& t : tensors_)
    if (t.kind == ParamKind::Expert) inactive += t.numel;
  return num_params_ - inactive +
         inactive / static_cast<size_t>(local_experts()) * static_cast<size_t>(cfg_.moe.top_k);
}

std::string GPT::summary() const {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "%s: %d layers, d_model %d, %d heads, mlp %d, vocab %d (padded %d), max T %d, %s head; "
                "%.2fM parameters (%.2fM non-embedding)",
                cfg_.arch == Arch::GPT2 ? "gpt2" : "llama", cfg_.n_layer, cfg_.d_model, cfg_.n_head, cfg_.hidden(),
                cfg_.vocab_size, cfg_.padded_vocab, cfg_.max_seq_len, cfg_.tied_head ? "tied" : "untied",
                static_cast<double>(num_params_) * 1e-6, static_cast<double>(num_non_embedding_params()) * 1e-6);
  std::string out = buf;
  if (cfg_.moe.enabled()) {
    const MoeConfig& m = cfg_.moe;
    std::snprintf(buf, sizeof buf,
                  "; MoE in %d layers: %d experts (hidden %d, %s), top-%d%s, %s; %.2fM active per token",
                  cfg_.moe_layer_count(), m.experts, cfg_.expert_hidden(),
                  m.activation == MlpActivation::SwiGlu ? "swiglu" : "gelu", m.top_k,
                  m.shared_expert ? " + shared expert" : "",
                  m.capacity_factor > 0 ? ("capacity factor " + std::to_string(m.capacity_factor)).c_str() : "dropless",
                  static_cast<double>(num_active_params()) * 1e-6);
    out += buf;
    if (expert_parallel()) {
      std::snprintf(buf, sizeof buf, "; expert parallel over %d ranks: this rank holds experts %d..%d (the parameter "
                    "counts are this rank's)", options_.expert_ranks, options_.expert_rank * local_experts(),
                    (options_.expert_rank + 1) * local_experts() - 1);
      out += buf;
    }
  }
  return out;
}

void GPT::zero_grad() { ops_.fill_zero(grads_, num_params_ * sizeof(float)); }

}  // namespace eco

#include "train/model_weights.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/error.h"
#include "model/llmc_io.h"
#include "optim/moment_buffer.h"
#include "train/checkpoint_store.h"
#include "train/optimizer_checkpoint.h"

namespace eco {

OptimizerSpec optimizer_spec_from(const Config& cfg) {
  OptimizerSpec s;
  s.mode = parse_weight_mode(cfg.get_string("optim.mode"));
  s.kind = cfg.get_string("optim.optimizer") == "sgdm" ? OptimizerKind::Sgdm : OptimizerKind::AdamW;
  s.beta1 = static_cast<float>(cfg.get_float("optim.beta1"));
  s.beta2 = static_cast<float>(cfg.get_float("optim.beta2"));
  s.eps = static_cast<float>(cfg.get_float("optim.eps"));
  s.weight_decay = static_cast<float>(cfg.get_float("optim.weight_decay"));
  s.weight_format = parse_quant_format(cfg.get_string("optim.weight_format"));
  s.granularity = parse_scale_granularity(cfg.get_string("optim.scaling"));
  s.pow2_scales = cfg.get_bool("optim.pow2_scales");
  s.group_size = static_cast<size_t>(cfg.get_int("optim.group_size"));
  s.lowbit_granularity = parse_scale_granularity(cfg.get_string("optim.lowbit_scale"));
  s.scale_dtype = parse_lowbit_scale_dtype(cfg.get_string("optim.scale_dtype"));
  s.state_format = parse_state_format(cfg.get_string("optim.state_format"));
  // SOLO's β1 is lower for fewer bits (a 2-bit m cannot keep a long average).
  // (The 8-bit m of int8 and m8v4 keeps optim.beta1.)
  if (cfg.get_bool("optim.beta1_from_state_format") && is_block_state(s.state_format) &&
      block_state_spec(s.state_format).m_bits < 8)
    s.beta1 = block_state_spec(s.state_format).default_beta1;
  s.seed = static_cast<uint64_t>(cfg.get_int("train.seed"));
  if (s.kind == OptimizerKind::Sgdm && s.beta1 == 0.0f)
    throw ConfigError("optim.beta1: SGD with momentum needs beta1 > 0 (it is the momentum β)");
  return s;
}

ModelWeights::ModelWeights(const ModelConfig& mcfg, Ops& ops, const OptimizerSpec& spec, bool quantize_activations,
                           bool fp8_backward, OptimizerShard shard, ExpertSplit experts)
    : mcfg_(mcfg), ops_(ops), experts_(experts) {
  const WeightModeTraits tr = traits_of(spec.mode);
  external_ = tr.quantized && !tr.master;
  if (experts.ranks > 1 && shard.world > 1)
    throw ConfigError("dist.zero: ZeRO-1 together with expert parallelism (dist.ep > 1) is not supported yet; use "
                      "dist.zero=0 or dist.ep=1");
  GptOptions opts;
  opts.external_linear_weights = external_;
  opts.expert_rank = experts.rank;
  opts.expert_ranks = experts.ranks;
  model_ = std::make_unique<GPT>(mcfg_, ops_, opts);
  std::vector<OptimTensor> tensors;
  for (const ParamTensor& p : model_->tensors()) {
    OptimTensor t;
    t.name = p.name;
    t.rows = p.shape.size() == 2 ? static_cast<size_t>(p.shape[0]) : 1;
    t.cols = p.numel / t.rows;
    t.quantize = p.quantizable;
    t.weight_decay = p.weight_decay;
    t.value = external_ && t.quantize ? nullptr : model_->params() + p.offset;
    t.grad = model_->grads() + p.offset;
    t.offset = p.offset;
    t.id = p.global_index;
    tensors.push_back(std::move(t));
  }
  optim_ = std::make_unique<WeightOptimizer>(ops_, std::move(tensors), spec, shard);
  if (tr.quantized) {
    model_->set_linear_weight_source(this);
    GPT::LinearQuantization lq;
    lq.act_format = tr.bf16 ? QuantFormat::BF16 : QuantFormat::E4M3;
    lq.quantize_activations = quantize_activations;
    lq.quantize_output_grads = fp8_backward;
    model_->set_linear_quantization(lq);
  }
}

void ModelWeights::linear_weight_values(size_t tensor_index, float* out) const {
  if (optim_->is_quantized(tensor_index)) {
    const QuantRef& q = optim_->quant_ref(tensor_index);
    ops_.dequantize_rows(out, q, 0, q.rows);
  } else {
    const OptimTensor& t = optim_->tensors()[tensor_index];
    ops_.copy(out, t.value, t.rows * t.cols * sizeof(float));
  }
}

const QuantRef* ModelWeights::linear_weight_quant(size_t tensor_index) const {
  return optim_->is_quantized(tensor_index) ? &optim_->quant_ref(tensor_index) : nullptr;
}

// Stored copies of the quantized tensors: from the model's masters, or (master-free) from the
// values `source` holds for them (an fp32 staging model) or would initialise them to.
void ModelWeights::quantize_initial_weights(const GPT& source, uint64_t seed, bool from_source) {
  std::vector<float> host;
  for (size_t i = 0; i < model_->tensors().size(); ++i) {
    if (!optim_->is_quantized(i)) continue;
    if (optim_->has_master(i)) {
      optim_->init_quantized(i);
      continue;
    }
    const ParamTensor& p = model_->tensors()[i];
    host.resize(p.numel);
    if (from_source) ops_.copy_to_host(host.data(), source.params() + source.tensor(p.name).offset, p.numel * sizeof(float));
    else model_->init_tensor_values(i, seed, host.data());
    optim_->init_quantized(i, host.data());
  }
}

void ModelWeights::init(uint64_t seed) {
  model_->init_weights(seed);
  quantize_initial_weights(*model_, seed, /*from_source=*/false);
}

void ModelWeights::import_llmc(const std::string& path) {
  if (!external_) {
    load_llmc(*model_, path);
    quantize_initial_weights(*model_, 0, /*from_source=*/false);
    return;
  }
  // Master-free: read into a transient fp32 model, then keep only the stored copies.
  GPT staging(mcfg_, ops_);
  load_llmc(staging, path);
  for (size_t i = 0; i < model_->tensors().size(); ++i) {
    const ParamTensor& p = model_->tensors()[i];
    if (!optim_->is_quantized(i))
      ops_.copy(model_->params() + p.offset, staging.params() + staging.tensor(p.name).offset, p.numel * sizeof(float));
  }
  quantize_initial_weights(staging, 0, /*from_source=*/true);
}

void ModelWeights::export_llmc(const std::string& path) {
  // The exported weights are the ones the forward uses (dequantized copies in quantized modes).
  GPT staging(mcfg_, ops_);
  std::vector<float> host;
  for (size_t i = 0; i < model_->tensors().size(); ++i) {
    const ParamTensor& p = model_->tensors()[i];
    host.resize(p.numel);
    optim_->weight_values(i, host.data());
    ops_.copy_from_host(staging.params() + staging.tensor(p.name).offset, host.data(), p.numel * sizeof(float));
  }
  save_llmc(staging, path);
}

// The MoE expert bias is model state outside the optimizer: [MoE layers, E] floats of its own.
void ModelWeights::save(CheckpointWriter& w) const {
  save_optimizer_state(*optim_, ops_, w);
  const std::vector<float>& bias = model_->expert_bias();
  if (!bias.empty()) w.add_blob("expert_bias.f32", bias.data(), bias.size() * sizeof(float));
}

std::vector<CheckpointTensor> ModelWeights::checkpoint_layout() const {
  GptOptions whole = model_->options();
  whole.expert_rank = 0;
  whole.expert_ranks = 1;
  const std::vector<ParamTensor> all = GPT::parameter_tensors(mcfg_, whole);
  const std::vector<ParamTensor>& mine = model_->tensors();
  const int per_rank = mcfg_.moe.experts / std::max(1, experts_.ranks);
  std::vector<CheckpointTensor> layout(all.size());
  for (size_t i = 0; i < mine.size(); ++i) layout[mine[i].global_index].local = i;
  for (size_t g = 0; g < all.size(); ++g) {
    CheckpointTensor& t = layout[g];
    if (all[g].kind != ParamKind::Expert) continue;
    // The first expert-parallel group (world ranks 0 .. ep-1) writes: group rank q holds experts
    // [q·per_rank, (q+1)·per_rank).
    t.owner = all[g].expert / per_rank;
    // Every expert of a layer has the same shape and format: this rank's first expert in the same
    // layer and role has the same piece sizes.
    const std::string& name = all[g].name;
    const size_t at = name.find(".expert.") + 8, dot = name.find('.', at);
    const std::string twin = name.substr(0, at) + std::to_string(experts_.rank * per_rank) + name.substr(dot);
    for (size_t i = 0; i < mine.size(); ++i)
      if (mine[i].name == twin) t.twin = i;
    if (t.twin == CheckpointTensor::npos) throw Error("checkpoint layout: no tensor " + twin + " on this rank");
  }
  for (size_t g = 0; g < all.size(); ++g)
    if (layout[g].local != CheckpointTensor::npos) layout[g].twin = layout[g].local;
  return layout;
}

void ModelWeights::save(CheckpointWriter* w, Communicator& comm) const {
  if (experts_.ranks > 1) save_optimizer_state(*optim_, ops_, w, comm, checkpoint_layout());
  else save_optimizer_state(*optim_, ops_, w, comm);
  const std::vector<float>& bias = model_->expert_bias();
  if (!bias.empty() && w && comm.rank() == 0) w->add_blob("expert_bias.f32", bias.data(), bias.size() * sizeof(float));
}

void ModelWeights::load(const LoadedCheckpoint& ckpt) {
  if (experts_.ranks > 1) load_optimizer_state(*optim_, ops_, ckpt, checkpoint_layout());
  else load_optimizer_state(*optim_, ops_, ckpt);
  std::vector<float> bias(model_->expert_bias().size());
  if (bias.empty()) return;
  if (!ckpt.has_blob("expert_bias.f32"))
    throw CheckpointError(ckpt.dir.string() + ": no expert_bias.f32 for this MoE model (a checkpoint of another model?)");
  ckpt.read_blob("expert_bias.f32", bias.data(), bias.size() * sizeof(float));
  for (float b : bias)
    if (!std::isfinite(b)) throw CheckpointError(ckpt.dir.string() + ": expert_bias.f32 holds a non-finite value");
  model_->set_expert_bias(bias);
}

MemoryReport ModelWeights::memory(int B, int T) const {
  MemoryReport r = optim_->memory();
  r.activation_bytes = model_->activation_bytes(B, T);
  return r;
}

}  // namespace eco

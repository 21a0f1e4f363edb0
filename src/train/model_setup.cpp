#include "train/model_setup.h"

#include "core/error.h"

namespace eco {

ModelConfig model_config_from(const Config& cfg) {
  ModelConfig m;
  const std::string arch = cfg.get_string("model.arch");
  m.arch = arch == "llama" ? Arch::Llama : Arch::GPT2;
  m.vocab_size = cfg.get_int32("model.vocab_size");
  const int padded = cfg.get_int32("model.padded_vocab");
  m.padded_vocab = padded > 0 ? padded : (m.vocab_size + 127) / 128 * 128;
  if (m.padded_vocab < m.vocab_size)
    throw ConfigError("model.padded_vocab: must be >= model.vocab_size (" + std::to_string(m.vocab_size) + ")");
  m.n_layer = cfg.get_int32("model.n_layer");
  m.n_head = cfg.get_int32("model.n_head");
  m.d_model = cfg.get_int32("model.d_model");
  m.max_seq_len = cfg.get_int32("model.max_seq_len");
  m.mlp_hidden = cfg.get_int32("model.mlp_hidden");
  m.tied_head = cfg.get_bool("model.tied_head");
  m.rope_theta = static_cast<float>(cfg.get_float("model.rope_theta"));
  m.init_std = static_cast<float>(cfg.get_float("model.init_std"));
  m.norm_eps = static_cast<float>(cfg.get_float("model.norm_eps"));
  MoeConfig& moe = m.moe;
  moe.experts = cfg.get_int32("moe.experts");
  moe.top_k = cfg.get_int32("moe.top_k");
  moe.first_layer = cfg.get_int32("moe.first_layer");
  moe.every = cfg.get_int32("moe.every");
  moe.expert_hidden = cfg.get_int32("moe.expert_hidden");
  const std::string act = cfg.get_string("moe.activation");
  const bool swiglu = act == "swiglu" || (act == "auto" && m.arch == Arch::Llama);
  moe.activation = swiglu ? MlpActivation::SwiGlu : MlpActivation::Gelu;
  moe.shared_expert = cfg.get_bool("moe.shared_expert");
  moe.capacity_factor = static_cast<float>(cfg.get_float("moe.capacity_factor"));
  moe.renormalize = cfg.get_bool("moe.renormalize");
  moe.aux_loss_coef = static_cast<float>(cfg.get_float("moe.aux_loss_coef"));
  moe.z_loss_coef = static_cast<float>(cfg.get_float("moe.z_loss_coef"));
  moe.bias_update_rate = static_cast<float>(cfg.get_float("moe.bias_update_rate"));
  moe.quantize_dense_linears = cfg.get_bool("moe.quantize_dense_linears");
  if (m.arch == Arch::GPT2 && !m.tied_head)
    throw ConfigError("model.tied_head: the gpt2 architecture always ties the head (llm.c layout); set it to true");
  if (m.d_model % m.n_head != 0)
    throw ConfigError("model.d_model: " + std::to_string(m.d_model) + " is not divisible by model.n_head (" +
                      std::to_string(m.n_head) + ")");
  if (m.arch == Arch::Llama && m.head_dim() % 2 != 0)
    throw ConfigError("model.n_head: RoPE needs an even head dimension, d_model/n_head = " + std::to_string(m.head_dim()));
  return m;
}

}  // namespace eco

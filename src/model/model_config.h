#pragma once
// Shape of a dense GPT model. Filled from the config's "model" section (src/train/config_*.cpp).
#include <cstdint>
#include <string>

namespace eco {

enum class Arch { GPT2, Llama };

enum class MlpActivation { Gelu, SwiGlu };

// Sparse mixture of experts (DESIGN.md §3): the MLP of chosen layers becomes `experts` expert MLPs
// behind a softmax router (fp32, not quantized) that sends each token to its top_k experts.
struct MoeConfig {
  int experts = 0;              // 0 = a dense model
  int top_k = 2;
  int first_layer = 0;          // MoE layers: first_layer, first_layer + every, ...
  int every = 1;
  int expert_hidden = 0;        // 0 = the model's MLP width
  MlpActivation activation = MlpActivation::Gelu;  // of the experts (and the shared expert)
  bool shared_expert = false;   // a dense MLP (the model's width) every token also goes through
  float capacity_factor = 0.0f; // 0 = dropless; else each expert keeps ceil(cf * N * top_k / E) rows
  bool renormalize = true;      // gates = the top-k probabilities divided by their sum
  float aux_loss_coef = 0.01f;  // Switch load-balancing loss; 0 = off
  float z_loss_coef = 0.0f;     // router z-loss; 0 = off
  float bias_update_rate = 0.0f;// aux-loss-free expert bias step; 0 = off
  // The paper's scope quantizes only the expert linears of an MoE model; true also quantizes the
  // attention, dense-MLP and shared-expert linears.
  bool quantize_dense_linears = false;

  bool enabled() const { return experts > 0; }
  bool is_moe_layer(int layer) const {
    return enabled() && layer >= first_layer && (layer - first_layer) % every == 0;
  }
};

struct ModelConfig {
  Arch arch = Arch::GPT2;   // "gpt2": LayerNorm, GELU(tanh), learned positions, biases, tied head
                            // "llama": RMSNorm, RoPE, SwiGLU, no biases, head tied or not
  int vocab_size = 50257;   // real vocabulary (tokens the data can hold)
  int padded_vocab = 50304; // rows of the embedding/head; multiple of 128 as in llm.c; pads are 0
  int n_layer = 12;
  int n_head = 12;
  int d_model = 768;
  int max_seq_len = 1024;   // learned positions (gpt2) / RoPE table length (llama)
  int mlp_hidden = 0;       // 0 = default: 4*d (gpt2), ceil(8d/3) rounded up to 256 (llama)
  bool tied_head = true;    // llama may untie; gpt2 is always tied (llm.c layout)
  float rope_theta = 10000.0f;
  float init_std = 0.02f;   // residual projections use init_std / sqrt(2 * n_layer)
  float norm_eps = 1e-5f;
  MoeConfig moe;

  int head_dim() const { return d_model / n_head; }
  int hidden() const;       // mlp_hidden with the default resolved
  int expert_hidden() const { return moe.expert_hidden > 0 ? moe.expert_hidden : hidden(); }
  // Columns of an expert's first matrix: [gate | up] for SwiGLU.
  int expert_in_width() const { return moe.activation == MlpActivation::SwiGlu ? 2 * expert_hidden() : expert_hidden(); }
  int moe_layer_count() const;
};

}  // namespace eco

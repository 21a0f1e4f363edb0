#pragma once
// Shape of a dense GPT model. Filled from the config's "model" section (src/train/config_*.cpp).
#include <cstdint>
#include <string>

namespace eco {

enum class Arch { GPT2, Llama };

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

  int head_dim() const { return d_model / n_head; }
  int hidden() const;       // mlp_hidden with the default resolved
};

}  // namespace eco

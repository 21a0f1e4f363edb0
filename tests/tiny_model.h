#pragma once
// The tiny model shape and token batches the whole-model tests share (test_model_grad,
// test_gpt_quantized, test_moe): vocabulary 67 padded to 128, d 32, 4 heads, T up to 8.
#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace eco_test {

inline eco::ModelConfig tiny_config(eco::Arch arch, bool tied, int mlp_hidden = 0, int n_layer = 2) {
  eco::ModelConfig c;
  c.arch = arch;
  c.vocab_size = 67;
  c.padded_vocab = 128;
  c.n_layer = n_layer;
  c.n_head = 4;
  c.d_model = 32;
  c.max_seq_len = 8;
  c.mlp_hidden = mlp_hidden;
  c.tied_head = tied;
  return c;
}

struct Batch {
  int B = 2, T = 8;
  std::vector<int32_t> x, y;  // inputs and next-token targets
};

// B*T pseudo-random tokens below V from an LCG seeded by `seed`; targets are the inputs shifted by one.
inline Batch make_batch(int V, uint32_t seed, int B = 2, int T = 8) {
  Batch b;
  b.B = B;
  b.T = T;
  uint32_t s = seed;
  for (int i = 0; i < B * T + 1; ++i) {
    s = s * 1664525u + 1013904223u;
    b.x.push_back(static_cast<int32_t>((s >> 8) % static_cast<uint32_t>(V)));
  }
  b.y.assign(b.x.begin() + 1, b.x.end());
  b.x.pop_back();
  return b;
}

}  // namespace eco_test

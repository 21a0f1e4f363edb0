#pragma once
// Text sampling at eval time: a few tokens continued from a prompt, to see what the model learned.
#include <cstdint>
#include <vector>

#include "model/gpt.h"

namespace eco {

// Continues `prompt` by n_new tokens (temperature sampling over the real vocabulary, restricted to
// the top_k most likely tokens). The window is the last max_T tokens. Deterministic in `seed`.
std::vector<int32_t> sample_tokens(GPT& model, const std::vector<int32_t>& prompt, int n_new, int max_T,
                                   uint64_t seed, float temperature = 0.8f, int top_k = 40);

}  // namespace eco

#include "train/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/splitmix.h"

namespace eco {

std::vector<int32_t> sample_tokens(GPT& model, const std::vector<int32_t>& prompt, int n_new, int max_T,
                                   uint64_t seed, float temperature, int top_k) {
  const int V = model.config().vocab_size;
  const int Vp = model.config().padded_vocab;
  std::vector<int32_t> tokens = prompt;
  std::vector<int> order(V);
  std::vector<double> probs;
  std::vector<float> row(static_cast<size_t>(Vp));
  uint64_t rng = seed;
  for (int i = 0; i < n_new; ++i) {
    const int T = std::min<int>(static_cast<int>(tokens.size()), max_T);
    std::vector<int32_t> window(tokens.end() - T, tokens.end());
    model.forward(window.data(), nullptr, 1, T);
    model.copy_logits_row(static_cast<size_t>(T - 1), row.data());  // the model's memory may be a GPU's
    const float* logits = row.data();
    std::iota(order.begin(), order.end(), 0);
    const int k = std::min(top_k > 0 ? top_k : V, V);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int a, int b) { return logits[a] > logits[b]; });
    probs.assign(k, 0.0);
    double sum = 0.0;
    for (int j = 0; j < k; ++j) {
      probs[j] = std::exp((static_cast<double>(logits[order[j]]) - logits[order[0]]) / temperature);
      sum += probs[j];
    }
    double u = static_cast<double>(splitmix64(rng) >> 11) * 0x1.0p-53 * sum;
    int pick = k - 1;
    for (int j = 0; j < k; ++j) {
      u -= probs[j];
      if (u <= 0.0) { pick = j; break; }
    }
    tokens.push_back(order[pick]);
  }
  return std::vector<int32_t>(tokens.begin() + prompt.size(), tokens.end());
}

}  // namespace eco

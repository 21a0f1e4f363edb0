#pragma once
// AdamW over a flat fp32 parameter buffer (the `fp32` mode): fp32 moments, decoupled weight
// decay on the tensors that ask for it.
#include <cstdint>
#include <vector>

#include "model/gpt.h"

namespace eco {

struct AdamWHyper {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  AdamW(const std::vector<ParamTensor>& tensors, size_t num_params, AdamWHyper hyper);

  // One update with learning rate `lr`; t is the 1-based count of updates so far including this one.
  void step(float* params, const float* grads, float lr, int64_t t);

  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const AdamWHyper& hyper() const { return hyper_; }

 private:
  std::vector<ParamTensor> tensors_;
  AdamWHyper hyper_;
  std::vector<float> m_, v_;
};

}  // namespace eco

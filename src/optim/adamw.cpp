#include "optim/adamw.h"

#include "optim/update_rule.h"

namespace eco {

AdamW::AdamW(const std::vector<ParamTensor>& tensors, size_t num_params, AdamWHyper hyper)
    : tensors_(tensors), hyper_(hyper), m_(num_params, 0.0f), v_(num_params, 0.0f) {}

void AdamW::step(float* params, const float* grads, float lr, int64_t t) {
  for (const ParamTensor& pt : tensors_) {
    float wd = pt.weight_decay ? hyper_.weight_decay : 0.0f;
    AdamStepConsts c = make_adam_consts(lr, hyper_.beta1, hyper_.beta2, hyper_.eps, wd, t);
    float* w = params + pt.offset;
    const float* g = grads + pt.offset;
    float* m = m_.data() + pt.offset;
    float* v = v_.data() + pt.offset;
    const int64_t n = static_cast<int64_t>(pt.numel);
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
      float d = adam_moments(g[i], m[i], v[i], c);
      w[i] = adamw_new_weight(w[i], m[i], d, c);
    }
  }
}

}  // namespace eco

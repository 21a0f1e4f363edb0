#pragma once
// The per-element optimizer updates (AdamW, SGD with momentum, ECO's error injection), shared by the CPU and CUDA backends (DESIGN.md §4). Every
// operation is a single IEEE float op in a fixed order so both backends give identical bits
// (nvcc must not contract into FMAs here: the CUDA build compiles this with --fmad=false).
#include <cmath>

#include "core/hd.h"

namespace eco {

// Constants of one AdamW step, computed once per step on the host.
struct AdamStepConsts {
  float lr;            // η_t, the scheduled LR of this step
  float beta1, beta2;
  float eps;
  float weight_decay;  // λ; 0 for tensors excluded from decay
  float bc1, bc2;      // 1 − β1^t and 1 − β2^t, t counted from 1
};

ECO_HD AdamStepConsts make_adam_consts(float lr, float beta1, float beta2, float eps, float wd, long long t) {
  AdamStepConsts c;
  c.lr = lr;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  c.weight_decay = wd;
  // Bias corrections in double: β^t underflows gracefully and 1 − β^t stays accurate for small t.
  c.bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t)));
  c.bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t)));
  return c;
}

// Moments update: m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g²; returns d = sqrt(v̂) + ε.
ECO_HD float adam_moments(float g, float& m, float& v, const AdamStepConsts& c) {
  m = c.beta1 * m + (1.0f - c.beta1) * g;
  v = c.beta2 * v + (1.0f - c.beta2) * (g * g);
  return std::sqrt(v / c.bc2) + c.eps;
}

// w~ = w − η·(m̂/d + λ·w): the decoupled-decay AdamW step, formed in fp32.
ECO_HD float adamw_new_weight(float w, float m, float d, const AdamStepConsts& c) {
  float direction = (m / c.bc1) / d + c.weight_decay * w;
  return w - c.lr * direction;
}

// ECO for Adam (DESIGN.md §4): fold the rounding error e = w~ − q(w~) into the first moment,
// m ← m + (1 − 1/β1)·(1 − β1^t)·d·e/η. An extra Δ in m moves the weight by −η·Δ/(bc1·d) in each
// later step, decaying by β1; summed over all later steps that is −η·Δ·β1/((1−β1)·bc1·d), and
// setting it equal to +e gives this coefficient. Returns 0 when η = 0 (nothing to re-apply over).
ECO_HD float eco_adam_injection(float e, float d, const AdamStepConsts& c) {
  if (c.lr == 0.0f) return 0.0f;
  return (1.0f - 1.0f / c.beta1) * c.bc1 * d * e / c.lr;
}

// SGD with momentum: m ← β·m + (1−β)·g, w~ = w − η·(m + λ·w).
struct SgdmStepConsts {
  float lr;
  float beta;
  float weight_decay;
};

ECO_HD float sgdm_momentum(float g, float& m, const SgdmStepConsts& c) {
  m = c.beta * m + (1.0f - c.beta) * g;
  return m;
}

ECO_HD float sgdm_new_weight(float w, float m, const SgdmStepConsts& c) {
  return w - c.lr * (m + c.weight_decay * w);
}

// ECO for SGDM: m ← m + (1 − 1/β)·e/η (the same argument with d = bc1 = 1).
ECO_HD float eco_sgdm_injection(float e, const SgdmStepConsts& c) {
  if (c.lr == 0.0f) return 0.0f;
  return (1.0f - 1.0f / c.beta) * e / c.lr;
}

}  // namespace eco

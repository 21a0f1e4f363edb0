#pragma once
// The per-element AdamW update, shared by the CPU and CUDA backends (DESIGN.md §4). Every
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

}  // namespace eco

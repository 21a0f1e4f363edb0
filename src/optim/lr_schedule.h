#pragma once
// Learning-rate schedule: linear warmup from warmup_init_ratio·lr to lr, then cosine, linear or
// constant decay to final_lr_ratio·lr at the last step (the paper's recipe: 10% warmup from
// 0.01× peak, cosine to 0.1× peak).
#include <cstdint>

namespace eco {

enum class DecayKind { Cosine, Linear, Constant };

struct LrSchedule {
  double peak_lr = 6e-4;
  int64_t total_steps = 1000;
  int64_t warmup_steps = 0;
  double warmup_init_ratio = 0.01;
  double final_lr_ratio = 0.1;
  DecayKind decay = DecayKind::Cosine;

  // LR of optimizer step `step` (0-based: step 0 is the first update).
  double lr_at(int64_t step) const;
};

}  // namespace eco

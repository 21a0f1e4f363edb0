#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace eco {

double LrSchedule::lr_at(int64_t step) const {
  if (step < warmup_steps) {
    // Reaches the peak exactly at step == warmup_steps; the first step is never 0, which ECO's
    // 1/η injection needs.
    double frac = static_cast<double>(step) / static_cast<double>(warmup_steps);
    return peak_lr * (warmup_init_ratio + (1.0 - warmup_init_ratio) * frac);
  }
  if (decay == DecayKind::Constant) return peak_lr;
  int64_t decay_steps = std::max<int64_t>(1, total_steps - 1 - warmup_steps);
  double frac = std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  double final_lr = peak_lr * final_lr_ratio;
  if (decay == DecayKind::Linear) return peak_lr + (final_lr - peak_lr) * frac;
  return final_lr + 0.5 * (peak_lr - final_lr) * (1.0 + std::cos(M_PI * frac));
}

}  // namespace eco

#pragma once
// The MoE layers' balancing picture of one step (GPT::moe_stats) as a metrics.jsonl field and as
// a short console summary.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/gpt.h"

namespace eco {

// [{"layer", "aux_loss", "z_loss", "load_min", "load_max", "load_entropy", "dropped"}, ...]
nlohmann::json moe_stats_json(const std::vector<MoeLayerStats>& stats);

// "aux 0.0102 | load 0.71-1.38" (sum of the aux losses; the extreme expert loads over all MoE
// layers, 1 = balanced) plus " | dropped 3.1%" when tokens were dropped; empty without MoE layers.
std::string moe_console_summary(const std::vector<MoeLayerStats>& stats);

}  // namespace eco

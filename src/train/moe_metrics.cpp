#include "train/moe_metrics.h"

#include <algorithm>
#include <cstdio>

namespace eco {

nlohmann::json moe_stats_json(const std::vector<MoeLayerStats>& stats) {
  nlohmann::json out = nlohmann::json::array();
  for (const MoeLayerStats& s : stats)
    out.push_back({{"layer", s.layer},
                   {"aux_loss", s.aux_loss},
                   {"z_loss", s.z_loss},
                   {"load_min", s.load_min},
                   {"load_max", s.load_max},
                   {"load_entropy", s.load_entropy},
                   {"dropped", s.dropped_fraction}});
  return out;
}

std::string moe_console_summary(const std::vector<MoeLayerStats>& stats) {
  if (stats.empty()) return "";
  double aux = 0.0, lo = stats[0].load_min, hi = stats[0].load_max, dropped = 0.0;
  for (const MoeLayerStats& s : stats) {
    aux += s.aux_loss + s.z_loss;
    lo = std::min(lo, s.load_min);
    hi = std::max(hi, s.load_max);
    dropped = std::max(dropped, s.dropped_fraction);
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "aux %.4f | load %.2f-%.2f", aux, lo, hi);
  std::string out = buf;
  if (dropped > 0.0) {
    std::snprintf(buf, sizeof buf, " | dropped %.1f%%", 100.0 * dropped);
    out += buf;
  }
  return out;
}

}  // namespace eco

#include "core/log.h"

namespace eco {
void init_logging(int rank, bool verbose) {
  spdlog::set_pattern(rank == 0 ? "[%H:%M:%S] %^%l%$ %v" : "[%H:%M:%S rank " + std::to_string(rank) + "] %^%l%$ %v");
  if (rank != 0) spdlog::set_level(spdlog::level::warn);
  else spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info);
}
}  // namespace eco

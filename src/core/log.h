#pragma once
// The logger is the one global: spdlog's default logger, console only, rank 0 prints.
#include <spdlog/spdlog.h>

namespace eco {
// Sets the console pattern and level; ranks other than 0 only print warnings and errors.
void init_logging(int rank = 0, bool verbose = false);
}  // namespace eco

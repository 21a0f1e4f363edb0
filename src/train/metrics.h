#pragma once
// metrics.jsonl: one JSON object per line, flushed at once so a crash loses at most a line.
#include <cstdint>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace eco {

class MetricsWriter {
 public:
  // Opens DIR/metrics.jsonl. With keep_up_to_step >= 0 (a resumed run) the lines of steps after
  // it are dropped first, so the file reads as one uninterrupted run; otherwise it starts empty.
  MetricsWriter(const std::filesystem::path& dir, int64_t keep_up_to_step);
  void write(const nlohmann::json& record);

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace eco

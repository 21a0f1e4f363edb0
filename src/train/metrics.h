#pragma once
// metrics.jsonl: one JSON object per line, written with one append each, so a crash loses at most
// the line being written; a write that fails part way (disk full) is cut back off the file, so no
// torn line is ever left behind for a later --resume or eco_report to trip on.
#include <cstdint>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace eco {

class MetricsWriter {
 public:
  // Opens DIR/metrics.jsonl. With keep_up_to_step >= 0 (a resumed run) the records of steps after
  // it are dropped first, so the file reads as one uninterrupted run, and so are lines that are not
  // JSON objects with an integer "step" (a torn line from an older build or a hand edit), with a
  // warning; otherwise it starts empty. SystemError when the file cannot be read or written.
  MetricsWriter(const std::filesystem::path& dir, int64_t keep_up_to_step);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const nlohmann::json& record);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace eco

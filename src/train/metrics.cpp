#include "train/metrics.h"

#include <sstream>
#include <string>

#include "core/atomic_file.h"
#include "core/error.h"

namespace eco {

MetricsWriter::MetricsWriter(const std::filesystem::path& dir, int64_t keep_up_to_step)
    : path_(dir / "metrics.jsonl") {
  std::string kept;
  if (keep_up_to_step >= 0 && std::filesystem::exists(path_)) {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (rec.is_discarded()) continue;  // a torn last line from a crash
      if (rec.contains("step") && rec["step"].get<int64_t>() > keep_up_to_step) continue;
      kept += line + "\n";
    }
  }
  atomic_write_file(path_, kept);
  out_.open(path_, std::ios::app);
  if (!out_) throw SystemError("cannot open " + path_.string() + " for appending");
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) throw SystemError("cannot write to " + path_.string() + " (disk full?)");
}

}  // namespace eco

#include "train/metrics.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/json_read.h"
#include "core/log.h"

namespace eco {
namespace {

// The lines of the old file worth keeping: records of steps up to `keep_up_to_step`.
std::string kept_records(const std::filesystem::path& path, int64_t keep_up_to_step) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec))) return "";
  std::string text, error;
  if (!read_small_file(path, text, error, size_t{4} << 30))
    throw SystemError("cannot read " + path.string() + " to resume: " + error + "; move it away to start its log afresh");
  std::string kept;
  size_t dropped_bad = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    const JsonParse rec = parse_json(line);
    const bool valid = rec.ok() && rec.value.is_object() && rec.value.contains("step") &&
                       rec.value["step"].is_number_integer();
    if (!valid) {
      ++dropped_bad;
      continue;
    }
    if (rec.value["step"].get<int64_t>() > keep_up_to_step) continue;
    kept.append(line);
    kept += '\n';
  }
  if (dropped_bad)
    spdlog::warn("{}: dropped {} line(s) that are not metrics records (torn by a crash or edited)", path.string(),
                 dropped_bad);
  return kept;
}

}  // namespace

MetricsWriter::MetricsWriter(const std::filesystem::path& dir, int64_t keep_up_to_step) : path_(dir / "metrics.jsonl") {
  atomic_write_file(path_, keep_up_to_step >= 0 ? kept_records(path_, keep_up_to_step) : std::string());
  do fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) throw SystemError("cannot open " + path_.string() + " for appending: " + std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsWriter::write(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  struct stat st {};
  const bool sized = ::fstat(fd_, &st) == 0;
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      // Cut the partial line off again, so the file still ends with a whole record.
      if (done > 0 && sized && ::ftruncate(fd_, st.st_size) != 0)
        spdlog::warn("{}: could not remove a partial line: {}", path_.string(), std::strerror(errno));
      throw SystemError("cannot write to " + path_.string() + ": " + std::strerror(err) +
                        (err == ENOSPC || err == EDQUOT ? " (disk full: free space, then continue with --resume)" : ""));
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace eco

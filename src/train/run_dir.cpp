#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "train/checkpoint_store.h"

namespace eco {
namespace fs = std::filesystem;

RunDirLock::RunDirLock(fs::path run_dir) : path_(run_dir / ".lock") {
  std::error_code ec;
  if (fs::exists(run_dir, ec) && !fs::is_directory(run_dir, ec))
    throw SystemError("cannot use " + run_dir.string() + " as the run directory: it exists and is not a directory; "
                      "choose another --out");
  fs::create_directories(run_dir, ec);
  if (ec)
    throw SystemError("cannot create the run directory " + run_dir.string() + ": " + ec.message() +
                      "; choose another --out (log.dir)");
  do fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0)
    throw SystemError("cannot write in the run directory " + run_dir.string() + ": " + std::strerror(errno) +
                      "; choose another --out (log.dir)");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[32] = {};
    const ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw ConfigError("the run directory " + run_dir.string() + " is in use by another eco_train process" +
                        (n > 0 ? " (pid " + std::string(holder, static_cast<size_t>(n)) + ")" : std::string()) +
                        "; wait for it to finish or choose another --out");
    throw SystemError("cannot lock " + path_.string() + ": " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    spdlog::warn("could not record the pid in {}: {}", path_.string(), std::strerror(errno));
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays (removing it would race a new locker)
}

std::string PreviousRun::describe() const {
  std::string s;
  if (!checkpoint_steps.empty())
    s = std::to_string(checkpoint_steps.size()) + " checkpoint" + (checkpoint_steps.size() > 1 ? "s" : "") +
        " up to step " + std::to_string(checkpoint_steps.front());
  if (has_metrics) s += (s.empty() ? "" : " and ") + std::string("metrics.jsonl");
  return s;
}

PreviousRun inspect_run_dir(const fs::path& run_dir) {
  PreviousRun r;
  r.checkpoint_steps = checkpoint_steps(run_dir);
  std::error_code ec;
  r.has_metrics = fs::file_size(run_dir / "metrics.jsonl", ec) > 0 && !ec;
  return r;
}

void discard_previous_run(const fs::path& run_dir) {
  for (int64_t step : checkpoint_steps(run_dir)) {
    const fs::path dir = run_dir / checkpoint_dir_name(step);
    if (const std::string error = delete_checkpoint(dir); !error.empty())
      throw SystemError("--overwrite: cannot delete " + dir.string() + ": " + error);
  }
  for (const char* file : {"metrics.jsonl", "config.json"}) {
    std::error_code ec;
    fs::remove(run_dir / file, ec);
    if (ec) throw SystemError("--overwrite: cannot delete " + (run_dir / file).string() + ": " + ec.message());
  }
  fsync_directory(run_dir);
}

}  // namespace eco

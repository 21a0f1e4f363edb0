#pragma once
// The rules of a run directory (--out / log.dir), so that no invocation loses another's work:
// - one eco_train at a time: RUN_DIR/.lock is held (flock) for the life of the process; the kernel
//   drops it when the process dies, so a crash never leaves a stale lock;
// - a directory that already holds a run (checkpoints or metrics) is continued with --resume or
//   explicitly discarded with --overwrite; training into it otherwise is refused before any work;
// - nothing in the directory changes until the run's config is validated (and, on --resume, the
//   checkpoint accepted).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace eco {

class RunDirLock {
 public:
  // Creates RUN_DIR if needed (SystemError when it cannot be created or written) and takes the
  // lock (ConfigError naming the holder's pid when another process has it).
  explicit RunDirLock(std::filesystem::path run_dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

struct PreviousRun {
  std::vector<int64_t> checkpoint_steps;  // newest first
  bool has_metrics = false;               // a non-empty metrics.jsonl
  bool empty() const { return checkpoint_steps.empty() && !has_metrics; }
  std::string describe() const;           // "checkpoints up to step 300 and metrics.jsonl"
};

PreviousRun inspect_run_dir(const std::filesystem::path& run_dir);

// --overwrite: deletes the previous run's checkpoints (each renamed away before it is deleted, so
// a crash never leaves half a checkpoint), metrics.jsonl and config.json.
void discard_previous_run(const std::filesystem::path& run_dir);

}  // namespace eco

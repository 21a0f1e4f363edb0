#pragma once
// Durable file writes. A crash (power loss included) leaves either the old file or the complete new
// one, never a torn mix: write a temp file in the same directory, fsync it, rename it over the
// target, fsync the directory so the rename itself is on disk. Failures are SystemError with the
// path and the OS's reason.
#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>

namespace eco {

class DurableFile;

// Replaces `path` with `contents` atomically; creates missing parent directories.
void atomic_write_file(const std::filesystem::path& path, const std::string& contents);
// The same for content produced piece by piece: `write` fills the temp file.
void atomic_write_with(const std::filesystem::path& path, const std::function<void(DurableFile&)>& write);

// Makes the directory's entries (creations, renames, deletions) durable.
void fsync_directory(const std::filesystem::path& dir);

// A new file (created or truncated) written with plain POSIX calls; sync_and_close() makes its
// bytes durable before the caller renames it into place.
class DurableFile {
 public:
  explicit DurableFile(std::filesystem::path path);
  ~DurableFile();  // closes without syncing if sync_and_close() was not reached (error paths)
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, size_t bytes);
  void sync_and_close();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace eco

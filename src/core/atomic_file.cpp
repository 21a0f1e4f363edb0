#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace eco {
namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path, int err) {
  throw SystemError("cannot " + what + " " + path.string() + ": " + std::strerror(err));
}

}  // namespace

DurableFile::DurableFile(std::filesystem::path path) : path_(std::move(path)) {
  do fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) fail("create", path_, errno);
}

DurableFile::~DurableFile() {
  if (fd_ >= 0) ::close(fd_);
}

void DurableFile::write(const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Linux writes at most ~2 GiB per call; a short write is not an error, just continue.
    const ssize_t n = ::write(fd_, p, bytes < (size_t{1} << 30) ? bytes : (size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", path_, errno);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void DurableFile::sync_and_close() {
  if (::fsync(fd_) != 0) fail("fsync", path_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close", path_, errno);
}

void fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("open directory", dir, errno);
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    // Some filesystems cannot fsync a directory; their renames are as durable as they get.
    if (err != EINVAL && err != ENOTSUP) fail("fsync directory", dir, err);
    return;
  }
  ::close(fd);
}

void atomic_write_file(const std::filesystem::path& path, const std::string& contents) {
  atomic_write_with(path, [&](DurableFile& f) { f.write(contents.data(), contents.size()); });
}

void atomic_write_with(const std::filesystem::path& path, const std::function<void(DurableFile&)>& write) {
  const std::filesystem::path parent = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) fail("create directory", parent, ec.value());
  std::string tmp_name = ".";  // built with += : GCC 12 warns falsely (-Wrestrict) on "." + string
  tmp_name += path.filename().string();
  tmp_name += ".tmp." + std::to_string(::getpid());
  const std::filesystem::path tmp = parent / tmp_name;
  try {
    DurableFile f(tmp);
    write(f);
    f.sync_and_close();
  } catch (...) {
    std::filesystem::remove(tmp, ec);
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::filesystem::remove(tmp, ec);
    fail("rename " + tmp.string() + " to", path, err);
  }
  fsync_directory(parent);
}

}  // namespace eco

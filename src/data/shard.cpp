#include "data/shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "core/atomic_file.h"
#include "core/error.h"

namespace eco {

// The format is little-endian on disk and we read it byte for byte into uint16, so the host must be too.
static_assert(std::endian::native == std::endian::little, "token shards are read as little-endian");

namespace {

[[noreturn]] void bad_shard(const std::filesystem::path& path, const std::string& what) {
  throw DataError("token shard " + path.string() + ": " + what);
}

// Reads up to `bytes` at `offset`; returns how many were read (fewer only at end of file), or -1
// with errno set on an I/O error.
ssize_t pread_full(int fd, void* dst, size_t bytes, off_t offset) {
  char* p = static_cast<char*>(dst);
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = ::pread(fd, p + got, bytes - got, offset + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

// Closes the descriptor unless the constructor that opened it got far enough to own it.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

int open_shard(const std::filesystem::path& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; the file type
  // is checked right after, and on a regular file the flag changes nothing.
  int fd;
  do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd >= 0) return fd;
  const int err = errno;
  if (err == ENOENT) bad_shard(path, "no such file (check data.train / data.val, or run tools/fetch_data.sh)");
  if (err == EMFILE || err == ENFILE)
    throw SystemError("cannot open token shard " + path.string() + ": " + std::strerror(err) +
                      "; every shard stays open while training, so raise the limit (ulimit -n) or use fewer, "
                      "larger shards");
  bad_shard(path, std::string("cannot open: ") + std::strerror(err));
}

}  // namespace

void write_shard(const std::filesystem::path& path, std::span<const uint16_t> tokens) {
  if (tokens.empty()) throw DataError("refusing to write an empty token shard " + path.string());
  if (tokens.size() > kShardMaxTokens)
    throw DataError("token shard " + path.string() + ": " + std::to_string(tokens.size()) +
                    " tokens exceed the format's limit of " + std::to_string(kShardMaxTokens) +
                    " per shard; split the output into several shards");
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());

  atomic_write_with(path, [&](DurableFile& f) {
    f.write(header, sizeof(header));
    f.write(tokens.data(), tokens.size_bytes());
  });
}

ShardFile::ShardFile(const std::filesystem::path& path) : path_(path) {
  FdGuard fd{open_shard(path)};
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) bad_shard(path, std::string("cannot stat: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) bad_shard(path, "not a regular file (it is a directory); name a token shard file");
  if (!S_ISREG(st.st_mode))
    bad_shard(path, "not a regular file (a FIFO, device or socket); token shards must be ordinary files");
  const size_t file_bytes = static_cast<size_t>(st.st_size);
  int32_t header[kShardHeaderInts];
  const ssize_t got = file_bytes < kShardHeaderBytes ? 0 : pread_full(fd.fd, header, sizeof(header), 0);
  if (got < 0) throw SystemError("cannot read token shard " + path.string() + ": " + std::strerror(errno));
  if (static_cast<size_t>(got) < kShardHeaderBytes)
    bad_shard(path, "file has " + std::to_string(file_bytes) + " bytes, less than the " +
                        std::to_string(kShardHeaderBytes) + "-byte header; it is truncated or not a token shard");
  if (header[0] != kShardMagic)
    bad_shard(path, "bad magic number " + std::to_string(header[0]) + " (expected " + std::to_string(kShardMagic) +
                        "); not an llm.c token shard");
  if (header[1] != kShardVersion)
    bad_shard(path, "unsupported version " + std::to_string(header[1]) + " (only version " +
                        std::to_string(kShardVersion) + ", uint16 tokens, is supported)");
  if (header[2] <= 0) bad_shard(path, "header says " + std::to_string(header[2]) + " tokens; the shard is empty");
  const size_t count = static_cast<size_t>(header[2]);
  const size_t expected = kShardHeaderBytes + 2 * count;
  if (file_bytes != expected) {
    const std::string kind = file_bytes < expected ? "truncated" : "has extra bytes after the tokens";
    bad_shard(path, kind + ": the header says " + std::to_string(count) + " tokens, so the file should have " +
                        std::to_string(expected) + " bytes, but it has " + std::to_string(file_bytes));
  }
  count_ = count;
  fd_ = fd.release();
}

ShardFile::~ShardFile() { close(); }

ShardFile::ShardFile(ShardFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), count_(std::exchange(other.count_, 0)) {}

ShardFile& ShardFile::operator=(ShardFile&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

void ShardFile::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  count_ = 0;
}

void ShardFile::read(size_t first_token, size_t count, uint16_t* dst) const {
  if (fd_ < 0 || first_token > count_ || count > count_ - first_token)
    throw std::out_of_range("ShardFile::read: tokens [" + std::to_string(first_token) + ", +" + std::to_string(count) +
                            ") outside the " + std::to_string(count_) + " tokens of " + path_.string());
  const off_t offset = static_cast<off_t>(kShardHeaderBytes + 2 * first_token);
  const size_t bytes = 2 * count;
  const ssize_t got = pread_full(fd_, dst, bytes, offset);
  if (got < 0) throw SystemError("cannot read token shard " + path_.string() + ": " + std::strerror(errno));
  if (static_cast<size_t>(got) == bytes) return;
  struct stat st {};
  const std::string now = ::fstat(fd_, &st) == 0 ? std::to_string(st.st_size) + " bytes" : "fewer bytes";
  bad_shard(path_, "the file changed while training: " + std::to_string(count) + " tokens at token offset " +
                       std::to_string(first_token) + " (byte offset " + std::to_string(offset) +
                       ") are no longer there; it had " + std::to_string(kShardHeaderBytes + 2 * count_) +
                       " bytes when opened and has " + now +
                       " now. Do not modify shards while eco_train reads them; restore the file (or write new "
                       "shards under new names) and resume from the last checkpoint");
}

std::vector<uint16_t> read_shard(const std::filesystem::path& path) {
  const ShardFile shard(path);
  std::vector<uint16_t> tokens(shard.size());
  shard.read(0, tokens.size(), tokens.data());
  return tokens;
}

void check_tokens_below(std::span<const uint16_t> tokens, uint32_t vocab_size, const std::string& source,
                        size_t first_offset) {
  // One branch-free pass for the common (valid) case; locate the offender only on failure.
  uint16_t max_token = 0;
  for (uint16_t t : tokens) max_token = t > max_token ? t : max_token;
  if (max_token < vocab_size) return;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size)
      throw DataError("token shard " + source + ": token id " + std::to_string(tokens[i]) + " at token offset " +
                      std::to_string(first_offset + i) + " is not below the vocabulary size " +
                      std::to_string(vocab_size) +
                      " (was the data made with a different tokenizer? check model.vocab_size)");
  }
}

void check_tokens_below(const ShardFile& shard, uint32_t vocab_size) {
  constexpr size_t kChunkTokens = (size_t{1} << 20) / sizeof(uint16_t);
  std::vector<uint16_t> chunk(std::min(kChunkTokens, shard.size()));
  for (size_t first = 0; first < shard.size(); first += chunk.size()) {
    const size_t n = std::min(chunk.size(), shard.size() - first);
    shard.read(first, n, chunk.data());
    check_tokens_below(std::span<const uint16_t>(chunk.data(), n), vocab_size, shard.path().string(), first);
  }
}

}  // namespace eco

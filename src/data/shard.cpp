#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/atomic_file.h"
#include "core/error.h"

namespace eco {

// The format is little-endian on disk and we read it by mapping, so the host must be too.
static_assert(std::endian::native == std::endian::little, "token shards are read as little-endian");

namespace {

[[noreturn]] void bad_shard(const std::filesystem::path& path, const std::string& what) {
  throw DataError("token shard " + path.string() + ": " + what);
}

// Reads exactly `bytes` at `offset`, or returns false when the file is shorter.
bool pread_exact(int fd, void* dst, size_t bytes, off_t offset) {
  char* p = static_cast<char*>(dst);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, bytes, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += n;
  }
  return true;
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

MappedShard::MappedShard(const std::filesystem::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) bad_shard(path, "no such file (check data.train / data.val, or run tools/fetch_data.sh)");
    bad_shard(path, std::string("cannot open: ") + std::strerror(err));
  }
  // Closing the descriptor right after mapping is fine: the mapping keeps the file alive.
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) bad_shard(path, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) bad_shard(path, "not a regular file");
  const size_t file_bytes = static_cast<size_t>(st.st_size);
  int32_t header[kShardHeaderInts];
  if (file_bytes < kShardHeaderBytes || !pread_exact(fd, header, sizeof(header), 0))
    bad_shard(path, "file has " + std::to_string(file_bytes) + " bytes, less than the " +
                        std::to_string(kShardHeaderBytes) + "-byte header; it is truncated or not a token shard");
  if (header[0] != kShardMagic)
    bad_shard(path, "bad magic number " + std::to_string(header[0]) + " (expected " + std::to_string(kShardMagic) +
                        "); not an llm.c token shard");
  if (header[1] != kShardVersion)
    bad_shard(path, "unsupported version " + std::to_string(header[1]) + " (only version " +
                        std::to_string(kShardVersion) + ", uint16 tokens, is supported)");
  if (header[2] <= 0) bad_shard(path, "header says " + std::to_string(header[2]) + " tokens; the shard is empty");
  count_ = static_cast<size_t>(header[2]);
  const size_t expected = kShardHeaderBytes + 2 * count_;
  if (file_bytes != expected) {
    const std::string kind = file_bytes < expected ? "truncated" : "has extra bytes after the tokens";
    bad_shard(path, kind + ": the header says " + std::to_string(count_) + " tokens, so the file should have " +
                        std::to_string(expected) + " bytes, but it has " + std::to_string(file_bytes));
  }
  map_bytes_ = file_bytes;
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw SystemError("cannot map token shard " + path.string() + ": " + std::strerror(errno));
  }
  tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(map_) + kShardHeaderBytes);
}

MappedShard::~MappedShard() { release(); }

MappedShard::MappedShard(MappedShard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      tokens_(std::exchange(other.tokens_, nullptr)),
      count_(std::exchange(other.count_, 0)) {}

MappedShard& MappedShard::operator=(MappedShard&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

void MappedShard::release() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  tokens_ = nullptr;
  count_ = 0;
}

std::vector<uint16_t> read_shard(const std::filesystem::path& path) {
  MappedShard shard(path);
  return std::vector<uint16_t>(shard.tokens(), shard.tokens() + shard.size());
}

void check_tokens_below(std::span<const uint16_t> tokens, uint32_t vocab_size, const std::string& source) {
  // One branch-free pass for the common (valid) case; locate the offender only on failure.
  uint16_t max_token = 0;
  for (uint16_t t : tokens) max_token = t > max_token ? t : max_token;
  if (max_token < vocab_size) return;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size)
      throw DataError("token shard " + source + ": token id " + std::to_string(tokens[i]) + " at token offset " +
                      std::to_string(i) + " is not below the vocabulary size " + std::to_string(vocab_size) +
                      " (was the data made with a different tokenizer? check model.vocab_size)");
  }
}

}  // namespace eco

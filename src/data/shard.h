#pragma once
// Token shards in llm.c's format: a header of 256 int32 {magic 20240520, version 1, token count,
// 0...}, then `count` uint16 tokens. Users' llm.c / FineWeb shards are read as they are.
// Every malformed file is a DataError whose message names the file and what is wrong with it.
//
// Shards are read with pread, never mapped: a mapped file that shrinks under a running trainer
// kills it with SIGBUS, while a short read can be reported as an error naming the file.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace eco {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;  // uint16 tokens (GPT-2 sized vocabularies)
inline constexpr size_t kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);
// The header stores the count as int32.
inline constexpr size_t kShardMaxTokens = 2147483647;

// Writes a shard atomically (temp file in the same directory, fsync, rename): a crash leaves the old
// file or the complete new one. Throws DataError for an empty or oversized token list.
void write_shard(const std::filesystem::path& path, std::span<const uint16_t> tokens);

// Reads a whole shard into memory after validating it (see ShardFile for the checks).
std::vector<uint16_t> read_shard(const std::filesystem::path& path);

// A validated token shard kept open for reading windows of it. Holding the descriptor (rather than
// reopening by name) means a shard replaced by rename keeps reading the file that was validated;
// one truncated in place makes read() throw. Move-only.
class ShardFile {
 public:
  // Checks: the file exists, is a regular file (a FIFO or device is refused without blocking) and
  // readable, holds a full header, magic and version match, the count is positive, and the file
  // size is exactly header + 2 * count bytes.
  explicit ShardFile(const std::filesystem::path& path);
  ~ShardFile();
  ShardFile(ShardFile&& other) noexcept;
  ShardFile& operator=(ShardFile&& other) noexcept;
  ShardFile(const ShardFile&) = delete;
  ShardFile& operator=(const ShardFile&) = delete;

  size_t size() const { return count_; }  // tokens, as validated when opened
  const std::filesystem::path& path() const { return path_; }

  // Copies tokens [first_token, first_token + count) to dst; the range must lie within size().
  // DataError naming the file and offset ("the file changed while training") when the file has
  // become shorter since it was opened; SystemError for an I/O error.
  void read(size_t first_token, size_t count, uint16_t* dst) const;

 private:
  void close();
  std::filesystem::path path_;
  int fd_ = -1;
  size_t count_ = 0;
};

// Throws DataError naming `source`, the first token id >= vocab_size and its offset
// (first_offset + its index in `tokens`, so a shard can be checked piece by piece).
void check_tokens_below(std::span<const uint16_t> tokens, uint32_t vocab_size, const std::string& source,
                        size_t first_offset = 0);

// The same for a whole shard, streamed in 1 MiB pieces so memory does not grow with the shard.
void check_tokens_below(const ShardFile& shard, uint32_t vocab_size);

}  // namespace eco

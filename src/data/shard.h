#pragma once
// Token shards in llm.c's format: a header of 256 int32 {magic 20240520, version 1, token count,
// 0...}, then `count` uint16 tokens. Users' llm.c / FineWeb shards are read as they are.
// Every malformed file is a DataError whose message names the file and what is wrong with it.
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

// Reads a whole shard into memory after validating it (see MappedShard for the checks).
std::vector<uint16_t> read_shard(const std::filesystem::path& path);

// A validated, read-only, memory-mapped shard: the tokens are paged in by the OS on demand, so
// opening many large shards costs address space, not memory. Move-only.
class MappedShard {
 public:
  // Checks: the file exists and is readable, holds a full header, magic and version match, the
  // count is positive, and the file size is exactly header + 2 * count bytes.
  explicit MappedShard(const std::filesystem::path& path);
  ~MappedShard();
  MappedShard(MappedShard&& other) noexcept;
  MappedShard& operator=(MappedShard&& other) noexcept;
  MappedShard(const MappedShard&) = delete;
  MappedShard& operator=(const MappedShard&) = delete;

  const uint16_t* tokens() const { return tokens_; }
  size_t size() const { return count_; }
  std::span<const uint16_t> span() const { return {tokens_, count_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release();
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  size_t count_ = 0;
};

// Throws DataError naming `source`, the first token id >= vocab_size and its offset.
void check_tokens_below(std::span<const uint16_t> tokens, uint32_t vocab_size, const std::string& source);

}  // namespace eco

#pragma once
// Batches of training windows from llm.c token shards.
//
// A window is T+1 consecutive tokens of one shard; windows start every T tokens (they share only
// their boundary token), so a shard of n tokens holds floor((n-1)/T) windows and no window crosses
// a shard boundary. All windows of all shards, in file order, are numbered 0..N-1. An epoch visits
// them in one order: file order, or (shuffle) a permutation drawn from (seed, epoch) with the
// loader's own PRNG, identical on every platform. Batch k of an epoch is the k-th run of B*world
// windows of that order; rank r takes the r-th B of them, so ranks never share a window and, since
// every rank computes the same order, they need no communication. Windows left over at the end of
// an epoch (fewer than B*world) are skipped; with shuffle they differ from epoch to epoch.
// Epochs repeat forever. The position (epoch, batch) is the whole state: restoring it continues
// with exactly the batches an uninterrupted run would have read.
//
// Each window is read from its shard when its batch is built (pread of T+1 tokens), so the loader's
// memory is O(T) whatever the data size, and a shard that shrinks or is rewritten under a running
// trainer is a DataError naming the file, not a crash.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/shard.h"

namespace eco {

struct LoaderState {
  uint64_t epoch = 0;
  uint64_t batch = 0;  // next batch within the epoch

  nlohmann::json to_json() const;
  // Throws CheckpointError when a key is missing or has the wrong type.
  static LoaderState from_json(const nlohmann::json& j);
  bool operator==(const LoaderState&) const = default;
};

// The shard files named by `spec`: an existing file; a directory (all regular *.bin files in it, in
// name order; other entries named *.bin are skipped with a warning); or a glob pattern such as
// data/fineweb/train_*.bin (matches in name order). DataError when nothing is found. A named file
// that is not a regular file is returned as it is and refused, without blocking, by ShardFile.
std::vector<std::filesystem::path> resolve_shard_paths(const std::string& spec);

class DataLoader {
 public:
  // Opens and validates every shard, and checks once (streaming each shard) that every token id is
  // below vocab_size.
  // DataError when the data cannot fill one batch (B * world windows of T+1 tokens).
  DataLoader(const std::string& spec, int B, int T, int rank, int world, uint64_t seed, bool shuffle,
             uint32_t vocab_size);

  // Fills B*T inputs and the B*T targets (the same windows shifted by one token), row-major [B][T].
  // DataError when a shard changed since it was opened (shorter, or now holding an id >= vocab_size).
  void next_batch(int32_t* inputs, int32_t* targets);

  LoaderState state() const { return {epoch_, batch_}; }
  void restore(const LoaderState& s);
  void reset() { restore(LoaderState{}); }  // back to the first batch of epoch 0

  size_t num_windows() const { return window_offset_.empty() ? 0 : window_offset_.back(); }
  size_t num_tokens() const { return num_tokens_; }
  // Batches per epoch for this rank (the same on every rank).
  size_t batches_per_epoch() const { return num_windows() / (static_cast<size_t>(B_) * world_); }
  const std::vector<std::filesystem::path>& files() const { return files_; }

 private:
  void build_order();  // the window order of epoch_
  void read_window(uint64_t window, uint16_t* dst) const;  // its T+1 tokens

  std::vector<std::filesystem::path> files_;
  std::vector<ShardFile> shards_;
  std::vector<uint64_t> window_offset_;  // first global window index of each shard, then N
  size_t num_tokens_ = 0;
  int B_, T_, rank_, world_;
  uint64_t seed_;
  uint32_t vocab_size_;
  bool shuffle_;
  uint64_t epoch_ = 0, batch_ = 0;
  std::vector<uint32_t> order_;  // window order of the current epoch (empty without shuffle)
  uint64_t order_epoch_ = UINT64_MAX;
  std::vector<uint16_t> window_;  // T+1 tokens, reused for every window
};

}  // namespace eco

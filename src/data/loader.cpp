#include "data/loader.h"

#include <glob.h>

#include <algorithm>
#include <system_error>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/splitmix.h"

namespace eco {
namespace {

// Uniform integer in [0, bound) without modulo bias (Lemire's multiply-and-reject).
uint64_t uniform_below(uint64_t& state, uint64_t bound) {
  unsigned __int128 m = static_cast<unsigned __int128>(splitmix64(state)) * bound;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(splitmix64(state)) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::string describe_files(const std::vector<std::filesystem::path>& files) {
  if (files.size() == 1) return files[0].string();
  return std::to_string(files.size()) + " shards (" + files.front().string() + " ... " + files.back().string() + ")";
}

}  // namespace

nlohmann::json LoaderState::to_json() const { return {{"epoch", epoch}, {"batch", batch}}; }

LoaderState LoaderState::from_json(const nlohmann::json& j) {
  LoaderState s;
  for (const char* key : {"epoch", "batch"}) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_number_unsigned())
      throw CheckpointError(std::string("data loader state: \"") + key +
                            "\" is missing or not a non-negative integer in " + j.dump());
  }
  s.epoch = j["epoch"].get<uint64_t>();
  s.batch = j["batch"].get<uint64_t>();
  return s;
}

std::vector<std::filesystem::path> resolve_shard_paths(const std::string& spec) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  if (spec.empty()) throw DataError("no token shard given (data.train / data.val is empty)");
  if (fs::is_directory(spec, ec)) {
    // increment(ec), not a range-for: the iterator's operator++ throws on an I/O error.
    fs::directory_iterator it(spec, ec);
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
      if (it->path().extension() != ".bin") continue;
      std::error_code type_ec;
      if (it->is_regular_file(type_ec))
        files.push_back(it->path());
      else  // a FIFO here would block the reader; a dangling link cannot be read
        spdlog::warn("data: skipping {}: not a regular file", it->path().string());
    }
    if (ec) throw DataError("cannot list directory " + spec + ": " + ec.message());
    if (files.empty()) throw DataError("directory " + spec + " holds no *.bin token shards");
  } else if (fs::exists(spec, ec) || !has_glob_chars(spec)) {
    files.push_back(spec);  // a missing plain path is reported by the shard reader, with its name
  } else {
    glob_t g{};
    const int rc = ::glob(spec.c_str(), 0, nullptr, &g);
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (rc == GLOB_NOMATCH || files.empty())
      throw DataError("no token shard matches " + spec + " (run tools/fetch_data.sh or eco_prepare to make them)");
    if (rc != 0) throw DataError("cannot expand the pattern " + spec);
  }
  // Name order (byte-wise), independent of the locale, so every machine reads the same sequence.
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.native() < b.native(); });
  return files;
}

DataLoader::DataLoader(const std::string& spec, int B, int T, int rank, int world, uint64_t seed, bool shuffle,
                       uint32_t vocab_size)
    : B_(B), T_(T), rank_(rank), world_(world), seed_(seed), vocab_size_(vocab_size), shuffle_(shuffle) {
  if (B < 1 || T < 1) throw ConfigError("data loader: batch size and sequence length must be positive");
  if (world < 1 || rank < 0 || rank >= world)
    throw ConfigError("data loader: rank " + std::to_string(rank) + " is not in [0, " + std::to_string(world) + ")");
  files_ = resolve_shard_paths(spec);
  window_offset_.push_back(0);
  for (const auto& f : files_) {
    ShardFile shard(f);
    check_tokens_below(shard, vocab_size);
    num_tokens_ += shard.size();
    window_offset_.push_back(window_offset_.back() + (shard.size() - 1) / static_cast<size_t>(T));
    shards_.push_back(std::move(shard));
  }
  const uint64_t per_batch = static_cast<uint64_t>(B) * world;
  if (num_windows() < per_batch) {
    throw DataError(describe_files(files_) + " is too small: one batch needs " + std::to_string(per_batch) +
                    " windows of " + std::to_string(T + 1) + " tokens (batch " + std::to_string(B) + " x " +
                    std::to_string(world) + " ranks), which takes at least " +
                    std::to_string(per_batch * static_cast<uint64_t>(T) + 1) + " tokens in one shard, but the data has " +
                    std::to_string(num_tokens_) + " tokens in " + std::to_string(num_windows()) +
                    " windows; use more data or a smaller batch_size / seq_len");
  }
  if (shuffle_ && num_windows() > UINT32_MAX)
    throw DataError(describe_files(files_) + ": more than 2^32 windows; use a longer seq_len or fewer shards");
  window_.resize(static_cast<size_t>(T) + 1);
}

void DataLoader::build_order() {
  if (!shuffle_ || order_epoch_ == epoch_) return;
  const size_t n = num_windows();
  order_.resize(n);
  for (size_t i = 0; i < n; ++i) order_[i] = static_cast<uint32_t>(i);
  // Fisher-Yates from a stream keyed by (seed, epoch); the extra mixing keeps nearby seeds apart.
  uint64_t state = seed_;
  state = splitmix64(state) ^ (epoch_ * 0xD1B54A32D192ED03ull);
  for (size_t i = n - 1; i > 0; --i) std::swap(order_[i], order_[uniform_below(state, i + 1)]);
  order_epoch_ = epoch_;
}

void DataLoader::read_window(uint64_t window, uint16_t* dst) const {
  // The shard holding this window: the last one whose first window index is <= window.
  const auto it = std::upper_bound(window_offset_.begin(), window_offset_.end(), window);
  const size_t s = static_cast<size_t>(it - window_offset_.begin()) - 1;
  const size_t first = (window - window_offset_[s]) * static_cast<uint64_t>(T_);
  shards_[s].read(first, static_cast<size_t>(T_) + 1, dst);
  // Checked at startup for the whole shard; a file rewritten in place since then could hold ids the
  // embedding table does not have, which must not reach the model.
  for (int t = 0; t <= T_; ++t) {
    if (dst[t] >= vocab_size_)
      throw DataError("token shard " + shards_[s].path().string() + ": the file changed while training: token id " +
                      std::to_string(dst[t]) + " at token offset " + std::to_string(first + t) +
                      " is not below the vocabulary size " + std::to_string(vocab_size_) +
                      ", although every token was when the shard was opened. Do not modify shards while eco_train "
                      "reads them; restore the file and resume from the last checkpoint");
  }
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets) {
  if (batch_ >= batches_per_epoch()) {
    ++epoch_;
    batch_ = 0;
  }
  build_order();
  const uint64_t first = (batch_ * world_ + rank_) * static_cast<uint64_t>(B_);
  for (int b = 0; b < B_; ++b) {
    const uint64_t pos = first + b;
    read_window(shuffle_ ? order_[pos] : pos, window_.data());
    const uint16_t* w = window_.data();
    int32_t* in = inputs + static_cast<size_t>(b) * T_;
    int32_t* tg = targets + static_cast<size_t>(b) * T_;
    for (int t = 0; t < T_; ++t) {
      in[t] = w[t];
      tg[t] = w[t + 1];
    }
  }
  ++batch_;
}

void DataLoader::restore(const LoaderState& s) {
  epoch_ = s.epoch;
  batch_ = s.batch;
  if (batch_ > batches_per_epoch()) {
    // Only possible when the data or the batch shape changed since the state was saved.
    spdlog::warn("data loader: saved position (epoch {}, batch {}) is past this data's {} batches per epoch; "
                 "continuing at the next epoch",
                 s.epoch, s.batch, batches_per_epoch());
    ++epoch_;
    batch_ = 0;
  }
}

}  // namespace eco

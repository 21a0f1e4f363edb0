// DataLoader: windows of T+1 tokens, disjoint across ranks, shuffled as a permutation, resumable.
// Shards are written by hand (the llm.c layout) with token values that identify their position, and
// every batch is checked against windows computed directly from those token lists. Shards that are
// not regular files, or that change under a running loader, are DataErrors, never a hang or a signal.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "data/loader.h"
#include "test_util.h"
#include "error_test_util.h"

namespace fs = std::filesystem;

using eco_test::contains;
using eco_test::data_error_of;
using eco_test::HangGuard;

namespace {

void write_raw_shard(const fs::path& p, const std::vector<uint16_t>& toks) {
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = static_cast<int32_t>(toks.size());
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header.data()), 1024);
  f.write(reinterpret_cast<const char*>(toks.data()), static_cast<std::streamsize>(2 * toks.size()));
}

std::vector<uint16_t> iota_tokens(size_t n, uint16_t first) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint16_t>(first + i);
  return v;
}

constexpr int T = 16;
constexpr uint32_t kVocab = 65535;

// Two shards whose tokens are all distinct: 1000 tokens (62 windows) and 700 tokens (43 windows).
struct Fixture {
  fs::path dir;
  std::vector<std::vector<uint16_t>> shards{iota_tokens(1000, 0), iota_tokens(700, 1000)};
  explicit Fixture(const std::string& name) : dir(eco_test::scratch_dir(name)) {
    write_raw_shard(dir / "s_000.bin", shards[0]);
    write_raw_shard(dir / "s_001.bin", shards[1]);
    std::ofstream(dir / "notes.txt") << "not a shard";
  }
  // Every window in file order, as T+1 tokens: the reference the loader must reproduce.
  std::vector<std::vector<int32_t>> windows() const {
    std::vector<std::vector<int32_t>> out;
    for (const auto& s : shards)
      for (size_t start = 0; start + T + 1 <= s.size(); start += T) out.emplace_back(s.begin() + start, s.begin() + start + T + 1);
    return out;
  }
};

// Batches as lists of windows (T+1 tokens), checking that targets are the inputs shifted by one.
std::vector<std::vector<int32_t>> take_windows(eco::DataLoader& dl, int B, size_t batches) {
  std::vector<int32_t> in(static_cast<size_t>(B) * T), tg(in.size());
  std::vector<std::vector<int32_t>> out;
  for (size_t k = 0; k < batches; ++k) {
    dl.next_batch(in.data(), tg.data());
    for (int b = 0; b < B; ++b) {
      std::vector<int32_t> w(in.begin() + b * T, in.begin() + (b + 1) * T);
      w.push_back(tg[static_cast<size_t>(b) * T + T - 1]);
      for (int t = 0; t + 1 < T; ++t) REQUIRE(tg[static_cast<size_t>(b) * T + t] == in[static_cast<size_t>(b) * T + t + 1]);
      out.push_back(std::move(w));
    }
  }
  return out;
}

// Batches until one throws DataError; returns its message ("" if `limit` batches all succeed).
std::string first_data_error(eco::DataLoader& dl, int B, size_t limit) {
  std::vector<int32_t> in(static_cast<size_t>(B) * T), tg(in.size());
  return data_error_of([&] {
    for (size_t k = 0; k < limit; ++k) dl.next_batch(in.data(), tg.data());
  });
}

}  // namespace

TEST_CASE("without shuffle the batches are the shards' windows in file order, epoch after epoch", "[data][loader]") {
  Fixture fx("loader_order");
  const auto ref = fx.windows();
  REQUIRE(ref.size() == 105);
  eco::DataLoader dl(fx.dir.string(), 4, T, 0, 1, 7, false, kVocab);
  CHECK(dl.num_windows() == 105);
  CHECK(dl.num_tokens() == 1700);
  CHECK(dl.files().size() == 2);
  CHECK(dl.batches_per_epoch() == 26);  // 104 windows; the 105th is skipped every epoch
  const auto got = take_windows(dl, 4, 26);
  CHECK(got == std::vector<std::vector<int32_t>>(ref.begin(), ref.begin() + 104));
  CHECK(dl.state() == eco::LoaderState{0, 26});
  const auto second_epoch = take_windows(dl, 4, 1);
  CHECK(second_epoch[0] == ref[0]);
  CHECK(dl.state() == eco::LoaderState{1, 1});
}

TEST_CASE("the data spec may be a file, a directory or a glob", "[data][loader]") {
  Fixture fx("loader_paths");
  eco::DataLoader one((fx.dir / "s_001.bin").string(), 2, T, 0, 1, 0, false, kVocab);
  CHECK(one.num_windows() == 43);
  eco::DataLoader glob((fx.dir / "s_*.bin").string(), 2, T, 0, 1, 0, false, kVocab);
  CHECK(glob.num_windows() == 105);
  CHECK(glob.files() == eco::resolve_shard_paths(fx.dir.string()));
  CHECK(glob.files().front().filename() == "s_000.bin");

  CHECK(contains(data_error_of([&] { eco::DataLoader((fx.dir / "nope.bin").string(), 2, T, 0, 1, 0, false, kVocab); }),
                 "nope.bin"));
  CHECK(contains(data_error_of([&] { eco::resolve_shard_paths((fx.dir / "x_*.bin").string()); }), "x_*.bin"));
  fs::create_directories(fx.dir / "empty");
  CHECK(contains(data_error_of([&] { eco::resolve_shard_paths((fx.dir / "empty").string()); }), "empty"));
}

TEST_CASE("ranks read disjoint windows whose union is the single-process epoch", "[data][loader]") {
  Fixture fx("loader_ranks");
  for (bool shuffle : {false, true}) {
    INFO("shuffle " << shuffle);
    eco::DataLoader r0(fx.dir.string(), 3, T, 0, 2, 11, shuffle, kVocab);
    eco::DataLoader r1(fx.dir.string(), 3, T, 1, 2, 11, shuffle, kVocab);
    eco::DataLoader solo(fx.dir.string(), 6, T, 0, 1, 11, shuffle, kVocab);
    REQUIRE(r0.batches_per_epoch() == 17);
    REQUIRE(solo.batches_per_epoch() == 17);
    const auto a = take_windows(r0, 3, 17), b = take_windows(r1, 3, 17), all = take_windows(solo, 6, 17);
    std::set<std::vector<int32_t>> sa(a.begin(), a.end()), sb(b.begin(), b.end()), sall(all.begin(), all.end());
    CHECK(sa.size() == 51);
    CHECK(sb.size() == 51);
    std::vector<std::vector<int32_t>> common;
    std::set_intersection(sa.begin(), sa.end(), sb.begin(), sb.end(), std::back_inserter(common));
    CHECK(common.empty());
    std::set<std::vector<int32_t>> uni = sa;
    uni.insert(sb.begin(), sb.end());
    CHECK(uni == sall);
    // Step by step, too: batch k of the two ranks together is batch k of the single process.
    for (size_t k = 0; k < 17; ++k) {
      for (int j = 0; j < 3; ++j) {
        CHECK(all[k * 6 + j] == a[k * 3 + j]);
        CHECK(all[k * 6 + 3 + j] == b[k * 3 + j]);
      }
    }
  }
}

TEST_CASE("shuffle visits a seeded permutation of all windows, a new one each epoch", "[data][loader]") {
  Fixture fx("loader_shuffle");
  const auto ref = fx.windows();
  const std::set<std::vector<int32_t>> all(ref.begin(), ref.end());
  eco::DataLoader dl(fx.dir.string(), 1, T, 0, 1, 1234, true, kVocab);
  REQUIRE(dl.batches_per_epoch() == 105);
  const auto e0 = take_windows(dl, 1, 105), e1 = take_windows(dl, 1, 105);
  CHECK(std::set<std::vector<int32_t>>(e0.begin(), e0.end()) == all);
  CHECK(std::set<std::vector<int32_t>>(e1.begin(), e1.end()) == all);
  CHECK(e0 != ref);
  CHECK(e0 != e1);
  // Shuffling mixes the shards: the first 20 windows of the epoch are not all from the first shard.
  const long from_second = std::count_if(e0.begin(), e0.begin() + 20, [](const auto& w) { return w[0] >= 1000; });
  CHECK(from_second > 0);

  eco::DataLoader same(fx.dir.string(), 1, T, 0, 1, 1234, true, kVocab);
  CHECK(take_windows(same, 1, 105) == e0);
  eco::DataLoader other(fx.dir.string(), 1, T, 0, 1, 1235, true, kVocab);
  CHECK(take_windows(other, 1, 105) != e0);
}

TEST_CASE("restoring a saved state continues with the same batches; reset restarts", "[data][loader]") {
  Fixture fx("loader_resume");
  for (bool shuffle : {false, true}) {
    INFO("shuffle " << shuffle);
    eco::DataLoader a(fx.dir.string(), 4, T, 0, 1, 99, shuffle, kVocab);
    const auto first = take_windows(a, 4, 1);
    take_windows(a, 4, 20);
    const eco::LoaderState saved = a.state();
    const auto expected = take_windows(a, 4, 40);  // crosses into epochs 1 and 2

    const nlohmann::json j = nlohmann::json::parse(saved.to_json().dump());
    eco::DataLoader b(fx.dir.string(), 4, T, 0, 1, 99, shuffle, kVocab);
    b.restore(eco::LoaderState::from_json(j));
    CHECK(b.state() == saved);
    CHECK(take_windows(b, 4, 40) == expected);
    CHECK(b.state() == a.state());
    CHECK(a.state().epoch == 2);

    a.reset();
    CHECK(a.state() == eco::LoaderState{});
    CHECK(take_windows(a, 4, 1) == first);
  }
  CHECK_THROWS_AS(eco::LoaderState::from_json(nlohmann::json{{"epoch", 1}}), eco::CheckpointError);
  CHECK_THROWS_AS(eco::LoaderState::from_json(nlohmann::json{{"epoch", -1}, {"batch", 0}}), eco::CheckpointError);
}

TEST_CASE("too little data or out-of-vocabulary tokens are clear DataErrors", "[data][loader]") {
  const fs::path dir = eco_test::scratch_dir("loader_errors");
  write_raw_shard(dir / "small.bin", iota_tokens(50, 0));  // 3 windows of 17 tokens
  const std::string msg = data_error_of([&] { eco::DataLoader((dir / "small.bin").string(), 4, T, 0, 1, 0, false, 256); });
  CHECK(contains(msg, "small.bin"));
  CHECK(contains(msg, "65 tokens"));  // 4 windows need 4 * 16 + 1 tokens
  CHECK(contains(msg, "50 tokens"));
  CHECK_NOTHROW(eco::DataLoader((dir / "small.bin").string(), 3, T, 0, 1, 0, false, 256));
  CHECK_THROWS_AS(eco::DataLoader((dir / "small.bin").string(), 2, T, 0, 2, 0, false, 256), eco::DataError);

  std::vector<uint16_t> toks(200, 10);
  toks[150] = 256;
  write_raw_shard(dir / "vocab.bin", toks);
  const std::string vmsg = data_error_of([&] { eco::DataLoader((dir / "vocab.bin").string(), 2, T, 0, 1, 0, false, 256); });
  CHECK(contains(vmsg, "vocab.bin"));
  CHECK(contains(vmsg, "offset 150"));
  CHECK_NOTHROW(eco::DataLoader((dir / "vocab.bin").string(), 2, T, 0, 1, 0, false, 257));
}

TEST_CASE("a shard truncated while the loader reads it is a DataError naming the file, not SIGBUS", "[data][loader]") {
  // 40 KB of tokens: truncation must drop whole pages, or a mapped reader would still see zeros.
  const fs::path dir = eco_test::scratch_dir("loader_truncated");
  for (bool shuffle : {false, true}) {
    INFO("shuffle " << shuffle);
    write_raw_shard(dir / "big.bin", iota_tokens(20000, 0));
    eco::DataLoader dl(dir.string(), 4, T, 0, 1, 5, shuffle, kVocab);
    take_windows(dl, 4, 2);
    fs::resize_file(dir / "big.bin", 1024 + 2 * 100);  // keep 100 tokens: 6 of 1249 windows
    const std::string msg = first_data_error(dl, 4, 2 * dl.batches_per_epoch());
    CHECK(contains(msg, (dir / "big.bin").string()));
    CHECK(contains(msg, "the file changed while training"));
    CHECK(contains(msg, "token offset"));
  }
}

TEST_CASE("a shard rewritten in place with ids outside the vocabulary never reaches a batch", "[data][loader]") {
  Fixture fx("loader_rewritten");
  eco::DataLoader dl(fx.dir.string(), 4, T, 0, 1, 5, false, 2000);
  take_windows(dl, 4, 1);
  // Same size, new tokens: the startup vocabulary check cannot see this, the per-window one must.
  std::vector<uint16_t> bad = fx.shards[1];
  bad[500] = 60000;
  {
    std::fstream f(fx.dir / "s_001.bin", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(1024 + 2 * 500);
    f.write(reinterpret_cast<const char*>(&bad[500]), 2);
  }
  const std::string msg = first_data_error(dl, 4, dl.batches_per_epoch());
  CHECK(contains(msg, (fx.dir / "s_001.bin").string()));
  CHECK(contains(msg, "token id 60000 at token offset 500"));
  CHECK(contains(msg, "changed while training"));
}

TEST_CASE("a shard replaced by rename keeps serving the file that was opened", "[data][loader]") {
  Fixture fx("loader_replaced");
  const auto ref = fx.windows();
  eco::DataLoader dl(fx.dir.string(), 4, T, 0, 1, 5, false, kVocab);
  eco::write_shard(fx.dir / "s_000.bin", std::vector<uint16_t>(20, 1));  // atomic: temp file + rename
  CHECK(take_windows(dl, 4, 26) == std::vector<std::vector<int32_t>>(ref.begin(), ref.begin() + 104));
}

TEST_CASE("FIFOs and other non-regular files as shards are refused or skipped, never waited on", "[data][loader]") {
  Fixture fx("loader_fifo");
  REQUIRE(::mkfifo((fx.dir / "s_002.bin").c_str(), 0600) == 0);
  const HangGuard guard(20);  // reading the FIFO used to block until a writer came
  // Named directly or through a glob: an error naming the file.
  for (const fs::path& spec : {fx.dir / "s_002.bin", fx.dir / "s_*.bin"}) {
    const std::string msg = data_error_of([&] { eco::DataLoader(spec.string(), 2, T, 0, 1, 0, false, kVocab); });
    INFO(spec << ": " << msg);
    CHECK(contains(msg, "s_002.bin"));
    CHECK(contains(msg, "not a regular file"));
  }
  CHECK(contains(data_error_of([&] { eco::DataLoader("/dev/zero", 2, T, 0, 1, 0, false, kVocab); }),
                 "not a regular file"));
  // In a directory spec, only regular *.bin files are shards; the FIFO is skipped (with a warning).
  const eco::DataLoader dir(fx.dir.string(), 2, T, 0, 1, 0, false, kVocab);
  CHECK(dir.files() == std::vector<fs::path>{fx.dir / "s_000.bin", fx.dir / "s_001.bin"});
  CHECK(dir.num_windows() == 105);
}

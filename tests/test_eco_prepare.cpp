// The eco_prepare CLI: document order, separators, sharding, and exit codes. Uses the byte
// tokenizer so every expected token is known without a reference tokenizer; GPT-2 input checks run
// when the tokenizer files are installed.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/shard.h"
#include "data_paths.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

fs::path prepare_bin() { return fs::path(ECO_BINARY_DIR) / "eco_prepare"; }

int run(const std::string& args, const fs::path& log) {
  const int rc = std::system((prepare_bin().string() + " " + args + " > " + log.string() + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

// Byte tokenizer expectation: each document is byte 0 followed by its bytes.
std::vector<uint16_t> byte_tokens(const std::vector<std::string>& docs) {
  std::vector<uint16_t> out;
  for (const auto& d : docs) {
    out.push_back(0);
    for (unsigned char c : d) out.push_back(c);
  }
  return out;
}

}  // namespace

TEST_CASE("eco_prepare writes documents in path order, each after a separator", "[data][prepare]") {
  if (!fs::exists(prepare_bin())) eco_test::skip("eco_prepare is not built in " + prepare_bin().parent_path().string());
  const fs::path dir = eco_test::scratch_dir("eco_prepare");
  write_text(dir / "in/b.txt", "second");
  write_text(dir / "in/a/z.txt", "first\n");
  write_text(dir / "in/c/d/e.txt", "third \xC3\xA9");
  write_text(dir / "in/skip.md", "not text");
  write_text(dir / "extra.txt", "last");

  REQUIRE(run("--tokenizer byte --out " + (dir / "out/all").string() + " " + (dir / "in").string() + " " +
                  (dir / "extra.txt").string(),
              dir / "log.txt") == 0);
  const std::string log = read_text(dir / "log.txt");
  INFO(log);
  CHECK(log.find("4 documents") != std::string::npos);
  const auto expected = byte_tokens({"first\n", "second", "third \xC3\xA9", "last"});
  CHECK(eco::read_shard(dir / "out/all.bin") == expected);

  // Split into shards of 7 tokens: the concatenation is the same token stream.
  REQUIRE(run("--tokenizer byte --shard-tokens 7 --out " + (dir / "out/part").string() + " " + (dir / "in").string() +
                  " " + (dir / "extra.txt").string(),
              dir / "log.txt") == 0);
  std::vector<uint16_t> joined;
  size_t shards = 0;
  for (; fs::exists(dir / ("out/part_00000" + std::to_string(shards) + ".bin")); ++shards) {
    const auto part = eco::read_shard(dir / ("out/part_00000" + std::to_string(shards) + ".bin"));
    CHECK(part.size() <= 7);
    joined.insert(joined.end(), part.begin(), part.end());
  }
  CHECK(shards == (expected.size() + 6) / 7);
  CHECK(joined == expected);
}

TEST_CASE("eco_prepare: bad flags exit 2, bad input exits 3 naming it", "[data][prepare]") {
  if (!fs::exists(prepare_bin())) eco_test::skip("eco_prepare is not built in " + prepare_bin().parent_path().string());
  const fs::path dir = eco_test::scratch_dir("eco_prepare_errors");
  const fs::path log = dir / "log.txt";
  write_text(dir / "ok.txt", "fine");
  CHECK(run("--help", log) == 0);
  CHECK(read_text(log).find("--shard-tokens") != std::string::npos);
  CHECK(run("--tokenizer byte " + (dir / "ok.txt").string(), log) == 2);  // no --out
  CHECK(run("--tokenizer wordpiece --out x " + (dir / "ok.txt").string(), log) == 2);
  CHECK(run("--tokenizer byte --bogus --out x " + (dir / "ok.txt").string(), log) == 2);
  CHECK(run("--tokenizer byte --shard-tokens 0 --out x " + (dir / "ok.txt").string(), log) == 2);
  CHECK(run("--tokenizer byte --out " + (dir / "o").string() + " " + (dir / "missing.txt").string(), log) == 3);
  CHECK(read_text(log).find("missing.txt") != std::string::npos);
  fs::create_directories(dir / "empty_dir");
  CHECK(run("--tokenizer byte --out " + (dir / "o").string() + " " + (dir / "empty_dir").string(), log) == 3);
  CHECK(run("--tokenizer gpt2 --tokenizer-dir " + (dir / "none").string() + " --out " + (dir / "o").string() + " " +
                (dir / "ok.txt").string(),
            log) == 3);
  CHECK(read_text(log).find("fetch_data.sh") != std::string::npos);

  if (!eco_test::have_tokenizer_files()) {
    WARN("GPT-2 input checks not run: no tokenizer files in " << eco_test::tokenizer_dir() << " (tools/fetch_data.sh)");
    return;
  }
  write_text(dir / "latin1.txt", "caf\xE9 au lait");
  CHECK(run("--tokenizer gpt2 --tokenizer-dir " + eco_test::tokenizer_dir().string() + " --out " + (dir / "o").string() +
                " " + (dir / "latin1.txt").string(),
            log) == 3);
  const std::string msg = read_text(log);
  CHECK(msg.find("latin1.txt") != std::string::npos);
  CHECK(msg.find("offset 3") != std::string::npos);
  CHECK(run("--tokenizer gpt2 --tokenizer-dir " + eco_test::tokenizer_dir().string() + " --out " + (dir / "g").string() +
                " " + (dir / "ok.txt").string(),
            log) == 0);
  CHECK(eco::read_shard(dir / "g.bin") == std::vector<uint16_t>{50256, 38125});
}

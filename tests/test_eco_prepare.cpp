// The eco_prepare CLI: document order, separators, sharding, and exit codes. Uses the byte
// tokenizer so every expected token is known without a reference tokenizer; GPT-2 input checks run
// when the tokenizer files are installed. Symlink cycles, FIFOs, devices and unwritable outputs end
// promptly with the documented exit code.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/shard.h"
#include "data_paths.h"
#include "test_util.h"
#include "error_test_util.h"

namespace fs = std::filesystem;

using eco_test::contains;
using eco_test::data_error_of;
using eco_test::HangGuard;

namespace {

fs::path prepare_bin() { return fs::path(ECO_BINARY_DIR) / "eco_prepare"; }

// The exit code; a run that hangs is killed after 60 s and reads as 137.
int run(const std::string& args, const fs::path& log) {
  const int rc =
      std::system(("timeout -s KILL 60 " + prepare_bin().string() + " " + args + " > " + log.string() + " 2>&1").c_str());
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

std::string byte_out(const fs::path& prefix) { return "--tokenizer byte --out " + prefix.string() + " "; }

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

TEST_CASE("eco_prepare reads each file once through symlink cycles, hard links and repeated inputs",
          "[data][prepare]") {
  if (!fs::exists(prepare_bin())) eco_test::skip("eco_prepare is not built in " + prepare_bin().parent_path().string());
  const fs::path dir = eco_test::scratch_dir("eco_prepare_links");
  const fs::path log = dir / "log.txt";
  write_text(dir / "in/a.txt", "A");
  write_text(dir / "in/sub/b.txt", "B");
  write_text(dir / "outside/e.txt", "E");
  fs::create_directory_symlink("..", dir / "in/sub/up");         // cycle back to the root
  fs::create_directory_symlink(".", dir / "in/sub/self");        // cycle onto itself
  fs::create_directory_symlink("sub", dir / "in/alink");         // a second path to sub/
  fs::create_directory_symlink("../outside", dir / "in/zext");   // a tree outside: followed once
  fs::create_hard_link(dir / "in/a.txt", dir / "in/hard.txt");   // the same file under two names
  fs::create_symlink("a.txt", dir / "in/soft.txt");              // and under a third

  // The inputs also name the tree twice and two of its files again.
  REQUIRE(run(byte_out(dir / "out/x") + (dir / "in").string() + " " + (dir / "in/a.txt").string() + " " +
                  (dir / "outside").string() + " " + (dir / "in").string(),
              log) == 0);
  const std::string text = read_text(log);
  INFO(text);
  CHECK(contains(text, "3 documents"));
  CHECK(contains(text, "already read"));
  CHECK(eco::read_shard(dir / "out/x.bin") == byte_tokens({"A", "B", "E"}));

  // A directory reached both by a symlink and by its real path is read under the real one: here
  // the link sorts first (a_link/x.txt < b.txt), the real path last (b.txt < c/x.txt).
  write_text(dir / "in2/b.txt", "b");
  write_text(dir / "in2/c/x.txt", "x");
  fs::create_directory_symlink("c", dir / "in2/a_link");
  REQUIRE(run(byte_out(dir / "out/y") + (dir / "in2").string(), log) == 0);
  CHECK(eco::read_shard(dir / "out/y.bin") == byte_tokens({"b", "x"}));
}

TEST_CASE("eco_prepare: FIFOs, devices and dangling links are skipped in trees and refused as inputs, never waited on",
          "[data][prepare]") {
  if (!fs::exists(prepare_bin())) eco_test::skip("eco_prepare is not built in " + prepare_bin().parent_path().string());
  const fs::path dir = eco_test::scratch_dir("eco_prepare_fifo");
  const fs::path log = dir / "log.txt";
  write_text(dir / "in/ok.txt", "ok");
  REQUIRE(::mkfifo((dir / "in/pipe.txt").c_str(), 0600) == 0);
  fs::create_symlink("/dev/zero", dir / "in/zero.txt");
  fs::create_symlink("missing", dir / "in/dangling.txt");

  REQUIRE(run(byte_out(dir / "out/x") + (dir / "in").string(), log) == 0);
  const std::string text = read_text(log);
  INFO(text);
  CHECK(contains(text, "skipping " + (dir / "in/pipe.txt").string() + ": not a regular file"));
  CHECK(contains(text, "skipping " + (dir / "in/zero.txt").string() + ": not a regular file"));
  CHECK(contains(text, "skipping " + (dir / "in/dangling.txt").string() + ": a dangling symlink"));
  CHECK(eco::read_shard(dir / "out/x.bin") == byte_tokens({"ok"}));

  for (const fs::path& input : {dir / "in/pipe.txt", fs::path("/dev/null"), dir / "in/zero.txt"}) {
    CHECK(run(byte_out(dir / "out/y") + input.string(), log) == 3);
    CHECK(contains(read_text(log), input.string() + " is not a regular file"));
  }
  CHECK(run(byte_out(dir / "out/y") + (dir / "in/dangling.txt").string(), log) == 3);
  CHECK(contains(read_text(log), "dangling.txt is a symlink to a missing file"));
  // The GPT-2 tokenizer files are read the same careful way.
  fs::create_directories(dir / "tok");
  REQUIRE(::mkfifo((dir / "tok/encoder.json").c_str(), 0600) == 0);
  write_text(dir / "tok/vocab.bpe", "#version: 0.2\n");
  CHECK(run("--tokenizer gpt2 --tokenizer-dir " + (dir / "tok").string() + " --out " + (dir / "out/g").string() + " " +
                (dir / "in/ok.txt").string(),
            log) == 3);
  CHECK(contains(read_text(log), "encoder.json: not a regular file"));
}

TEST_CASE("eco_prepare: an output it cannot write exits 6 before reading input; a PREFIX without a name exits 2",
          "[data][prepare]") {
  if (!fs::exists(prepare_bin())) eco_test::skip("eco_prepare is not built in " + prepare_bin().parent_path().string());
  const fs::path dir = eco_test::scratch_dir("eco_prepare_out");
  const fs::path log = dir / "log.txt";
  write_text(dir / "ok.txt", "fine");
  const std::string input = " " + (dir / "ok.txt").string();

  CHECK(run("--tokenizer byte --out /proc/x/y" + input, log) == 6);
  CHECK(contains(read_text(log), "cannot create the output directory /proc/x"));
  CHECK(run("--tokenizer byte --out " + (dir / "ok.txt/train").string() + input, log) == 6);
  CHECK(contains(read_text(log), "ok.txt: it is a file, not a directory"));
  // Checked before the input: a missing input with a bad output is still the output's exit 6.
  CHECK(run("--tokenizer byte --out /proc/x/y " + (dir / "missing.txt").string(), log) == 6);
  CHECK(run("--tokenizer byte --out " + (dir / "out").string() + "/" + input, log) == 2);
  CHECK(contains(read_text(log), "PREFIX must end in a file name"));
  // The shard path itself taken by a directory: the final rename fails, a system error.
  fs::create_directories(dir / "taken.bin");
  CHECK(run("--tokenizer byte --out " + (dir / "taken").string() + input, log) == 6);
  CHECK(contains(read_text(log), "taken.bin"));

  if (::geteuid() == 0) {
    WARN("permission checks not run: root reads every file");
    return;
  }
  write_text(dir / "locked/secret.txt", "x");
  fs::permissions(dir / "locked/secret.txt", fs::perms::none);
  CHECK(run(byte_out(dir / "o") + (dir / "locked/secret.txt").string(), log) == 3);
  CHECK(contains(read_text(log), "secret.txt"));
  fs::permissions(dir / "locked", fs::perms::none);
  write_text(dir / "tree/ok.txt", "ok");
  fs::create_directory_symlink(dir / "locked", dir / "tree/locked");
  CHECK(run(byte_out(dir / "o") + (dir / "tree").string(), log) == 3);
  CHECK(contains(read_text(log), "locked"));
  fs::permissions(dir / "locked", fs::perms::owner_all);
  fs::permissions(dir / "locked/secret.txt", fs::perms::owner_all);
  CHECK(run(byte_out(dir / "ro/x") + input, log) == 0);
  fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  CHECK(run(byte_out(dir / "ro/x") + input, log) == 6);
  CHECK(contains(read_text(log), "ro"));
  fs::permissions(dir / "ro", fs::perms::owner_all);
}

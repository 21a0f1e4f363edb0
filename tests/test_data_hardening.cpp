// GPT-2 tokenizer files from outside the program: whatever encoder.json and vocab.bpe hold (a FIFO,
// a directory, hostile JSON), loading them is a DataError naming the file, never a hang, a stack
// overflow or a library exception reaching the CLI as an "internal error".
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/error.h"
#include "data/gpt2_vocab.h"
#include "test_util.h"
#include "error_test_util.h"

namespace fs = std::filesystem;

using eco_test::contains;
using eco_test::data_error_of;
using eco_test::HangGuard;

namespace {

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// A tokenizer directory with the given encoder.json text and a valid-looking vocab.bpe header.
fs::path vocab_dir(const std::string& name, const std::string& encoder_json) {
  const fs::path dir = eco_test::scratch_dir("gpt2_vocab_" + name);
  write_text(dir / "encoder.json", encoder_json);
  write_text(dir / "vocab.bpe", "#version: 0.2\n");
  return dir;
}

std::string load_error(const fs::path& dir) {
  return data_error_of([&] { eco::load_gpt2_vocab(dir.string()); });
}

}  // namespace

TEST_CASE("GPT-2 tokenizer files that are FIFOs or directories are DataErrors, without blocking", "[data][vocab]") {
  const HangGuard guard(20);  // reading a FIFO named encoder.json used to wait for a writer forever
  const fs::path fifo = eco_test::scratch_dir("gpt2_vocab_fifo");
  REQUIRE(::mkfifo((fifo / "encoder.json").c_str(), 0600) == 0);
  write_text(fifo / "vocab.bpe", "#version: 0.2\n");
  std::string msg = load_error(fifo);
  CHECK(contains(msg, (fifo / "encoder.json").string()));
  CHECK(contains(msg, "not a regular file"));

  const fs::path bpe_fifo = vocab_dir("bpe_fifo", "{}");
  fs::remove(bpe_fifo / "vocab.bpe");
  REQUIRE(::mkfifo((bpe_fifo / "vocab.bpe").c_str(), 0600) == 0);
  msg = load_error(bpe_fifo);
  CHECK(contains(msg, (bpe_fifo / "vocab.bpe").string()));
  CHECK(contains(msg, "not a regular file"));

  const fs::path dir = vocab_dir("dir", "");
  fs::remove(dir / "encoder.json");
  fs::create_directories(dir / "encoder.json");
  msg = load_error(dir);
  CHECK(contains(msg, (dir / "encoder.json").string()));
  CHECK(contains(msg, "directory"));

  const fs::path missing = vocab_dir("missing", "{}");
  fs::remove(missing / "vocab.bpe");
  msg = load_error(missing);
  CHECK(contains(msg, (missing / "vocab.bpe").string()));
  CHECK(contains(msg, "not found"));
  CHECK(contains(msg, "fetch_data.sh"));
}

TEST_CASE("hostile encoder.json content is a DataError naming the file", "[data][vocab]") {
  struct Case {
    const char* name;
    std::string json;
    const char* expect;
  };
  const Case cases[] = {
      {"deep", std::string(200000, '['), "nested more than"},  // would exhaust a recursive consumer's stack
      {"deep_objects", [] {
         std::string s;
         for (int i = 0; i < 100000; ++i) s += "{\"a\":";
         return s;
       }(), "nested more than"},
      {"overflow", "{\"a\": 1e999}", "not valid JSON"},
      {"bad_utf8", "{\"\xff\": 1}", "not valid JSON"},
      {"truncated", "{\"a\": ", "not valid JSON"},
      {"empty", "", "not valid JSON"},
      {"not_object", "[1, 2, 3]", "not GPT-2's encoder.json"},
  };
  for (const Case& c : cases) {
    const fs::path dir = vocab_dir(c.name, c.json);
    const std::string msg = load_error(dir);
    INFO(c.name << ": " << msg);
    CHECK(contains(msg, (dir / "encoder.json").string()));
    CHECK(contains(msg, c.expect));
    CHECK_FALSE(contains(msg, "[json.exception"));
  }
}

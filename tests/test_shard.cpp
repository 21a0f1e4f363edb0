// llm.c token shards: round trip against an independent byte-level reading of the file, and a
// DataError naming the file for every malformed shard, for a FIFO or device (without blocking) and
// for a shard that shrinks after it was opened (without a signal).
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/shard.h"
#include "test_util.h"
#include "error_test_util.h"

namespace fs = std::filesystem;

using eco_test::contains;
using eco_test::data_error_of;
using eco_test::HangGuard;

namespace {

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A header + tokens written field by field, with any header values.
std::vector<char> raw_shard(int32_t magic, int32_t version, int32_t count, const std::vector<uint16_t>& toks) {
  std::vector<char> out(1024, 0);
  std::memcpy(out.data(), &magic, 4);
  std::memcpy(out.data() + 4, &version, 4);
  std::memcpy(out.data() + 8, &count, 4);
  for (uint16_t t : toks) {
    out.push_back(static_cast<char>(t & 0xFF));
    out.push_back(static_cast<char>(t >> 8));
  }
  return out;
}

}  // namespace

TEST_CASE("write_shard writes llm.c's layout and read_shard reads it back", "[data][shard]") {
  const fs::path dir = eco_test::scratch_dir("shard_roundtrip");
  std::vector<uint16_t> toks;
  for (uint32_t i = 0; i < 5000; ++i) toks.push_back(static_cast<uint16_t>((i * 2654435761u) >> 16));
  toks.push_back(65535);
  toks.push_back(0);
  eco::write_shard(dir / "a.bin", toks);

  // Independent check of the bytes on disk: header ints little-endian, then uint16 little-endian.
  const std::vector<char> bytes = file_bytes(dir / "a.bin");
  REQUIRE(bytes.size() == 1024 + 2 * toks.size());
  int32_t header[256];
  std::memcpy(header, bytes.data(), 1024);
  CHECK(header[0] == 20240520);
  CHECK(header[1] == 1);
  CHECK(header[2] == static_cast<int32_t>(toks.size()));
  for (int i = 3; i < 256; ++i) CHECK(header[i] == 0);
  for (size_t i = 0; i < toks.size(); ++i) {
    const auto lo = static_cast<uint8_t>(bytes[1024 + 2 * i]), hi = static_cast<uint8_t>(bytes[1024 + 2 * i + 1]);
    REQUIRE(static_cast<uint16_t>(lo | (hi << 8)) == toks[i]);
  }
  CHECK(eco::read_shard(dir / "a.bin") == toks);

  // A shard written by other code (here by hand) reads the same; ShardFile reads any range of it.
  write_bytes(dir / "b.bin", raw_shard(20240520, 1, 3, {7, 8, 9}));
  CHECK(eco::read_shard(dir / "b.bin") == std::vector<uint16_t>{7, 8, 9});
  eco::ShardFile m(dir / "b.bin");
  REQUIRE(m.size() == 3);
  CHECK(m.path() == dir / "b.bin");
  uint16_t two[2] = {};
  m.read(1, 2, two);
  CHECK(two[0] == 8);
  CHECK(two[1] == 9);
  CHECK_THROWS_AS(m.read(2, 2, two), std::out_of_range);  // past the end is a caller's bug, not data
  eco::ShardFile moved = std::move(m);
  CHECK(moved.size() == 3);
  CHECK(m.size() == 0);
  moved.read(0, 1, two);
  CHECK(two[0] == 7);

  // Overwriting replaces the file completely and leaves no temp file behind.
  eco::write_shard(dir / "a.bin", std::vector<uint16_t>{1, 2});
  CHECK(eco::read_shard(dir / "a.bin") == std::vector<uint16_t>{1, 2});
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  CHECK(files == 2);

  // The writer creates missing directories and refuses empty shards.
  eco::write_shard(dir / "sub/dir/c.bin", std::vector<uint16_t>{5});
  CHECK(eco::read_shard(dir / "sub/dir/c.bin") == std::vector<uint16_t>{5});
  CHECK(contains(data_error_of([&] { eco::write_shard(dir / "empty.bin", std::vector<uint16_t>{}); }), "empty.bin"));
}

TEST_CASE("malformed shards are DataErrors that name the file and the problem", "[data][shard]") {
  const fs::path dir = eco_test::scratch_dir("shard_errors");
  const std::vector<uint16_t> toks(100, 42);
  auto error_for = [&](const std::string& name, const std::vector<char>& bytes) {
    write_bytes(dir / name, bytes);
    const std::string msg = data_error_of([&] { eco::read_shard(dir / name); });
    INFO(name << ": " << msg);
    CHECK(contains(msg, name));
    return msg;
  };

  CHECK(contains(data_error_of([&] { eco::read_shard(dir / "missing.bin"); }), "missing.bin"));
  CHECK(contains(error_for("magic.bin", raw_shard(20240326, 1, 100, toks)), "magic"));
  CHECK(contains(error_for("version.bin", raw_shard(20240520, 2, 100, toks)), "version 2"));
  CHECK(contains(error_for("empty.bin", raw_shard(20240520, 1, 0, {})), "empty"));
  CHECK(contains(error_for("negative.bin", raw_shard(20240520, 1, -5, {})), "empty"));
  CHECK(contains(error_for("short_header.bin", std::vector<char>(1000, 0)), "header"));
  CHECK(contains(error_for("zero_bytes.bin", {}), "header"));
  const std::string truncated = error_for("truncated.bin", raw_shard(20240520, 1, 100, std::vector<uint16_t>(99, 1)));
  CHECK(contains(truncated, "truncated"));
  CHECK(contains(truncated, "1224"));  // expected size 1024 + 2 * 100
  CHECK(contains(truncated, "1222"));  // actual size
  std::vector<char> odd = raw_shard(20240520, 1, 100, toks);
  odd.pop_back();
  CHECK(contains(error_for("odd.bin", odd), "truncated"));
  CHECK(contains(error_for("extra.bin", raw_shard(20240520, 1, 100, std::vector<uint16_t>(101, 1))), "extra bytes"));
  fs::create_directories(dir / "adir.bin");
  CHECK(contains(data_error_of([&] { eco::read_shard(dir / "adir.bin"); }), "adir.bin"));
}

TEST_CASE("check_tokens_below names the first token outside the vocabulary and its offset", "[data][shard]") {
  std::vector<uint16_t> toks(1000, 65);
  CHECK_NOTHROW(eco::check_tokens_below(toks, 256, "ok.bin"));
  CHECK_NOTHROW(eco::check_tokens_below(toks, 66, "ok.bin"));
  toks[617] = 300;
  toks[900] = 400;
  const std::string msg = data_error_of([&] { eco::check_tokens_below(toks, 256, "data/x.bin"); });
  CHECK(contains(msg, "data/x.bin"));
  CHECK(contains(msg, "300"));
  CHECK(contains(msg, "617"));
  CHECK(contains(msg, "256"));
  CHECK_NOTHROW(eco::check_tokens_below(toks, 401, "ok.bin"));
  CHECK(contains(data_error_of([&] { eco::check_tokens_below(toks, 400, "b.bin"); }), "offset 900"));
  CHECK(contains(data_error_of([&] { eco::check_tokens_below(toks, 65, "c.bin"); }), "offset 0"));
}

TEST_CASE("a FIFO, a device or a directory given as a shard is refused at once", "[data][shard]") {
  const fs::path dir = eco_test::scratch_dir("shard_not_regular");
  REQUIRE(::mkfifo((dir / "fifo.bin").c_str(), 0600) == 0);
  fs::create_directories(dir / "adir.bin");
  const HangGuard guard(20);  // opening the FIFO for reading used to wait for a writer forever
  for (const fs::path& p : {dir / "fifo.bin", fs::path("/dev/zero"), dir / "adir.bin"}) {
    const std::string msg = data_error_of([&] { eco::ShardFile s(p); });
    INFO(p << ": " << msg);
    CHECK(contains(msg, p.string()));
    CHECK(contains(msg, "not a regular file"));
  }
  CHECK(contains(data_error_of([&] { eco::read_shard(dir / "fifo.bin"); }), "not a regular file"));
}

TEST_CASE("a shard that shrinks after it was opened is a DataError, not SIGBUS", "[data][shard]") {
  const fs::path dir = eco_test::scratch_dir("shard_truncated_later");
  std::vector<uint16_t> toks(10000);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(i);
  eco::write_shard(dir / "s.bin", toks);
  const eco::ShardFile shard(dir / "s.bin");
  std::vector<uint16_t> buf(100);
  shard.read(9900, 100, buf.data());
  CHECK(buf.back() == 9999);

  fs::resize_file(dir / "s.bin", 1024 + 2 * 5000);
  shard.read(4900, 100, buf.data());  // still there
  CHECK(buf[0] == 4900);
  const std::string msg = data_error_of([&] { shard.read(4950, 100, buf.data()); });
  CHECK(contains(msg, (dir / "s.bin").string()));
  CHECK(contains(msg, "the file changed while training"));
  CHECK(contains(msg, "token offset 4950"));
  CHECK(contains(msg, "11024 bytes now"));

  // Also when the file disappears entirely under an open reader (truncated to 0 bytes).
  fs::resize_file(dir / "s.bin", 0);
  CHECK(contains(data_error_of([&] { shard.read(0, 1, buf.data()); }), "changed while training"));
}

TEST_CASE("the vocabulary check of a whole shard streams it and reports absolute offsets", "[data][shard]") {
  const fs::path dir = eco_test::scratch_dir("shard_vocab_stream");
  // 1.5 M tokens (3 MB): the offender lies in the third 1 MiB piece.
  std::vector<uint16_t> toks(1500000, 7);
  toks[1200003] = 999;
  toks[1400000] = 5000;
  eco::write_shard(dir / "v.bin", toks);
  const eco::ShardFile shard(dir / "v.bin");
  CHECK_NOTHROW(eco::check_tokens_below(shard, 5001));
  const std::string msg = data_error_of([&] { eco::check_tokens_below(shard, 256); });
  CHECK(contains(msg, (dir / "v.bin").string()));
  CHECK(contains(msg, "token id 999 at token offset 1200003"));
  CHECK(contains(data_error_of([&] { eco::check_tokens_below(shard, 1000); }), "offset 1400000"));
  // The span form with a base offset, as the streaming check uses it.
  CHECK(contains(data_error_of([&] { eco::check_tokens_below(std::vector<uint16_t>{1, 300}, 256, "x.bin", 70); }),
                 "offset 71"));
}

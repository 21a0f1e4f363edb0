// Checkpoint store: CRC-32C known answers, round trips, every kind of damage (the newest damaged
// checkpoint is skipped, strict loading names the file), crash leftovers, pruning, atomic files.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "test_util.h"
#include "train/checkpoint_store.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A checkpoint whose blobs are derived from `step`, so each one's content is recognisable.
fs::path write_checkpoint(const fs::path& run, int64_t step, size_t n = 1000) {
  const auto params = random_bytes(n, static_cast<uint32_t>(step));
  const auto state = random_bytes(n / 2 + 3, static_cast<uint32_t>(step) + 1000);
  eco::CheckpointWriter w(run, step);
  w.add_blob("params.f32", params.data(), params.size());
  w.add_blob("adam_m.f32", state.data(), state.size());
  w.set_meta({{"step", step}, {"note", "hello"}});
  return w.commit();
}

void flip_byte(const fs::path& p, size_t at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}

// Rewrites a checkpoint's manifest with a matching checksum: damage the checksum cannot see
// (a writer bug, a hand edit) must still be caught by the manifest's own checks.
void rewrite_manifest_text(const fs::path& dir, const std::string& text) {
  std::ofstream(dir / "manifest.json", std::ios::binary | std::ios::trunc) << text;
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08x\n", eco::crc32c(text.data(), text.size()));
  std::ofstream(dir / "manifest.crc32c", std::ios::binary | std::ios::trunc) << hex;
}
void rewrite_manifest(const fs::path& dir, const json& m) { rewrite_manifest_text(dir, m.dump()); }

// The CheckpointError message `f` throws (fails the test if it throws nothing or another type).
template <typename F>
std::string checkpoint_error(F&& f) {
  try {
    f();
  } catch (const eco::CheckpointError& e) {
    CHECK(e.exit_code() == 4);
    return e.what();
  }
  FAIL("no CheckpointError thrown");
  return "";
}

}  // namespace

TEST_CASE("crc32c matches published check values on both code paths") {
  const char* check = "123456789";
  CHECK(eco::crc32c(check, 9) == 0xE3069283u);
  CHECK(eco::crc32c_portable(check, 9) == 0xE3069283u);
  // iSCSI test vectors (RFC 3720, B.4): 32 bytes of zeros, of ones, incrementing, decrementing.
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<uint8_t>(i);
    dec[i] = static_cast<uint8_t>(31 - i);
  }
  CHECK(eco::crc32c(zeros.data(), 32) == 0x8A9136AAu);
  CHECK(eco::crc32c(ones.data(), 32) == 0x62A8AB43u);
  CHECK(eco::crc32c(inc.data(), 32) == 0x46DD794Eu);
  CHECK(eco::crc32c(dec.data(), 32) == 0x113FDB5Cu);
  CHECK(eco::crc32c(nullptr, 0) == 0u);
  // Hardware and table paths agree at every length and alignment, and chaining equals one pass.
  const auto data = random_bytes(4096 + 7, 42);
  for (size_t off : {0, 1, 3}) {
    for (size_t len : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 4096}) {
      const uint32_t one = eco::crc32c(data.data() + off, len);
      CHECK(one == eco::crc32c_portable(data.data() + off, len));
      const size_t cut = len / 3;
      CHECK(eco::crc32c(data.data() + off + cut, len - cut, eco::crc32c(data.data() + off, cut)) == one);
    }
  }
}

TEST_CASE("checkpoint round trip") {
  const fs::path run = eco_test::scratch_dir("ckpt_roundtrip") / "run";  // created by the writer
  const auto params = random_bytes(9'000'000, 1);  // crosses the 4 MiB streaming chunk twice
  const std::vector<float> floats = {1.5f, -2.25f, 3.0e-8f};
  eco::CheckpointWriter w(run, 120);
  w.add_blob("params.f32", params.data(), params.size());
  w.add_blob("small.f32", floats.data(), floats.size() * sizeof(float));
  w.add_blob("empty.bin", nullptr, 0);
  const json meta = {{"format", "x"}, {"config", {{"train", {{"steps", 7}}}}}, {"rng", 12345678901234ull}};
  w.set_meta(meta);
  const fs::path dir = w.commit();
  CHECK(dir == run / "ckpt_00000120");
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_00000120"});  // no temp directory left
  CHECK(names_in(dir) ==
        std::vector<std::string>{"empty.bin", "manifest.crc32c", "manifest.json", "params.f32", "small.f32"});

  // The manifest records sizes and checksums computed independently here.
  const json manifest = json::parse(read_text(dir / "manifest.json"));
  CHECK(manifest["step"] == 120);
  CHECK(manifest["files"][0]["name"] == "params.f32");
  CHECK(manifest["files"][0]["bytes"] == params.size());
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08x", eco::crc32c(params.data(), params.size()));
  CHECK(manifest["files"][0]["crc32c"] == hex);
  CHECK(read_text(dir / "params.f32") == std::string(params.begin(), params.end()));

  std::optional<eco::LoadedCheckpoint> ck = eco::load_latest_checkpoint(run);
  REQUIRE(ck);
  CHECK(ck->step == 120);
  CHECK(ck->dir == dir);
  CHECK(ck->meta == meta);
  CHECK(ck->blob("params.f32") == params);
  CHECK(ck->blob("empty.bin").empty());
  std::vector<float> back(3);
  ck->read_blob("small.f32", back.data(), back.size() * sizeof(float));
  CHECK(back == floats);
  CHECK(ck->has_blob("small.f32"));
  CHECK_FALSE(ck->has_blob("nope"));
  CHECK(checkpoint_error([&] { ck->read_blob("small.f32", back.data(), 8); }).find("holds 12 bytes, this run expects 8") !=
        std::string::npos);
  CHECK(checkpoint_error([&] { ck->blob("nope"); }).find("nope: not in this checkpoint") != std::string::npos);
}

TEST_CASE("a run directory without checkpoints loads as nothing") {
  const fs::path run = eco_test::scratch_dir("ckpt_none");
  CHECK_FALSE(eco::load_latest_checkpoint(run));
  CHECK_FALSE(eco::load_latest_checkpoint(run / "does_not_exist"));
  fs::create_directories(run / "not_a_ckpt");
  std::ofstream(run / "ckpt_00000005") << "a file, not a directory";
  CHECK_FALSE(eco::load_latest_checkpoint(run));
}

TEST_CASE("a damaged newest checkpoint is skipped; strict loading names the problem") {
  struct Damage {
    const char* what;
    const char* file;
    const char* message;
    void (*apply)(const fs::path& dir);
  };
  const Damage damages[] = {
      {"truncated blob", "params.f32", "truncated: 999 bytes on disk, the manifest says 1000",
       [](const fs::path& d) { fs::resize_file(d / "params.f32", 999); }},
      {"flipped byte", "adam_m.f32", "checksum mismatch", [](const fs::path& d) { flip_byte(d / "adam_m.f32", 17); }},
      {"missing blob", "params.f32", "missing", [](const fs::path& d) { fs::remove(d / "params.f32"); }},
      {"grown blob", "params.f32", "wrong size: 1001 bytes",
       [](const fs::path& d) { std::ofstream(d / "params.f32", std::ios::app | std::ios::binary) << 'x'; }},
      {"garbage manifest", "manifest.json", "not valid JSON",
       [](const fs::path& d) { rewrite_manifest_text(d, "{\"format\": \"eco_train-chec"); }},
      {"missing manifest", "manifest.json", "missing", [](const fs::path& d) { fs::remove(d / "manifest.json"); }},
      {"manifest without files", "manifest.json", "malformed manifest",
       [](const fs::path& d) {
         json m = json::parse(read_text(d / "manifest.json"));
         m.erase("files");
         rewrite_manifest(d, m);
       }},
      {"manifest of another step", "manifest.json", "records step 10 but the directory is named for step 20",
       [](const fs::path& d) {
         json m = json::parse(read_text(d / "manifest.json"));
         m["step"] = 10;
         rewrite_manifest(d, m);
       }},
      {"manifest edited behind its checksum", "manifest.json", "checksum mismatch",
       [](const fs::path& d) {
         json m = json::parse(read_text(d / "manifest.json"));
         m["step"] = 10;
         std::ofstream(d / "manifest.json") << m.dump();
       }},
      {"key name damaged", "manifest.json", "no \"files\"",
       [](const fs::path& d) {
         std::string text = read_text(d / "manifest.json");
         text[text.find("\"files\"") + 1] ^= 0x01;
         rewrite_manifest(d, json::parse(text));
       }},
      {"wrong type", "manifest.json", "\"bytes\" is not a non-negative integer",
       [](const fs::path& d) {
         json m = json::parse(read_text(d / "manifest.json"));
         m["files"][0]["bytes"] = "1000";
         rewrite_manifest(d, m);
       }},
      {"missing checksum file", "manifest.json", "manifest.crc32c is missing",
       [](const fs::path& d) { fs::remove(d / "manifest.crc32c"); }},
  };
  for (const Damage& dmg : damages) {
    SECTION(dmg.what) {
      const fs::path run = eco_test::scratch_dir("ckpt_damage");
      write_checkpoint(run, 10);
      const fs::path newest = write_checkpoint(run, 20);
      dmg.apply(newest);

      std::optional<eco::LoadedCheckpoint> ck = eco::load_latest_checkpoint(run);
      REQUIRE(ck);
      CHECK(ck->step == 10);
      CHECK(ck->blob("params.f32") == random_bytes(1000, 10));

      const std::string msg = checkpoint_error([&] { eco::load_checkpoint(newest); });
      CHECK(msg.find((newest / dmg.file).string()) != std::string::npos);
      CHECK(msg.find(dmg.message) != std::string::npos);
    }
  }
}

TEST_CASE("damage after loading is caught when the blob is read") {
  const fs::path run = eco_test::scratch_dir("ckpt_late_damage");
  write_checkpoint(run, 3);
  eco::LoadedCheckpoint ck = eco::load_checkpoint(run / "ckpt_00000003");
  flip_byte(run / "ckpt_00000003" / "params.f32", 999);
  std::vector<uint8_t> buf(1000);
  CHECK(checkpoint_error([&] { ck.read_blob("params.f32", buf.data(), buf.size()); }).find("checksum mismatch") !=
        std::string::npos);
  fs::resize_file(run / "ckpt_00000003" / "adam_m.f32", 10);
  CHECK(checkpoint_error([&] { ck.blob("adam_m.f32"); }).find("truncated") != std::string::npos);
}

TEST_CASE("when every checkpoint is damaged, the error lists each one") {
  const fs::path run = eco_test::scratch_dir("ckpt_all_bad");
  const fs::path a = write_checkpoint(run, 1), b = write_checkpoint(run, 2);
  flip_byte(a / "params.f32", 0);
  fs::remove(b / "manifest.json");
  const std::string msg = checkpoint_error([&] { eco::load_latest_checkpoint(run); });
  CHECK(msg.find("no valid checkpoint in " + run.string()) != std::string::npos);
  CHECK(msg.find((a / "params.f32").string() + ": checksum mismatch") != std::string::npos);
  CHECK(msg.find((b / "manifest.json").string() + ": missing") != std::string::npos);
}

TEST_CASE("a crash mid-write leaves a temp directory that is ignored and pruned") {
  const fs::path run = eco_test::scratch_dir("ckpt_crash");
  write_checkpoint(run, 100);
  // A child process dies after writing one blob of step 200, before commit: no destructor runs.
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    eco::CheckpointWriter w(run, 200);
    const auto data = random_bytes(5000, 7);
    w.add_blob("params.f32", data.data(), data.size());
    std::_Exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  const std::string tmp_name = ".tmp_ckpt_00000200_" + std::to_string(pid);
  CHECK(names_in(run) == std::vector<std::string>{tmp_name, "ckpt_00000100"});
  CHECK(fs::exists(run / tmp_name / "params.f32"));

  std::optional<eco::LoadedCheckpoint> ck = eco::load_latest_checkpoint(run);
  REQUIRE(ck);
  CHECK(ck->step == 100);

  eco::prune_checkpoints(run, 5);
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_00000100"});
}

TEST_CASE("pruning keeps the newest K by step and spares live writers") {
  const fs::path run = eco_test::scratch_dir("ckpt_prune");
  for (int64_t step : {5, 1, 4, 2, 3}) write_checkpoint(run, step, 64);
  eco::prune_checkpoints(run, 2);
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_00000004", "ckpt_00000005"});

  // Steps beyond 8 digits still order numerically.
  write_checkpoint(run, 123456789, 64);
  CHECK(eco::load_latest_checkpoint(run)->step == 123456789);
  eco::prune_checkpoints(run, 1);
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_123456789"});

  {
    eco::CheckpointWriter live(run, 123456790);
    const auto data = random_bytes(64, 9);
    live.add_blob("params.f32", data.data(), data.size());
    eco::prune_checkpoints(run, 1);  // must not delete the writer's temp directory
    CHECK(live.commit() == run / "ckpt_123456790");
  }
  eco::prune_checkpoints(run, 1);
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_123456790"});
  CHECK_THROWS_AS(eco::prune_checkpoints(run, 0), std::invalid_argument);
  CHECK_NOTHROW(eco::prune_checkpoints(run / "missing", 1));
}

TEST_CASE("an uncommitted writer leaves nothing behind; a commit replaces the same step") {
  const fs::path run = eco_test::scratch_dir("ckpt_replace");
  {
    eco::CheckpointWriter abandoned(run, 7);
    const auto data = random_bytes(100, 1);
    abandoned.add_blob("params.f32", data.data(), data.size());
  }
  CHECK(names_in(run).empty());

  write_checkpoint(run, 7);
  const auto fresh = random_bytes(300, 99);
  eco::CheckpointWriter w(run, 7);
  w.add_blob("params.f32", fresh.data(), fresh.size());
  w.set_meta({{"second", true}});
  w.commit();
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_00000007"});
  eco::LoadedCheckpoint ck = eco::load_checkpoint(run / "ckpt_00000007");
  CHECK(ck.meta == json{{"second", true}});
  CHECK(ck.blob("params.f32") == fresh);
  CHECK_FALSE(ck.has_blob("adam_m.f32"));
}

TEST_CASE("blob names are checked") {
  const fs::path run = eco_test::scratch_dir("ckpt_names");
  eco::CheckpointWriter w(run, 1);
  const char x = 1;
  CHECK_THROWS_AS(w.add_blob("manifest.json", &x, 1), std::invalid_argument);
  CHECK_THROWS_AS(w.add_blob("a/b", &x, 1), std::invalid_argument);
  CHECK_THROWS_AS(w.add_blob(".hidden", &x, 1), std::invalid_argument);
  CHECK_THROWS_AS(w.add_blob("", &x, 1), std::invalid_argument);
  w.add_blob("ok", &x, 1);
  CHECK_THROWS_AS(w.add_blob("ok", &x, 1), std::invalid_argument);
}

TEST_CASE("atomic_write_file replaces a file whole and reports failures with the path") {
  const fs::path dir = eco_test::scratch_dir("atomic_file");
  const fs::path p = dir / "sub" / "config.json";
  eco::atomic_write_file(p, "first version, longer than the second\n");
  CHECK(read_text(p) == "first version, longer than the second\n");
  eco::atomic_write_file(p, "second\n");
  CHECK(read_text(p) == "second\n");
  eco::atomic_write_file(p, "");
  CHECK(read_text(p).empty());
  CHECK(names_in(dir / "sub") == std::vector<std::string>{"config.json"});  // no temp files left

  std::ofstream(dir / "plain_file") << "x";
  try {
    eco::atomic_write_file(dir / "plain_file" / "child.json", "y");
    FAIL("no SystemError");
  } catch (const eco::SystemError& e) {
    CHECK(e.exit_code() == 6);
    CHECK(std::string(e.what()).find((dir / "plain_file").string()) != std::string::npos);
  }
}

namespace {

// One seeded mutation of a manifest's text: the kinds of damage disks, crashes and hands do.
std::string mutate(std::string text, std::mt19937& rng) {
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % std::max<size_t>(n, 1)); };
  switch (rng() % 7) {
    case 0:  // one bit anywhere
      text[pick(text.size())] ^= static_cast<char>(1 << (rng() % 8));
      break;
    case 1: {  // one bit inside a key name (the case that once aborted the process)
      std::vector<size_t> quotes;
      for (size_t i = 0; i + 1 < text.size(); ++i)
        if (text[i] == '"' && text[i + 1] != '"') quotes.push_back(i + 1);
      if (quotes.empty()) quotes.push_back(pick(text.size()));
      text[quotes[pick(quotes.size())]] ^= static_cast<char>(1 << (rng() % 7));
      break;
    }
    case 2: text.resize(pick(text.size())); break;  // truncated
    case 3: text.erase(pick(text.size()), 1 + pick(8)); break;
    case 4: text.insert(pick(text.size()), std::string(1 + pick(4), "{[\",:0-e}]"[rng() % 10])); break;
    case 5: text = std::string(100000, '[') + text; break;  // hostile nesting
    default: {  // a value replaced by another JSON type
      const char* repl[] = {"null", "\"x\"", "-1", "1e400", "[]", "{}", "18446744073709551616", "true"};
      const size_t colon = text.find(':', pick(text.size()));
      if (colon == std::string::npos) break;
      const size_t end = text.find_first_of(",}\n", colon);
      text.replace(colon + 1, end == std::string::npos ? 0 : end - colon - 1, repl[rng() % 8]);
    }
  }
  return text;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
}

}  // namespace

TEST_CASE("a damaged manifest, in any of a thousand seeded ways, falls back to the previous checkpoint", "[fuzz]") {
  const fs::path run = eco_test::scratch_dir("ckpt_manifest_fuzz");
  write_checkpoint(run, 1);
  const fs::path newest = write_checkpoint(run, 2);
  const std::string manifest = read_text(newest / "manifest.json");
  const std::string crc = read_text(newest / "manifest.crc32c");
  std::mt19937 rng(20261130);
  int fell_back = 0, still_valid = 0;
  for (int i = 0; i < 1000; ++i) {
    const bool damage_crc = i % 10 == 9;
    const std::string text = damage_crc ? manifest : mutate(manifest, rng);
    write_text(newest / "manifest.json", text);
    write_text(newest / "manifest.crc32c", damage_crc ? mutate(crc, rng) : crc);
    INFO("case " << i << ": " << text.substr(0, 200));
    std::optional<eco::LoadedCheckpoint> ck;
    REQUIRE_NOTHROW(ck = eco::load_latest_checkpoint(run));
    REQUIRE(ck);
    if (text == manifest && !damage_crc) {
      ++still_valid;  // a mutation that changed nothing
      continue;
    }
    if (ck->step == 2) {
      ++still_valid;  // only the checksum file's trailing whitespace changed, say
      CHECK(read_text(newest / "manifest.json") == manifest);
      continue;
    }
    CHECK(ck->step == 1);
    ++fell_back;
  }
  CHECK(fell_back > 950);
}

TEST_CASE("damaged checkpoints do not count toward keep_last, and a selected older one survives pruning") {
  const fs::path run = eco_test::scratch_dir("ckpt_prune_damaged");
  for (int64_t step : {1, 2, 3, 4}) write_checkpoint(run, step, 64);
  flip_byte(run / "ckpt_00000004/manifest.json", 20);
  fs::resize_file(run / "ckpt_00000003/params.f32", 10);
  // Newest first: 4 and 3 are damaged, so keeping 2 keeps steps 2 and 1; the damaged ones are
  // newer than both and are left for inspection.
  eco::prune_checkpoints(run, 2);
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_00000001", "ckpt_00000002", "ckpt_00000003", "ckpt_00000004"});
  write_checkpoint(run, 5, 64);
  eco::prune_checkpoints(run, 1);  // keeps 5; 4, 3 (damaged) and 2, 1 are older: deleted
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_00000005"});

  // also_keep: the newest checkpoint whose meta it selects is kept besides the newest K.
  for (int64_t step : {6, 7, 8}) write_checkpoint(run, step, 64);
  eco::prune_checkpoints(run, 1, [](const json& meta) { return meta.value("step", 0) == 6; });
  CHECK(names_in(run) == std::vector<std::string>{"ckpt_00000006", "ckpt_00000008"});
}

TEST_CASE("a checkpoint from a build before manifest checksums (version 1) still loads") {
  const fs::path run = eco_test::scratch_dir("ckpt_v1");
  const fs::path dir = write_checkpoint(run, 3);
  json m = json::parse(read_text(dir / "manifest.json"));
  m["version"] = 1;
  write_text(dir / "manifest.json", m.dump(1) + "\n");
  fs::remove(dir / "manifest.crc32c");
  CHECK(eco::load_checkpoint(dir).step == 3);
  // A version-2 manifest without its checksum is damage, not an old format.
  m["version"] = 2;
  write_text(dir / "manifest.json", m.dump(1) + "\n");
  CHECK(checkpoint_error([&] { eco::load_checkpoint(dir); }).find("manifest.crc32c is missing") != std::string::npos);
}

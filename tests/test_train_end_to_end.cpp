// End-to-end runs of the eco_train binary on a tiny synthetic byte corpus: training works,
// resume is bit-exact (also after a corrupt checkpoint), bad input gives clear errors.
#include <catch2/catch.hpp>

#include "train_fixture.h"

using namespace eco_test;

namespace {
std::string base_cmd(const TinyRun& r, const std::string& cfg_file = "config.json") {
  return eco_train_bin() + " --config " + (r.dir / cfg_file).string();
}

// A run of the default tiny config, trained to the end: the reference that other runs must match.
TinyRun finished_run(const std::string& name) {
  TinyRun r(name);
  r.write_config();
  REQUIRE(run_command(base_cmd(r), r.dir / "log.txt") == 0);
  return r;
}

// Train-loss and val-loss records in order, with the fields compared bit for bit.
std::vector<std::string> loss_records(const std::filesystem::path& run_dir) {
  std::vector<std::string> out;
  for (const auto& rec : read_metrics(run_dir)) {
    nlohmann::json r = rec;
    r.erase("tokens_per_s");  // wall-clock, legitimately different
    out.push_back(r.dump());
  }
  return out;
}
}  // namespace

TEST_CASE("tiny run trains: loss falls and metrics are complete", "[train]") {
  TinyRun r("e2e_trains");
  r.config["train"]["steps"] = 60;
  r.config["train"]["eval_every"] = 20;
  r.write_config();
  REQUIRE(run_command(base_cmd(r), r.dir / "log.txt") == 0);
  auto metrics = read_metrics(r.dir / "run");
  std::vector<double> val;
  int train_records = 0;
  for (const auto& m : metrics) {
    if (m.contains("val_loss")) val.push_back(m["val_loss"].get<double>());
    if (m.contains("train_loss")) {
      ++train_records;
      REQUIRE(m.contains("lr"));
      REQUIRE(m.contains("grad_norm"));
      REQUIRE(m.contains("tokens_per_s"));
    }
  }
  CHECK(train_records == 60);
  REQUIRE(val.size() == 4);  // steps 0, 20, 40, 60
  CHECK(val.front() > 5.0);  // ~ln(256) = 5.55 at init
  for (size_t i = 1; i < val.size(); ++i) CHECK(val[i] < val[i - 1]);
  CHECK(val.back() < 3.0);
  CHECK(std::filesystem::exists(r.dir / "run/config.json"));
  CHECK(std::filesystem::exists(r.dir / "run/ckpt_00000060/manifest.json"));
  std::string log = read_text(r.dir / "log.txt");
  CHECK(log.find("tok/s") != std::string::npos);
  CHECK(log.find("sample:") != std::string::npos);
}

TEST_CASE("interrupted and resumed run is bit-identical to an uninterrupted one", "[train][resume]") {
  const TinyRun a = finished_run("e2e_resume_a");

  TinyRun b("e2e_resume_b");
  b.write_config();
  // Stop after 13 steps (checkpoints at 10 and 13), then resume to the end.
  REQUIRE(run_command(base_cmd(b) + " --stop-after 13", b.dir / "log1.txt") == 0);
  REQUIRE(std::filesystem::exists(b.dir / "run/ckpt_00000013"));
  REQUIRE(run_command(base_cmd(b) + " --resume", b.dir / "log2.txt") == 0);
  CHECK(read_text(b.dir / "log2.txt").find("resumed from") != std::string::npos);

  auto ra = loss_records(a.dir / "run"), rb = loss_records(b.dir / "run");
  REQUIRE(ra.size() == rb.size());
  for (size_t i = 0; i < ra.size(); ++i) CHECK(ra[i] == rb[i]);
  // Final weights and moments identical to the last bit.
  for (const char* blob : {"values.f32", "codes.bin", "scales.f32", "m.bin", "v.bin"})
    CHECK(read_text(a.dir / "run/ckpt_00000030" / blob) == read_text(b.dir / "run/ckpt_00000030" / blob));
}

TEST_CASE("--resume with no checkpoint starts over and drops the earlier attempt's metrics", "[train][resume]") {
  const TinyRun a = finished_run("e2e_fresh_a");

  TinyRun b("e2e_fresh_b");
  b.write_config();
  // A first attempt dies before its first checkpoint survives: its metrics must not leak into
  // the restarted run (duplicated step-0 records broke the ablation plots).
  REQUIRE(run_command(base_cmd(b) + " --stop-after 5", b.dir / "log1.txt") == 0);
  for (const auto& e : std::filesystem::directory_iterator(b.dir / "run"))
    if (e.path().filename().string().rfind("ckpt_", 0) == 0) std::filesystem::remove_all(e.path());
  REQUIRE(run_command(base_cmd(b) + " --resume", b.dir / "log2.txt") == 0);
  CHECK(read_text(b.dir / "log2.txt").find("no checkpoint") != std::string::npos);
  CHECK(loss_records(a.dir / "run") == loss_records(b.dir / "run"));
}

TEST_CASE("a corrupt newest checkpoint is reported and the previous good one is used", "[train][resume]") {
  const TinyRun a = finished_run("e2e_corrupt_a");

  TinyRun b("e2e_corrupt_b");
  b.write_config();
  REQUIRE(run_command(base_cmd(b) + " --stop-after 20", b.dir / "log1.txt") == 0);
  // Flip one byte in the newest checkpoint's weights.
  auto blob = b.dir / "run/ckpt_00000020/values.f32";
  REQUIRE(std::filesystem::exists(blob));
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c = 0;
    f.read(&c, 1);
    f.seekp(100);
    c ^= 0x40;
    f.write(&c, 1);
  }
  REQUIRE(run_command(base_cmd(b) + " --resume", b.dir / "log2.txt") == 0);
  std::string log = read_text(b.dir / "log2.txt");
  CHECK(log.find("ckpt_00000020") != std::string::npos);  // named in the warning
  CHECK(log.find("resumed from") != std::string::npos);
  CHECK(log.find("ckpt_00000010") != std::string::npos);
  auto ra = loss_records(a.dir / "run"), rb = loss_records(b.dir / "run");
  REQUIRE(ra.size() == rb.size());
  for (size_t i = 0; i < ra.size(); ++i) CHECK(ra[i] == rb[i]);

  // Every checkpoint corrupt: the run stops with a checkpoint error (exit 4) instead of starting over.
  for (const auto& e : std::filesystem::directory_iterator(b.dir / "run"))
    if (e.path().filename().string().rfind("ckpt_", 0) == 0) std::filesystem::resize_file(e.path() / "v.bin", 10);
  CHECK(run_command(base_cmd(b) + " --resume", b.dir / "log3.txt") == 4);
}

TEST_CASE("config errors stop before any work with exit code 2 and the key path", "[train][config]") {
  TinyRun r("e2e_config");
  r.write_config();
  struct Case { std::string set, expect; };
  std::vector<Case> cases = {
      {"train.stpes=5", "train.steps"},          // did-you-mean
      {"optim.lr=-1", "optim.lr"},               // out of range
      {"train.batch_size=\"big\"", "train.batch_size"},  // wrong type
      {"model.arch=gpt3", "model.arch"},         // bad enum
      {"data.train=/nonexistent/x.bin", "data.train"},  // missing file
      {"train.seq_len=64", "seq_len"},           // longer than model.max_seq_len
  };
  for (const auto& c : cases) {
    auto log = r.dir / "err.txt";
    INFO(c.set);
    CHECK(run_command(base_cmd(r) + " --set '" + c.set + "'", log) == 2);
    std::string out = read_text(log);
    CHECK(out.find(c.expect) != std::string::npos);
    CHECK(!std::filesystem::exists(r.dir / "run/metrics.jsonl"));
  }
  CHECK(run_command(eco_train_bin() + " --bogus", r.dir / "err.txt") == 2);
  CHECK(run_command(eco_train_bin() + " --config " + (r.dir / "missing.json").string(), r.dir / "err.txt") == 2);
  std::ofstream(r.dir / "broken.json") << "{\"train\": {\"steps\": 3,}}";
  CHECK(run_command(eco_train_bin() + " --config " + (r.dir / "broken.json").string(), r.dir / "err.txt") == 2);
}

TEST_CASE("bad shards give a data error (exit 3) naming the file", "[train][data]") {
  TinyRun r("e2e_shards");
  r.write_config();
  auto bad = r.dir / "data/bad.bin";
  // Truncated: header says 40000 tokens, file holds fewer.
  std::filesystem::copy_file(r.dir / "data/train.bin", bad);
  std::filesystem::resize_file(bad, 1024 + 1000);
  CHECK(run_command(base_cmd(r) + " --set data.train=" + bad.string(), r.dir / "err.txt") == 3);
  CHECK(read_text(r.dir / "err.txt").find("bad.bin") != std::string::npos);
  // Token id beyond the model's vocabulary.
  write_raw_shard(bad, std::vector<uint16_t>(5000, 300));
  CHECK(run_command(base_cmd(r) + " --set data.train=" + bad.string(), r.dir / "err.txt") == 3);
  CHECK(read_text(r.dir / "err.txt").find("bad.bin") != std::string::npos);
}

TEST_CASE("a diverging run skips non-finite steps, then stops with exit code 5", "[train][nan]") {
  TinyRun r("e2e_nan");
  r.config["optim"]["lr"] = 1e30;
  r.config["optim"]["grad_clip"] = 0.0;
  r.config["optim"]["warmup_steps"] = 0;
  r.config["train"]["max_bad_steps"] = 2;
  r.write_config();
  CHECK(run_command(base_cmd(r), r.dir / "log.txt") == 5);
  std::string log = read_text(r.dir / "log.txt");
  CHECK(log.find("not finite") != std::string::npos);
  CHECK(log.find("diverged") != std::string::npos);
}

TEST_CASE("resume is bit-exact in every optimizer mode", "[train][resume][modes]") {
  // eco_solo4: eco_sr with SOLO 4-bit block-wise states (optim.state_format solo4).
  const char* modes[] = {"bf16", "bf16_sr", "master", "master_sr", "naive", "sr", "eco", "eco_sr", "eco_solo4"};
  for (const char* name : modes) {
    INFO(name);
    const bool solo = std::string(name) == "eco_solo4";
    const char* mode = solo ? "eco_sr" : name;
    TinyRun a(std::string("e2e_mode_a_") + name);
    a.config["optim"]["mode"] = mode;
    if (solo) a.config["optim"]["state_format"] = "solo4";
    a.config["train"]["steps"] = 16;
    a.config["train"]["checkpoint_every"] = 8;
    a.config["train"]["sample_tokens"] = 0;
    if (std::string(name) == "eco_sr") a.config["optim"]["state_format"] = "bf16";  // SR moments too
    a.write_config();
    REQUIRE(run_command(base_cmd(a), a.dir / "log.txt") == 0);

    TinyRun b(std::string("e2e_mode_b_") + name);
    b.config = a.config;
    b.config["log"]["dir"] = (b.dir / "run").string();
    b.write_config();
    REQUIRE(run_command(base_cmd(b) + " --stop-after 5", b.dir / "log1.txt") == 0);
    REQUIRE(run_command(base_cmd(b) + " --resume", b.dir / "log2.txt") == 0);
    auto ra = loss_records(a.dir / "run"), rb = loss_records(b.dir / "run");
    REQUIRE(ra.size() == rb.size());
    for (size_t i = 0; i < ra.size(); ++i) CHECK(ra[i] == rb[i]);
    for (const char* blob : {"values.f32", "codes.bin", "scales.f32", "m.bin", "v.bin"})
      CHECK(read_text(a.dir / "run/ckpt_00000016" / blob) == read_text(b.dir / "run/ckpt_00000016" / blob));
    // The memory record is written once, at step 0, and names the mode's static bytes.
    auto first = read_metrics(b.dir / "run").front();
    REQUIRE(first.contains("memory"));
    if (std::string(mode) == "naive" || std::string(mode) == "eco")
      CHECK(first["memory"]["master_bytes"].get<int64_t>() == 0);
  }
}

TEST_CASE("llm.c export then import through the CLI gives the same validation loss", "[train][llmc]") {
  TinyRun a("e2e_llmc_a");
  a.config["train"]["steps"] = 10;
  a.write_config();
  const auto exported = a.dir / "model.bin";
  REQUIRE(run_command(base_cmd(a) + " --export-llmc " + exported.string(), a.dir / "log.txt") == 0);
  REQUIRE(std::filesystem::exists(exported));
  double final_a = read_metrics(a.dir / "run").back()["val_loss"].get<double>();

  TinyRun b("e2e_llmc_b");
  b.config["model"]["init_from"] = exported.string();
  b.config["train"]["steps"] = 1;
  b.config["optim"]["warmup_steps"] = 0;
  b.write_config();
  REQUIRE(run_command(base_cmd(b), b.dir / "log.txt") == 0);
  double initial_b = -1;
  for (const auto& m : read_metrics(b.dir / "run"))
    if (m.contains("val_loss") && m["step"] == 0) initial_b = m["val_loss"].get<double>();
  CHECK(initial_b == final_a);  // bit-identical weights, same val windows

  // Into a master-free FP8 mode: staged through fp32, then quantized; the loss moves only a little.
  b.config["optim"]["mode"] = "eco_sr";
  b.config["log"]["dir"] = (b.dir / "run_eco").string();
  b.write_config();
  REQUIRE(run_command(base_cmd(b), b.dir / "log_eco.txt") == 0);
  double initial_eco = -1;
  for (const auto& m : read_metrics(b.dir / "run_eco"))
    if (m.contains("val_loss") && m["step"] == 0) initial_eco = m["val_loss"].get<double>();
  CHECK(initial_eco != final_a);
  CHECK(std::abs(initial_eco - final_a) < 0.05 * final_a);
}

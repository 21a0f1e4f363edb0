// The run directory under hostile but realistic use, through the eco_train binary: reuse without
// --resume, a changed config on --resume, two processes at once, an --out that cannot exist,
// signals early and late (SIGHUP included), torn metrics, a damaged manifest, a diverging run that
// must keep its last good checkpoint, and runs too large for the machine. Every case checks that
// the earlier work is intact afterwards, not only the exit code.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "train_fixture.h"

using namespace eco_test;
namespace fs = std::filesystem;

namespace {

std::string cmd(const TinyRun& r) { return eco_train_bin() + " --config " + (r.dir / "config.json").string(); }

std::vector<std::string> loss_records(const fs::path& run_dir) {
  std::vector<std::string> out;
  for (auto rec : read_metrics(run_dir)) {
    rec.erase("tokens_per_s");
    out.push_back(rec.dump());
  }
  return out;
}

// The uninterrupted 30-step run every interrupted one must reproduce (made once per process).
const std::vector<std::string>& reference_records() {
  static const std::vector<std::string> records = [] {
    TinyRun r("rundir_reference");
    r.write_config();
    REQUIRE(run_command(cmd(r), r.dir / "log.txt") == 0);
    return loss_records(r.dir / "run");
  }();
  return records;
}

std::vector<std::string> checkpoints_in(const fs::path& run_dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(run_dir))
    if (e.path().filename().string().rfind("ckpt_", 0) == 0) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Starts eco_train in the background, waits until `ready` (a bash condition on $p, the pid) holds,
// sends `signal`, and returns eco_train's exit status.
int run_and_signal(const std::string& command, const std::string& ready, const char* signal, const fs::path& log) {
  const std::string script = command + " > " + log.string() + " 2>&1 & p=$!; for i in $(seq 4000); do " + ready +
                             " && break; kill -0 $p 2>/dev/null || break; sleep 0.005; done; kill -" + signal +
                             " $p 2>/dev/null; wait $p";
  std::ofstream(log.string() + ".sh") << script;
  const int rc = std::system(("bash " + log.string() + ".sh").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

// True once the process has installed its own handler for SIGTERM (bit 15 of SigCgt).
const char* kHandlersInstalled = "m=$(awk '/SigCgt/{print $2}' /proc/$p/status 2>/dev/null) && (( 0x${m:-0} & 0x4000 ))";

}  // namespace

TEST_CASE("a directory holding a run is refused without --resume; --overwrite discards it", "[rundir]") {
  TinyRun r("rundir_reuse");
  r.write_config();
  REQUIRE(run_command(cmd(r), r.dir / "log1.txt") == 0);
  const std::string metrics = read_text(r.dir / "run/metrics.jsonl");
  const std::string config = read_text(r.dir / "run/config.json");

  CHECK(run_command(cmd(r) + " --set train.steps=10", r.dir / "log2.txt") == 2);
  const std::string log = read_text(r.dir / "log2.txt");
  CHECK(log.find("already holds a run") != std::string::npos);
  CHECK(log.find("checkpoints up to step 30") != std::string::npos);
  CHECK(log.find("--resume") != std::string::npos);
  CHECK(read_text(r.dir / "run/metrics.jsonl") == metrics);
  CHECK(read_text(r.dir / "run/config.json") == config);
  CHECK(checkpoints_in(r.dir / "run") == std::vector<std::string>{"ckpt_00000020", "ckpt_00000030"});

  CHECK(run_command(cmd(r) + " --resume --overwrite", r.dir / "log3.txt") == 2);
  REQUIRE(run_command(cmd(r) + " --set train.steps=10 --overwrite", r.dir / "log4.txt") == 0);
  CHECK(checkpoints_in(r.dir / "run") == std::vector<std::string>{"ckpt_00000010"});
  const auto recs = read_metrics(r.dir / "run");
  CHECK(recs.front()["step"] == 0);
  CHECK(recs.back()["step"] == 10);
}

TEST_CASE("--resume with a changed model is refused before anything in the directory changes", "[rundir]") {
  TinyRun r("rundir_changed");
  r.write_config();
  REQUIRE(run_command(cmd(r) + " --stop-after 10", r.dir / "log1.txt") == 0);
  const std::string config = read_text(r.dir / "run/config.json");
  const std::string metrics = read_text(r.dir / "run/metrics.jsonl");
  CHECK(run_command(cmd(r) + " --resume --set model.d_model=64", r.dir / "log2.txt") == 2);
  CHECK(read_text(r.dir / "log2.txt").find("model.d_model (32 in the checkpoint, 64 now)") != std::string::npos);
  CHECK(read_text(r.dir / "run/config.json") == config);
  CHECK(read_text(r.dir / "run/metrics.jsonl") == metrics);
}

TEST_CASE("a second process on a run directory is refused while the first holds it", "[rundir]") {
  TinyRun r("rundir_lock");
  r.write_config();
  fs::create_directories(r.dir / "run");
  const int fd = ::open((r.dir / "run/.lock").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  REQUIRE(::write(fd, "4242", 4) == 4);
  CHECK(run_command(cmd(r), r.dir / "log1.txt") == 2);
  CHECK(read_text(r.dir / "log1.txt").find("in use by another eco_train process (pid 4242)") != std::string::npos);
  CHECK_FALSE(fs::exists(r.dir / "run/metrics.jsonl"));
  ::close(fd);  // the holder exits: the directory is free again
  CHECK(run_command(cmd(r) + " --set train.steps=3", r.dir / "log2.txt") == 0);
}

TEST_CASE("an output directory that cannot be created is a system error naming it", "[rundir]") {
  TinyRun r("rundir_badout");
  r.write_config();
  std::ofstream(r.dir / "a_file") << "x";
  for (const std::string out : {(r.dir / "a_file").string(), (r.dir / "a_file/sub").string(), std::string("/proc/eco_run")}) {
    INFO(out);
    CHECK(run_command(cmd(r) + " --out " + out, r.dir / "log.txt") == 6);
    const std::string log = read_text(r.dir / "log.txt");
    CHECK(log.find(out) != std::string::npos);
    CHECK(log.find("choose another --out") != std::string::npos);
    CHECK(log.find("internal error") == std::string::npos);
  }
}

TEST_CASE("SIGHUP mid-run checkpoints and exits 129; resume is bit-identical", "[rundir][signal]") {
  TinyRun r("rundir_sighup");
  r.write_config();
  const std::string step3 = "grep -q '\"step\":3,' " + (r.dir / "run/metrics.jsonl").string() + " 2>/dev/null";
  CHECK(run_and_signal(cmd(r), step3, "HUP", r.dir / "log1.txt") == 129);
  CHECK(read_text(r.dir / "log1.txt").find("signal received") != std::string::npos);
  REQUIRE(run_command(cmd(r) + " --resume", r.dir / "log2.txt") == 0);
  CHECK(loss_records(r.dir / "run") == reference_records());
}

TEST_CASE("a signal during start-up leaves a step-0 checkpoint; resume is bit-identical", "[rundir][signal]") {
  TinyRun r("rundir_early_signal");
  r.write_config();
  CHECK(run_and_signal(cmd(r), kHandlersInstalled, "TERM", r.dir / "log1.txt") == 143);
  CHECK_FALSE(checkpoints_in(r.dir / "run").empty());
  REQUIRE(run_command(cmd(r) + " --resume", r.dir / "log2.txt") == 0);
  CHECK(loss_records(r.dir / "run") == reference_records());
}

TEST_CASE("torn and malformed metrics lines do not stop --resume and do not survive it", "[rundir][metrics]") {
  TinyRun r("rundir_torn_metrics");
  r.write_config();
  REQUIRE(run_command(cmd(r) + " --stop-after 13", r.dir / "log1.txt") == 0);
  {
    std::string text = read_text(r.dir / "run/metrics.jsonl");
    text.insert(text.find('\n') + 1, "[1, 2]\n{\"step\": \"x\"}\nnot json\n");
    text += "{\"step\": 14, \"train_lo";  // what a crash or a full disk leaves behind
    std::ofstream(r.dir / "run/metrics.jsonl", std::ios::trunc) << text;
  }
  REQUIRE(run_command(cmd(r) + " --resume", r.dir / "log2.txt") == 0);
  CHECK(read_text(r.dir / "log2.txt").find("dropped 4 line(s)") != std::string::npos);
  CHECK(loss_records(r.dir / "run") == reference_records());  // read_metrics parses every line
}

TEST_CASE("one flipped bit in a manifest key name falls back to the previous checkpoint", "[rundir][resume]") {
  TinyRun r("rundir_manifest_bit");
  r.write_config();
  REQUIRE(run_command(cmd(r) + " --stop-after 20", r.dir / "log1.txt") == 0);
  const fs::path manifest = r.dir / "run/ckpt_00000020/manifest.json";
  std::string text = read_text(manifest);
  text[text.find("\"train_loader\"") + 3] ^= 0x01;
  std::ofstream(manifest, std::ios::trunc) << text;
  REQUIRE(run_command(cmd(r) + " --resume", r.dir / "log2.txt") == 0);
  const std::string log = read_text(r.dir / "log2.txt");
  CHECK(log.find("skipping damaged checkpoint") != std::string::npos);
  CHECK(log.find("resumed from " + (r.dir / "run/ckpt_00000010").string()) != std::string::npos);
  CHECK(loss_records(r.dir / "run") == reference_records());
}

TEST_CASE("a diverging run keeps its last checkpoint from before the non-finite streak", "[rundir][nan]") {
  TinyRun r("rundir_diverge");
  r.config["optim"]["lr"] = 1e30;
  r.config["optim"]["grad_clip"] = 0.0;
  r.config["optim"]["warmup_steps"] = 0;
  r.config["train"]["max_bad_steps"] = 3;
  r.config["train"]["checkpoint_every"] = 1;
  r.config["train"]["keep_checkpoints"] = 1;
  r.write_config();
  CHECK(run_command(cmd(r), r.dir / "log.txt") == 5);
  // Step 1 was finite (its update blew the weights up); steps 2-4 were skipped and checkpointed.
  CHECK(checkpoints_in(r.dir / "run") == std::vector<std::string>{"ckpt_00000001", "ckpt_00000004"});
  // Adam's t counts updates: after step 4 only step 1's update was applied.
  const auto meta = nlohmann::json::parse(read_text(r.dir / "run/ckpt_00000004/manifest.json"))["meta"];
  CHECK(meta["bad_steps"] == 3);
  CHECK(meta["updates"] == 1);
}

TEST_CASE("a run that cannot fit in memory is refused before it allocates (exit 6)", "[rundir][memory]") {
  TinyRun r("rundir_memory");
  r.write_config();
  // ~200 TB of parameters: must be refused from the plan, in well under a second of work.
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(run_command(cmd(r) + " --set model.d_model=65536 --set model.n_head=256 --set model.n_layer=256",
                    r.dir / "log1.txt") == 6);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
  const std::string log = read_text(r.dir / "log1.txt");
  CHECK(log.find("this run needs about") != std::string::npos);
  CHECK(log.find("TiB") != std::string::npos);
  // A limit set for the process (a shared machine, a container) counts too.
  CHECK(run_command("ECO_MEMORY_LIMIT=1000000 " + cmd(r) + " --overwrite", r.dir / "log2.txt") == 6);
  CHECK(read_text(r.dir / "log2.txt").find("ECO_MEMORY_LIMIT allows") != std::string::npos);
}

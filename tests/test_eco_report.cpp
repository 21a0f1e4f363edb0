// eco_report on hand-written run directories: the ablation table (gap to master, diverged runs,
// memory, median tokens/s) and the gnuplot data, checked against values computed here.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "train_fixture.h"

using namespace eco_test;
namespace fs = std::filesystem;

namespace {
// A finished (or diverged) run: config.json with the mode and step count, and metrics.jsonl.
fs::path fake_run(const fs::path& root, const std::string& mode, const std::vector<std::pair<int, double>>& val,
                  const std::vector<double>& tokens_per_s, double bytes_per_param_quantized) {
  fs::path dir = root / mode;
  fs::create_directories(dir);
  nlohmann::json cfg = {{"optim", {{"mode", mode}}}, {"train", {{"steps", 20}}}};
  std::ofstream(dir / "config.json") << cfg.dump();
  std::ofstream m(dir / "metrics.jsonl");
  m << nlohmann::json{{"step", 0},
                      {"memory",
                       {{"quantized_bytes_per_param", bytes_per_param_quantized},
                        {"bytes_per_param", bytes_per_param_quantized + 1},
                        {"static_bytes", 2.0 * 1048576}}}}
           .dump()
    << '\n';
  for (size_t i = 0; i < tokens_per_s.size(); ++i)
    m << nlohmann::json{{"step", i + 1}, {"train_loss", 3.0}, {"tokens_per_s", tokens_per_s[i]}}.dump() << '\n';
  for (auto [s, v] : val) {
    nlohmann::json rec = {{"step", s}};
    if (std::isfinite(v)) rec["val_loss"] = v;
    else rec["val_loss"] = nullptr;  // how eco_train writes a non-finite loss
    m << rec.dump() << '\n';
  }
  return dir;
}

std::string report_bin() { return (fs::path(ECO_BINARY_DIR) / "eco_report").string(); }
}  // namespace

TEST_CASE("eco_report tabulates gaps to master, memory and diverged runs", "[report]") {
  fs::path root = scratch_dir("eco_report");
  fs::path a = fake_run(root, "master", {{0, 10.0}, {10, 5.0}, {20, 4.0}}, {100, 300, 200}, 13.0);
  fs::path b = fake_run(root, "eco_sr", {{0, 10.0}, {10, 5.5}, {20, 4.04}}, {90, 110, 95}, 9.0);
  fs::path c = fake_run(root, "naive", {{0, 10.0}, {10, NAN}}, {100}, 9.0);  // stopped at step 10
  REQUIRE(run_command(report_bin() + " --out " + (root / "out").string() + " " + a.string() + " " + b.string() + " " +
                          c.string(),
                      root / "log.txt") == 0);
  std::string md = read_text(root / "out/results.md");
  CHECK(md.find("| `master` | 4.0000 | +0.00% | 13.00 | 14.00 | 2.00 MiB | 200 | 0 |") != std::string::npos);
  CHECK(md.find("| `eco_sr` | 4.0400 | +1.00% | 9.00 | 10.00 | 2.00 MiB | 95 | 0 |") != std::string::npos);
  CHECK(md.find("| `naive` | diverged | — |") != std::string::npos);

  // val_loss.dat: step, loss and the gap to master at that step; a non-finite point is left out.
  std::string dat = read_text(root / "out/val_loss.dat");
  CHECK(dat.find("\"eco_sr\"\n0 10.000000 0.0000\n10 5.500000 10.0000\n20 4.040000 1.0000\n") != std::string::npos);
  CHECK(dat.find("\"naive\"\n0 10.000000 0.0000\n\n") != std::string::npos);
  // The Pareto points leave out the diverged run.
  std::string pareto = read_text(root / "out/pareto.dat");
  CHECK(pareto == "\"master\" 13.0000 4.000000\n\"eco_sr\" 9.0000 4.040000\n");

  // A directory that is not a run is a clear error.
  fs::create_directories(root / "empty");
  CHECK(run_command(report_bin() + " --out " + (root / "out2").string() + " " + (root / "empty").string(),
                    root / "log2.txt") != 0);
  const std::string log2 = read_text(root / "log2.txt");
  CHECK(log2.find((root / "empty/config.json").string() + ": cannot read: no such file") != std::string::npos);
  CHECK(log2.find("an eco_train run directory?") != std::string::npos);
}

// --- malformed run directories: exit 3 naming the file and what is wrong, never exit 1 ---

namespace {
// eco_report on `runs` with a time limit (a FIFO used to block it); the exit code, and the output in `log`.
int report(const fs::path& root, const std::string& runs, const std::string& log_name = "log.txt") {
  return run_command("timeout 30 " + report_bin() + " --out " + (root / "out").string() + " " + runs, root / log_name);
}

// A valid run "master" whose config.json and metrics.jsonl texts are then replaced as given.
fs::path broken_run(const fs::path& root, const std::string& name, const std::string* config, const std::string* metrics) {
  fs::path dir = fake_run(root / name, "master", {{0, 10.0}, {20, 4.0}}, {100}, 13.0);
  if (config) std::ofstream(dir / "config.json", std::ios::trunc) << *config;
  if (metrics) std::ofstream(dir / "metrics.jsonl", std::ios::trunc) << *metrics;
  return dir;
}

// Runs eco_report on a run with the given files; checks exit 3 and that the message names `file`
// of the run and contains `what`.
void expect_data_error(const std::string& name, const std::string* config, const std::string* metrics,
                       const std::string& file, const std::string& what) {
  INFO(name);
  const fs::path root = scratch_dir("eco_report_bad/" + name);
  const fs::path dir = broken_run(root, "run", config, metrics);
  CHECK(report(root, dir.string()) == 3);
  const std::string log = read_text(root / "log.txt");
  INFO(log);
  CHECK(log.find("eco_report: " + (dir / file).string() + ": " + what) != std::string::npos);
  CHECK(log.find("internal error") == std::string::npos);
}

const std::string kGoodConfig = R"({"optim": {"mode": "master"}, "train": {"steps": 20}})";
}  // namespace

TEST_CASE("eco_report: a malformed config.json is a data error naming it", "[report]") {
  const std::string not_json = "{\"optim\": {\"mode\": \"master\"";
  expect_data_error("config_not_json", &not_json, nullptr, "config.json", "not valid JSON: parse error");
  const std::string no_mode = R"({"optim": {}, "train": {"steps": 20}})";
  expect_data_error("config_no_mode", &no_mode, nullptr, "config.json", "no optim.mode");
  const std::string not_object = "[1, 2]";
  expect_data_error("config_array", &not_object, nullptr, "config.json", "expected a JSON object (the run's resolved config), got [1,2]");
  const std::string mode_number = R"({"optim": {"mode": 7}, "train": {"steps": 20}})";
  expect_data_error("config_mode_number", &mode_number, nullptr, "config.json", "optim.mode: expected a string, got 7");
  const std::string steps_text = R"({"optim": {"mode": "master"}, "train": {"steps": "20"}})";
  expect_data_error("config_steps_text", &steps_text, nullptr, "config.json",
                    "train.steps: expected an integer, got \"20\"");
  const std::string deep = "{\"a\": " + std::string(100000, '[');
  expect_data_error("config_deep", &deep, nullptr, "config.json", "not valid JSON: nested more than 64 levels deep");
}

TEST_CASE("eco_report: malformed metrics.jsonl lines are data errors naming file and line", "[report]") {
  const std::string step_text = "{\"step\": 0, \"val_loss\": 3.0}\n{\"step\": \"20\", \"val_loss\": 2.0}\n";
  expect_data_error("step_text", nullptr, &step_text, "metrics.jsonl",
                    "line 2: step: expected an integer, got \"20\"");
  const std::string step_float = "{\"step\": 2.5, \"val_loss\": 2.0}\n";
  expect_data_error("step_float", nullptr, &step_float, "metrics.jsonl", "line 1: step: expected an integer, got 2.5");
  const std::string no_step = "{\"val_loss\": 2.0}\n";
  expect_data_error("no_step", nullptr, &no_step, "metrics.jsonl", "line 1: a val_loss record without a step");
  const std::string loss_text = "{\"step\": 20, \"val_loss\": \"low\"}\n";
  expect_data_error("val_loss_text", nullptr, &loss_text, "metrics.jsonl",
                    "line 1: val_loss: expected a number or null, got \"low\"");
  const std::string tps_text = "{\"step\": 1, \"tokens_per_s\": [1]}\n";
  expect_data_error("tps_text", nullptr, &tps_text, "metrics.jsonl", "line 1: tokens_per_s: expected a number or null");
  const std::string skipped = "{\"step\": 1, \"skipped\": 1}\n";
  expect_data_error("skipped_number", nullptr, &skipped, "metrics.jsonl", "line 1: skipped: expected true or false");
  const std::string memory = "{\"step\": 0, \"memory\": {\"static_bytes\": \"2 MiB\"}}\n";
  expect_data_error("memory_text", nullptr, &memory, "metrics.jsonl",
                    "line 1: memory: static_bytes: expected a number or null");
  const std::string not_object = "{\"step\": 0, \"val_loss\": 3.0}\n[1, 2]\n";
  expect_data_error("line_array", nullptr, &not_object, "metrics.jsonl", "line 2: expected a JSON object, got [1,2]");
  // A damaged line in the middle (terminated, so not a crash mid-write) is not skipped silently.
  const std::string middle = "{\"step\": 0, \"val_loss\": 3.0}\n{\"step\": 1, \"train_lo\n{\"step\": 20, \"val_loss\": 2.0}\n";
  expect_data_error("torn_middle", nullptr, &middle, "metrics.jsonl", "line 2: not valid JSON: parse error at column 22");
}

TEST_CASE("eco_report: a torn last metrics line (a crash mid-write) is skipped with a warning", "[report]") {
  const fs::path root = scratch_dir("eco_report_torn");
  const std::string metrics = "{\"step\": 0, \"val_loss\": 10.0}\n{\"step\": 1, \"tokens_per_s\": 50}\n"
                              "{\"step\": 20, \"val_loss\": 4.0}\n{\"step\": 21, \"train_lo";
  const fs::path dir = broken_run(root, "run", &kGoodConfig, &metrics);
  REQUIRE(report(root, dir.string()) == 0);
  const std::string log = read_text(root / "log.txt");
  CHECK(log.find("warning: " + (dir / "metrics.jsonl").string() + ": line 4 is cut off") != std::string::npos);
  CHECK(read_text(root / "out/results.md").find("| `master` | 4.0000 | +0.00% |") != std::string::npos);

  // A power loss can leave the tail as zero bytes instead: the same.
  const std::string zeros = "{\"step\": 20, \"val_loss\": 4.0}\n" + std::string(512, '\0');
  const fs::path dir2 = broken_run(root, "run2", &kGoodConfig, &zeros);
  CHECK(report(root, dir2.string(), "log2.txt") == 0);
  CHECK(read_text(root / "log2.txt").find("line 2 is cut off") != std::string::npos);
}

TEST_CASE("eco_report: unreadable run files, --out and flags", "[report]") {
  const fs::path root = scratch_dir("eco_report_files");
  // A directory where a file belongs.
  fs::path dir = broken_run(root, "dir_config", nullptr, nullptr);
  fs::remove(dir / "config.json");
  fs::create_directories(dir / "config.json");
  CHECK(report(root, dir.string(), "log1.txt") == 3);
  CHECK(read_text(root / "log1.txt").find((dir / "config.json").string() + ": cannot read: it is a directory") !=
        std::string::npos);

  // A FIFO where metrics.jsonl belongs: refused at once instead of waiting for a writer.
  dir = broken_run(root, "fifo_metrics", nullptr, nullptr);
  fs::remove(dir / "metrics.jsonl");
  REQUIRE(::mkfifo((dir / "metrics.jsonl").c_str(), 0600) == 0);
  CHECK(report(root, dir.string(), "log2.txt") == 3);
  CHECK(read_text(root / "log2.txt").find((dir / "metrics.jsonl").string() + ": cannot read: not a regular file") !=
        std::string::npos);

  // Missing metrics.jsonl, and a run directory that does not exist.
  dir = broken_run(root, "no_metrics", nullptr, nullptr);
  fs::remove(dir / "metrics.jsonl");
  CHECK(report(root, dir.string(), "log3.txt") == 3);
  CHECK(read_text(root / "log3.txt").find((dir / "metrics.jsonl").string() + ": cannot read: no such file") !=
        std::string::npos);
  CHECK(report(root, (root / "nowhere").string(), "log4.txt") == 3);

  // --out under a regular file cannot be created: a system error naming it.
  const fs::path good = broken_run(root, "good", nullptr, nullptr);
  std::ofstream(root / "blocker") << "x";
  const std::string out = (root / "blocker/out").string();
  CHECK(run_command(report_bin() + " --out " + out + " " + good.string(), root / "log5.txt") == 6);
  CHECK(read_text(root / "log5.txt").find("--out " + out + ": cannot create the directory") != std::string::npos);

  // Flags: unknown, or --out without its value, are usage errors.
  CHECK(run_command(report_bin() + " --bogus --out " + (root / "o").string() + " " + good.string(), root / "log6.txt") == 2);
  CHECK(read_text(root / "log6.txt").find("unknown flag \"--bogus\"") != std::string::npos);
  CHECK(run_command(report_bin() + " " + good.string() + " --out", root / "log7.txt") == 2);
  CHECK(read_text(root / "log7.txt").find("flag --out needs a value") != std::string::npos);
  CHECK(run_command(report_bin() + " --out " + (root / "o").string(), root / "log8.txt") == 2);
}

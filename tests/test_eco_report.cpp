// eco_report on hand-written run directories: the ablation table (gap to master, diverged runs,
// memory, median tokens/s) and the gnuplot data, checked against values computed here.
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
  CHECK(read_text(root / "log2.txt").find("no config.json") != std::string::npos);
}

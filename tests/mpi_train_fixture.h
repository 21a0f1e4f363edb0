#pragma once
// eco_train under mpirun for the data-parallel tests (test_data_parallel*.cpp): the tiny run of
// train_fixture.h with a global batch of 8 windows split over the ranks, and its loss curves.
// Without MPI or mpirun every MPI case returns at once and the program reports "skipped" at the end
// (after the cases that need no MPI have run and passed), as test_communicator does.
#define CATCH_CONFIG_EXTERNAL_INTERFACES  // for the listener below
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>

#include "skip_at_end.h"
#include "train_fixture.h"

namespace eco_test {

inline bool mpi_available() {
#ifndef ECO_WITH_MPI
  g_skip_reason = "this build has no MPI (install libopenmpi-dev openmpi-bin and reconfigure)";
  return false;
#else
  if (!on_path("mpirun")) {
    g_skip_reason = "mpirun is not on PATH";
    return false;
  }
  return true;
#endif
}

struct Run {
  int rc;
  std::string out;
  double seconds;
};

// eco_train on `np` ranks (np 0: one plain process, no launcher) with extra flags and environment.
// timeout(1) is the outer guard: a hang fails the test instead of stalling ctest.
inline Run eco_train(int np, const TinyRun& r, const std::string& cfg_file, const std::string& flags = "",
              const std::string& env = "") {
  std::string cmd = "timeout -s KILL 120 ";
  if (np > 0) {
    cmd += "mpirun --oversubscribe --allow-run-as-root --bind-to none -np " + std::to_string(np);
    for (const std::string& var : {std::string("ECO_TEST_FAULT"), std::string("ECO_DIST_TIMEOUT_S")})
      if (env.find(var + "=") != std::string::npos) cmd += " -x " + var;
    cmd += " ";
  }
  cmd = env + " " + cmd + eco_train_bin() + " --config " + (r.dir / cfg_file).string() + " " + flags;
  const std::filesystem::path log = r.dir / (cfg_file + ".log");
  auto t0 = std::chrono::steady_clock::now();
  Run out{run_command(cmd, log), "", 0.0};
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.out = read_text(log);
  return out;
}

// A config file of the tiny run: global batch 8 windows as `ranks` x batch_size, in its own run dir.
inline std::string write_config(TinyRun& r, const std::string& name, int ranks, const std::string& mode = "fp32") {
  nlohmann::json c = r.config;
  c["train"]["batch_size"] = 8 / ranks;
  c["train"]["threads"] = 1;  // 2 cores for up to 4 ranks
  c["train"]["sample_tokens"] = 0;
  c["optim"]["mode"] = mode;
  if (mode == "eco_sr") c["optim"]["state_format"] = "bf16";  // SR moments too
  c["log"]["dir"] = (r.dir / name).string();
  std::ofstream(r.dir / (name + ".json")) << c.dump(2);
  return name + ".json";
}

// (step, key) -> value of every train_loss, val_loss and grad_norm record (a non-finite one is
// written as null and left out).
inline std::map<std::pair<int64_t, std::string>, double> curve(const std::filesystem::path& run_dir) {
  std::map<std::pair<int64_t, std::string>, double> out;
  for (const auto& rec : read_metrics(run_dir))
    for (const char* key : {"train_loss", "val_loss", "grad_norm"})
      if (rec.contains(key) && rec[key].is_number()) out[{rec["step"].get<int64_t>(), key}] = rec[key].get<double>();
  return out;
}

// The largest relative difference per key; the two curves must hold the same records.
inline std::map<std::string, double> compare_curves(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto ca = curve(a), cb = curve(b);
  REQUIRE(ca.size() == cb.size());
  std::map<std::string, double> worst;
  for (const auto& [k, va] : ca) {
    REQUIRE(cb.count(k) == 1);
    const double d = std::abs(va - cb.at(k)) / std::abs(va);
    worst[k.second] = std::max(worst[k.second], d);
  }
  return worst;
}

inline int64_t last_step(const std::filesystem::path& run_dir) {
  int64_t s = -1;
  for (const auto& rec : read_metrics(run_dir)) s = std::max(s, rec["step"].get<int64_t>());
  return s;
}

inline bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace eco_test

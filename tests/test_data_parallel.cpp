// Data-parallel training (docs/distributed.md). The helpers (gradient all-reduce, agreement on a
// failure) against a scripted communicator; then, when the build has MPI and mpirun is on PATH, the
// eco_train binary under `mpirun -np 2` and `-np 4` on the tiny byte corpus of train_fixture.h:
//
// - N ranks of batch_size B reproduce one process of batch_size N*B, step by step. Tolerances:
//   fp32: the runs differ only in the order of fp32 sums (each rank sums its B rows, then the ranks
//   are added; the gradient, the loss mean and the eval mean), a few ulp (~1e-7 relative) per step;
//   Adam turns a relative gradient error into a relative update error of the same size, and 30
//   steps of a stable run keep it far below 1e-5 (measured: <= 2e-7 for loss and norm), so 1e-5.
//   eco_sr: the same stochastic-rounding bits (keyed by step and global index, never by rank), but
//   a value one ulp away from the single-process one lands on the other FP8 neighbour whenever the
//   random threshold falls between them (probability ~ ulp / FP8 spacing), and each flip moves a
//   weight by a whole FP8 step. Measured: <= 7e-5 relative on the losses, 2e-3 on the norm; bounds
//   1e-3 and 2e-2, still 10x below a step's own change of the loss (~1e-2 relative).
// - a checkpoint is world-independent: a 2-rank run continues on 1 rank (and 1 on 4) on the same
//   curve; another global batch is a warning and keeps the place in the epoch.
// The fault cases (signal, dead and stalled ranks, rank-0 failures) are test_data_parallel_faults.cpp.
#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "dist/data_parallel.h"
#include "dist/rank_agreement.h"
#include "mpi_train_fixture.h"
#include "train/backend.h"

using namespace eco_test;

namespace {

// A world of `world` ranks seen from rank `rank`: in a float sum every other rank holds `peer_value`
// in each element; in a double sum (the agreements) the other ranks fill `peer_slots`.
class ScriptedCommunicator final : public eco::Communicator {
 public:
  ScriptedCommunicator(int rank, int world) : rank_(rank), world_(world) {}
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string describe() const override { return "scripted"; }
  void all_reduce_sum(float* buf, size_t n) override {
    ++float_calls;
    longest_float_call = std::max(longest_float_call, n);
    for (size_t i = 0; i < n; ++i) buf[i] += static_cast<float>(world_ - 1) * peer_value;
  }
  void all_reduce_sum(double* buf, size_t n) override {
    for (auto [slot, v] : peer_slots)
      if (static_cast<size_t>(slot) < n) buf[slot] += v;
  }
  void broadcast(void*, size_t, int) override {}
  void all_gather(const void*, void*, size_t) override {}
  void reduce_scatter_sum_v(const float*, float*, const std::vector<size_t>&) override {}
  void all_gather_v(const void*, void*, const std::vector<size_t>&) override {}
  void all_to_all_v(const void*, const std::vector<size_t>&, void*, const std::vector<size_t>&) override {}
  std::unique_ptr<eco::Communicator> split(int, int) override { return nullptr; }
  void barrier() override {}

  float peer_value = 0.0f;
  std::map<int, double> peer_slots;  // what the other ranks put into the slots of a double sum
  int float_calls = 0;
  size_t longest_float_call = 0;

 private:
  int rank_, world_;
};

}  // namespace

TEST_CASE("GradientAllReduce sums every bucket, in place or through host staging", "[dist][dp]") {
  auto ops = eco::make_backend(eco::BackendChoice{"cpu", 1, 0});
  const size_t n = 1000;
  for (bool host : {true, false}) {
    INFO("host buffers " << host);
    ScriptedCommunicator comm(0, 3);
    comm.peer_value = 0.5f;
    float* grads = ops->alloc_floats(n);
    std::vector<float> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = static_cast<float>(i);
    ops->copy_from_host(grads, h.data(), n * sizeof(float));
    eco::GradientAllReduce sync(comm, *ops, host, /*bucket_floats=*/300);
    sync.all_reduce(grads, n);
    ops->copy_to_host(h.data(), grads, n * sizeof(float));
    for (size_t i = 0; i < n; ++i) REQUIRE(h[i] == static_cast<float>(i) + 1.0f);
    CHECK(comm.float_calls == 4);  // 300 + 300 + 300 + 100
    CHECK(comm.longest_float_call == 300);
    ops->free(grads);
  }
  ScriptedCommunicator alone(0, 1);
  alone.peer_value = 7.0f;
  float g = 1.0f;
  eco::GradientAllReduce(alone, *ops, true).all_reduce(&g, 1);
  CHECK(g == 1.0f);
  CHECK(alone.float_calls == 0);  // a world of one does no work
  CHECK_THROWS_AS(eco::GradientAllReduce(alone, *ops, true, 0), std::invalid_argument);
}

TEST_CASE("run_collectively: a failure on one rank ends every rank with its exit code", "[dist][dp]") {
  ScriptedCommunicator comm(1, 3);
  // Nobody failed.
  bool ran = false;
  eco::run_collectively(comm, "testing", [&] { ran = true; });
  CHECK(ran);
  // Rank 0 failed with a ConfigError (exit 2); this rank (1) did fine.
  comm.peer_slots = {{0, 2.0}};
  try {
    eco::run_collectively(comm, "checking the run directory", [] {});
    FAIL("expected a PeerRankError");
  } catch (const eco::PeerRankError& e) {
    CHECK(e.exit_code() == 2);
    CHECK(std::string(e.what()).find("rank 0 of 3 failed while checking the run directory") != std::string::npos);
  }
  // This rank failed too: it reports its own error, not the peer's.
  CHECK_THROWS_AS(eco::run_collectively(comm, "x", [] { throw eco::DataError("bad shard"); }), eco::DataError);
  // A peer's failure other than an eco::Error still ends this rank (exit 1 unless the peer said otherwise).
  comm.peer_slots = {{2, 6.0}};
  try {
    eco::run_collectively(comm, "writing checkpoint 10", [] {});
    FAIL("expected a PeerRankError");
  } catch (const eco::PeerRankError& e) {
    CHECK(e.exit_code() == 6);
  }
  // The stop signal and the resumed step.
  comm.peer_slots = {{2, 15.0}};
  CHECK(eco::first_nonzero_over_ranks(comm, 0) == 15);
  CHECK(eco::first_nonzero_over_ranks(comm, 2) == 2);  // rank 1 comes before rank 2
  comm.peer_slots = {{0, 10.0}, {2, 10.0}};
  CHECK_NOTHROW(eco::require_same_on_all_ranks(comm, 10, "the step", "hint"));
  try {
    eco::require_same_on_all_ranks(comm, 20, "the step resumed from", "use a shared filesystem");
    FAIL("expected a SystemError");
  } catch (const eco::SystemError& e) {
    CHECK(std::string(e.what()) ==
          "the step resumed from differs between ranks (rank 0: 10, rank 1: 20, rank 2: 10); use a shared filesystem");
  }
}

TEST_CASE("N ranks of batch B reproduce one process of batch N*B (fp32, eco_sr)", "[dp][mpi]") {
  if (!mpi_available()) return;
  for (const std::string mode : {"fp32", "eco_sr"}) {
    TinyRun r("dp_match_" + mode);
    const Run one = eco_train(0, r, write_config(r, "w1", 1, mode));
    REQUIRE(one.rc == 0);
    for (int np : {2, 4}) {
      INFO(mode << ", np " << np);
      const std::string name = "w" + std::to_string(np);
      const Run dp = eco_train(np, r, write_config(r, name, np, mode));
      INFO(dp.out);
      REQUIRE(dp.rc == 0);
      CHECK(contains(dp.out, "data parallel over " + std::to_string(np) + " ranks"));
      CHECK(contains(dp.out, "global batch 8 = " + std::to_string(np) + " ranks x B=" + std::to_string(8 / np)));
      // Only rank 0 prints progress.
      CHECK(!contains(dp.out, "rank 1] info"));
      const auto worst = compare_curves(r.dir / "w1", r.dir / name);
      const double loss_tol = mode == "fp32" ? 1e-5 : 1e-3, norm_tol = mode == "fp32" ? 1e-5 : 2e-2;
      CHECK(worst.at("train_loss") <= loss_tol);
      CHECK(worst.at("val_loss") <= loss_tol);
      CHECK(worst.at("grad_norm") <= norm_tol);
      std::printf("%s np %d vs 1 process: max rel diff train loss %.2e, val loss %.2e, grad norm %.2e (%.2f s)\n",
                  mode.c_str(), np, worst.at("train_loss"), worst.at("val_loss"), worst.at("grad_norm"), dp.seconds);
      // The gradient traffic of rank 0: 2(W-1)/W x 4 bytes x params, exactly (params divisible by W).
      const size_t at = dp.out.find("rank 0 sent ");
      REQUIRE(at != std::string::npos);
      const uint64_t bytes = std::stoull(dp.out.substr(at + 12));
      const size_t p_at = dp.out.find(" x 4 x ", at);
      const uint64_t params = std::stoull(dp.out.substr(p_at + 7));
      if (params % np == 0) CHECK(bytes == 2 * (np - 1) * 4 * params / np);
      if (mode == "fp32" && np == 2) std::printf("gradient bytes per step, rank 0: %llu for %llu params\n",
                                                 static_cast<unsigned long long>(bytes),
                                                 static_cast<unsigned long long>(params));
    }
  }
}

TEST_CASE("a checkpoint continues at another world size on the same curve", "[dp][mpi][resume]") {
  if (!mpi_available()) return;
  TinyRun r("dp_resume_world");
  REQUIRE(eco_train(0, r, write_config(r, "ref", 1)).rc == 0);
  // 2 ranks for 13 steps, then 1 process to the end.
  const std::string a = write_config(r, "a", 2);
  REQUIRE(eco_train(2, r, a, "--stop-after 13").rc == 0);
  nlohmann::json c = nlohmann::json::parse(read_text(r.dir / a));
  c["train"]["batch_size"] = 8;
  std::ofstream(r.dir / "a1.json") << c.dump(2);
  Run cont = eco_train(0, r, "a1.json", "--resume");
  INFO(cont.out);
  REQUIRE(cont.rc == 0);
  CHECK(contains(cont.out, "resume: 1 ranks now, 2 when the checkpoint was written"));
  CHECK(!contains(cont.out, "will not match"));
  auto worst = compare_curves(r.dir / "ref", r.dir / "a");
  for (const auto& [key, d] : worst) CHECK(d <= 1e-5);
  std::printf("world 2 -> 1 resume vs 1 process: max rel diff train loss %.2e\n", worst.at("train_loss"));
  // 1 process for 7 steps, then 4 ranks.
  const std::string b = write_config(r, "b", 1);
  REQUIRE(eco_train(0, r, b, "--stop-after 7").rc == 0);
  c = nlohmann::json::parse(read_text(r.dir / b));
  c["train"]["batch_size"] = 2;
  std::ofstream(r.dir / "b4.json") << c.dump(2);
  cont = eco_train(4, r, "b4.json", "--resume");
  REQUIRE(cont.rc == 0);
  worst = compare_curves(r.dir / "ref", r.dir / "b");
  for (const auto& [key, d] : worst) CHECK(d <= 1e-5);
  std::printf("world 1 -> 4 resume vs 1 process: max rel diff train loss %.2e\n", worst.at("train_loss"));
  // Another global batch is the user's choice: a warning, and the place in the epoch is kept.
  const std::string d = write_config(r, "d", 2);
  REQUIRE(eco_train(2, r, d, "--stop-after 13").rc == 0);
  c = nlohmann::json::parse(read_text(r.dir / d));
  c["train"]["batch_size"] = 2;
  std::ofstream(r.dir / "d2.json") << c.dump(2);
  cont = eco_train(2, r, "d2.json", "--resume");
  INFO(cont.out);
  CHECK(cont.rc == 0);
  CHECK(contains(cont.out, "the global batch changed from 8 windows (2 ranks x batch_size 4) to 4 (2 x 2)"));
  CHECK(last_step(r.dir / "d") == 30);
}

TEST_CASE("dist.ep on a dense model is refused with exit code 2", "[dp][config]") {
  TinyRun r("dp_dist_refused");
  const std::string cfg = write_config(r, "run", 1);
  // (dist.zero=1 is ZeRO-1: tests/test_zero1.cpp; expert parallelism: test_expert_parallel*.cpp.)
  Run refused = eco_train(0, r, cfg, "--set dist.ep=2");
  CHECK(refused.rc == 2);
  CHECK(contains(refused.out, "dist.ep"));
}

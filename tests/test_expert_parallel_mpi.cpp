// Expert parallelism through the eco_train binary under mpirun (docs/distributed.md), on the tiny
// byte corpus of train_fixture.h with an MoE model of 4 experts in layers 1 and 2:
//
// - EP 2 on 2 ranks, DP x EP (4 ranks, ep 2) and EP 4 on 4 ranks reproduce one process with the
//   same global batch. The model is dropless and without the Switch loss, so the objective does not
//   depend on the micro-batch (the z-loss is a per-token mean); the expert bias is updated from
//   loads summed over ranks. Tolerances as test_data_parallel.cpp derives them: fp32 1e-5 (only the
//   order of fp32 sums differs: the common gradient over ranks, an expert's over its replicas, the
//   norm's parts); eco_sr 1e-3 on losses and 2e-2 on the norm (an ulp-level difference moves an SR
//   draw to the other FP8 neighbour now and then).
// - a checkpoint is the one a single process writes: written at EP 2 it resumes in one process,
//   written by one process it resumes at EP 4, on the same curve.
// - a layout the world cannot hold is a config error (exit 2).
// The bitwise gradient equality of EP and one process, without MPI, is test_expert_parallel.cpp.
#include <fstream>
#include <string>

#include "mpi_train_fixture.h"

using namespace eco_test;

namespace {

// An MoE run of the tiny model: global batch 8 windows as `ranks` x batch_size, expert-parallel
// degree `ep`.
std::string write_moe_config(TinyRun& r, const std::string& name, int ranks, int ep, const std::string& mode = "fp32",
                             int sample_tokens = 0) {
  const std::string file = write_config(r, name, ranks, mode);
  nlohmann::json c = nlohmann::json::parse(read_text(r.dir / file));
  c["model"]["n_layer"] = 3;
  c["moe"] = {{"experts", 4},           {"top_k", 2},         {"first_layer", 1},
              {"expert_hidden", 48},    {"aux_loss_coef", 0}, {"z_loss_coef", 0.001},
              {"bias_update_rate", 0.01}};
  c["dist"] = {{"ep", ep}};
  c["train"]["steps"] = 12;
  c["train"]["checkpoint_every"] = 6;
  c["train"]["eval_every"] = 6;
  c["train"]["sample_tokens"] = sample_tokens;
  std::ofstream(r.dir / file) << c.dump(2);
  return file;
}

void check_close(const TinyRun& r, const std::string& ref, const std::string& run, const std::string& mode,
                 const char* what) {
  const auto worst = compare_curves(r.dir / ref, r.dir / run);
  const double loss_tol = mode == "fp32" ? 1e-5 : 1e-3, norm_tol = mode == "fp32" ? 1e-5 : 2e-2;
  CHECK(worst.at("train_loss") <= loss_tol);
  CHECK(worst.at("val_loss") <= loss_tol);
  CHECK(worst.at("grad_norm") <= norm_tol);
  std::printf("%s %s vs 1 process: max rel diff train loss %.2e, val loss %.2e, grad norm %.2e\n", mode.c_str(), what,
              worst.at("train_loss"), worst.at("val_loss"), worst.at("grad_norm"));
}

}  // namespace

TEST_CASE("expert parallel and DP x EP reproduce one process (fp32, eco_sr)", "[ep][mpi]") {
  if (!mpi_available()) return;
  struct Layout {
    int np, ep;
  };
  for (const std::string mode : {"fp32", "eco_sr"}) {
    TinyRun r("ep_match_" + mode);
    const Run one = eco_train(0, r, write_moe_config(r, "ref", 1, 1, mode));
    INFO(one.out);
    REQUIRE(one.rc == 0);
    const std::vector<Layout> layouts =
        mode == "fp32" ? std::vector<Layout>{{2, 2}, {4, 2}, {4, 4}} : std::vector<Layout>{{2, 2}, {4, 2}};
    for (const Layout l : layouts) {
      const std::string name = "np" + std::to_string(l.np) + "_ep" + std::to_string(l.ep);
      INFO(mode << " " << name);
      // One run prints samples: every rank computes them (the forward needs every expert).
      const Run run = eco_train(l.np, r, write_moe_config(r, name, l.np, l.ep, mode, l.np == 2 ? 8 : 0));
      INFO(run.out);
      REQUIRE(run.rc == 0);
      CHECK(contains(run.out, "expert parallel: " + std::to_string(l.np / l.ep) + " groups of " +
                                  std::to_string(l.ep) + " ranks"));
      CHECK(contains(run.out, "expert parallel: rank 0 sent"));
      if (l.np == 2) CHECK(contains(run.out, "| sample: "));
      CHECK(!contains(run.out, "rank 1] info"));
      check_close(r, "ref", name, mode, name.c_str());
    }
  }
}

TEST_CASE("an expert-parallel checkpoint resumes at another EP degree on the same curve", "[ep][mpi][resume]") {
  if (!mpi_available()) return;
  TinyRun r("ep_resume");
  REQUIRE(eco_train(0, r, write_moe_config(r, "ref", 1, 1)).rc == 0);
  // EP 2 for 6 steps, then one process (which holds every expert) to the end.
  const std::string a = write_moe_config(r, "a", 2, 2);
  REQUIRE(eco_train(2, r, a, "--stop-after 6").rc == 0);
  write_moe_config(r, "a", 1, 1);  // same run directory, one process of batch 8
  Run cont = eco_train(0, r, "a.json", "--resume");
  INFO(cont.out);
  REQUIRE(cont.rc == 0);
  CHECK(contains(cont.out, "resume: 1 ranks now, 2 when the checkpoint was written"));
  check_close(r, "ref", "a", "fp32", "EP 2 -> 1 process resume");
  // One process for 6 steps, then EP 4 on 4 ranks.
  const std::string b = write_moe_config(r, "b", 1, 1);
  REQUIRE(eco_train(0, r, b, "--stop-after 6").rc == 0);
  write_moe_config(r, "b", 4, 4);
  cont = eco_train(4, r, "b.json", "--resume");
  INFO(cont.out);
  REQUIRE(cont.rc == 0);
  check_close(r, "ref", "b", "fp32", "1 process -> EP 4 resume");
}

TEST_CASE("an expert-parallel layout the world cannot hold is a config error", "[ep][mpi][config]") {
  if (!mpi_available()) return;
  TinyRun r("ep_refused");
  Run bad = eco_train(2, r, write_moe_config(r, "ep4", 2, 4));  // ep 4 on 2 ranks
  CHECK(bad.rc == 2);
  CHECK(contains(bad.out, "does not divide the world size 2"));
  bad = eco_train(2, r, write_moe_config(r, "zero", 2, 2), "--set dist.zero=1");
  CHECK(bad.rc == 2);
  CHECK(contains(bad.out, "ZeRO-1 together with expert parallelism"));
}

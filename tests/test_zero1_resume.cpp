// ZeRO-1 checkpoints (docs/distributed.md "ZeRO-1"): the blobs are those of data parallel and of
// one process, so a checkpoint written by 2 ZeRO-1 ranks continues on 1 process without ZeRO and on
// 4 ZeRO-1 ranks on the one-process curve (tolerances of test_data_parallel.cpp), and at the same
// world bit-identically; block-wise moments too (their checkpoint blobs are assembled from each
// rank's codes and block parameters). eco_train under mpirun; skipped without MPI or mpirun.
#include <cstdio>
#include <string>

#include "mpi_train_fixture.h"

using namespace eco_test;

namespace {

std::string zero_config(TinyRun& r, const std::string& name, int ranks, const std::string& mode, bool zero) {
  const std::string file = write_config(r, name, ranks, mode);
  nlohmann::json c = nlohmann::json::parse(read_text(r.dir / file));
  c["dist"]["zero"] = zero ? 1 : 0;
  std::ofstream(r.dir / file) << c.dump(2);
  return file;
}

}  // namespace

TEST_CASE("a ZeRO-1 checkpoint of 2 ranks continues at world 1 and at world 4 on the same curve", "[zero1][mpi][resume]") {
  if (!mpi_available()) return;
  for (const std::string mode : {"fp32", "eco_sr"}) {
    TinyRun r("zero1_resume_" + mode);
    REQUIRE(eco_train(0, r, zero_config(r, "ref", 1, mode, false)).rc == 0);
    const double tol = mode == "fp32" ? 1e-5 : 1e-3, norm_tol = mode == "fp32" ? 1e-5 : 2e-2;
    // world 2 with ZeRO for 13 steps, then one process (no ZeRO) to the end.
    const std::string a = zero_config(r, "a", 2, mode, true);
    REQUIRE(eco_train(2, r, a, "--stop-after 13").rc == 0);
    nlohmann::json c = nlohmann::json::parse(read_text(r.dir / a));
    c["train"]["batch_size"] = 8;
    c["dist"]["zero"] = 0;
    std::ofstream(r.dir / "a1.json") << c.dump(2);
    Run cont = eco_train(0, r, "a1.json", "--resume");
    INFO(cont.out);
    REQUIRE(cont.rc == 0);
    CHECK(contains(cont.out, "resume: 1 ranks now, 2 when the checkpoint was written"));
    auto worst = compare_curves(r.dir / "ref", r.dir / "a");
    CHECK(worst.at("train_loss") <= tol);
    CHECK(worst.at("val_loss") <= tol);
    CHECK(worst.at("grad_norm") <= norm_tol);
    std::printf("%s: ZeRO world 2 -> 1 resume vs 1 process: max rel diff train loss %.2e, grad norm %.2e\n", mode.c_str(),
                worst.at("train_loss"), worst.at("grad_norm"));
    // At the same world the continuation is bit-identical to an uninterrupted ZeRO-1 run: the
    // gathered moments go back to their owners exactly (eco_sr: bf16 SR moments, FP8 weights).
    if (mode == "eco_sr") {
      REQUIRE(eco_train(2, r, zero_config(r, "z2", 2, mode, true)).rc == 0);
      const std::string e = zero_config(r, "e", 2, mode, true);
      REQUIRE(eco_train(2, r, e, "--stop-after 13").rc == 0);
      REQUIRE(eco_train(2, r, e, "--resume").rc == 0);
      for (const auto& [key, d] : compare_curves(r.dir / "z2", r.dir / "e")) {
        INFO(key);
        CHECK(d == 0.0);
      }
    }
    // world 2 with ZeRO for 7 steps, then 4 ranks with ZeRO.
    const std::string b = zero_config(r, "b", 2, mode, true);
    REQUIRE(eco_train(2, r, b, "--stop-after 7").rc == 0);
    c = nlohmann::json::parse(read_text(r.dir / b));
    c["train"]["batch_size"] = 2;
    std::ofstream(r.dir / "b4.json") << c.dump(2);
    cont = eco_train(4, r, "b4.json", "--resume");
    INFO(cont.out);
    REQUIRE(cont.rc == 0);
    worst = compare_curves(r.dir / "ref", r.dir / "b");
    CHECK(worst.at("train_loss") <= tol);
    CHECK(worst.at("val_loss") <= tol);
    CHECK(worst.at("grad_norm") <= norm_tol);
    std::printf("%s: ZeRO world 2 -> ZeRO world 4 resume vs 1 process: max rel diff train loss %.2e, grad norm %.2e\n",
                mode.c_str(), worst.at("train_loss"), worst.at("grad_norm"));
  }
}

TEST_CASE("ZeRO-1 with block-wise moments: a checkpoint resumes bit-identically at the same world and on the "
          "one-process curve at world 1",
          "[zero1][mpi][resume][state]") {
  if (!mpi_available()) return;
  struct Case {
    const char *mode, *states;
  };
  for (const Case k : {Case{"eco_sr", "m8v4"}, Case{"sr", "solo3"}}) {
    INFO(k.mode << " with " << k.states << " states");
    TinyRun r(std::string("zero1_blocks_") + k.states);
    const auto with_states = [&](const std::string& file) {
      nlohmann::json c = nlohmann::json::parse(read_text(r.dir / file));
      c["optim"]["state_format"] = k.states;
      std::ofstream(r.dir / file) << c.dump(2);
      return file;
    };
    REQUIRE(eco_train(0, r, with_states(zero_config(r, "ref", 1, k.mode, false))).rc == 0);
    REQUIRE(eco_train(2, r, with_states(zero_config(r, "z2", 2, k.mode, true))).rc == 0);
    const std::string e = with_states(zero_config(r, "e", 2, k.mode, true));
    REQUIRE(eco_train(2, r, e, "--stop-after 13").rc == 0);
    Run cont = eco_train(2, r, e, "--resume");
    INFO(cont.out);
    REQUIRE(cont.rc == 0);
    for (const auto& [key, d] : compare_curves(r.dir / "z2", r.dir / "e")) {
      INFO(key);
      CHECK(d == 0.0);
    }
    // The same checkpoint, continued by one process: on the one-process curve (the moments and
    // their SR bits are the unsharded ones; only gradient sums differ in order).
    const std::string a = with_states(zero_config(r, "a", 2, k.mode, true));
    REQUIRE(eco_train(2, r, a, "--stop-after 13").rc == 0);
    nlohmann::json c = nlohmann::json::parse(read_text(r.dir / a));
    c["train"]["batch_size"] = 8;
    c["dist"]["zero"] = 0;
    std::ofstream(r.dir / "a1.json") << c.dump(2);
    cont = eco_train(0, r, "a1.json", "--resume");
    INFO(cont.out);
    REQUIRE(cont.rc == 0);
    const auto worst = compare_curves(r.dir / "ref", r.dir / "a");
    CHECK(worst.at("train_loss") <= 1e-3);
    CHECK(worst.at("val_loss") <= 1e-3);
    CHECK(worst.at("grad_norm") <= 2e-2);
    std::printf("%s %s: ZeRO world 2 -> 1 resume vs 1 process: max rel diff train loss %.2e, grad norm %.2e\n", k.mode,
                k.states, worst.at("train_loss"), worst.at("grad_norm"));
  }
}

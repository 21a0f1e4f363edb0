// Data-parallel failure paths, eco_train under mpirun -np 2 (skipped without MPI or mpirun): a
// stop signal that reaches one rank stops every rank at the same step with a checkpoint; a
// non-finite gradient on one rank is skipped by every rank; a rank that dies or stops answering ends
// the job non-zero with a clear message within ECO_DIST_TIMEOUT_S, and the last checkpoint loads; a
// failure on rank 0 alone ends every rank at once with its exit code. The faults come from the
// trainer's ECO_TEST_FAULT hook, applied by the last rank only.
#include <csignal>
#include <cstdio>
#include <string>

#include "mpi_train_fixture.h"

using namespace eco_test;
namespace fs = std::filesystem;

TEST_CASE("a signal on one rank stops every rank at the same step with a checkpoint", "[dp][mpi][resume]") {
  if (!mpi_available()) return;
  TinyRun r("dp_signal");
  REQUIRE(eco_train(2, r, write_config(r, "ref", 2)).rc == 0);
  const std::string cfg = write_config(r, "run", 2);
  const Run stopped = eco_train(2, r, cfg, "", "ECO_TEST_FAULT=signal:13");
  INFO(stopped.out);
  CHECK(stopped.rc == 128 + SIGTERM);
  CHECK(contains(stopped.out, "stopping at step 13 (signal received)"));
  CHECK(fs::exists(r.dir / "run/ckpt_00000013"));
  CHECK(last_step(r.dir / "run") == 13);
  const Run resumed = eco_train(2, r, cfg, "--resume");
  REQUIRE(resumed.rc == 0);
  // Same world, same batches: the continuation is bit-identical.
  const auto ref = curve(r.dir / "ref"), run = curve(r.dir / "run");
  CHECK(ref == run);
}

TEST_CASE("a non-finite gradient on one rank makes every rank skip the step", "[dp][mpi][nan]") {
  if (!mpi_available()) return;
  TinyRun r("dp_nan");
  // One process with the same fault is the reference: a rank that updated while another skipped
  // would leave rank 0 on another curve.
  REQUIRE(eco_train(0, r, write_config(r, "ref", 1), "", "ECO_TEST_FAULT=nan:5").rc == 0);
  const Run dp = eco_train(2, r, write_config(r, "run", 2), "", "ECO_TEST_FAULT=nan:5");
  INFO(dp.out);
  REQUIRE(dp.rc == 0);
  int skipped = 0;
  for (const auto& rec : read_metrics(r.dir / "run"))
    if (rec.contains("skipped")) {
      ++skipped;
      CHECK(rec["step"] == 5);
    }
  CHECK(skipped == 1);
  for (const auto& [key, d] : compare_curves(r.dir / "ref", r.dir / "run")) CHECK(d <= 1e-5);
}

TEST_CASE("a rank that dies or stalls ends the job with an error; the last checkpoint loads", "[dp][mpi]") {
  if (!mpi_available()) return;
  TinyRun r("dp_fault");
  const std::string cfg = write_config(r, "run", 2);
  SECTION("killed") {
    const Run killed = eco_train(2, r, cfg, "", "ECO_TEST_FAULT=kill:13 ECO_DIST_TIMEOUT_S=5");
    INFO(killed.out);
    CHECK(killed.rc != 0);
    CHECK(killed.seconds < 30.0);
    // mpirun sees the death first and ends the job; a survivor that got there first names it.
    CHECK((contains(killed.out, "exited on signal 9") || contains(killed.out, "a peer rank")));
    std::printf("killed rank: job ended in %.2f s, rc %d\n", killed.seconds, killed.rc);
  }
  SECTION("stalled") {
    const Run stalled = eco_train(2, r, cfg, "", "ECO_TEST_FAULT=stall:13 ECO_DIST_TIMEOUT_S=2");
    INFO(stalled.out);
    CHECK(stalled.rc == 6);
    CHECK(stalled.seconds < 30.0);
    CHECK(contains(stalled.out, "on rank 0 of 2: no progress for 2 s (ECO_DIST_TIMEOUT_S)"));
    std::printf("stalled rank: job ended in %.2f s, rc %d\n", stalled.seconds, stalled.rc);
  }
  CHECK(fs::exists(r.dir / "run/ckpt_00000010"));
  const Run resumed = eco_train(2, r, cfg, "--resume");
  INFO(resumed.out);
  CHECK(resumed.rc == 0);
  CHECK(contains(resumed.out, "(step 10)"));
}

TEST_CASE("a failure on rank 0 alone ends every rank at once with its exit code", "[dp][mpi]") {
  if (!mpi_available()) return;
  TinyRun r("dp_rank0_fails");
  const std::string cfg = write_config(r, "run", 2);
  REQUIRE(eco_train(2, r, cfg, "--stop-after 3").rc == 0);
  // The run directory now holds a run: rank 0 refuses, rank 1 must not wait for it.
  const Run refused = eco_train(2, r, cfg, "", "ECO_DIST_TIMEOUT_S=60");
  INFO(refused.out);
  CHECK(refused.rc == 2);
  CHECK(refused.seconds < 30.0);
  CHECK(contains(refused.out, "already holds a run"));
  CHECK(contains(refused.out, "rank 0 of 2 failed while checking the run directory"));
}

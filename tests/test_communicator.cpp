// The Communicator: the single-process semantics, the chunk splitter, the launcher detection and,
// when mpirun is on PATH and the build has MPI, tests/mpi_collectives_main.cpp under mpirun -np 2
// and 3 (deterministic sums, broadcast, all_gather, uneven reduce_scatter, chunking, and a failed or
// stalled rank ending in an error instead of a hang). Without mpirun the whole program reports
// "skipped" after the other cases have run and passed.
#define CATCH_CONFIG_EXTERNAL_INTERFACES  // for the listener below
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "dist/communicator.h"
#include "dist/single_communicator.h"
#include "skip_at_end.h"
#include "test_util.h"

namespace fs = std::filesystem;
using eco_test::g_skip_reason;
using eco_test::on_path;

namespace {


struct Run {
  int rc;
  std::string out;
  double seconds;
};

Run run(const std::string& cmd) {
  auto t0 = std::chrono::steady_clock::now();
  Run r{-1, "", 0.0};
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  while (size_t got = fread(buf, 1, sizeof buf, f)) r.out.append(buf, got);
  int status = pclose(f);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace

TEST_CASE("split_into_chunks covers [0, n) in pieces of at most limit", "[dist]") {
  CHECK(eco::split_into_chunks(0, 7).empty());
  for (size_t limit : {size_t{1}, size_t{3}, size_t{7}})
    for (size_t n = 0; n <= 30; ++n) {
      auto chunks = eco::split_into_chunks(n, limit);
      size_t next = 0;
      for (const auto& c : chunks) {
        CHECK(c.offset == next);
        CHECK(c.count >= 1);
        CHECK(c.count <= limit);
        next += c.count;
      }
      CHECK(next == n);
      CHECK(chunks.size() == (n + limit - 1) / limit);
    }
  // The real limit: 2^33 floats (32 GiB) go in int-sized messages.
  auto big = eco::split_into_chunks(size_t{1} << 33, 2147483647);
  REQUIRE(big.size() == 5);
  CHECK(big[4].count == (size_t{1} << 33) - 4 * size_t{2147483647});
  CHECK_THROWS_AS(eco::split_into_chunks(5, 0), std::invalid_argument);
}

TEST_CASE("launcher_world_size reads mpirun, PMI and srun variables", "[dist]") {
  auto env = [](std::map<std::string, std::string> m) {
    return [m](const char* k) -> const char* {
      auto it = m.find(k);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  CHECK(eco::launcher_world_size(env({})) == 1);
  CHECK(eco::launcher_world_size(env({{"OMPI_COMM_WORLD_SIZE", "4"}})) == 4);
  CHECK(eco::launcher_world_size(env({{"PMI_SIZE", "3"}})) == 3);
  CHECK(eco::launcher_world_size(env({{"SLURM_STEP_NUM_TASKS", "8"}})) == 8);
  CHECK(eco::launcher_world_size(env({{"OMPI_COMM_WORLD_SIZE", "1"}})) == 1);
  // An sbatch allocation of 8 tasks running one process is not a job of 8 ranks.
  CHECK(eco::launcher_world_size(env({{"SLURM_NTASKS", "8"}})) == 1);
  CHECK_THROWS_AS(eco::launcher_world_size(env({{"OMPI_COMM_WORLD_SIZE", "two"}})), eco::ConfigError);
  CHECK_THROWS_AS(eco::launcher_world_size(env({{"PMI_SIZE", "0"}})), eco::ConfigError);
}

TEST_CASE("SingleCommunicator: world 1, sums are no-ops, gathers are copies", "[dist]") {
  eco::SingleCommunicator c;
  CHECK(c.rank() == 0);
  CHECK(c.world() == 1);
  std::vector<float> f = {1.5f, -0.0f, 3e38f};
  c.all_reduce_sum(f.data(), f.size());
  CHECK(f == std::vector<float>{1.5f, -0.0f, 3e38f});
  CHECK(std::signbit(f[1]));  // not 0 + x: the sign of zero survives
  std::vector<double> d = {2.25};
  c.all_reduce_sum(d.data(), 1);
  CHECK(d[0] == 2.25);
  std::vector<unsigned char> b = {1, 2, 3};
  c.broadcast(b.data(), b.size(), 0);
  CHECK(b == std::vector<unsigned char>{1, 2, 3});
  CHECK_THROWS_AS(c.broadcast(b.data(), b.size(), 1), std::invalid_argument);
  std::vector<unsigned char> out(3, 0);
  c.all_gather(b.data(), out.data(), 3);
  CHECK(out == b);
  c.all_gather(out.data(), out.data(), 3);  // in place
  CHECK(out == b);
  std::vector<float> rs(4, 0.0f);
  c.reduce_scatter_sum(f.data(), rs.data(), 3);
  CHECK(std::vector<float>(rs.begin(), rs.begin() + 3) == f);
  CHECK(rs[3] == 0.0f);
  CHECK_THROWS_AS(c.reduce_scatter_sum_v(f.data(), rs.data(), {1, 2}), std::invalid_argument);
  c.barrier();
}

TEST_CASE("make_communicator: one process without a launcher; a launcher without MPI is a ConfigError", "[dist]") {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (std::getenv(v) != nullptr) return;  // ctest itself runs under a launcher: nothing to check
  CHECK(eco::make_communicator()->world() == 1);
#ifndef ECO_WITH_MPI
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  try {
    eco::make_communicator();
    FAIL("expected a ConfigError");
  } catch (const eco::ConfigError& e) {
    CHECK(std::string(e.what()).find("mpirun") != std::string::npos);
    CHECK(std::string(e.what()).find("no MPI") != std::string::npos);
    CHECK(e.exit_code() == 2);
  }
  unsetenv("OMPI_COMM_WORLD_SIZE");
#endif
}

TEST_CASE("MPI collectives under mpirun -np 2 and 3", "[dist][mpi]") {
#ifndef ECO_WITH_MPI
  g_skip_reason = "this build has no MPI (install libopenmpi-dev openmpi-bin and reconfigure)";
  return;
#else
  if (!on_path("mpirun")) {
    g_skip_reason = "mpirun is not on PATH";
    return;
  }
  const fs::path helper = fs::path(ECO_BINARY_DIR) / "tests" / "mpi_collectives_main";
  REQUIRE(fs::exists(helper));
  // timeout(1) is the outer guard: a hang fails the test instead of stalling ctest.
  auto mpirun = [&](int np, const std::string& mode) {
    return run("timeout -s KILL 120 mpirun --oversubscribe --allow-run-as-root -np " + std::to_string(np) + " " +
               helper.string() + " " + mode);
  };
  SECTION("every collective at 2 and 3 ranks, chunked and not") for (int np : {2, 3}) {
    INFO("np " << np);
    Run r = mpirun(np, "collectives");
    INFO(r.out);
    CHECK(r.rc == 0);
    for (int rank = 0; rank < np; ++rank) CHECK(r.out.find("rank " + std::to_string(rank) + " ok") != std::string::npos);
    CHECK(r.out.find("FAIL") == std::string::npos);
    std::printf("mpirun -np %d collectives: %.2f s\n", np, r.seconds);
  }
  SECTION("a stalled rank: the others throw a SystemError naming the operation and their rank") {
    Run r = mpirun(2, "stall");
    INFO(r.out);
    CHECK(r.rc != 0);
    CHECK(r.seconds < 60.0);
    CHECK(r.out.find("caught: MPI all_reduce_sum(float) on rank 0 of 2: no progress") != std::string::npos);
    std::printf("mpirun -np 2 stall (timeout 2 s): %.2f s, rc %d\n", r.seconds, r.rc);
  }
  SECTION("a rank that exits early ends the job instead of hanging it") {
    Run r = mpirun(3, "exit_early");
    INFO(r.out);
    CHECK(r.rc != 0);
    CHECK(r.seconds < 60.0);
    CHECK(r.out.find("collectives completed") == std::string::npos);
    std::printf("mpirun -np 3 exit_early: %.2f s, rc %d\n", r.seconds, r.rc);
  }
#endif
}

// The parts of the NCCL communicator that run without a GPU (src/dist/nccl_communicator.h): the
// node-local rank (launcher variables, host names), the GPU choice, the device-communicator factory,
// and, under mpirun -np 2 when the build has MPI, the same at two ranks, including a GPU-less
// machine where every rank must fail with an error instead of waiting in the NCCL bootstrap. The
// collectives themselves run on a GPU: tests/cuda/test_cuda_nccl.cpp. Without mpirun the program
// reports "skipped" after the other cases have run and passed.
#define CATCH_CONFIG_EXTERNAL_INTERFACES  // for the listener below
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "dist/communicator.h"
#include "dist/nccl_communicator.h"
#include "dist/single_communicator.h"
#include "skip_at_end.h"
#include "test_util.h"
#ifdef ECO_WITH_CUDA
#include "cuda/cuda_check.h"
#endif

namespace fs = std::filesystem;
using eco_test::g_skip_reason;
using eco_test::on_path;

namespace {


auto env(std::map<std::string, std::string> m) {
  return [m](const char* k) -> const char* {
    auto it = m.find(k);
    return it == m.end() ? nullptr : it->second.c_str();
  };
}

int gpus_here() {
#ifdef ECO_WITH_CUDA
  return eco::cuda::device_count();
#else
  return 0;
#endif
}

}  // namespace

TEST_CASE("resolve_local_rank: the launcher's value when consistent, else the host-name order", "[dist][nccl]") {
  const std::vector<std::string> hosts = {"a", "b", "a", "a", "b"};
  // Host names only: position among the ranks of the same host.
  const std::vector<int> none(5, -1);
  const int expect_rank[5] = {0, 0, 1, 2, 1};
  const int expect_size[5] = {3, 2, 3, 3, 2};
  for (int me = 0; me < 5; ++me) {
    auto l = eco::resolve_local_rank(hosts, none, me, "");
    CHECK(l.rank == expect_rank[me]);
    CHECK(l.size == expect_size[me]);
    CHECK(l.source == "host names");
  }
  // A launcher that numbers the ranks of a node its own way (a permutation) wins.
  const std::vector<int> launcher = {2, 1, 0, 1, 0};
  auto l = eco::resolve_local_rank(hosts, launcher, 0, "OMPI_COMM_WORLD_LOCAL_RANK");
  CHECK(l.rank == 2);
  CHECK(l.size == 3);
  CHECK(l.source == "OMPI_COMM_WORLD_LOCAL_RANK");
  CHECK(eco::resolve_local_rank(hosts, launcher, 4, "X").rank == 0);
  // An sbatch script's SLURM_LOCALID=0, seen by every rank of an mpirun: not distinct, ignored.
  const std::vector<int> zeros(5, 0);
  l = eco::resolve_local_rank(hosts, zeros, 3, "SLURM_LOCALID");
  CHECK(l.rank == 2);
  CHECK(l.source == "host names");
  // Set on some ranks only, or beyond the node's rank count: ignored.
  CHECK(eco::resolve_local_rank(hosts, {0, 0, -1, 2, 1}, 0, "X").source == "host names");
  CHECK(eco::resolve_local_rank(hosts, {0, 0, 1, 5, 1}, 3, "X").rank == 2);
  CHECK_THROWS_AS(eco::resolve_local_rank(hosts, none, 5, ""), std::invalid_argument);
  CHECK_THROWS_AS(eco::resolve_local_rank(hosts, {0}, 0, ""), std::invalid_argument);
}

TEST_CASE("node_local_rank in a world of one reads the launcher's variables", "[dist][nccl]") {
  eco::SingleCommunicator single;
  auto l = eco::node_local_rank(single, env({}));
  CHECK(l.rank == 0);
  CHECK(l.size == 1);
  CHECK(l.source == "host names");
  l = eco::node_local_rank(single, env({{"OMPI_COMM_WORLD_LOCAL_RANK", "0"}}));
  CHECK(l.source == "OMPI_COMM_WORLD_LOCAL_RANK");
  CHECK(eco::node_local_rank(single, env({{"SLURM_LOCALID", "0"}})).source == "SLURM_LOCALID");
  CHECK(eco::node_local_rank(single, env({{"MPI_LOCALRANKID", "0"}, {"SLURM_LOCALID", "0"}})).source ==
        "MPI_LOCALRANKID");
  // A local rank the node does not have (one rank here): the host names decide.
  CHECK(eco::node_local_rank(single, env({{"SLURM_LOCALID", "3"}})).rank == 0);
  CHECK_THROWS_AS(eco::node_local_rank(single, env({{"OMPI_COMM_WORLD_LOCAL_RANK", "x"}})), eco::ConfigError);
  CHECK_THROWS_AS(eco::node_local_rank(single, env({{"SLURM_LOCALID", "-1"}})), eco::ConfigError);
}

TEST_CASE("local_gpu and make_device_communicator in a world of one", "[dist][nccl]") {
  eco::SingleCommunicator single;
  const int gpus = gpus_here();
#ifdef ECO_WITH_CUDA
  if (gpus == 0) {
    CHECK_THROWS_AS(eco::local_gpu(single), eco::SystemError);
  } else {
    const int d = eco::local_gpu(single);
    CHECK(d >= 0);
    CHECK(d < gpus);
  }
#else
  CHECK(eco::local_gpu(single) == 0);
#endif
  // Nothing to reduce in a world of one, and "host" always means staging over the host communicator.
  CHECK(eco::make_device_communicator(single, 0, nullptr, "auto") == nullptr);
  CHECK(eco::make_device_communicator(single, 0, nullptr, "host") == nullptr);
  CHECK_THROWS_AS(eco::make_device_communicator(single, 0, nullptr, "gloo"), eco::ConfigError);
#ifdef ECO_WITH_NCCL
  if (gpus == 0) {
    try {
      eco::make_device_communicator(single, 0, nullptr, "nccl");
      FAIL("expected a SystemError without a GPU");
    } catch (const eco::SystemError& e) {
      CHECK(std::string(e.what()).find("NCCL init on rank 0") != std::string::npos);
      CHECK(e.exit_code() == 6);
    }
  } else {
    auto c = eco::make_device_communicator(single, 0, nullptr, "nccl");
    REQUIRE(c != nullptr);
    CHECK(c->world() == 1);
    CHECK(c->describe().find("NCCL") == 0);
  }
#else
  CHECK_THROWS_AS(eco::make_device_communicator(single, 0, nullptr, "nccl"), eco::ConfigError);
#endif
}

// Runs inside mpirun (started by the case below): prints one line per rank for the parent to read.
TEST_CASE("nccl_mpi_child", "[.]") {
  auto host = eco::make_communicator();
  const int me = host->rank();
  auto l = eco::node_local_rank(*host, [](const char* k) { return std::getenv(k); });
  std::printf("rank %d local %d of %d from %s\n", me, l.rank, l.size, l.source.c_str());
  auto h = eco::node_local_rank(*host, env({}));  // the host-name path, the same answer on one machine
  std::printf("rank %d hostnames %d of %d\n", me, h.rank, h.size);
  CHECK(eco::make_device_communicator(*host, 0, nullptr, "host") == nullptr);
#ifdef ECO_WITH_CUDA
  if (gpus_here() == 0) {
    // Every rank fails and says so; none waits in the bootstrap for the timeout.
    try {
      eco::local_gpu(*host);
      std::printf("rank %d local_gpu: no error\n", me);
    } catch (const eco::Error& e) {
      std::printf("rank %d local_gpu: %s\n", me, e.what());
    }
  }
#endif
#ifdef ECO_WITH_NCCL
  if (gpus_here() == 0) {
    try {
      eco::make_device_communicator(*host, 0, nullptr, "auto");
      std::printf("rank %d nccl: no error\n", me);
    } catch (const eco::Error& e) {
      std::printf("rank %d nccl (exit %d): %s\n", me, e.exit_code(), e.what());
    }
  }
#else
  CHECK(eco::make_device_communicator(*host, 0, nullptr, "auto") == nullptr);
  std::printf("rank %d nccl: not built\n", me);
#endif
  host->barrier();
  std::printf("rank %d done\n", me);
}

TEST_CASE("under mpirun -np 2: local ranks, and a GPU-less rank fails instead of hanging", "[dist][nccl][mpi]") {
#ifndef ECO_WITH_MPI
  g_skip_reason = "this build has no MPI (the two-rank case needs it)";
  return;
#else
  if (!on_path("mpirun")) {
    g_skip_reason = "mpirun is not on PATH";
    return;
  }
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (std::getenv(v) != nullptr) return;  // already under a launcher: the child case is not for us
  const fs::path self = fs::read_symlink("/proc/self/exe");
  const std::string cmd = "ECO_DIST_TIMEOUT_S=30 timeout -s KILL 120 mpirun --oversubscribe --allow-run-as-root -np 2 " +
                          self.string() + " nccl_mpi_child 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  FILE* f = popen(cmd.c_str(), "r");
  REQUIRE(f != nullptr);
  std::string out;
  char buf[4096];
  while (size_t got = fread(buf, 1, sizeof buf, f)) out.append(buf, got);
  const int status = pclose(f);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(out);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(seconds < 25.0);  // well inside ECO_DIST_TIMEOUT_S: nobody waited for a deadline
  for (int r = 0; r < 2; ++r) {
    const std::string rank = "rank " + std::to_string(r);
    CHECK(out.find(rank + " local " + std::to_string(r) + " of 2 from OMPI_COMM_WORLD_LOCAL_RANK") != std::string::npos);
    CHECK(out.find(rank + " hostnames " + std::to_string(r) + " of 2") != std::string::npos);
    CHECK(out.find(rank + " done") != std::string::npos);
#ifdef ECO_WITH_CUDA
    if (gpus_here() == 0) CHECK(out.find(rank + " local_gpu: rank ") != std::string::npos);
#endif
#ifdef ECO_WITH_NCCL
    if (gpus_here() == 0) CHECK(out.find(rank + " nccl (exit 6): ") != std::string::npos);
#endif
  }
#ifdef ECO_WITH_NCCL
  // Both ranks lack the GPU: each names itself (a rank whose peer failed alone would instead say
  // "rank R of 2 failed while setting up NCCL", rank_agreement.h).
  if (gpus_here() == 0) {
    CHECK(out.find("NCCL init on rank 0: no usable CUDA device") != std::string::npos);
    CHECK(out.find("NCCL init on rank 1: no usable CUDA device") != std::string::npos);
  }
#endif
  std::printf("mpirun -np 2 nccl_mpi_child: %.2f s\n", seconds);
#endif
}

#include "dist/communicator.h"

#include <cerrno>
#include <cstdlib>
#include <limits>

#include "core/error.h"
#include "dist/single_communicator.h"
#ifdef ECO_WITH_MPI
#include "dist/mpi_communicator.h"
#endif

namespace eco {

std::vector<Chunk> split_into_chunks(size_t n, size_t limit) {
  if (limit == 0) throw std::invalid_argument("split_into_chunks: limit must be at least 1");
  std::vector<Chunk> chunks;
  chunks.reserve(n / limit + 1);
  for (size_t off = 0; off < n; off += limit) chunks.push_back({off, n - off < limit ? n - off : limit});
  return chunks;
}

std::vector<size_t> block_offsets(const std::vector<size_t>& sizes) {
  std::vector<size_t> offsets(sizes.size(), 0);
  for (size_t p = 1; p < sizes.size(); ++p) offsets[p] = offsets[p - 1] + sizes[p - 1];
  return offsets;
}

void require_one_size_per_rank(const char* op, const char* what, const std::vector<size_t>& sizes, int world) {
  if (sizes.size() != static_cast<size_t>(world))
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(sizes.size()) + " " + what + " for world " +
                                std::to_string(world));
}

void require_all_to_all_sizes(const std::vector<size_t>& send_bytes, const std::vector<size_t>& recv_bytes, int rank,
                              int world) {
  if (send_bytes.size() != static_cast<size_t>(world) || recv_bytes.size() != static_cast<size_t>(world))
    throw std::invalid_argument("all_to_all_v: need one send and one receive size per rank (world " +
                                std::to_string(world) + ")");
  if (send_bytes[rank] != recv_bytes[rank])
    throw std::invalid_argument("all_to_all_v: this rank's block to itself must have one size");
}

int launcher_world_size(const std::function<const char*(const char*)>& getenv) {
  // SLURM_NTASKS is not on the list: an sbatch script sees it even when it runs one process.
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    const char* v = getenv(var);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    errno = 0;
    long size = std::strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || size < 1 || size > std::numeric_limits<int>::max())
      throw ConfigError(std::string("launcher environment: ") + var + "='" + v +
                        "' is not a positive world size; unset it or launch with mpirun/srun");
    if (size > 1) return static_cast<int>(size);
  }
  return 1;
}

// Declared in dist/nccl_communicator.h, which reads it too.
double dist_timeout_s() {
  const char* v = std::getenv("ECO_DIST_TIMEOUT_S");
  if (v == nullptr || *v == '\0') return 600.0;
  char* end = nullptr;
  double t = std::strtod(v, &end);
  if (*end != '\0' || !(t > 0.0))
    throw ConfigError(std::string("ECO_DIST_TIMEOUT_S='") + v + "' is not a positive number of seconds");
  return t;
}

std::unique_ptr<Communicator> make_communicator() {
  const int world = launcher_world_size([](const char* k) { return std::getenv(k); });
  if (world <= 1) return std::make_unique<SingleCommunicator>();
#ifdef ECO_WITH_MPI
  auto comm = std::make_unique<MpiCommunicator>(dist_timeout_s());
  // N singletons instead of one job of N: the binary's MPI is not the launcher's.
  if (comm->world() != world)
    throw SystemError("the launcher announced " + std::to_string(world) + " ranks but MPI sees " +
                      std::to_string(comm->world()) + ": eco_train is linked against a different MPI than the "
                      "mpirun/srun that started it; use the matching launcher (srun --mpi=pmix or pmi2)");
  return comm;
#else
  (void)dist_timeout_s;
  throw ConfigError("launched as " + std::to_string(world) +
                    " ranks (mpirun/srun), but this build has no MPI: install OpenMPI "
                    "(libopenmpi-dev openmpi-bin) and reconfigure, or run a single process");
#endif
}

}  // namespace eco

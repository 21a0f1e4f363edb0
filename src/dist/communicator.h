#pragma once
// Collectives across the ranks of one training job (DESIGN.md §6). Buffers are backend buffers
// (model/ops.h owns them); the implementations here move host memory, which is what the CPU
// backend's buffers are. Every sum is deterministic: each element is summed in rank order
// 0..world-1, so the result is bit-identical on every rank and independent of timing or of the
// MPI library's reduction algorithm. A failed or stalled peer is a SystemError (exit 6) naming the
// operation and this rank, never a hang.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace eco {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual std::string describe() const = 0;

  // buf[i] = sum over ranks r = 0..world-1, in that order, of rank r's buf[i]. In place.
  virtual void all_reduce_sum(float* buf, size_t n) = 0;
  virtual void all_reduce_sum(double* buf, size_t n) = 0;
  // Every rank's buf receives root's buf.
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  // out (world * bytes_per_rank) = rank 0's in, rank 1's in, ... `in` may alias
  // out + rank() * bytes_per_rank (in place).
  virtual void all_gather(const void* in, void* out, size_t bytes_per_rank) = 0;
  // in holds world slices laid out rank after rank, slice r having counts[r] floats; out (counts[rank()]
  // floats) = rank-order sum of every rank's slice rank(). Uneven counts serve row-aligned ZeRO shards.
  virtual void reduce_scatter_sum_v(const float* in, float* out, const std::vector<size_t>& counts) = 0;
  void reduce_scatter_sum(const float* in, float* out, size_t count_per_rank) {
    reduce_scatter_sum_v(in, out, std::vector<size_t>(static_cast<size_t>(world()), count_per_rank));
  }
  // out = rank 0's block (bytes[0] bytes), rank 1's block, ... laid out back to back; `in` is this
  // rank's block and may alias its place in out. Uneven blocks: row-aligned ZeRO-1 shards.
  virtual void all_gather_v(const void* in, void* out, const std::vector<size_t>& bytes) = 0;
  // Personalised exchange (expert-parallel dispatch and combine): send holds one block per rank,
  // rank after rank (send_bytes[p] bytes for rank p, this rank's own block included); recv gets one
  // block from each rank, rank after rank (recv_bytes[p] bytes from rank p). The callers agree on
  // the sizes beforehand (an exchange of counts); send and recv must not overlap.
  virtual void all_to_all_v(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                            const std::vector<size_t>& recv_bytes) = 0;
  // The ranks that pass the same color form a new communicator, ranked by (key, rank here) — the
  // expert-parallel and expert-data-parallel groups. Collective over this communicator.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  virtual void barrier() = 0;

  // Payload bytes this rank has handed to the transport for its peers since construction: what the
  // collectives must move at least (the data-parallel traffic of docs/distributed.md), not what the
  // MPI library's algorithms or headers add on the wire. 0 in a world of one.
  uint64_t bytes_sent() const { return bytes_sent_; }

 protected:
  uint64_t bytes_sent_ = 0;
};

// A piece [offset, offset + count) of a longer transfer. MPI counts are int, so every message is
// split into pieces of at most `limit` elements (limit >= 1); n == 0 gives no piece.
struct Chunk {
  size_t offset;
  size_t count;
};
std::vector<Chunk> split_into_chunks(size_t n, size_t limit);

// Where each rank's block starts when blocks of sizes[p] lie back to back, rank after rank (the
// layout of every uneven collective's buffers): the exclusive prefix sum of sizes.
std::vector<size_t> block_offsets(const std::vector<size_t>& sizes);
// std::invalid_argument "OP: N WHAT for world W" unless there is one size per rank.
void require_one_size_per_rank(const char* op, const char* what, const std::vector<size_t>& sizes, int world);
// all_to_all_v's sizes: one send and one receive size per rank, and this rank's block to itself of
// one size (std::invalid_argument otherwise).
void require_all_to_all_sizes(const std::vector<size_t>& send_bytes, const std::vector<size_t>& recv_bytes, int rank,
                              int world);

// The world size a process launcher announced through the environment (OMPI_COMM_WORLD_SIZE from
// mpirun, PMI_SIZE from srun --mpi=pmi2 / MPICH, SLURM_STEP_NUM_TASKS from srun), or 1. `getenv` is
// injectable for tests. A malformed value is a ConfigError naming the variable.
int launcher_world_size(const std::function<const char*(const char*)>& getenv);

// MPI when a launcher started this process with more than one rank and the build has MPI; one
// process otherwise. Launched with several ranks but built without MPI: ConfigError.
// ECO_DIST_TIMEOUT_S (default 600) bounds how long a collective waits without progress.
std::unique_ptr<Communicator> make_communicator();

}  // namespace eco

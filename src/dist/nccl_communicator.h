#pragma once
// The communicator for device (GPU) buffers: NCCL, bootstrapped over the host communicator (MPI),
// one GPU per rank (DESIGN.md §6, docs/distributed.md "NCCL"). The CPU backend keeps using
// make_communicator()'s MPI/single communicator; a CUDA run with several ranks adds this one for the
// buffers that live on the GPU (the gradients), so they are reduced in place instead of staged
// through host memory.
//
// What differs from the MPI communicator: NCCL chooses its own reduction order (ring or tree, by
// size and topology), so sums are identical on every rank but NOT the rank-order sums of
// communicator.h; pin NCCL_ALGO=Ring NCCL_PROTO=Simple NCCL_NVLS_ENABLE=0 for run-to-run
// reproducibility. What stays: every operation returns only when its result is in the buffer, and
// a failed or stalled peer is a SystemError (exit 6) naming the operation and the rank, never a hang.
//
// The free functions below exist in every build; the class only where CMake found CUDA and NCCL
// (ECO_WITH_NCCL).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"

struct CUstream_st;  // = cudaStream_t, without the CUDA headers

#ifdef ECO_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace eco {

// ECO_DIST_TIMEOUT_S (default 600): how long a collective may wait without progress. Defined in
// communicator.cpp; a malformed value is a ConfigError.
double dist_timeout_s();

// This process's rank among the ranks on its node, and how many share the node. Collective over
// `host` (one all-gather of host names and launcher values). The launcher's word wins when it gives
// one (OMPI_COMM_WORLD_LOCAL_RANK from mpirun, MPI_LOCALRANKID from MPICH, SLURM_LOCALID from srun)
// and it is consistent (distinct on each node: an sbatch script's own SLURM_LOCALID=0 seen by every
// rank of an mpirun is not); otherwise it is the number of lower ranks with the same host name, what
// MPI_Comm_split_type(SHARED) gives, but over the communicator's deadlines. A malformed variable is
// a ConfigError.
struct NodeLocalRank {
  int rank = 0;
  int size = 1;
  std::string source;  // the variable it came from, or "host names"
};
NodeLocalRank node_local_rank(Communicator& host, const std::function<const char*(const char*)>& getenv);

// The part of node_local_rank that needs no communication. hosts[r]: rank r's host name;
// launcher[r]: the local rank rank r's launcher gave (from variable `var`), or -1.
NodeLocalRank resolve_local_rank(const std::vector<std::string>& hosts, const std::vector<int>& launcher, int me,
                                 const std::string& var);

// The GPU this rank drives: its node-local rank modulo the GPUs it can see (so a launcher that gives
// each rank one GPU through CUDA_VISIBLE_DEVICES yields device 0 everywhere). Collective over
// `host`. 0 in a build without CUDA; SystemError when CUDA sees no GPU.
int local_gpu(Communicator& host);

// The communicator for the backend's device buffers, or nullptr when there is none to use and the
// caller keeps staging device buffers through host memory with `host` (GradientAllReduce):
//   kind "auto": NCCL when the build has it and host.world() > 1; nullptr otherwise (world 1 has
//                nothing to reduce).
//   kind "nccl": NCCL whatever the world; ConfigError in a build without NCCL.
//   kind "host": nullptr (staging over `host`: the bit-exact rank-order sums of the MPI path).
// Collective over `host`. `device`: from local_gpu(). `compute`: the stream that writes the buffers
// (CudaOps::stream()); every collective first waits for the work queued there, and returns when its
// own work is done, so work queued there afterwards sees the result. nullptr: the whole device is
// synchronised before each collective instead.
std::unique_ptr<Communicator> make_device_communicator(Communicator& host, int device, CUstream_st* compute,
                                                       const std::string& kind = "auto");

#ifdef ECO_WITH_NCCL

// NCCL over device buffers. Every pointer passed to it must be device memory of `device` (or
// memory NCCL can address from it). Non-blocking NCCL communicator (config.blocking = 0): every
// call, init included, is polled together with cudaStreamQuery and ncclCommGetAsyncError against
// the deadline; on an error or at the deadline the communicator is aborted (ncclCommAbort) and the
// operation throws SystemError; every later call throws too.
class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host`: rank 0 creates the NCCL unique id, host.broadcast hands it to the
  // others, and every rank joins with host's rank and world on `device`. max_count: the most
  // elements in one NCCL call (tests pass a small value to exercise the chunking).
  NcclCommunicator(Communicator& host, int device, cudaStream_t compute = nullptr, double timeout_s = 600.0,
                   size_t max_count = kDefaultMaxCount);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string describe() const override;
  void all_reduce_sum(float* buf, size_t n) override;
  void all_reduce_sum(double* buf, size_t n) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void all_gather(const void* in, void* out, size_t bytes_per_rank) override;
  void reduce_scatter_sum_v(const float* in, float* out, const std::vector<size_t>& counts) override;
  void all_gather_v(const void* in, void* out, const std::vector<size_t>& bytes) override;
  void all_to_all_v(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                    const std::vector<size_t>& recv_bytes) override;
  // ncclCommSplit; ranks ordered by key, ties by rank here, as MPI_Comm_split. color must be >= 0.
  std::unique_ptr<Communicator> split(int color, int key) override;
  // A one-float all-reduce, waited for.
  void barrier() override;

  // The stream the collectives run on (tests queue work on it to provoke the timeout).
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

  // NCCL counts are size_t, but counts of 2^31 and more have had bugs; 2^30 elements per call.
  static constexpr size_t kDefaultMaxCount = size_t{1} << 30;

 private:
  // A sub-communicator from split(): owns `comm`, its own stream.
  NcclCommunicator(ncclComm_t comm, int device, cudaStream_t compute, double timeout_s, size_t max_count);
  void create_stream_and_scratch();
  void release_cuda() noexcept;
  void ensure_usable(const char* op) const;
  // Makes stream_ wait for the compute stream (or the device), before an operation's first launch.
  void follow_compute(const char* op);
  // The result of an NCCL call (or ncclGroupEnd): an error aborts and throws; ncclInProgress is
  // polled until the communicator leaves that state, against the deadline.
  void settle(ncclResult_t r, const char* op, const char* call);
  // Polls until stream_ has run everything queued, an async error, or the deadline.
  void wait_stream(const char* op);
  void group_start(const char* op);
  void group_end(const char* op);
  // Aborts the communicator (ncclCommAbort) and throws SystemError naming op, this rank and why.
  [[noreturn]] void fail(const char* op, const std::string& why, const std::string& hint);
  std::string nccl_text(ncclResult_t r) const;
  void check_cuda(cudaError_t e, const char* op, const char* call);
  template <typename T>
  void all_reduce_impl(T* buf, size_t n, ncclDataType_t type, const char* op);

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  float* scratch_ = nullptr;  // barrier()'s one float
  int device_ = 0;
  int rank_ = 0;
  int world_ = 1;
  double timeout_s_;
  size_t max_count_;
  bool failed_ = false;
  bool in_group_ = false;  // between ncclGroupStart and ncclGroupEnd
};

#endif  // ECO_WITH_NCCL

}  // namespace eco

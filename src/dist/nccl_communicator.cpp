// The local-rank and GPU choice and the factory are built everywhere; NcclCommunicator only where
// CMake found CUDA and NCCL (ECO_WITH_NCCL), like mpi_communicator.cpp under ECO_WITH_MPI.
#include "dist/nccl_communicator.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>
#include <stdexcept>
#include <thread>

#include "core/error.h"
#include "dist/rank_agreement.h"
#ifdef ECO_WITH_CUDA
#include "cuda/cuda_check.h"
#endif
#ifdef ECO_WITH_NCCL
#include <spdlog/spdlog.h>
#endif

namespace eco {

namespace {

// -1 when unset; ConfigError when set but not a non-negative int.
int launcher_local_rank(const std::function<const char*(const char*)>& getenv, std::string* var_out) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    const char* v = getenv(var);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    errno = 0;
    long r = std::strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || r < 0 || r > INT_MAX)
      throw ConfigError(std::string("launcher environment: ") + var + "='" + v +
                        "' is not a node-local rank; unset it or launch with mpirun/srun");
    *var_out = var;
    return static_cast<int>(r);
  }
  return -1;
}

// One rank's entry of the all-gather in node_local_rank: its host name and its launcher's local rank.
constexpr size_t kHostBytes = 248;
struct HostEntry {
  char host[kHostBytes];
  int32_t launcher;
  int32_t unused;
};
static_assert(sizeof(HostEntry) == 256);

}  // namespace

NodeLocalRank resolve_local_rank(const std::vector<std::string>& hosts, const std::vector<int>& launcher, int me,
                                 const std::string& var) {
  if (me < 0 || static_cast<size_t>(me) >= hosts.size() || launcher.size() != hosts.size())
    throw std::invalid_argument("resolve_local_rank: rank " + std::to_string(me) + " outside " +
                                std::to_string(hosts.size()) + " hosts");
  NodeLocalRank out;
  out.rank = 0;
  out.size = 0;
  std::set<int> seen;
  bool launcher_ok = true;
  for (size_t r = 0; r < hosts.size(); ++r) {
    if (hosts[r] != hosts[me]) continue;
    if (static_cast<int>(r) < me) ++out.rank;
    ++out.size;
    if (launcher[r] < 0 || !seen.insert(launcher[r]).second) launcher_ok = false;
  }
  out.source = "host names";
  if (launcher_ok && launcher[me] < out.size) {
    // Distinct values below the node's rank count: a permutation of 0..size-1, the launcher's own.
    out.rank = launcher[me];
    out.source = var;
  }
  return out;
}

NodeLocalRank node_local_rank(Communicator& host, const std::function<const char*(const char*)>& getenv) {
  std::string var;
  HostEntry mine{};
  mine.launcher = launcher_local_rank(getenv, &var);
  if (gethostname(mine.host, kHostBytes - 1) != 0) std::snprintf(mine.host, kHostBytes, "unknown-host");
  mine.host[kHostBytes - 1] = '\0';
  std::vector<HostEntry> all(static_cast<size_t>(host.world()));
  host.all_gather(&mine, all.data(), sizeof(HostEntry));
  std::vector<std::string> hosts;
  std::vector<int> launcher;
  for (const HostEntry& e : all) {
    hosts.emplace_back(e.host, strnlen(e.host, kHostBytes));
    launcher.push_back(e.launcher);
  }
  return resolve_local_rank(hosts, launcher, host.rank(), var);
}

int local_gpu(Communicator& host) {
  const NodeLocalRank local = node_local_rank(host, [](const char* k) { return std::getenv(k); });
#ifdef ECO_WITH_CUDA
  int device = 0;
  // A rank without a GPU must not leave the others waiting in the NCCL bootstrap until the timeout.
  run_collectively(host, "choosing its GPU", [&] {
    std::string why;
    const int n = cuda::device_count(&why);
    if (n == 0)
      throw SystemError("rank " + std::to_string(host.rank()) + " (node-local rank " + std::to_string(local.rank) +
                        "): " + why + "; every rank of a train.device=cuda run needs a GPU");
    device = local.rank % n;
  });
  return device;
#else
  return 0;
#endif
}

std::unique_ptr<Communicator> make_device_communicator(Communicator& host, int device, CUstream_st* compute,
                                                       const std::string& kind) {
  if (kind == "host") return nullptr;
  if (kind != "auto" && kind != "nccl")
    throw ConfigError("device communicator '" + kind + "': use auto, nccl or host");
#ifdef ECO_WITH_NCCL
  if (kind == "auto" && host.world() == 1) return nullptr;
  return std::make_unique<NcclCommunicator>(host, device, compute, dist_timeout_s());
#else
  (void)host;
  (void)device;
  (void)compute;
  if (kind == "nccl")
    throw ConfigError("the NCCL communicator was asked for, but this build has no NCCL (CMake needs CUDA and "
                      "nccl.h/libnccl); use the host communicator, or rebuild with NCCL");
  return nullptr;
#endif
}

#ifdef ECO_WITH_NCCL

namespace {
std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

// Busy-poll for 2 ms (a collective between live GPUs takes microseconds to milliseconds), then yield,
// then 1 ms sleeps, so a rank waiting for a slow peer leaves the CPU to others.
void back_off(std::chrono::steady_clock::duration waited) {
  if (waited > std::chrono::milliseconds(100))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  else if (waited > std::chrono::milliseconds(2))
    std::this_thread::yield();
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

// The rank-order slice of each rank in a chunk of n elements (as the MPI all-reduce cuts it).
size_t slice_of(size_t n, int r, int world) {
  return n * static_cast<size_t>(r + 1) / static_cast<size_t>(world) - n * static_cast<size_t>(r) / static_cast<size_t>(world);
}
}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& host, int device, cudaStream_t compute, double timeout_s,
                                   size_t max_count)
    : compute_(compute), device_(device), rank_(host.rank()), world_(host.world()), timeout_s_(timeout_s),
      max_count_(max_count) {
  if (max_count_ == 0) throw std::invalid_argument("NcclCommunicator: max_count must be at least 1");
  ncclUniqueId id{};
  try {
    // Local steps that can fail on one rank only: agreed on, so no rank waits in the init for one
    // that already gave up.
    run_collectively(host, "setting up NCCL", [&] {
      std::string why;
      const int n = cuda::device_count(&why);
      if (device_ < 0 || device_ >= n)
        throw SystemError("NCCL init on rank " + std::to_string(rank_) + ": " +
                          (n == 0 ? why : "GPU " + std::to_string(device_) + " does not exist (" + std::to_string(n) +
                                              " visible)") +
                          "; the NCCL communicator needs one GPU per rank");
      check_cuda(cudaSetDevice(device_), "init", "cudaSetDevice");
      if (rank_ == 0) {
        const ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
          throw SystemError(std::string("NCCL init on rank 0: ncclGetUniqueId: ") + ncclGetErrorString(r) +
                            "; run with NCCL_DEBUG=WARN for NCCL's reason");
      }
      create_stream_and_scratch();
      int version = 0;
      if (ncclGetVersion(&version) == ncclSuccess && version / 100 != NCCL_VERSION_CODE / 100 && rank_ == 0)
        spdlog::warn("NCCL: built against {} but running {}; if collectives fail, run the NCCL the build used",
                     NCCL_VERSION_CODE, version);
    });
    // The id (128 bytes) goes over the host communicator: MPI in a launched job, nothing in world 1.
    host.broadcast(&id, sizeof id, 0);
    ncclConfig_t config = nonblocking_config();
    settle(ncclCommInitRankConfig(&comm_, world_, id, rank_, &config), "init", "ncclCommInitRankConfig");
  } catch (...) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    release_cuda();
    throw;
  }
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device, cudaStream_t compute, double timeout_s,
                                   size_t max_count)
    : comm_(comm), compute_(compute), device_(device), timeout_s_(timeout_s), max_count_(max_count) {
  try {
    settle(ncclCommUserRank(comm_, &rank_), "split", "ncclCommUserRank");
    settle(ncclCommCount(comm_, &world_), "split", "ncclCommCount");
    create_stream_and_scratch();
  } catch (...) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    release_cuda();
    throw;
  }
}

void NcclCommunicator::create_stream_and_scratch() {
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "init", "cudaStreamCreateWithFlags");
  check_cuda(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "init", "cudaEventCreateWithFlags");
  check_cuda(cudaMalloc(&scratch_, sizeof(float)), "init", "cudaMalloc");
  check_cuda(cudaMemset(scratch_, 0, sizeof(float)), "init", "cudaMemset");
}

void NcclCommunicator::release_cuda() noexcept {
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (ready_ != nullptr) cudaEventDestroy(ready_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  scratch_ = nullptr;
  ready_ = nullptr;
  stream_ = nullptr;
}

NcclCommunicator::~NcclCommunicator() {
  // Never throws, never waits past the deadline: after a failure, or while an exception unwinds
  // (possibly on this rank alone), the peers may be gone, so abort; otherwise finalize (flushes the
  // communicator's work; polled) and destroy, aborting if the finalize does not finish in time.
  if (comm_ != nullptr) {
    bool clean = !failed_ && std::uncaught_exceptions() == 0;
    if (clean) {
      ncclResult_t state = ncclCommFinalize(comm_);
      const auto start = std::chrono::steady_clock::now();
      const auto deadline = start + std::chrono::duration<double>(timeout_s_);
      while (state == ncclInProgress && std::chrono::steady_clock::now() < deadline) {
        back_off(std::chrono::steady_clock::now() - start);
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) state = ncclInternalError;
      }
      clean = state == ncclSuccess;
    }
    if (clean)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);
  }
  release_cuda();
}

std::string NcclCommunicator::describe() const {
  int version = 0;
  ncclGetVersion(&version);
  return "NCCL " + std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
         std::to_string(version % 100) + " rank " + std::to_string(rank_) + " of " + std::to_string(world_) +
         " on GPU " + std::to_string(device_);
}

void NcclCommunicator::ensure_usable(const char* op) const {
  if (failed_ || comm_ == nullptr)
    throw SystemError(std::string("NCCL ") + op + " on rank " + std::to_string(rank_) + " of " +
                      std::to_string(world_) + ": the communicator failed earlier in this run and cannot be used");
}

void NcclCommunicator::fail(const char* op, const std::string& why, const std::string& hint) {
  failed_ = true;
  if (in_group_) {
    ncclGroupEnd();  // close the thread's group before the abort; its result no longer matters
    in_group_ = false;
  }
  // Aborting frees the communicator and stops its kernels, so a stuck collective cannot keep the
  // GPU (and the process exit) waiting.
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
  throw SystemError(std::string("NCCL ") + op + " on rank " + std::to_string(rank_) + " of " +
                    std::to_string(world_) + " (GPU " + std::to_string(device_) + "): " + why + "; " + hint);
}

std::string NcclCommunicator::nccl_text(ncclResult_t r) const {
  std::string text = ncclGetErrorString(r);
  const char* last = comm_ != nullptr ? ncclGetLastError(comm_) : ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') text += std::string(" (") + last + ")";
  return text;
}

void NcclCommunicator::check_cuda(cudaError_t e, const char* op, const char* call) {
  if (e == cudaSuccess) return;
  fail(op, std::string(call) + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e),
       "a CUDA error on this rank's GPU");
}

void NcclCommunicator::settle(ncclResult_t r, const char* op, const char* call) {
  static const char* kPeerHint = "a peer rank probably exited or failed, see its output (NCCL_DEBUG=WARN for NCCL's own)";
  if (r == ncclSuccess) return;
  if (r != ncclInProgress) {
    std::string hint = kPeerHint;
    if (r == ncclInvalidUsage && std::strcmp(op, "init") == 0)
      hint = "two ranks on one GPU? NCCL needs one GPU per rank (\"Duplicate GPU detected\"); launch at most as "
             "many ranks per node as it has GPUs";
    fail(op, std::string(call) + ": " + nccl_text(r), hint);
  }
  // Non-blocking communicator: the call goes on in the background; no other NCCL call on this
  // communicator until its state leaves ncclInProgress.
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
    if (q != ncclSuccess) fail(op, std::string("ncclCommGetAsyncError: ") + nccl_text(q), kPeerHint);
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) fail(op, std::string(call) + ": " + nccl_text(state), kPeerHint);
    const auto now = std::chrono::steady_clock::now();
    if (now > deadline)
      fail(op, std::string(call) + ": no progress for " + seconds_text(timeout_s_) + " s (ECO_DIST_TIMEOUT_S)",
           "a peer rank failed or stopped, see the other ranks' output");
    back_off(now - start);
  }
}

void NcclCommunicator::wait_stream(const char* op) {
  // NCCL's recommended wait: cudaStreamQuery instead of a synchronize, checking the communicator's
  // asynchronous error while the stream is busy, with our own deadline (NCCL has none).
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
    if (q != ncclSuccess) fail(op, std::string("ncclCommGetAsyncError: ") + nccl_text(q), "see NCCL_DEBUG=WARN");
    if (state != ncclSuccess && state != ncclInProgress)
      fail(op, std::string("asynchronous error: ") + nccl_text(state),
           "a peer rank probably exited or failed, see its output (NCCL_DEBUG=WARN for NCCL's own)");
    const cudaError_t s = cudaStreamQuery(stream_);
    if (s == cudaSuccess && state == ncclSuccess) return;
    if (s != cudaSuccess && s != cudaErrorNotReady) check_cuda(s, op, "cudaStreamQuery");
    const auto now = std::chrono::steady_clock::now();
    if (now > deadline)
      fail(op, "no progress for " + seconds_text(timeout_s_) + " s (ECO_DIST_TIMEOUT_S)",
           "a peer rank failed or stopped, see the other ranks' output");
    back_off(now - start);
  }
}

void NcclCommunicator::follow_compute(const char* op) {
  if (compute_ != nullptr) {
    check_cuda(cudaEventRecord(ready_, compute_), op, "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(stream_, ready_, 0), op, "cudaStreamWaitEvent");
  } else {
    check_cuda(cudaDeviceSynchronize(), op, "cudaDeviceSynchronize");
  }
}

void NcclCommunicator::group_start(const char* op) {
  settle(ncclGroupStart(), op, "ncclGroupStart");
  in_group_ = true;
}

void NcclCommunicator::group_end(const char* op) {
  in_group_ = false;
  settle(ncclGroupEnd(), op, "ncclGroupEnd");
}

template <typename T>
void NcclCommunicator::all_reduce_impl(T* buf, size_t n, ncclDataType_t type, const char* op) {
  ensure_usable(op);
  follow_compute(op);
  for (const Chunk& c : split_into_chunks(n, max_count_)) {
    // Ring all-reduce: reduce-scatter, then all-gather; counted as the MPI path counts it (the
    // others' slices once, this rank's summed slice to W-1 peers), which is the ring's 2(W-1)/W·n.
    const size_t own = slice_of(c.count, rank_, world_);
    bytes_sent_ += (c.count - own + own * static_cast<size_t>(world_ - 1)) * sizeof(T);
    settle(ncclAllReduce(buf + c.offset, buf + c.offset, c.count, type, ncclSum, comm_, stream_), op, "ncclAllReduce");
    wait_stream(op);
  }
}

void NcclCommunicator::all_reduce_sum(float* buf, size_t n) {
  all_reduce_impl(buf, n, ncclFloat32, "all_reduce_sum(float)");
}
void NcclCommunicator::all_reduce_sum(double* buf, size_t n) {
  all_reduce_impl(buf, n, ncclFloat64, "all_reduce_sum(double)");
}

void NcclCommunicator::broadcast(void* buf, size_t bytes, int root) {
  const char* op = "broadcast";
  ensure_usable(op);
  if (root < 0 || root >= world_)
    throw std::invalid_argument("broadcast: root " + std::to_string(root) + " outside world " + std::to_string(world_));
  follow_compute(op);
  // The ring pipeline moves the message W-1 times; counted on the root, as in the MPI path.
  if (rank_ == root) bytes_sent_ += bytes * static_cast<size_t>(world_ - 1);
  auto* p = static_cast<unsigned char*>(buf);
  for (const Chunk& c : split_into_chunks(bytes, max_count_)) {
    settle(ncclBroadcast(p + c.offset, p + c.offset, c.count, ncclUint8, root, comm_, stream_), op, "ncclBroadcast");
    wait_stream(op);
  }
}

void NcclCommunicator::all_gather(const void* in, void* out, size_t bytes_per_rank) {
  all_gather_v(in, out, std::vector<size_t>(static_cast<size_t>(world_), bytes_per_rank));
}

void NcclCommunicator::all_gather_v(const void* in, void* out, const std::vector<size_t>& bytes) {
  const char* op = "all_gather_v";
  ensure_usable(op);
  require_one_size_per_rank("all_gather_v", "sizes", bytes, world_);
  follow_compute(op);
  auto* dst = static_cast<unsigned char*>(out);
  const auto* src = static_cast<const unsigned char*>(in);
  // Each rank's block reaches the W-1 others (exact for the ring all-gather; for the broadcasts
  // below it is the ring total, attributed to the block's owner as in the MPI path).
  bytes_sent_ += bytes[rank_] * static_cast<size_t>(world_ - 1);
  const bool even = std::all_of(bytes.begin(), bytes.end(), [&](size_t b) { return b == bytes[0]; });
  if (even && bytes[0] <= max_count_) {
    // ncclAllGather puts rank i's block at out + i·b; in place when in == out + rank·b.
    if (bytes[0] > 0) {
      settle(ncclAllGather(in, out, bytes[0], ncclUint8, comm_, stream_), op, "ncclAllGather");
      wait_stream(op);
    }
    return;
  }
  // Uneven (or longer than one call) blocks: one ncclBroadcast per rank's block, grouped so they run
  // together; round k moves bytes [k·max, (k+1)·max) of every block. The root's send buffer is its
  // `in`, so `in` may alias its place in out or not.
  const std::vector<size_t> displ = block_offsets(bytes);
  const size_t longest = *std::max_element(bytes.begin(), bytes.end());
  for (const Chunk& c : split_into_chunks(longest, max_count_)) {
    group_start(op);
    for (int p = 0; p < world_; ++p) {
      if (bytes[p] <= c.offset) continue;
      const size_t count = std::min(c.count, bytes[p] - c.offset);
      unsigned char* recv = dst + displ[p] + c.offset;
      const void* send = p == rank_ ? static_cast<const void*>(src + c.offset) : recv;
      settle(ncclBroadcast(send, recv, count, ncclUint8, p, comm_, stream_), op, "ncclBroadcast");
    }
    group_end(op);
    wait_stream(op);
  }
}

void NcclCommunicator::reduce_scatter_sum_v(const float* in, float* out, const std::vector<size_t>& counts) {
  const char* op = "reduce_scatter_sum";
  ensure_usable(op);
  require_one_size_per_rank("reduce_scatter_sum_v", "counts", counts, world_);
  follow_compute(op);
  const std::vector<size_t> displ = block_offsets(counts);
  const size_t longest = *std::max_element(counts.begin(), counts.end());
  for (int r = 0; r < world_; ++r) {
    // Every slice but this rank's own leaves this rank once (ring reduce-scatter, or the chain of a
    // ring reduce to the slice's owner): the MPI path's count.
    if (r != rank_) bytes_sent_ += counts[r] * sizeof(float);
  }
  const bool even = std::all_of(counts.begin(), counts.end(), [&](size_t n) { return n == counts[0]; });
  if (even && counts[0] <= max_count_) {
    if (counts[0] > 0) {
      settle(ncclReduceScatter(in, out, counts[0], ncclFloat32, ncclSum, comm_, stream_), op, "ncclReduceScatter");
      wait_stream(op);
    }
    return;
  }
  // Uneven slices (row-aligned ZeRO shards) or longer than one call: no padding; a group of one
  // ncclReduce per slice, rooted at its owner; round k sums elements [k·max, (k+1)·max) of every slice.
  for (const Chunk& c : split_into_chunks(longest, max_count_)) {
    group_start(op);
    for (int r = 0; r < world_; ++r) {
      if (counts[r] <= c.offset) continue;
      const size_t count = std::min(c.count, counts[r] - c.offset);
      const float* part = in + displ[r] + c.offset;
      // The receive buffer matters on the root only.
      float* recv = r == rank_ ? out + c.offset : const_cast<float*>(part);
      settle(ncclReduce(part, recv, count, ncclFloat32, ncclSum, r, comm_, stream_), op, "ncclReduce");
    }
    group_end(op);
    wait_stream(op);
  }
}

void NcclCommunicator::all_to_all_v(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                                    const std::vector<size_t>& recv_bytes) {
  const char* op = "all_to_all_v";
  ensure_usable(op);
  require_all_to_all_sizes(send_bytes, recv_bytes, rank_, world_);
  follow_compute(op);
  const std::vector<size_t> so = block_offsets(send_bytes), ro = block_offsets(recv_bytes);
  std::vector<const unsigned char*> s(world_);
  std::vector<unsigned char*> r(world_);
  for (int p = 0; p < world_; ++p) {
    s[p] = static_cast<const unsigned char*>(send) + so[p];
    r[p] = static_cast<unsigned char*>(recv) + ro[p];
    if (p != rank_) bytes_sent_ += send_bytes[p];
  }
  // One group of sends and receives (a lone ncclSend blocks the GPU until matched); this rank's own
  // block goes through NCCL too (send to self). The k-th chunk to a peer matches the peer's k-th
  // receive: NCCL keeps the order of the operations between two ranks.
  group_start(op);
  for (int p = 0; p < world_; ++p) {
    for (const Chunk& c : split_into_chunks(send_bytes[p], max_count_))
      settle(ncclSend(s[p] + c.offset, c.count, ncclUint8, p, comm_, stream_), op, "ncclSend");
    for (const Chunk& c : split_into_chunks(recv_bytes[p], max_count_))
      settle(ncclRecv(r[p] + c.offset, c.count, ncclUint8, p, comm_, stream_), op, "ncclRecv");
  }
  group_end(op);
  wait_stream(op);
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  const char* op = "split";
  ensure_usable(op);
  if (color < 0) throw std::invalid_argument("split: color must be >= 0 (got " + std::to_string(color) + ")");
  ncclComm_t sub = nullptr;
  ncclConfig_t config = nonblocking_config();
  settle(ncclCommSplit(comm_, color, key, &sub, &config), op, "ncclCommSplit");
  // The new communicator is non-blocking as well: poll its own state until it is ready.
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    ncclResult_t state = ncclInProgress;
    if (sub == nullptr || ncclCommGetAsyncError(sub, &state) != ncclSuccess) state = ncclInternalError;
    if (state == ncclSuccess) break;
    const auto now = std::chrono::steady_clock::now();
    if (state != ncclInProgress || now > deadline) {
      if (sub != nullptr) ncclCommAbort(sub);
      fail(op,
           state != ncclInProgress ? "ncclCommSplit: " + nccl_text(state)
                                   : "ncclCommSplit: no progress for " + seconds_text(timeout_s_) + " s (ECO_DIST_TIMEOUT_S)",
           "every rank must call split; a peer rank probably failed, see its output");
    }
    back_off(now - start);
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(sub, device_, compute_, timeout_s_, max_count_));
}

void NcclCommunicator::barrier() {
  const char* op = "barrier";
  ensure_usable(op);
  settle(ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_), op, "ncclAllReduce");
  wait_stream(op);
}

#endif  // ECO_WITH_NCCL

}  // namespace eco

// Compiled only in an MPI build (the glob of src/dist picks it up either way).
#ifdef ECO_WITH_MPI
#include "dist/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>

#include "core/error.h"

namespace eco {

namespace {
template <typename T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
constexpr int kTag = 7201;
std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}
}  // namespace

MpiCommunicator::MpiCommunicator(double timeout_s, size_t max_count) : timeout_s_(timeout_s), max_count_(max_count) {
  if (max_count_ == 0 || max_count_ > static_cast<size_t>(INT_MAX))
    throw std::invalid_argument("MpiCommunicator: max_count must be in [1, INT_MAX]");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // FUNNELED: OpenMP threads compute, only the main thread calls MPI.
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw SystemError("MPI_Init_thread failed: check the MPI installation and the launcher (mpirun/srun)");
    owns_init_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "init", "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "init", "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "init", "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &world_), "init", "MPI_Comm_size");
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, double timeout_s, size_t max_count)
    : comm_(comm), timeout_s_(timeout_s), max_count_(max_count) {
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "split", "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "split", "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &world_), "split", "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  // Finalize only on a clean exit: after a failure (or while an exception unwinds, possibly on this
  // rank alone) the peers may never reach MPI_Finalize, and waiting for them would turn an error
  // into a hang. Exiting without it makes the launcher stop the other ranks.
  if (failed_ || std::uncaught_exceptions() > 0) return;
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_init_ && !finalized) MPI_Finalize();
}

std::string MpiCommunicator::describe() const {
  return "MPI rank " + std::to_string(rank_) + " of " + std::to_string(world_);
}

void MpiCommunicator::ensure_usable(const char* op) const {
  if (failed_)
    throw SystemError(std::string("MPI ") + op + " on rank " + std::to_string(rank_) + " of " +
                      std::to_string(world_) + ": the communicator failed earlier in this run and cannot be used");
}

void MpiCommunicator::check(int rc, const char* op, const char* call) {
  if (rc == MPI_SUCCESS) return;
  failed_ = true;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw SystemError(std::string("MPI ") + op + " failed on rank " + std::to_string(rank_) + " of " +
                    std::to_string(world_) + " (" + call + ": " + text +
                    "); a peer rank probably exited, see its output");
}

void MpiCommunicator::wait_all(std::vector<MPI_Request>& reqs, const char* op) {
  if (reqs.empty()) return;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s_);
  // Poll instead of MPI_Waitall so a silent peer cannot block us forever. Busy-poll for the first
  // 2 ms (a message between live ranks takes microseconds), then back off to 1 ms sleeps so a rank
  // waiting on a slow peer leaves the CPU to it (CI runs 3 ranks on 2 cores).
  for (;;) {
    int done = 0;
    check(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE), op, "MPI_Testall");
    if (done) return;
    const auto now = clock::now();
    if (now > deadline) {
      failed_ = true;
      throw SystemError(std::string("MPI ") + op + " on rank " + std::to_string(rank_) + " of " +
                        std::to_string(world_) + ": no progress for " + seconds_text(timeout_s_) +
                        " s (ECO_DIST_TIMEOUT_S); a peer rank failed or stopped, see the other ranks' output");
    }
    const auto waited = now - start;
    if (waited > std::chrono::milliseconds(100))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    else if (waited > std::chrono::milliseconds(2))
      std::this_thread::yield();
  }
}

template <typename T>
void MpiCommunicator::exchange_and_sum(const std::vector<const T*>& in, T* out, const std::vector<size_t>& count,
                                       const char* op) {
  const size_t mine = count[rank_];
  staging_.resize(static_cast<size_t>(world_) * mine * sizeof(T));
  T* stage = reinterpret_cast<T*>(staging_.data());
  std::vector<MPI_Request> reqs;
  reqs.reserve(2 * world_);
  for (int p = 0; p < world_; ++p) {
    if (p == rank_) continue;
    if (mine > 0) {
      reqs.emplace_back();
      check(MPI_Irecv(stage + p * mine, static_cast<int>(mine), mpi_type<T>(), p, kTag, comm_, &reqs.back()), op,
            "MPI_Irecv");
    }
    if (count[p] > 0) {
      bytes_sent_ += count[p] * sizeof(T);
      reqs.emplace_back();
      check(MPI_Isend(in[p], static_cast<int>(count[p]), mpi_type<T>(), p, kTag, comm_, &reqs.back()), op,
            "MPI_Isend");
    }
  }
  wait_all(reqs, op);
  // The fixed order 0..world-1 is what makes the sum independent of timing and MPI's algorithms.
  std::vector<const T*> src(world_);
  for (int q = 0; q < world_; ++q) src[q] = q == rank_ ? in[rank_] : stage + q * mine;
  for (size_t i = 0; i < mine; ++i) {
    T acc = src[0][i];
    for (int q = 1; q < world_; ++q) acc += src[q][i];
    out[i] = acc;
  }
}

template <typename T>
void MpiCommunicator::all_reduce_impl(T* buf, size_t n, const char* op) {
  ensure_usable(op);
  if (world_ == 1) return;
  // Each piece: reduce-scatter by explicit exchange (rank r sums slice r), then all-gather the sums.
  for (const Chunk& c : split_into_chunks(n, max_count_)) {
    std::vector<size_t> count(world_), displ(world_);
    std::vector<int> icount(world_), idispl(world_);
    std::vector<const T*> in(world_);
    for (int r = 0; r < world_; ++r) {
      displ[r] = c.count * r / world_;
      count[r] = c.count * (r + 1) / world_ - displ[r];
      in[r] = buf + c.offset + displ[r];
      icount[r] = static_cast<int>(count[r]);
      idispl[r] = static_cast<int>(displ[r]);
    }
    exchange_and_sum<T>(in, buf + c.offset + displ[rank_], count, op);
    bytes_sent_ += count[rank_] * sizeof(T) * static_cast<size_t>(world_ - 1);
    std::vector<MPI_Request> req(1);
    check(MPI_Iallgatherv(MPI_IN_PLACE, 0, mpi_type<T>(), buf + c.offset, icount.data(), idispl.data(), mpi_type<T>(),
                          comm_, &req[0]),
          op, "MPI_Iallgatherv");
    wait_all(req, op);
  }
}

void MpiCommunicator::all_reduce_sum(float* buf, size_t n) { all_reduce_impl(buf, n, "all_reduce_sum(float)"); }
void MpiCommunicator::all_reduce_sum(double* buf, size_t n) { all_reduce_impl(buf, n, "all_reduce_sum(double)"); }

void MpiCommunicator::reduce_scatter_sum_v(const float* in, float* out, const std::vector<size_t>& counts) {
  const char* op = "reduce_scatter_sum";
  ensure_usable(op);
  require_one_size_per_rank("reduce_scatter_sum_v", "counts", counts, world_);
  const std::vector<size_t> displ = block_offsets(counts);
  const size_t longest = *std::max_element(counts.begin(), counts.end());
  // Round k moves elements [k*max, (k+1)*max) of every slice.
  for (const Chunk& c : split_into_chunks(longest, max_count_)) {
    std::vector<size_t> count(world_);
    std::vector<const float*> part(world_);
    for (int r = 0; r < world_; ++r) {
      count[r] = counts[r] > c.offset ? std::min(c.count, counts[r] - c.offset) : 0;
      part[r] = in + displ[r] + c.offset;
    }
    exchange_and_sum<float>(part, out + c.offset, count, op);
  }
}

void MpiCommunicator::broadcast(void* buf, size_t bytes, int root) {
  const char* op = "broadcast";
  ensure_usable(op);
  if (root < 0 || root >= world_)
    throw std::invalid_argument("broadcast: root " + std::to_string(root) + " outside world " + std::to_string(world_));
  if (rank_ == root) bytes_sent_ += bytes * static_cast<size_t>(world_ - 1);
  for (const Chunk& c : split_into_chunks(bytes, max_count_)) {
    std::vector<MPI_Request> req(1);
    check(MPI_Ibcast(static_cast<unsigned char*>(buf) + c.offset, static_cast<int>(c.count), MPI_BYTE, root, comm_,
                     &req[0]),
          op, "MPI_Ibcast");
    wait_all(req, op);
  }
}

void MpiCommunicator::all_gather(const void* in, void* out, size_t bytes_per_rank) {
  const char* op = "all_gather";
  ensure_usable(op);
  auto* dst = static_cast<unsigned char*>(out);
  const bool in_place = in == dst + static_cast<size_t>(rank_) * bytes_per_rank;
  bytes_sent_ += bytes_per_rank * static_cast<size_t>(world_ - 1);
  for (const Chunk& c : split_into_chunks(bytes_per_rank, max_count_)) {
    // One piece of every rank's block: c.count bytes, then a stride of bytes_per_rank to the next
    // rank's block, so the receive needs no int displacement however long the blocks are.
    MPI_Datatype piece = MPI_DATATYPE_NULL, strided = MPI_DATATYPE_NULL;
    check(MPI_Type_contiguous(static_cast<int>(c.count), MPI_BYTE, &piece), op, "MPI_Type_contiguous");
    check(MPI_Type_create_resized(piece, 0, static_cast<MPI_Aint>(bytes_per_rank), &strided), op,
          "MPI_Type_create_resized");
    check(MPI_Type_commit(&strided), op, "MPI_Type_commit");
    std::vector<MPI_Request> req(1);
    const void* send = in_place ? MPI_IN_PLACE : static_cast<const unsigned char*>(in) + c.offset;
    int rc = MPI_Iallgather(send, static_cast<int>(c.count), MPI_BYTE, dst + c.offset, 1, strided, comm_, &req[0]);
    MPI_Type_free(&piece);
    check(rc, op, "MPI_Iallgather");
    try {
      wait_all(req, op);
    } catch (...) {
      MPI_Type_free(&strided);
      throw;
    }
    MPI_Type_free(&strided);
  }
}

void MpiCommunicator::exchange_blocks(const std::vector<const unsigned char*>& send,
                                      const std::vector<size_t>& send_bytes, const std::vector<unsigned char*>& recv,
                                      const std::vector<size_t>& recv_bytes, const char* op) {
  std::vector<MPI_Request> reqs;
  for (int p = 0; p < world_; ++p) {
    if (p == rank_) continue;
    // Chunks of one pair travel in order (MPI keeps the order of messages with one tag between two
    // ranks), so the k-th receive matches the k-th send.
    for (const Chunk& c : split_into_chunks(recv_bytes[p], max_count_)) {
      reqs.emplace_back();
      check(MPI_Irecv(recv[p] + c.offset, static_cast<int>(c.count), MPI_BYTE, p, kTag + 1, comm_, &reqs.back()), op,
            "MPI_Irecv");
    }
    for (const Chunk& c : split_into_chunks(send_bytes[p], max_count_)) {
      reqs.emplace_back();
      check(MPI_Isend(send[p] + c.offset, static_cast<int>(c.count), MPI_BYTE, p, kTag + 1, comm_, &reqs.back()), op,
            "MPI_Isend");
      bytes_sent_ += c.count;
    }
  }
  wait_all(reqs, op);
}

void MpiCommunicator::all_gather_v(const void* in, void* out, const std::vector<size_t>& bytes) {
  const char* op = "all_gather_v";
  ensure_usable(op);
  require_one_size_per_rank("all_gather_v", "sizes", bytes, world_);
  const std::vector<size_t> displ = block_offsets(bytes);
  std::vector<unsigned char*> recv(world_);
  for (int p = 0; p < world_; ++p) recv[p] = static_cast<unsigned char*>(out) + displ[p];
  if (in != recv[rank_] && bytes[rank_] > 0) std::memmove(recv[rank_], in, bytes[rank_]);
  std::vector<const unsigned char*> send(world_, recv[rank_]);
  std::vector<size_t> send_bytes(world_, bytes[rank_]);
  exchange_blocks(send, send_bytes, recv, bytes, op);
}

void MpiCommunicator::all_to_all_v(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                                   const std::vector<size_t>& recv_bytes) {
  const char* op = "all_to_all_v";
  ensure_usable(op);
  require_all_to_all_sizes(send_bytes, recv_bytes, rank_, world_);
  const std::vector<size_t> so = block_offsets(send_bytes), ro = block_offsets(recv_bytes);
  std::vector<const unsigned char*> s(world_);
  std::vector<unsigned char*> r(world_);
  for (int p = 0; p < world_; ++p) {
    s[p] = static_cast<const unsigned char*>(send) + so[p];
    r[p] = static_cast<unsigned char*>(recv) + ro[p];
  }
  if (send_bytes[rank_] > 0) std::memcpy(r[rank_], s[rank_], send_bytes[rank_]);
  exchange_blocks(s, send_bytes, r, recv_bytes, op);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  const char* op = "split";
  ensure_usable(op);
  MPI_Comm sub = MPI_COMM_NULL;
  check(MPI_Comm_split(comm_, color, key, &sub), op, "MPI_Comm_split");
  return std::unique_ptr<Communicator>(new MpiCommunicator(sub, timeout_s_, max_count_));
}

void MpiCommunicator::barrier() {
  const char* op = "barrier";
  ensure_usable(op);
  std::vector<MPI_Request> req(1);
  check(MPI_Ibarrier(comm_, &req[0]), op, "MPI_Ibarrier");
  wait_all(req, op);
}

}  // namespace eco
#endif  // ECO_WITH_MPI

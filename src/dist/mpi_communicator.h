#pragma once
// MPI (CPU collectives, host buffers). Built only when CMake finds MPI (ECO_WITH_MPI). Owns
// MPI_Init/MPI_Finalize unless MPI was already initialised. Works on a private duplicate of
// MPI_COMM_WORLD with MPI_ERRORS_RETURN, so an MPI failure becomes a SystemError instead of the
// default abort; every operation is non-blocking and polled against a deadline, so a peer that
// died or stopped answering gives an error within `timeout_s` rather than a hang.
#include <mpi.h>

#include <climits>

#include "dist/communicator.h"

namespace eco {

class MpiCommunicator final : public Communicator {
 public:
  // max_count: the most elements in one MPI message (INT_MAX: MPI counts are int); tests pass a
  // small value to exercise the chunking. Also bounds the staging memory of the sums.
  explicit MpiCommunicator(double timeout_s = 600.0, size_t max_count = kDefaultMaxCount);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

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
  std::unique_ptr<Communicator> split(int color, int key) override;
  void barrier() override;

  // 2^24 elements per message: far below INT_MAX, and keeps the staging buffer of a sum at
  // world * 64 MiB for fp32 however long the buffer.
  static constexpr size_t kDefaultMaxCount = size_t{1} << 24;

 private:
  template <typename T>
  void all_reduce_impl(T* buf, size_t n, const char* op);
  // One exchange round: peer p's part of this round starts at in[p] (count[p] elements, each
  // <= max_count_); out = rank-order sum of every rank's part for this rank.
  template <typename T>
  void exchange_and_sum(const std::vector<const T*>& in, T* out, const std::vector<size_t>& count, const char* op);
  void check(int rc, const char* op, const char* call);
  void wait_all(std::vector<MPI_Request>& reqs, const char* op);
  void ensure_usable(const char* op) const;
  // A sub-communicator made by split(): owns `comm`, never MPI_Init/Finalize.
  MpiCommunicator(MPI_Comm comm, double timeout_s, size_t max_count);
  // Point-to-point exchange of byte blocks with every peer (chunked below max_count_); blocks of
  // size 0 are not sent. send[p]/recv[p] for p == rank_ are ignored.
  void exchange_blocks(const std::vector<const unsigned char*>& send, const std::vector<size_t>& send_bytes,
                       const std::vector<unsigned char*>& recv, const std::vector<size_t>& recv_bytes, const char* op);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int world_ = 1;
  double timeout_s_;
  size_t max_count_;
  bool owns_init_ = false;
  bool failed_ = false;
  std::vector<unsigned char> staging_;
};

}  // namespace eco

#pragma once
// The model's view of expert parallelism (DESIGN.md §6, docs/moe.md): a group of ranks that
// together hold every expert of a layer, and a personalised exchange among them. The model calls
// it inside the MoE forward and backward; src/dist implements it over a Communicator, so the model
// itself knows nothing of MPI or NCCL.
#include <cstddef>
#include <vector>

namespace eco {

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  virtual int rank() const = 0;  // in the expert-parallel group
  virtual int size() const = 0;
  // Block p of `send` (send_bytes[p] bytes, blocks back to back in rank order) goes to group rank
  // p; recv gets rank p's block for this rank at the same place, rank after rank. Every rank of
  // the group calls it with matching sizes. exchange_host moves host memory (the per-expert row
  // counts), exchange the backend's buffers (the token rows and their gradients).
  virtual void exchange_host(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                             const std::vector<size_t>& recv_bytes) = 0;
  virtual void exchange(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                        const std::vector<size_t>& recv_bytes) = 0;
};

}  // namespace eco

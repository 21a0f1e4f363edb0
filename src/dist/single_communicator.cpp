#include "dist/single_communicator.h"

#include <cstring>
#include <stdexcept>

namespace eco {

void SingleCommunicator::broadcast(void*, size_t, int root) {
  if (root != 0) throw std::invalid_argument("broadcast: root " + std::to_string(root) + " outside a world of 1");
}

void SingleCommunicator::all_gather(const void* in, void* out, size_t bytes_per_rank) {
  if (in != out && bytes_per_rank > 0) std::memmove(out, in, bytes_per_rank);
}

void SingleCommunicator::reduce_scatter_sum_v(const float* in, float* out, const std::vector<size_t>& counts) {
  if (counts.size() != 1) throw std::invalid_argument("reduce_scatter_sum_v: need one count per rank (world 1)");
  if (in != out && counts[0] > 0) std::memmove(out, in, counts[0] * sizeof(float));
}

void SingleCommunicator::all_gather_v(const void* in, void* out, const std::vector<size_t>& bytes) {
  if (bytes.size() != 1) throw std::invalid_argument("all_gather_v: need one size per rank (world 1)");
  if (in != out && bytes[0] > 0) std::memmove(out, in, bytes[0]);
}

void SingleCommunicator::all_to_all_v(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                                      const std::vector<size_t>& recv_bytes) {
  if (send_bytes.size() != 1 || recv_bytes.size() != 1 || send_bytes[0] != recv_bytes[0])
    throw std::invalid_argument("all_to_all_v: a world of 1 sends its one block to itself");
  if (send_bytes[0] > 0) std::memcpy(recv, send, send_bytes[0]);
}

std::unique_ptr<Communicator> SingleCommunicator::split(int, int) { return std::make_unique<SingleCommunicator>(); }

}  // namespace eco

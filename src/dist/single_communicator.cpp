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

}  // namespace eco

#include "dist/data_parallel.h"

#include <algorithm>
#include <stdexcept>

namespace eco {

GradientAllReduce::GradientAllReduce(Communicator& comm, Ops& ops, bool host_buffers, size_t bucket_floats)
    : comm_(comm), ops_(ops), host_buffers_(host_buffers), bucket_floats_(bucket_floats) {
  if (bucket_floats_ == 0) throw std::invalid_argument("GradientAllReduce: bucket_floats must be at least 1");
}

void GradientAllReduce::all_reduce(float* grads, size_t n) {
  if (comm_.world() == 1) return;
  for (const Chunk& b : split_into_chunks(n, bucket_floats_)) {
    if (host_buffers_) {
      comm_.all_reduce_sum(grads + b.offset, b.count);
      continue;
    }
    staging_.resize(std::min(n, bucket_floats_));
    ops_.copy_to_host(staging_.data(), grads + b.offset, b.count * sizeof(float));
    comm_.all_reduce_sum(staging_.data(), b.count);
    ops_.copy_from_host(grads + b.offset, staging_.data(), b.count * sizeof(float));
  }
}

}  // namespace eco

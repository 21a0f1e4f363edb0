#pragma once
// Data parallel (DESIGN.md §6): every rank holds the whole model and optimizer state, computes the
// gradient of its own share of the global batch, and the shares are summed before the update, which
// every rank then applies identically. This file is the one place the gradient crosses ranks, so
// ZeRO-1 (reduce-scatter, sharded update, FP8 all-gather) replaces it without touching the trainer.
#include <cstddef>
#include <vector>

#include "dist/communicator.h"
#include "model/ops.h"

namespace eco {

class GradientAllReduce {
 public:
  // 2^22 floats (16 MiB) per bucket: large enough that the per-message latency is noise, small
  // enough that a device backend's host staging buffer stays small.
  static constexpr size_t kBucketFloats = size_t{1} << 22;

  // host_buffers: the backend's buffers are host memory (the CPU backend), summed in place.
  // Otherwise each bucket goes through a host staging buffer (copy_to_host, sum, copy_from_host)
  // until a communicator that sums device buffers (NCCL) takes over.
  GradientAllReduce(Communicator& comm, Ops& ops, bool host_buffers, size_t bucket_floats = kBucketFloats);

  // grads (n floats, a buffer of `ops`) = the rank-order sum over ranks of every rank's grads,
  // bit-identical on every rank. The caller folds 1/world into backward()'s loss scale, so the sum
  // is the gradient of the mean loss over the global batch. Nothing to do in a world of one.
  void all_reduce(float* grads, size_t n);

 private:
  Communicator& comm_;
  Ops& ops_;
  bool host_buffers_;
  size_t bucket_floats_;
  std::vector<float> staging_;
};

}  // namespace eco

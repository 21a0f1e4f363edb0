#pragma once
// ZeRO-1 (DESIGN.md §6, docs/distributed.md): the flat parameter space [0, num_params) — the order
// of GPT::grads() — is cut into one contiguous range per rank. Each step the ranks reduce-scatter
// the gradient (rank r receives the rank-order sum of its range), each updates only its own rows
// and keeps optimizer moments for them only, then the stored weights (FP8 codes + scales, fp32
// values of the tensors that are not quantized) are all-gathered so every rank holds the whole
// model for the next forward. Results do not depend on the cut: the update is element-wise and
// stochastic rounding is keyed by global tensor id and element index.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "dist/communicator.h"
#include "model/ops.h"
#include "quant/scaling.h"

namespace eco {

// One parameter tensor as the partition sees it: where it lies in the flat space and in how many
// rows a cut inside it must fall (align_rows; rows for "never inside").
struct ShardTensor {
  size_t offset = 0;  // in floats
  size_t rows = 1, cols = 0;
  size_t align_rows = 1;
};

// Rows a ZeRO cut inside a tensor must be a multiple of: a per-row scale is never split (1 row),
// 128-row bands for 128x128 blocks, the whole tensor for a per-tensor scale. Tensors that are not
// quantized update element-wise; they are cut at rows too (a 1-D tensor is one row).
size_t shard_align_rows(bool quantized, ScaleGranularity g, size_t rows);

// world + 1 offsets b with b[0] = 0, b[world] = Σ numel: rank r owns [b[r], b[r+1]). Every cut is
// at a tensor boundary or at a multiple of align_rows rows inside one; each cut is the allowed one
// nearest to r·total/world (ties to the lower), so ranges are as balanced as the alignment allows
// (a range may be empty when there are more ranks than places to cut). A pure function of the
// shapes, alignments and world. The tensors (any order) must tile [0, total) exactly.
std::vector<size_t> zero1_partition(const std::vector<ShardTensor>& tensors, int world);

// A buffer that is all-gathered after each step: rank r's block is bytes[r] bytes, blocks back to
// back in rank order from base (which is the same region on every rank).
struct GatherRegion {
  void* base = nullptr;
  std::vector<size_t> bytes;
  const char* what = "";
};

// The collectives of a ZeRO-1 step over backend buffers. host_buffers: the backend's buffers are
// host memory (the CPU backend) and go to the communicator in place; otherwise they are staged
// through host memory in pieces of at most stage_bytes per rank (until NCCL takes device buffers).
class Zero1 {
 public:
  static constexpr size_t kStageBytes = size_t{16} << 20;
  Zero1(Communicator& comm, Ops& ops, bool host_buffers, std::vector<size_t> bounds, size_t stage_bytes = kStageBytes);

  const std::vector<size_t>& bounds() const { return bounds_; }
  size_t own_begin() const { return bounds_[static_cast<size_t>(comm_.rank())]; }
  size_t own_count() const { return bounds_[static_cast<size_t>(comm_.rank()) + 1] - own_begin(); }

  // grads[own range] = the rank-order sum over the ranks of their grads[own range] (bit-identical
  // to what GradientAllReduce gives that range); the rest of grads is left stale.
  void reduce_scatter(float* grads);
  // Every region's blocks from their owners: afterwards every rank holds all of each region.
  void all_gather(const std::vector<GatherRegion>& regions);

 private:
  void gather_region(const GatherRegion& g);

  Communicator& comm_;
  Ops& ops_;
  bool host_buffers_;
  std::vector<size_t> bounds_;
  size_t stage_bytes_;
  std::vector<unsigned char> stage_, stage_out_;
};

}  // namespace eco

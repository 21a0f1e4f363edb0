#pragma once
// Checkpoint I/O of the optimizer's state (DESIGN.md §8). Every piece (fp32 values and masters,
// codes, scales, moments) is streamed between backend memory and the checkpoint's blobs
// values.f32, codes.bin, scales.f32, m.bin, v.bin through one small host buffer, never a host copy
// of the whole state. The blobs are the same for every backend and every world size, with or
// without ZeRO-1, so a CPU checkpoint resumes on the GPU and back, and a ZeRO-1 checkpoint of 2
// ranks resumes on 1 or 4, sharded or not.
#include <vector>

#include "dist/communicator.h"
#include "model/ops.h"
#include "optim/weight_optimizer.h"
#include "train/checkpoint_store.h"

namespace eco {

// Expert parallelism: where the checkpoint's tensors (the whole model's, in its order) are. A rank
// holds the tensors every rank has and its own experts; an expert's state is written by `owner`,
// the rank of the first expert-parallel group that holds it (0 for every other tensor).
struct CheckpointTensor {
  static constexpr size_t npos = static_cast<size_t>(-1);
  size_t local = npos;  // index in the optimizer's tensors, npos when this rank does not hold it
  size_t twin = npos;   // a tensor this rank holds whose pieces have the same sizes (its own expert
                        // of the same layer and role), for the ones it does not hold
  int owner = 0;
};
// The layout of an optimizer that holds every tensor: local = twin = position, owner 0.
std::vector<CheckpointTensor> whole_model_layout(const WeightOptimizer& opt);

// One process holding the whole state (no ZeRO-1 shard): writes every piece.
void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter& w);
// ZeRO-1 (opt.shard().world == comm.world()): every rank calls it; rank 0 passes its writer (or
// nullptr when it could not create one), the others nullptr. The pieces only their owners hold
// (moments, masters) are gathered to rank 0 a window of rows at a time (at most 16 MiB per
// collective), the rest is written from rank 0's own copy. A write failure on rank 0 does not stop
// the gathering, so no rank waits on a peer that left; it is rethrown once every piece has passed.
void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter* w, Communicator& comm);
// Expert parallelism: every rank calls it with the layout of its tensors; each expert's pieces go
// from their owner to rank 0 (at most 16 MiB per collective), so the checkpoint is the one a single
// process would write and resumes at any expert-parallel degree.
void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter* w, Communicator& comm,
                          const std::vector<CheckpointTensor>& layout);
// Every rank reads the whole checkpoint and keeps what it holds (its own rows of the moments).
// CheckpointError when a blob is larger or smaller than this model and mode need, a checksum does
// not match, or a scale is not finite and positive.
void load_optimizer_state(WeightOptimizer& opt, Ops& ops, const LoadedCheckpoint& ckpt);
// Expert parallelism: reads the whole checkpoint, keeps the tensors this rank holds.
void load_optimizer_state(WeightOptimizer& opt, Ops& ops, const LoadedCheckpoint& ckpt,
                          const std::vector<CheckpointTensor>& layout);

}  // namespace eco

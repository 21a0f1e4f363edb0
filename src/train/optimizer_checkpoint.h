#pragma once
// Checkpoint I/O of the optimizer's state (DESIGN.md §8). Every piece (fp32 values and masters,
// codes, scales, moments) is streamed between backend memory and the checkpoint's blobs
// values.f32, codes.bin, scales.f32, m.bin, v.bin through one small host buffer, never a host copy
// of the whole state. The blobs are the same for every backend, so a CPU checkpoint resumes on
// the GPU and back.
#include "model/ops.h"
#include "optim/weight_optimizer.h"
#include "train/checkpoint_store.h"

namespace eco {

void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter& w);
// CheckpointError when a blob is larger or smaller than this model and mode need, a checksum does
// not match, or a scale is not finite and positive.
void load_optimizer_state(WeightOptimizer& opt, Ops& ops, const LoadedCheckpoint& ckpt);

}  // namespace eco

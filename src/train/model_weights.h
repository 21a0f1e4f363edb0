#pragma once
// The model together with its optimizer in one weight mode: builds the GPT so that master-free
// modes allocate no fp32 copy of the quantized linears, feeds the forward the dequantized stored
// weights, initialises / imports / exports weights, and checkpoints everything.
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "dist/communicator.h"
#include "model/gpt.h"
#include "optim/weight_optimizer.h"

namespace eco {

class CheckpointWriter;
struct LoadedCheckpoint;
struct CheckpointTensor;

OptimizerSpec optimizer_spec_from(const Config& cfg);

// Expert parallelism: this rank's place in its expert-parallel group of `ranks`.
struct ExpertSplit {
  int rank = 0;
  int ranks = 1;
};

class ModelWeights : private LinearWeightSource {
 public:
  // shard: ZeRO-1's rank and world (the optimizer updates and keeps moments for its rows only).
  // experts: expert parallelism, this rank's place in its group (the model holds its experts only).
  ModelWeights(const ModelConfig& mcfg, Ops& ops, const OptimizerSpec& spec, bool quantize_activations,
               bool fp8_backward, OptimizerShard shard = {}, ExpertSplit experts = {});

  GPT& model() { return *model_; }
  WeightOptimizer& optimizer() { return *optim_; }
  const OptimizerSpec& spec() const { return optim_->spec(); }

  void init(uint64_t seed);                       // random init, then the initial quantization
  void import_llmc(const std::string& path);      // llm.c GPT-2 fp32 checkpoint as the initial weights
  void export_llmc(const std::string& path);      // current forward weights in llm.c format
  // grad_scale: the clip factor; *bad_count (backend int64) grows by the weights the update made
  // non-finite (WeightOptimizer::step).
  void step(float lr, int64_t t, float grad_scale, int64_t* bad_count) { optim_->step(lr, t, grad_scale, bad_count); }
  MemoryReport memory(int B, int T) const;

  // Streams every piece of optimizer state (weights, masters, codes, scales, moments) between
  // backend memory and the checkpoint's blobs through one small host buffer: never a host copy
  // of the whole state. The blob layout is the same for every backend, so a CPU checkpoint
  // resumes on the GPU and back. load: CheckpointError on any size or value mismatch.
  void save(CheckpointWriter& w) const;
  // ZeRO-1 or expert parallelism: every rank calls it, rank 0 with its writer (nullptr elsewhere);
  // see optimizer_checkpoint.h. The checkpoint is the one a single process would write.
  void save(CheckpointWriter* w, Communicator& comm) const;
  void load(const LoadedCheckpoint& ckpt);

 private:
  void linear_weight_values(size_t tensor_index, float* out) const override;
  const QuantRef* linear_weight_quant(size_t tensor_index) const override;
  void quantize_initial_weights(const GPT& source, uint64_t seed, bool from_source);
  // Where each tensor of the whole model is, for checkpoints (expert parallelism).
  std::vector<CheckpointTensor> checkpoint_layout() const;

  ModelConfig mcfg_;
  Ops& ops_;
  bool external_ = false;
  std::unique_ptr<GPT> model_;
  std::unique_ptr<WeightOptimizer> optim_;
  ExpertSplit experts_;
};

}  // namespace eco

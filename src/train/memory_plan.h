#pragma once
// The memory a training run will need, computed from the config before anything is allocated, and
// the memory this process may use; the trainer refuses a run that cannot fit (exit 6) instead of
// growing until the kernel kills it. The plan mirrors the model's parameter layout and the
// optimizer's buffers arithmetically; tests/test_memory_plan.cpp checks it against the buffers a
// real run allocates.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "model/gpt.h"
#include "model/model_config.h"
#include "optim/weight_optimizer.h"

namespace eco {

struct MemoryPlan {
  size_t num_params = 0;
  size_t linear_params = 0;      // the block linears (quantized in the quantized modes)
  size_t model_param_bytes = 0;  // fp32 parameters resident in the model (masters included)
  size_t grad_bytes = 0;
  size_t code_bytes = 0, scale_bytes = 0;  // stored low-precision copies
  size_t moment_bytes = 0;                 // m and v
  size_t activation_bytes = 0;             // activation buffer + external-weight scratch
  size_t optimizer_scratch_bytes = 0;      // per-panel scratch of the master-free update

  size_t total() const {
    return model_param_bytes + grad_bytes + code_bytes + scale_bytes + moment_bytes + activation_bytes +
           optimizer_scratch_bytes;
  }
};

// `ops`: the backend the run will use (what attention saves is its choice).
MemoryPlan plan_memory(const ModelConfig& mcfg, const OptimizerSpec& spec, const GPT::LinearQuantization& quant,
                       const Ops& ops, int B, int T);

struct MemoryLimit {
  size_t bytes = 0;
  std::string source;  // "physical memory", "cgroup memory.max", "RLIMIT_AS", ...
};

// The smallest of physical memory, the cgroup limit and the address-space / data rlimits; the
// environment variable ECO_MEMORY_LIMIT (bytes) lowers it further (for tests and shared machines).
MemoryLimit memory_limit();

// Throws SystemError (exit 6) when the plan exceeds the limit, naming both and what to reduce.
void check_memory_fits(const MemoryPlan& plan, const MemoryLimit& limit);

std::string format_bytes(double bytes);  // "1.50 GiB"

}  // namespace eco

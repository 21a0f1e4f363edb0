#pragma once
// The memory a training run will need, computed from the config before anything is allocated, and
// the memory this process may use; the trainer refuses a run that cannot fit (exit 6) instead of
// growing until the kernel kills it. The plan walks the model's own parameter layout
// (GPT::parameter_tensors) and mirrors the optimizer's buffers per tensor;
// tests/test_memory_plan.cpp checks it against the buffers a real run allocates. It is per rank:
// with a RankLayout it plans one rank's share under ZeRO-1 and expert parallelism (docs/memory.md).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "model/gpt.h"
#include "model/model_config.h"
#include "optim/weight_optimizer.h"

namespace eco {

struct MemoryPlan {
  size_t num_params = 0;         // parameters this rank holds (all of them without expert parallelism)
  size_t linear_params = 0;      // of those, the quantizable ones (quantized in the quantized modes)
  size_t weight_bytes = 0;       // fp32 values the forward reads (every tensor not stored quantized)
  size_t code_bytes = 0, scale_bytes = 0;  // stored low-precision copies of the quantized tensors
  size_t master_bytes = 0;       // fp32 masters of the quantized tensors (master, master_sr, bf16)
  size_t m_bytes = 0, v_bytes = 0;
  size_t grad_bytes = 0;
  size_t activation_bytes = 0;   // activation buffer + external-weight scratch (+ expert all-to-all buffers)
  size_t optimizer_scratch_bytes = 0;  // per-panel scratch of the CPU master-free update
  size_t gemm_scratch_bytes = 0;  // the CPU's quantized GEMM: its dequantized operands
  size_t state_bytes = 0;        // RoPE tables, MoE expert bias and router sums, the optimizer's counter

  size_t static_bytes() const { return weight_bytes + code_bytes + scale_bytes + master_bytes + m_bytes + v_bytes; }
  size_t total() const {
    return static_bytes() + grad_bytes + activation_bytes + optimizer_scratch_bytes + gemm_scratch_bytes + state_bytes;
  }
};

// How a run is spread over ranks (DESIGN.md §6). Non-expert tensors are replicated on all `world`
// ranks; each MoE layer's experts are split over `ep` ranks (each holds experts/ep of them), so an
// expert's data-parallel degree is world/ep. `zero` (ZeRO-1) shards the optimizer state (m, v and
// the fp32 masters) over a tensor's data-parallel ranks in row-aligned shards (whole scale groups:
// 1 row per-row, 128-row bands block128, the whole tensor per-tensor; element-wise for tensors that
// are not stored quantized); weights, codes, scales and the gradient buffer stay whole. A rank's
// figure is the largest shard of each tensor (rank 0's).
struct RankLayout {
  int world = 1;
  int ep = 1;
  bool zero = false;
};

// What the backend adds to the plan.
struct BackendFootprint {
  size_t attention_saved_floats = 0;  // per layer at the planned B, T (Ops::attention_saved_floats)
  // The CPU backend's own scratch: four fp32 panels for a master-free step, and the dequantized
  // operands of a quantized GEMM. The CUDA backend needs neither.
  bool cpu_scratch = true;
};

// `ops`: the backend the run will use (what attention saves is its choice; the CPU backends add
// their scratch). One rank, no sharding.
MemoryPlan plan_memory(const ModelConfig& mcfg, const OptimizerSpec& spec, const GPT::LinearQuantization& quant,
                       const Ops& ops, int B, int T);
// One rank of `layout` (ConfigError when ep does not divide the experts and the world size).
MemoryPlan plan_memory(const ModelConfig& mcfg, const OptimizerSpec& spec, const GPT::LinearQuantization& quant,
                       const BackendFootprint& backend, int B, int T, const RankLayout& layout);

// Rows of the largest of `dp` row-aligned shards of a tensor with `rows` rows, cut in units of
// `unit_rows` rows (the last unit may be short).
size_t largest_shard_rows(size_t rows, size_t unit_rows, int dp);

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

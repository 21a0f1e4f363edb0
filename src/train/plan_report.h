#pragma once
// eco_train --plan: the memory one rank needs, for every optim.mode side by side, whether that fits
// on an 80 GB and a 141 GB GPU, and the bytes each rank sends per optimizer step, computed from the
// config and a world size without allocating any model memory (docs/memory.md).
#include <cstddef>
#include <string>
#include <vector>

#include "core/config.h"
#include "model/model_config.h"
#include "optim/weight_optimizer.h"
#include "train/cli.h"
#include "train/memory_plan.h"

namespace eco {

// Bytes one rank sends per optimizer step (ring collectives; a ring all-reduce of P bytes over D
// ranks sends 2·(D−1)/D·P per rank, a reduce-scatter or all-gather (D−1)/D·P).
struct CommPlan {
  double grad_bytes = 0;        // dist.zero 0: all-reduce of the fp32 gradients; 1: their reduce-scatter
  double weight_gather_bytes = 0;  // dist.zero 1: all-gather of the stored weights (codes + scales, fp32 otherwise)
  double expert_all_to_all_bytes = 0;  // dist.ep > 1: tokens to their experts and back, forward and backward
  double total() const { return grad_bytes + weight_gather_bytes + expert_all_to_all_bytes; }
};

// Non-expert tensors reduce over all `world` ranks, experts over world/ep; the all-to-all moves
// fp32 rows of d_model, each token's top_k rows (balanced routing: (ep−1)/ep of them leave the
// rank), dispatch + combine, forward + backward, once per micro-batch of B×T tokens.
CommPlan plan_communication(const ModelConfig& mcfg, const OptimizerSpec& spec, int B, int T, int grad_accum,
                            const RankLayout& layout);

// What the CUDA backend adds to a plan at this B, T: its attention keeps one log-sum-exp per query
// row (src/cuda/cuda_attention.cu) and its optimizer step needs no panel scratch.
BackendFootprint cuda_footprint(const ModelConfig& mcfg, int B, int T);

// A GPU the report checks against: what cudaMemGetInfo reports as total on it.
struct GpuModel {
  const char* name;
  size_t visible_bytes;
};
// The H100 80 GB (81559 MiB) and the H200 141 GB (143771 MiB), as nvidia-smi reports them.
const GpuModel* report_gpus(size_t* count);
// Kept free on every GPU for what the plan does not count: the CUDA context, cuBLASLt's
// workspace, NCCL's buffers, transient GEMM scratch and allocator fragmentation.
constexpr size_t kGpuReserveBytes = size_t{2} << 30;

// The report's text for a resolved config at `world` ranks (dist.ep and dist.zero from the config).
// ConfigError when dist.ep does not divide the world size.
std::string plan_report(const Config& cfg, int world);

// The config as eco_train resolves it, except that data paths need not exist or be given (a plan
// reads no data). ConfigError for everything else the trainer's loading refuses.
Config load_config_for_plan(const std::string& path, const std::vector<std::string>& overrides);

// eco_train --config X --plan [--world N]: load_config_for_plan, prints plan_report to stdout,
// returns the exit code (0). Throws ConfigError like the trainer's config loading.
int run_plan(const CliArgs& args);

}  // namespace eco

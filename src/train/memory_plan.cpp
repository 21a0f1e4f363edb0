#include "train/memory_plan.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "dist/zero1.h"
#include "cpu/cpu_ops.h"
#include "cpu/guarded_ops.h"
#include "optim/moment_buffer.h"
#include "quant/scaling.h"

namespace eco {
namespace {

std::optional<size_t> read_number_file(const char* path) {
  std::ifstream f(path);
  std::string text;
  if (!(f >> text) || text == "max") return std::nullopt;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0') return std::nullopt;
  return static_cast<size_t>(v);
}

void add_into(MemoryPlan& sum, const MemoryPlan& p, size_t divisor) {
  sum.num_params += p.num_params / divisor;
  sum.linear_params += p.linear_params / divisor;
  sum.weight_bytes += p.weight_bytes / divisor;
  sum.code_bytes += p.code_bytes / divisor;
  sum.scale_bytes += p.scale_bytes / divisor;
  sum.master_bytes += p.master_bytes / divisor;
  sum.m_bytes += p.m_bytes / divisor;
  sum.v_bytes += p.v_bytes / divisor;
  sum.grad_bytes += p.grad_bytes / divisor;
}

void check_layout(const ModelConfig& mcfg, const RankLayout& layout) {
  const auto bad = [](const std::string& what) { throw ConfigError("memory plan: " + what); };
  if (layout.world < 1) bad("the world size must be at least 1");
  if (layout.ep < 1) bad("dist.ep must be at least 1");
  if (layout.ep > 1 && !mcfg.moe.enabled()) bad("dist.ep > 1 needs an MoE model (moe.experts > 0)");
  if (layout.ep > 1 && mcfg.moe.experts % layout.ep != 0)
    bad("dist.ep " + std::to_string(layout.ep) + " does not divide moe.experts (" + std::to_string(mcfg.moe.experts) +
        ")");
  if (layout.world % layout.ep != 0)
    bad("dist.ep " + std::to_string(layout.ep) + " does not divide the world size " + std::to_string(layout.world));
}

}  // namespace

size_t largest_shard_rows(size_t rows, size_t unit_rows, int dp) {
  if (unit_rows == 0 || unit_rows >= rows || dp <= 1) return rows;
  const size_t units = (rows + unit_rows - 1) / unit_rows, per_rank = (units + dp - 1) / static_cast<size_t>(dp);
  return std::min(rows, per_rank * unit_rows);
}

MemoryPlan plan_memory(const ModelConfig& mcfg, const OptimizerSpec& spec, const GPT::LinearQuantization& quant,
                       const Ops& ops, int B, int T) {
  const bool cpu = dynamic_cast<const CpuOps*>(&ops) || dynamic_cast<const GuardedOps*>(&ops);
  return plan_memory(mcfg, spec, quant, BackendFootprint{ops.attention_saved_floats(B, T, mcfg.n_head), cpu}, B, T,
                     RankLayout{});
}

MemoryPlan plan_memory(const ModelConfig& mcfg, const OptimizerSpec& spec, const GPT::LinearQuantization& quant,
                       const BackendFootprint& backend, int B, int T, const RankLayout& layout) {
  check_layout(mcfg, layout);
  const WeightModeTraits tr = traits_of(spec.mode);
  const bool external = tr.quantized && !tr.master;  // master-free: the model holds no fp32 copy of them
  // Bytes of m and v for n elements (block-wise formats: packed codes + block parameters).
  const auto m_of = [&](size_t n) { return MomentBuffer::storage_bytes(spec.state_format, MomentKind::Signed, n); };
  const auto v_of = [&](size_t n) { return MomentBuffer::storage_bytes(spec.state_format, MomentKind::Log, n); };
  const bool adam = spec.kind == OptimizerKind::AdamW;
  GptOptions options;
  options.external_linear_weights = external;
  // The experts' sums are divided by ep at the end: every MoE layer has `experts` tensors of each
  // expert shape and ep divides experts, so each rank's share is exact.
  MemoryPlan dense, experts;
  std::vector<ShardTensor> shards;
  size_t max_linear = 0, max_panel = 0, max_in = 0;
  for (const ParamTensor& t : GPT::parameter_tensors(mcfg, options)) {
    const bool expert = t.kind == ParamKind::Expert;
    MemoryPlan& p = expert ? experts : dense;
    const int dp = expert ? layout.world / layout.ep : layout.world;
    // Rows and columns as the optimizer sees the tensor (train/model_weights.cpp).
    const size_t n = t.numel, rows = t.shape.size() == 2 ? static_cast<size_t>(t.shape[0]) : 1, cols = n / rows;
    const bool quantized = tr.quantized && t.quantizable;
    size_t state_elems = n;  // of m, v and the master that this rank holds
    p.num_params += n;
    p.grad_bytes += n * sizeof(float);
    if (t.quantizable) p.linear_params += n;
    if (quantized) {
      const QuantRef q = stored_weight_ref(spec, rows, cols);
      p.code_bytes += q.code_bytes();
      p.scale_bytes += q.scale_bytes();
      if (layout.zero) state_elems = largest_shard_rows(rows, zero1_align_rows(spec, true, rows, cols), dp) * cols;
      // ZeRO-1 shards the masters' updates, not their storage: they live in the model's params().
      if (tr.master) p.master_bytes += n * sizeof(float);
      max_linear = std::max(max_linear, n);
      max_in = std::max(max_in, cols);
      max_panel = std::max(max_panel, cpu_master_free_panel_rows(q.granularity, rows, cols) * cols);
    } else {
      p.weight_bytes += n * sizeof(float);
      if (layout.zero) state_elems = largest_shard_rows(n, 1, dp);
    }
    p.m_bytes += m_of(state_elems);
    if (adam) p.v_bytes += v_of(state_elems);
    shards.push_back({t.offset, rows, cols, zero1_align_rows(spec, quantized, rows, cols)});
  }
  MemoryPlan plan;
  add_into(plan, dense, 1);
  add_into(plan, experts, static_cast<size_t>(layout.ep));
  if (layout.zero && layout.ep == 1) {
    // The trainer's own cut (src/dist/zero1.h): the largest rank's range of the flat space.
    // The moments are allocated per tensor (block-wise ones round each tensor to whole blocks).
    const std::vector<size_t> cut = zero1_partition(shards, layout.world);
    plan.m_bytes = plan.v_bytes = 0;
    for (int r = 0; r < layout.world; ++r) {
      size_t m = 0, v = 0;
      for (const ShardTensor& s : shards) {
        const size_t lo = std::max(s.offset, cut[r]), hi = std::min(s.offset + s.rows * s.cols, cut[r + 1]);
        if (hi <= lo) continue;
        m += m_of(hi - lo);
        v += adam ? v_of(hi - lo) : 0;
      }
      plan.m_bytes = std::max(plan.m_bytes, m);
      plan.v_bytes = std::max(plan.v_bytes, v);
    }
  }
  plan.activation_bytes = GPT::activation_layout_bytes(mcfg, tr.quantized ? quant : GPT::LinearQuantization{},
                                                       backend.attention_saved_floats, B, T, layout.ep > 1);
  // Quantized modes feed the forward through a dequantized-weight scratch of the largest one.
  if (tr.quantized) plan.activation_bytes += max_linear * sizeof(float);
  // Expert parallelism: the rows a rank's experts receive live in buffers of their own (input,
  // first GEMM, activation, output per MoE layer, and one backward scratch of the same four kinds),
  // grown to a quarter above the most rows seen. Balanced routing sends each rank N·top_k rows per
  // layer; an unbalanced router sends more (at worst ep times as many).
  if (layout.ep > 1) {
    const size_t rows = static_cast<size_t>(B) * static_cast<size_t>(T) * static_cast<size_t>(mcfg.moe.top_k);
    const size_t row_floats = 2 * static_cast<size_t>(mcfg.d_model) + static_cast<size_t>(mcfg.expert_in_width()) +
                              static_cast<size_t>(mcfg.expert_hidden());
    plan.activation_bytes +=
        (static_cast<size_t>(mcfg.moe_layer_count()) + 1) * (rows + rows / 4) * row_floats * sizeof(float);
  }
  if (external && backend.cpu_scratch) plan.optimizer_scratch_bytes = 4 * max_panel * sizeof(float);
  // The CPU multiplies a quantized weight by quantized activations after dequantizing both (at
  // most B·T rows: an expert sees each token once).
  if (tr.quantized && quant.quantize_activations && backend.cpu_scratch)
    plan.gemm_scratch_bytes = (static_cast<size_t>(B) * static_cast<size_t>(T) * max_in + max_linear) * sizeof(float);
  plan.state_bytes = GPT::state_buffer_bytes(mcfg) + sizeof(int64_t);
  return plan;
}

MemoryLimit memory_limit() {
  MemoryLimit lim;
  auto lower = [&](size_t bytes, const std::string& source) {
    if (bytes > 0 && (lim.bytes == 0 || bytes < lim.bytes)) lim = {bytes, source};
  };
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) lower(static_cast<size_t>(pages) * static_cast<size_t>(page), "physical memory");
  if (auto v2 = read_number_file("/sys/fs/cgroup/memory.max")) lower(*v2, "the cgroup limit (memory.max)");
  if (auto v1 = read_number_file("/sys/fs/cgroup/memory/memory.limit_in_bytes")) lower(*v1, "the cgroup limit");
  for (auto [resource, name] : {std::pair{RLIMIT_AS, "ulimit -v (RLIMIT_AS)"}, std::pair{RLIMIT_DATA, "RLIMIT_DATA"}}) {
    struct rlimit rl {};
    if (::getrlimit(resource, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) lower(static_cast<size_t>(rl.rlim_cur), name);
  }
  if (const char* env = std::getenv("ECO_MEMORY_LIMIT")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) lower(static_cast<size_t>(v), "ECO_MEMORY_LIMIT");
  }
  return lim;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 6) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

void check_memory_fits(const MemoryPlan& plan, const MemoryLimit& limit) {
  if (limit.bytes == 0 || plan.total() <= limit.bytes) return;
  throw SystemError("this run needs about " + format_bytes(static_cast<double>(plan.total())) + " (parameters and grads " +
                    format_bytes(static_cast<double>(plan.weight_bytes + plan.code_bytes + plan.scale_bytes +
                                                     plan.master_bytes + plan.grad_bytes)) +
                    ", optimizer state " + format_bytes(static_cast<double>(plan.m_bytes + plan.v_bytes)) +
                    ", activations " + format_bytes(static_cast<double>(plan.activation_bytes)) + ") but " +
                    limit.source + " allows " + format_bytes(static_cast<double>(limit.bytes)) +
                    "; reduce train.batch_size, train.seq_len or the model size, or use optim.state_format=bf16");
}

}  // namespace eco

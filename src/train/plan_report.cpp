#include "train/plan_report.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "model/gpt.h"
#include "train/config_schema.h"
#include "train/model_setup.h"
#include "train/model_weights.h"

namespace eco {
namespace {

constexpr WeightMode kModes[] = {WeightMode::Fp32,  WeightMode::Bf16, WeightMode::Bf16Sr,
                                 WeightMode::Master, WeightMode::MasterSr, WeightMode::Naive,
                                 WeightMode::Sr,     WeightMode::Eco,  WeightMode::EcoSr};
constexpr size_t kModeCount = sizeof kModes / sizeof kModes[0];

std::string printf_string(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a);
  return buf;
}

// A table of one row label and one cell per mode.
class ModeTable {
 public:
  explicit ModeTable(std::string title) {
    out_ = pad(title, kLabel);
    for (WeightMode m : kModes) out_ += pad_left(to_string(m), kCell);
    out_ += "\n";
  }
  void row(const std::string& label, const std::function<std::string(size_t)>& cell) {
    out_ += pad("  " + label, kLabel);
    for (size_t i = 0; i < kModeCount; ++i) out_ += pad_left(cell(i), kCell);
    out_ += "\n";
  }
  const std::string& text() const { return out_; }

 private:
  static constexpr size_t kLabel = 34, kCell = 10;
  static std::string pad(std::string s, size_t w) { return s.size() < w ? s + std::string(w - s.size(), ' ') : s + " "; }
  static std::string pad_left(std::string s, size_t w) { return s.size() < w ? std::string(w - s.size(), ' ') + s : " " + s; }
  std::string out_;
};

// GiB when the largest figure reaches one, MiB otherwise.
struct Unit {
  const char* name;
  double bytes;
  static Unit for_max(double max_bytes) {
    return max_bytes >= double(size_t{1} << 30) ? Unit{"GiB", double(size_t{1} << 30)} : Unit{"MiB", double(1 << 20)};
  }
  std::string of(double b) const { return printf_string("%.2f", b / bytes); }
};

std::string millions(double n) {
  return n >= 1e9 ? printf_string("%.3f B", n * 1e-9) : printf_string("%.2f M", n * 1e-6);
}

}  // namespace

BackendFootprint cuda_footprint(const ModelConfig& mcfg, int B, int T) {
  return BackendFootprint{static_cast<size_t>(B) * static_cast<size_t>(mcfg.n_head) * static_cast<size_t>(T), false};
}

const GpuModel* report_gpus(size_t* count) {
  static const GpuModel gpus[] = {{"80 GB", size_t{81559} << 20}, {"141 GB", size_t{143771} << 20}};
  *count = sizeof gpus / sizeof gpus[0];
  return gpus;
}

CommPlan plan_communication(const ModelConfig& mcfg, const OptimizerSpec& spec, int B, int T, int grad_accum,
                            const RankLayout& layout) {
  const WeightModeTraits tr = traits_of(spec.mode);
  CommPlan c;
  for (const ParamTensor& t : GPT::parameter_tensors(mcfg)) {
    const bool expert = t.kind == ParamKind::Expert;
    // Of the experts, this rank holds and reduces 1/ep.
    const double share = expert ? 1.0 / layout.ep : 1.0;
    const double dp = expert ? layout.world / layout.ep : layout.world;
    const double ring = (dp - 1.0) / dp;
    const double grads = 4.0 * static_cast<double>(t.numel) * share;
    if (!layout.zero) {
      c.grad_bytes += 2.0 * ring * grads;
      continue;
    }
    c.grad_bytes += ring * grads;
    double stored = 4.0 * static_cast<double>(t.numel);
    if (tr.quantized && t.quantizable) {
      const size_t rows = t.shape.size() == 2 ? static_cast<size_t>(t.shape[0]) : 1;
      const QuantRef q = stored_weight_ref(spec, rows, t.numel / rows);
      stored = static_cast<double>(q.code_bytes() + q.scale_bytes());
    }
    c.weight_gather_bytes += ring * stored * share;
  }
  if (layout.ep > 1) {
    const double rows = static_cast<double>(B) * T * mcfg.moe.top_k;
    const double per_layer = rows * mcfg.d_model * 4.0 * (layout.ep - 1.0) / layout.ep * 2.0 * 2.0;
    c.expert_all_to_all_bytes = per_layer * mcfg.moe_layer_count() * grad_accum;
  }
  return c;
}

std::string plan_report(const Config& cfg, int world) {
  const ModelConfig mcfg = model_config_from(cfg);
  const OptimizerSpec base = optimizer_spec_from(cfg);
  const int B = cfg.get_int32("train.batch_size"), T = cfg.get_int32("train.seq_len"),
            accum = cfg.get_int32("train.grad_accum");
  RankLayout layout;
  layout.world = world;
  layout.ep = cfg.get_int32("dist.ep");
  layout.zero = cfg.get_int("dist.zero") == 1;
  if (world < 1) throw ConfigError("--world: expected an integer >= 1, got " + std::to_string(world));
  if (world % layout.ep != 0)
    throw ConfigError("--world " + std::to_string(world) + " is not a multiple of dist.ep (" +
                      std::to_string(layout.ep) + "): an expert-parallel group must fit the world");
  const std::string device = cfg.get_string("train.device");
  GPT::LinearQuantization quant;
  quant.quantize_activations = cfg.get_bool("optim.quantize_activations");
  quant.quantize_output_grads = cfg.get_bool("optim.fp8_backward");
  BackendFootprint footprint = cuda_footprint(mcfg, B, T);
  if (device != "cuda") footprint = BackendFootprint{CpuOps().attention_saved_floats(B, T, mcfg.n_head), true};

  std::vector<MemoryPlan> plans;
  std::vector<CommPlan> comms;
  for (WeightMode m : kModes) {
    OptimizerSpec spec = base;
    spec.mode = m;
    plans.push_back(plan_memory(mcfg, spec, quant, footprint, B, T, layout));
    comms.push_back(plan_communication(mcfg, spec, B, T, accum, layout));
  }

  // The model in numbers, from its own layout.
  double total_params = 0, expert_params = 0, quantizable = 0;
  for (const ParamTensor& t : GPT::parameter_tensors(mcfg)) {
    total_params += static_cast<double>(t.numel);
    if (t.kind == ParamKind::Expert) expert_params += static_cast<double>(t.numel);
    if (t.quantizable) quantizable += static_cast<double>(t.numel);
  }
  std::string out = "memory plan: world " + std::to_string(world) + ", dist.ep " + std::to_string(layout.ep) +
                    ", dist.zero " + std::to_string(layout.zero ? 1 : 0) + ", train.device " + device + "\n";
  out += "model: " + std::string(mcfg.arch == Arch::GPT2 ? "gpt2" : "llama") + ", " + std::to_string(mcfg.n_layer) +
         " layers, d_model " + std::to_string(mcfg.d_model) + ", " + std::to_string(mcfg.n_head) + " heads, vocab " +
         std::to_string(mcfg.padded_vocab) + "; " + millions(total_params) + " parameters, " + millions(quantizable) +
         " in quantizable linears\n";
  if (mcfg.moe.enabled()) {
    const double active = total_params - expert_params + expert_params / mcfg.moe.experts * mcfg.moe.top_k;
    out += "moe: " + std::to_string(mcfg.moe_layer_count()) + " MoE layers x " + std::to_string(mcfg.moe.experts) +
           " experts (hidden " + std::to_string(mcfg.expert_hidden()) + "), top-" + std::to_string(mcfg.moe.top_k) +
           (mcfg.moe.shared_expert ? " + shared expert" : "") + ", " +
           (mcfg.moe.capacity_factor > 0 ? "capacity factor " + printf_string("%.2f", mcfg.moe.capacity_factor)
                                         : std::string("dropless")) +
           "; experts " + millions(expert_params) + ", " + millions(active) + " active per token\n";
    out += "per rank: " + std::to_string(mcfg.moe.experts / layout.ep) + " of " + std::to_string(mcfg.moe.experts) +
           " experts per MoE layer (expert data-parallel degree " + std::to_string(world / layout.ep) +
           "); every other tensor on all " + std::to_string(world) + " ranks; " + millions(plans[0].num_params) +
           " parameters held\n";
  }
  out += "micro-batch per rank: " + std::to_string(B) + " x " + std::to_string(T) +
         " tokens (train.batch_size x train.seq_len), grad_accum " + std::to_string(accum) + "; " +
         (base.kind == OptimizerKind::AdamW ? "AdamW" : "SGDM") + ", states " +
         to_string(base.state_format) + ", quantized weights " + describe_stored_weights(base) + "\n\n";

  double max_total = 0;
  for (const MemoryPlan& p : plans) max_total = std::max(max_total, static_cast<double>(p.total()));
  const Unit u = Unit::for_max(max_total);
  ModeTable mem(std::string("memory per rank (") + u.name + ")");
  auto bytes_row = [&](const char* label, size_t MemoryPlan::*field) {
    mem.row(label, [&](size_t i) { return u.of(static_cast<double>(plans[i].*field)); });
  };
  bytes_row("weights fp32", &MemoryPlan::weight_bytes);
  bytes_row("codes", &MemoryPlan::code_bytes);
  bytes_row("scales", &MemoryPlan::scale_bytes);
  bytes_row("master", &MemoryPlan::master_bytes);
  bytes_row("m", &MemoryPlan::m_bytes);
  bytes_row("v", &MemoryPlan::v_bytes);
  mem.row("static (weights..v)", [&](size_t i) { return u.of(static_cast<double>(plans[i].static_bytes())); });
  bytes_row("grads", &MemoryPlan::grad_bytes);
  bytes_row("activations", &MemoryPlan::activation_bytes);
  bytes_row("optimizer scratch", &MemoryPlan::optimizer_scratch_bytes);
  if (device != "cuda") bytes_row("quantized GEMM scratch", &MemoryPlan::gemm_scratch_bytes);
  bytes_row("other (rope, moe stats)", &MemoryPlan::state_bytes);
  mem.row("total", [&](size_t i) { return u.of(static_cast<double>(plans[i].total())); });
  size_t gpu_count = 0;
  const GpuModel* gpus = report_gpus(&gpu_count);
  for (size_t g = 0; g < gpu_count; ++g) {
    const double usable = static_cast<double>(gpus[g].visible_bytes - kGpuReserveBytes);
    mem.row(std::string("fits ") + gpus[g].name + " (" + printf_string("%.1f", usable / double(size_t{1} << 30)) +
                " GiB usable)",
            [&](size_t i) { return static_cast<double>(plans[i].total()) <= usable ? "yes" : "NO"; });
  }
  out += mem.text();

  double max_comm = 0;
  for (const CommPlan& c : comms) max_comm = std::max(max_comm, c.total());
  const Unit cu = Unit::for_max(max_comm);
  ModeTable comm(std::string("sent per rank per step (") + cu.name + ")");
  comm.row(layout.zero ? "grad reduce-scatter (fp32)" : "grad all-reduce (fp32)",
           [&](size_t i) { return cu.of(comms[i].grad_bytes); });
  comm.row("weight all-gather", [&](size_t i) { return cu.of(comms[i].weight_gather_bytes); });
  comm.row("expert all-to-all", [&](size_t i) { return cu.of(comms[i].expert_all_to_all_bytes); });
  comm.row("total", [&](size_t i) { return cu.of(comms[i].total()); });
  out += "\n" + comm.text();

  out += "\nassumptions:\n";
  if (layout.ep > 1)
    out += "- dist.ep > 1 runs ZeRO-1 off (the trainer refuses both together for now); the ZeRO-1 figures under "
           "expert parallelism are the planned layout\n";
  out += "- activations: the " + device + " backend's buffer for one micro-batch" +
         (device == "cuda" ? " (attention keeps B*heads*T log-sum-exp floats)" : " (attention keeps B*heads*T*T probabilities)") +
         ", balanced routing (each rank's experts see batch*top_k rows)" +
         (layout.ep > 1 ? ", plus the receiving experts' row buffers (a quarter of headroom; an unbalanced router needs more)" : "") + "\n";
  out += "- dist.zero 1 shards m and v as the trainer does (one row-aligned range of the flat parameter space per "
         "rank, the largest shown; per tensor under expert parallelism); masters, weights, codes, scales and the "
         "gradient buffer stay whole on every rank\n";
  out += "- fits: total <= what the GPU shows (80 GB: 81559 MiB, 141 GB: 143771 MiB) minus " +
         format_bytes(static_cast<double>(kGpuReserveBytes)) +
         " for the CUDA context, cuBLASLt and NCCL buffers and transient GEMM scratch\n";
  out += "- communication: ring collectives, per optimizer step; the all-to-all moves fp32 rows of d_model, "
         "dispatch and combine, forward and backward, (ep-1)/ep of them off the rank, per micro-batch\n";
  return out;
}

Config load_config_for_plan(const std::string& path, const std::vector<std::string>& overrides) {
  Schema schema = eco_train_schema();
  for (SchemaEntry& e : schema.entries) {
    if (e.type != ValueType::Path) continue;
    e.check_exists = false;
    e.required = false;
  }
  return Config::load(path, overrides, schema);
}

int run_plan(const CliArgs& args) {
  const Config cfg = load_config_for_plan(args.config_path, args.overrides);
  const std::string text = plan_report(cfg, args.world);
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace eco

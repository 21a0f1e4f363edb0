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
#include "quant/scaling.h"

namespace eco {
namespace {

struct Shape {
  size_t rows, cols;
  bool linear;
};

// Every parameter tensor of the model, in the shapes GPT::build_layout gives them.
std::vector<Shape> parameter_shapes(const ModelConfig& c) {
  const size_t L = static_cast<size_t>(c.n_layer), C = static_cast<size_t>(c.d_model),
               H = static_cast<size_t>(c.hidden()), Vp = static_cast<size_t>(c.padded_vocab);
  const bool gpt2 = c.arch == Arch::GPT2;
  const size_t mlp_in = gpt2 ? H : 2 * H;
  std::vector<Shape> s;
  s.push_back({Vp, C, false});
  if (gpt2) s.push_back({static_cast<size_t>(c.max_seq_len), C, false});
  for (size_t l = 0; l < L; ++l) {
    s.push_back({1, C, false});
    if (gpt2) s.push_back({1, C, false});
    s.push_back({3 * C, C, true});
    if (gpt2) s.push_back({1, 3 * C, false});
    s.push_back({C, C, true});
    if (gpt2) s.push_back({1, C, false});
    s.push_back({1, C, false});
    if (gpt2) s.push_back({1, C, false});
    s.push_back({mlp_in, C, true});
    if (gpt2) s.push_back({1, mlp_in, false});
    s.push_back({C, H, true});
    if (gpt2) s.push_back({1, C, false});
  }
  s.push_back({1, C, false});
  if (gpt2) s.push_back({1, C, false});
  if (!c.tied_head) s.push_back({Vp, C, false});
  return s;
}

std::optional<size_t> read_number_file(const char* path) {
  std::ifstream f(path);
  std::string text;
  if (!(f >> text) || text == "max") return std::nullopt;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0') return std::nullopt;
  return static_cast<size_t>(v);
}

}  // namespace

MemoryPlan plan_memory(const ModelConfig& mcfg, const OptimizerSpec& spec, const GPT::LinearQuantization& quant,
                       const Ops& ops, int B, int T) {
  const WeightModeTraits tr = traits_of(spec.mode);
  const bool external = tr.quantized && !tr.master;  // master-free: the model holds no fp32 linear
  const size_t code_size = tr.bf16 ? 2 : 1;
  const size_t state_size = spec.state_format == StateFormat::Fp32 ? 4 : 2;
  const size_t moments = spec.kind == OptimizerKind::AdamW ? 2 : 1;
  MemoryPlan p;
  size_t max_linear = 0, max_panel = 0;
  for (const Shape& s : parameter_shapes(mcfg)) {
    const size_t n = s.rows * s.cols;
    p.num_params += n;
    p.grad_bytes += n * sizeof(float);
    p.moment_bytes += moments * n * state_size;
    if (!s.linear) {
      p.model_param_bytes += n * sizeof(float);
      continue;
    }
    p.linear_params += n;
    max_linear = std::max(max_linear, n);
    max_panel = std::max(max_panel, cpu_master_free_panel_rows(spec.granularity, s.rows, s.cols) * s.cols);
    if (!external) p.model_param_bytes += n * sizeof(float);
    if (tr.quantized) {
      p.code_bytes += n * code_size;
      if (!tr.bf16) p.scale_bytes += ScaleLayout{spec.granularity, s.rows, s.cols}.count() * sizeof(float);  // bf16 needs none
    }
  }
  p.activation_bytes = GPT::activation_layout_bytes(mcfg, tr.quantized ? quant : GPT::LinearQuantization{}, ops, B, T);
  // Quantized modes feed the forward through a dequantized-weight scratch of the largest linear.
  if (tr.quantized) p.activation_bytes += max_linear * sizeof(float);
  if (external) {
    p.optimizer_scratch_bytes = 4 * max_panel * sizeof(float);  // four fp32 panel buffers
  }
  return p;
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
                    format_bytes(static_cast<double>(plan.model_param_bytes + plan.grad_bytes)) + ", optimizer state " +
                    format_bytes(static_cast<double>(plan.moment_bytes + plan.code_bytes + plan.scale_bytes)) +
                    ", activations " + format_bytes(static_cast<double>(plan.activation_bytes)) + ") but " +
                    limit.source + " allows " + format_bytes(static_cast<double>(limit.bytes)) +
                    "; reduce train.batch_size, train.seq_len or the model size, or use optim.state_format=bf16");
}

}  // namespace eco

// The memory plan, computed from the config before anything is allocated, against the buffers a
// model and optimizer of that shape really allocate (every category to the byte, dense and MoE),
// against the heap a real training step holds (malloc's own count), GPT-2 124M's published
// parameter count, the per-rank sharding rules, and the limit check that stops a run that cannot fit.
#include <catch2/catch.hpp>

#include <malloc.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "train/memory_plan.h"
#include "train/model_weights.h"

using namespace eco;

namespace {

ModelConfig shape(Arch arch, bool tied) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 300;
  c.padded_vocab = 384;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 48;
  c.max_seq_len = 40;
  c.tied_head = tied;
  return c;
}

// Three layers, MoE in layers 1 and 2 (first_layer 1), 4 experts of width 40, top-2.
ModelConfig moe_shape(Arch arch, bool shared_expert, float capacity_factor, bool quantize_dense) {
  ModelConfig c = shape(arch, true);
  c.n_layer = 3;
  c.moe.experts = 4;
  c.moe.top_k = 2;
  c.moe.first_layer = 1;
  c.moe.expert_hidden = 40;
  c.moe.activation = arch == Arch::Llama ? MlpActivation::SwiGlu : MlpActivation::Gelu;
  c.moe.shared_expert = shared_expert;
  c.moe.capacity_factor = capacity_factor;
  c.moe.quantize_dense_linears = quantize_dense;
  return c;
}

// Every category of the plan against the optimizer's and the model's count of their own buffers.
void check_plan_matches(const ModelConfig& mcfg, const OptimizerSpec& spec, bool fp8_backward, int B, int T) {
  CpuOps ops;
  ModelWeights w(mcfg, ops, spec, /*quantize_activations=*/true, fp8_backward);
  const MemoryReport r = w.memory(B, T);
  GPT::LinearQuantization q;
  q.quantize_activations = true;
  q.quantize_output_grads = fp8_backward;
  const MemoryPlan p = plan_memory(mcfg, spec, q, ops, B, T);
  CHECK(p.num_params == r.num_params);
  CHECK(p.num_params == w.model().num_params());
  CHECK(p.grad_bytes == r.grad_bytes);
  CHECK(p.m_bytes == r.m_bytes);
  CHECK(p.v_bytes == r.v_bytes);
  CHECK(p.scale_bytes == r.scale_bytes);
  CHECK(p.weight_bytes + p.code_bytes == r.weight_bytes);
  CHECK(p.master_bytes == r.master_bytes);
  CHECK(p.weight_bytes + p.master_bytes == w.model().resident_param_count() * sizeof(float));
  CHECK(p.activation_bytes == r.activation_bytes);
  if (traits_of(spec.mode).quantized) CHECK(p.linear_params == r.quantized_params);
}

// Bytes malloc hands out (arena and mmapped chunks): the CPU backend's buffers come from it.
size_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

}  // namespace

TEST_CASE("the memory plan equals what the model and optimizer allocate, in every mode") {
  const int B = 3, T = 17;
  for (Arch arch : {Arch::GPT2, Arch::Llama}) {
    for (bool tied : {true, false}) {
      if (arch == Arch::GPT2 && !tied) continue;
      for (const char* mode : {"fp32", "bf16", "master", "naive", "eco_sr"}) {
        for (ScaleGranularity g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor, ScaleGranularity::Block128}) {
          for (bool sgdm : {false, true}) {
            INFO(mode << " arch " << static_cast<int>(arch) << " tied " << tied << " granularity " << static_cast<int>(g)
                      << " sgdm " << sgdm);
            OptimizerSpec spec;
            spec.mode = parse_weight_mode(mode);
            spec.granularity = g;
            spec.kind = sgdm ? OptimizerKind::Sgdm : OptimizerKind::AdamW;
            spec.state_format = sgdm ? StateFormat::Bf16 : StateFormat::Fp32;
            check_plan_matches(shape(arch, tied), spec, /*fp8_backward=*/sgdm, B, T);
            // Block-wise states: packed codes and block parameters, tails included.
            spec.state_format = sgdm ? StateFormat::Int8 : StateFormat::Solo3;
            check_plan_matches(shape(arch, tied), spec, /*fp8_backward=*/sgdm, B, T);
          }
        }
      }
    }
  }
}

TEST_CASE("the memory plan equals what an MoE model and its optimizer allocate") {
  const int B = 2, T = 13;
  for (Arch arch : {Arch::GPT2, Arch::Llama}) {
    for (bool shared : {false, true}) {
      for (float capacity : {0.0f, 1.25f}) {
        for (bool quantize_dense : {false, true}) {
          for (const char* mode : {"fp32", "bf16", "master", "eco"}) {
            INFO(mode << " arch " << static_cast<int>(arch) << " shared " << shared << " capacity " << capacity
                      << " quantize_dense " << quantize_dense);
            OptimizerSpec spec;
            spec.mode = parse_weight_mode(mode);
            const ModelConfig mcfg = moe_shape(arch, shared, capacity, quantize_dense);
            check_plan_matches(mcfg, spec, /*fp8_backward=*/quantize_dense, B, T);
            // The experts are what MoE adds; without quantize_dense_linears they alone are quantizable.
            const MemoryPlan p = plan_memory(mcfg, spec, GPT::LinearQuantization{}, CpuOps{}, B, T);
            const size_t C = 48, EH = 40, EIN = arch == Arch::Llama ? 80 : 40;
            const size_t expert_params = 2 * 4 * (EIN * C + C * EH);
            if (!quantize_dense) CHECK(p.linear_params == expert_params);
            else CHECK(p.linear_params > expert_params);
          }
        }
      }
    }
  }
}

TEST_CASE("the plan's total is the heap a training step really holds (CPU backend)") {
  // One step first, so OpenMP and OpenBLAS have made their own allocations before counting.
  {
    CpuOps warm(2);
    ModelWeights w(shape(Arch::Llama, false), warm, OptimizerSpec{}, false, false);
    w.init(1);
    std::vector<int32_t> tokens(2 * 8, 5);
    w.model().forward(tokens.data(), tokens.data(), 2, 8);
  }
  const int B = 4, T = 32;
  struct Case {
    const char* what;
    ModelConfig mcfg;
  };
  ModelConfig dense = shape(Arch::Llama, false);
  dense.d_model = 96;
  dense.n_head = 4;
  dense.padded_vocab = 512;
  ModelConfig moe = moe_shape(Arch::Llama, true, 1.25f, false);
  moe.d_model = 96;
  moe.n_head = 4;
  moe.moe.expert_hidden = 96;
  ModelConfig moe_dropless = moe_shape(Arch::GPT2, false, 0.0f, false);
  for (const Case& c : {Case{"dense", dense}, Case{"moe capacity, shared expert", moe}, Case{"moe dropless", moe_dropless}}) {
    for (const char* mode : {"fp32", "master", "eco"}) {
      INFO(c.what << ", mode " << mode);
      OptimizerSpec spec;
      spec.mode = parse_weight_mode(mode);
      GPT::LinearQuantization q;
      q.quantize_activations = traits_of(spec.mode).quantized;
      CpuOps ops(2);
      const MemoryPlan plan = plan_memory(c.mcfg, spec, q, ops, B, T);
      const size_t before = heap_in_use();
      ModelWeights w(c.mcfg, ops, spec, /*quantize_activations=*/true, /*fp8_backward=*/false);
      w.init(7);
      std::vector<int32_t> tokens(static_cast<size_t>(B) * T);
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 37) % 300);
      w.model().zero_grad();
      w.model().forward(tokens.data(), tokens.data(), B, T);
      w.model().backward();
      w.step(1e-3f, 1, 1.0f, nullptr);
      const double held = static_cast<double>(heap_in_use() - before), planned = static_cast<double>(plan.total());
      INFO("held " << held << " B, planned " << planned << " B");
      CHECK(std::fabs(held - planned) <= 0.02 * planned);
    }
  }
}

TEST_CASE("GPT-2 124M plans llm.c's parameter count") {
  ModelConfig c;  // the defaults are GPT-2 small with llm.c's padded vocabulary
  c.padded_vocab = 50304;
  CpuOps ops;
  const MemoryPlan p = plan_memory(c, OptimizerSpec{}, GPT::LinearQuantization{}, ops, 4, 64);
  CHECK(p.num_params == 124475904);  // "num_parameters: 124475904" in llm.c's train_gpt2
  // fp32 AdamW: params, grads, m, v at 4 bytes each.
  CHECK(p.weight_bytes + p.grad_bytes + p.m_bytes + p.v_bytes == 16 * p.num_params);
}

TEST_CASE("per-rank plans: ZeRO-1 shards m and v by rows; expert parallelism splits the experts") {
  ModelConfig c = moe_shape(Arch::Llama, false, 0.0f, false);
  const BackendFootprint cuda{0, false};
  OptimizerSpec master;
  master.mode = WeightMode::Master;
  const MemoryPlan one = plan_memory(c, master, {}, cuda, 2, 8, RankLayout{});
  // world 4, ZeRO-1: the non-expert tensors' state shrinks about 4x, the experts' too (dp 4).
  const MemoryPlan z4 = plan_memory(c, master, {}, cuda, 2, 8, RankLayout{4, 1, true});
  CHECK(z4.weight_bytes == one.weight_bytes);
  CHECK(z4.code_bytes == one.code_bytes);
  CHECK(z4.grad_bytes == one.grad_bytes);
  CHECK(z4.master_bytes == one.master_bytes);  // masters stay whole: ZeRO-1 shards their updates only
  CHECK(z4.m_bytes < one.m_bytes / 4 + 4 * 1024);
  CHECK(z4.m_bytes >= one.m_bytes / 4);
  // ep 2 over world 4: each rank holds 2 of the 4 experts per MoE layer, their state over dp 2.
  const MemoryPlan e2 = plan_memory(c, master, {}, cuda, 2, 8, RankLayout{4, 2, false});
  const size_t expert_params = 2 * 4 * (80 * 48 + 48 * 40);
  CHECK(e2.num_params == one.num_params - expert_params / 2);
  CHECK(e2.code_bytes * 2 == one.code_bytes);  // only experts are quantized
  // The activations: the layout without the expert-side buffers (the sender keeps its rows and the
  // outputs that come back), plus the receiving experts' buffers (2 MoE layers) and one backward
  // scratch, each 40 rows (32 balanced + a quarter) of input, first GEMM, activation and output.
  const size_t rows = 2 * 8 * 2, dropped = 2 * rows * (80 + 40) + rows * (80 + 40);
  const size_t expert_side = 3 * (rows + rows / 4) * (48 + 80 + 40 + 48);
  CHECK(e2.activation_bytes == one.activation_bytes - dropped * 4 + expert_side * 4);
  CHECK_THROWS_AS(plan_memory(c, master, {}, cuda, 2, 8, RankLayout{6, 4, false}), ConfigError);  // 4 ∤ 6
  CHECK_THROWS_AS(plan_memory(c, master, {}, cuda, 2, 8, RankLayout{3, 3, false}), ConfigError);  // 3 ∤ 4 experts
  CHECK(largest_shard_rows(300, 128, 2) == 256);
  CHECK(largest_shard_rows(300, 128, 3) == 128);
  CHECK(largest_shard_rows(300, 1, 7) == 43);
  CHECK(largest_shard_rows(5, 300, 4) == 5);
}

TEST_CASE("a plan above the limit is a system error naming both figures; below it passes") {
  MemoryPlan p;
  p.weight_bytes = size_t{3} << 30;
  p.activation_bytes = size_t{1} << 30;
  const std::string msg = [&] {
    try {
      check_memory_fits(p, MemoryLimit{size_t{2} << 30, "ECO_MEMORY_LIMIT"});
    } catch (const SystemError& e) {
      CHECK(e.exit_code() == 6);
      return std::string(e.what());
    }
    FAIL("no SystemError");
    return std::string();
  }();
  CHECK(msg.find("4.00 GiB") != std::string::npos);
  CHECK(msg.find("ECO_MEMORY_LIMIT allows 2.00 GiB") != std::string::npos);
  CHECK_NOTHROW(check_memory_fits(p, MemoryLimit{size_t{5} << 30, "physical memory"}));
  CHECK(memory_limit().bytes > 0);
}

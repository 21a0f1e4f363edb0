// The memory plan, computed from the config before anything is allocated, against the buffers a
// model and optimizer of that shape really allocate (every category to the byte), GPT-2 124M's
// published parameter count, and the limit check that stops a run that cannot fit.
#include <catch2/catch.hpp>

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
            const ModelConfig mcfg = shape(arch, tied);
            CpuOps ops;
            ModelWeights w(mcfg, ops, spec, /*quantize_activations=*/true, /*fp8_backward=*/sgdm);
            const MemoryReport r = w.memory(B, T);
            GPT::LinearQuantization q;
            q.quantize_activations = true;
            q.quantize_output_grads = sgdm;
            const MemoryPlan p = plan_memory(mcfg, spec, q, ops, B, T);
            CHECK(p.num_params == r.num_params);
            CHECK(p.num_params == w.model().num_params());
            CHECK(p.grad_bytes == r.grad_bytes);
            CHECK(p.moment_bytes == r.m_bytes + r.v_bytes);
            CHECK(p.scale_bytes == r.scale_bytes);
            CHECK(p.model_param_bytes + p.code_bytes == r.weight_bytes + r.master_bytes);
            CHECK(p.model_param_bytes == w.model().resident_param_count() * sizeof(float));
            CHECK(p.activation_bytes == r.activation_bytes);
          }
        }
      }
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
  CHECK(p.model_param_bytes + p.grad_bytes + p.moment_bytes == 16 * p.num_params);
}

TEST_CASE("a plan above the limit is a system error naming both figures; below it passes") {
  MemoryPlan p;
  p.model_param_bytes = size_t{3} << 30;
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

// Device residency of the model and optimizer on the GPU, checked against the device allocator
// itself: master-free modes allocate no fp32 (or bf16) copy of a quantized weight, and what the
// backend allocates equals the memory plan computed before allocation (src/train/memory_plan.h),
// with cudaMemGetInfo agreeing up to the allocator's granularity. Skipped without a GPU.
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda_test_util.h"
#include "train/memory_plan.h"
#include "train/model_weights.h"

using namespace eco;

namespace {
ModelConfig shape() {
  ModelConfig c;
  c.arch = Arch::Llama;
  c.vocab_size = 512;
  c.padded_vocab = 512;
  c.n_layer = 4;
  c.n_head = 8;
  c.d_model = 512;
  c.max_seq_len = 128;
  c.tied_head = false;
  return c;
}

size_t device_used() {
  size_t free_b = 0, total = 0;
  ECO_CUDA_CHECK(cudaMemGetInfo(&free_b, &total));
  return total - free_b;
}
}  // namespace

TEST_CASE("master-free modes hold no high-precision copy on the GPU; allocations match the plan", "[cuda][memory]") {
  eco_cuda_test::require_gpu();
  const ModelConfig mcfg = shape();
  const int B = 4, T = 128;
  std::map<std::string, size_t> allocated;
  for (const char* mode : {"fp32", "master", "naive", "eco_sr"}) {
    INFO(mode);
    cuda::CudaOps ops;
    OptimizerSpec spec;
    spec.mode = parse_weight_mode(mode);
    const size_t before = ops.allocated_bytes();
    const size_t used_before = device_used();
    {
      ModelWeights w(mcfg, ops, spec, /*quantize_activations=*/true, /*fp8_backward=*/false);
      w.init(1);
      std::vector<int32_t> tokens(static_cast<size_t>(B) * T, 3);
      w.model().forward(tokens.data(), tokens.data(), B, T);  // allocates the activations
      const size_t got = ops.allocated_bytes() - before;
      allocated[mode] = got;
      GPT::LinearQuantization q;
      q.quantize_activations = traits_of(spec.mode).quantized;
      const MemoryPlan plan = plan_memory(mcfg, spec, q, ops, B, T);
      // The plan counts every buffer the run keeps; the backend also holds the optimizer's
      // 8-byte error counter and the master-free step's scratch is the backend's own.
      CHECK(got >= plan.total() - plan.optimizer_scratch_bytes);
      CHECK(got <= plan.total() - plan.optimizer_scratch_bytes + 4096);
      // The device agrees, up to cudaMalloc's 2 MiB granularity per allocation and the cuBLASLt
      // workspace made with the backend.
      const size_t used = device_used() - used_before;
      CHECK(used + (size_t{64} << 20) >= got);
    }
  }
  // A quantized linear weight costs 4 bytes per parameter with a master, 1 without.
  CpuOps cpu;
  OptimizerSpec naive;
  naive.mode = WeightMode::Naive;
  const MemoryPlan p = plan_memory(mcfg, naive, GPT::LinearQuantization{}, cpu, B, T);
  CHECK(allocated["master"] - allocated["naive"] == p.linear_params * sizeof(float));
  CHECK(allocated["naive"] == allocated["eco_sr"]);
}

// Sparse-MoE training throughput on one GPU: the paper's 2.1B SMoE layer shape (d 576, 9 heads,
// 32 experts of hidden 2304 with two-matrix GELU, top-4; configs/moe_2b.json) at fewer layers so it
// fits one device, synthetic tokens, forward + backward + optimizer step per iteration, in the modes
// bf16 (the baseline), master and eco (FP8 experts, no master). Also times the routing ops alone
// (route + plan + gather + combine over one layer's tokens), the part dense models do not have.
//   RESULT moe_<mode>_tokens_per_s <value> tok/s
//   RESULT moe_<mode>_peak_memory <GiB> GiB
//   RESULT moe_eco_vs_bf16 <ratio> x
//   RESULT moe_routing_ms <ms> ms          (per MoE layer forward, all tokens)
//   bench_gpu_moe [--layers 4] [--B 16] [--T 512] [--steps 10]
// Without a GPU (or the CUDA backend) it prints SKIPPED and exits 0.
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(ECO_WITH_CUDA)
#include <algorithm>
#include <chrono>
#include <map>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"
#include "gpu_training_timer.h"
#include "train/model_weights.h"

using namespace eco;

int main(int argc, char** argv) {
  int layers = 4, B = 16, T = 512, steps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--layers") layers = std::atoi(argv[i + 1]);
    else if (k == "--B") B = std::atoi(argv[i + 1]);
    else if (k == "--T") T = std::atoi(argv[i + 1]);
    else if (k == "--steps") steps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  std::string why;
  if (cuda::device_count(&why) == 0) {
    std::printf("SKIPPED: %s\n", why.c_str());
    return 0;
  }
  ModelConfig c;
  c.arch = Arch::Llama;
  c.vocab_size = 50257;
  c.padded_vocab = 50304;
  c.n_layer = layers;
  c.d_model = 576;
  c.n_head = 9;
  c.max_seq_len = T;
  c.mlp_hidden = 2304;
  c.moe.experts = 32;
  c.moe.top_k = 4;
  c.moe.expert_hidden = 2304;
  c.moe.activation = MlpActivation::Gelu;
  const int N = B * T;
  std::vector<int32_t> tokens(static_cast<size_t>(N));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919) % 50257);
  std::map<std::string, double> tps;
  for (const char* mode : {"bf16", "master", "eco"}) {
    cuda::CudaOps ops;
    OptimizerSpec spec;
    spec.mode = parse_weight_mode(mode);
    spec.seed = 1;
    ModelWeights w(c, ops, spec, /*quantize_activations=*/true, /*fp8_backward=*/false);
    w.init(1);
    const eco_bench::TrainingTiming timing = eco_bench::time_training(w, ops, tokens, B, T, steps);
    tps[mode] = timing.tokens_per_s;
    const size_t peak = timing.peak_bytes;
    std::printf("RESULT moe_%s_tokens_per_s %.0f tok/s\n", mode, tps[mode]);
    std::printf("RESULT moe_%s_peak_memory %.2f GiB\n", mode, static_cast<double>(peak) / (1u << 30));
  }
  std::printf("RESULT moe_eco_vs_bf16 %.3f x\n", tps["eco"] / tps["bf16"]);

  // The routing ops of one MoE layer alone, on random router logits.
  {
    cuda::CudaOps ops;
    const int E = c.moe.experts, K = c.moe.top_k, C = c.d_model;
    std::vector<float> host_logits(static_cast<size_t>(N) * E);
    for (size_t i = 0; i < host_logits.size(); ++i) host_logits[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f;
    float* logits = ops.alloc_floats(host_logits.size());
    ops.copy_from_host(logits, host_logits.data(), host_logits.size() * sizeof(float));
    float* probs = ops.alloc_floats(host_logits.size());
    float* lse = ops.alloc_floats(N);
    float* gates = ops.alloc_floats(static_cast<size_t>(N) * K);
    int32_t* idx = ops.alloc_ints(static_cast<size_t>(N) * K);
    int32_t* counts = ops.alloc_ints(2 * static_cast<size_t>(E));
    int32_t* slot = ops.alloc_ints(static_cast<size_t>(N) * K);
    int32_t* token_of = ops.alloc_ints(static_cast<size_t>(N) * K);
    float* x = ops.alloc_floats(static_cast<size_t>(N) * C);
    float* xp = ops.alloc_floats(static_cast<size_t>(N) * K * C);
    float* y = ops.alloc_floats(static_cast<size_t>(N) * C);
    ops.fill_zero(x, static_cast<size_t>(N) * C * sizeof(float));
    auto routing = [&] {
      ops.moe_route(probs, lse, idx, gates, logits, nullptr, N, E, K, true);
      ops.moe_dispatch_plan(counts, slot, token_of, idx, N, K, E, 0);
      ops.moe_gather(xp, x, token_of, N * K, C);
      ops.moe_combine(y, xp, gates, slot, N, K, C);
    };
    routing();
    ops.synchronize();
    const int reps = 20;
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) routing();
    ops.synchronize();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    std::printf("RESULT moe_routing_ms %.3f ms  # N=%d tokens, E=%d, top-%d, d=%d\n", ms, N, E, K, C);
    for (void* p : {static_cast<void*>(logits), static_cast<void*>(probs), static_cast<void*>(lse),
                    static_cast<void*>(gates), static_cast<void*>(idx), static_cast<void*>(counts),
                    static_cast<void*>(slot), static_cast<void*>(token_of), static_cast<void*>(x),
                    static_cast<void*>(xp), static_cast<void*>(y)})
      ops.free(p);
  }
  return 0;
}

#else
int main() {
  std::puts("SKIPPED: built without the CUDA backend");
  return 0;
}
#endif

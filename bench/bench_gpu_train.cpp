// End-to-end GPU training throughput of GPT-2 124M (llm.c's shape: 12 layers, d 768, 12 heads,
// vocab 50304, T 1024) on synthetic tokens: forward + backward + optimizer step per iteration,
// in the weight modes fp32, bf16, master, eco_sr. Prints tokens/s, MFU (6·params·tokens/s against
// the device's dense BF16 peak, given by --peak-tflops, default 989 for H100/H200 SXM) and the peak
// device memory the backend allocated, then eco_sr's speed against the bf16 run (the same model
// with BF16 GEMMs). Lines:
//   RESULT train_<mode>_tokens_per_s <value> tok/s
//   RESULT train_<mode>_mfu <percent> %
//   RESULT train_<mode>_peak_memory <GiB> GiB
//   RESULT eco_sr_vs_bf16 <ratio> x        (target >= 1.2)
//   bench_gpu_train [--B 8] [--T 1024] [--steps 10] [--peak-tflops 989]
// Without a GPU (or the CUDA backend) it prints SKIPPED and exits 0.
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(ECO_WITH_CUDA)
#include <map>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"
#include "gpu_training_timer.h"
#include "train/model_weights.h"

using namespace eco;

int main(int argc, char** argv) {
  int B = 8, T = 1024, steps = 10;
  double peak_tflops = 989.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--B") B = std::atoi(argv[i + 1]);
    else if (k == "--T") T = std::atoi(argv[i + 1]);
    else if (k == "--steps") steps = std::atoi(argv[i + 1]);
    else if (k == "--peak-tflops") peak_tflops = std::atof(argv[i + 1]);
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
  ModelConfig c;  // GPT-2 small
  c.padded_vocab = 50304;
  std::map<std::string, double> tps;
  std::vector<int32_t> tokens(static_cast<size_t>(B) * T);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919) % 50257);
  for (const char* mode : {"fp32", "bf16", "master", "eco_sr"}) {
    cuda::CudaOps ops;
    OptimizerSpec spec;
    spec.mode = parse_weight_mode(mode);
    spec.seed = 1;
    ModelWeights w(c, ops, spec, /*quantize_activations=*/true, /*fp8_backward=*/false);
    w.init(1);
    const eco_bench::TrainingTiming timing = eco_bench::time_training(w, ops, tokens, B, T, steps);
    const double tok_s = timing.tokens_per_s;
    const size_t peak = timing.peak_bytes;
    const double mfu = 6.0 * static_cast<double>(w.model().num_params()) * tok_s / (peak_tflops * 1e12);
    tps[mode] = tok_s;
    std::printf("RESULT train_%s_tokens_per_s %.0f tok/s\n", mode, tok_s);
    std::printf("RESULT train_%s_mfu %.1f %%\n", mode, 100.0 * mfu);
    std::printf("RESULT train_%s_peak_memory %.2f GiB\n", mode, static_cast<double>(peak) / (1u << 30));
  }
  std::printf("RESULT eco_sr_vs_bf16 %.3f x\n", tps["eco_sr"] / tps["bf16"]);
  return 0;
}

#else
int main() {
  std::puts("SKIPPED: built without the CUDA backend");
  return 0;
}
#endif

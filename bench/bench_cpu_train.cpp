// CPU training throughput of the dense GPT, with its GEMMs compared against plain OpenBLAS sgemm
// on the same shapes measured in the same run.
//
//   bench_cpu_train [--arch gpt2|llama] [--layers 4] [--d 256] [--heads 4] [--T 128] [--B 8]
//                   [--vocab 50257] [--steps 10] [--threads N]
//
// Prints: the baseline sgemm GFLOP/s (OpenBLAS with its own threads, one call per GEMM of the
// model's shapes, weighted like a training step), the GFLOP/s the model's matmul ops achieved
// during forward+backward and their ratio, tokens/s for forward+backward and with an AdamW step,
// and the time per op category.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cblas.h>

#include "cpu/cpu_ops.h"
#include "model/gpt.h"
#include "optim/weight_optimizer.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Args {
  std::string arch = "gpt2";
  int layers = 4, d = 256, heads = 4, T = 128, B = 8, vocab = 50257, steps = 10, threads = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      std::printf("usage: %s [--arch gpt2|llama] [--layers L] [--d D] [--heads H] [--T T] [--B B] [--vocab V] "
                  "[--steps S] [--threads N]\n", argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "missing value for %s\n", k.c_str());
      std::exit(2);
    }
    const char* v = argv[++i];
    if (k == "--arch") a.arch = v;
    else if (k == "--layers") a.layers = std::atoi(v);
    else if (k == "--d") a.d = std::atoi(v);
    else if (k == "--heads") a.heads = std::atoi(v);
    else if (k == "--T") a.T = std::atoi(v);
    else if (k == "--B") a.B = std::atoi(v);
    else if (k == "--vocab") a.vocab = std::atoi(v);
    else if (k == "--steps") a.steps = std::atoi(v);
    else if (k == "--threads") a.threads = std::atoi(v);
    else {
      std::fprintf(stderr, "unknown flag %s (see --help)\n", k.c_str());
      std::exit(2);
    }
  }
  if (a.arch != "gpt2" && a.arch != "llama") {
    std::fprintf(stderr, "--arch must be gpt2 or llama\n");
    std::exit(2);
  }
  return a;
}

struct Gemm {
  bool ta, tb;
  int M, N, K;
  int count;  // per training step
};

// The GEMMs of one forward+backward: per block linear (in → out features) a forward NT, a dinp NN
// and a dweight TN; the same three for the LM head.
std::vector<Gemm> step_gemms(const eco::ModelConfig& c, int N) {
  const int C = c.d_model, H = c.hidden(), L = c.n_layer;
  const int mlp_in = c.arch == eco::Arch::GPT2 ? H : 2 * H;
  const int dims[4][2] = {{C, 3 * C}, {C, C}, {C, mlp_in}, {H, C}};
  std::vector<Gemm> g;
  for (const auto& d : dims) {
    g.push_back({false, true, N, d[1], d[0], L});
    g.push_back({false, false, N, d[0], d[1], L});
    g.push_back({true, false, d[1], d[0], N, L});
  }
  g.push_back({false, true, N, c.padded_vocab, C, 1});
  g.push_back({false, false, N, C, c.padded_vocab, 1});
  g.push_back({true, false, c.padded_vocab, C, N, 1});
  return g;
}

// Plain OpenBLAS (its own thread pool, `threads` threads) on every shape; returns step-weighted GFLOP/s.
double baseline_sgemm(const std::vector<Gemm>& gemms, int threads) {
  openblas_set_num_threads(threads);
  double flops = 0, seconds = 0;
  std::printf("baseline: OpenBLAS sgemm, %d threads, on the model's shapes\n", threads);
  for (const Gemm& g : gemms) {
    const size_t a_n = static_cast<size_t>(g.M) * g.K, b_n = static_cast<size_t>(g.K) * g.N;
    std::vector<float> A(a_n, 0.01f), B(b_n, 0.02f), C(static_cast<size_t>(g.M) * g.N, 0.0f);
    const int lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N;
    auto call = [&] {
      cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.M, g.N, g.K,
                  1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), g.N);
    };
    call();
    int reps = 0;
    const double t0 = now();
    double dt = 0;
    while (dt < 0.25 || reps < 3) {
      call();
      ++reps;
      dt = now() - t0;
    }
    const double per_call = dt / reps, f = 2.0 * g.M * g.N * g.K;
    std::printf("  %c%c M=%-6d N=%-6d K=%-6d x%-3d %7.1f GFLOP/s\n", g.ta ? 'T' : 'N', g.tb ? 'T' : 'N', g.M, g.N, g.K,
                g.count, f / per_call * 1e-9);
    flops += f * g.count;
    seconds += per_call * g.count;
  }
  return flops / seconds * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const int threads = a.threads > 0 ? a.threads : omp_get_num_procs();
  omp_set_num_threads(threads);

  eco::ModelConfig cfg;
  cfg.arch = a.arch == "llama" ? eco::Arch::Llama : eco::Arch::GPT2;
  cfg.n_layer = a.layers;
  cfg.d_model = a.d;
  cfg.n_head = a.heads;
  cfg.vocab_size = a.vocab;
  cfg.padded_vocab = (a.vocab + 127) / 128 * 128;
  cfg.max_seq_len = a.T;
  const int N = a.B * a.T;

  const double base = baseline_sgemm(step_gemms(cfg, N), threads);
  std::printf("baseline sgemm (step-weighted): %.1f GFLOP/s\n\n", base);

  eco::CpuOps ops;  // back to single-threaded OpenBLAS under the OpenMP team
  eco::GPT model(cfg, ops);
  model.init_weights(1);
  std::printf("%s\n", model.summary().c_str());
  std::printf("B=%d T=%d, %d threads, activations %.1f MiB\n", a.B, a.T, threads,
              static_cast<double>(model.activation_bytes(a.B, a.T)) / (1 << 20));
  std::vector<int32_t> x(N), y(N);
  uint32_t s = 7;
  for (int i = 0; i < N; ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = static_cast<int32_t>((s >> 8) % static_cast<uint32_t>(a.vocab));
    y[i] = static_cast<int32_t>((s >> 3) % static_cast<uint32_t>(a.vocab));
  }
  auto fwd_bwd = [&] {
    model.zero_grad();
    const float loss = model.forward(x.data(), y.data(), a.B, a.T);
    model.backward();
    return loss;
  };
  fwd_bwd();  // warm-up: allocations, page faults, BLAS buffers
  fwd_bwd();

  ops.reset_stats();
  ops.set_profiling(true);
  double t0 = now();
  float loss = 0;
  for (int i = 0; i < a.steps; ++i) loss = fwd_bwd();
  const double fb_seconds = now() - t0;
  ops.set_profiling(false);

  std::vector<eco::OptimTensor> otensors;
  for (const eco::ParamTensor& p : model.tensors()) {
    const size_t rows = p.shape.size() == 2 ? static_cast<size_t>(p.shape[0]) : 1;
    otensors.push_back({p.name, rows, p.numel / rows, false, p.weight_decay, model.params() + p.offset,
                        model.grads() + p.offset});
  }
  eco::WeightOptimizer adam(ops, otensors, eco::OptimizerSpec{});
  t0 = now();
  for (int i = 0; i < a.steps; ++i) {
    fwd_bwd();
    adam.step(1e-4f, i + 1);
  }
  const double train_seconds = now() - t0;

  const eco::OpStats& mm = ops.stats(eco::OpKind::Matmul);
  const double gemm_rate = mm.flops / mm.seconds * 1e-9;
  double op_seconds = 0;
  for (int k = 0; k < static_cast<int>(eco::OpKind::Count); ++k) op_seconds += ops.stats(static_cast<eco::OpKind>(k)).seconds;
  const double tokens = static_cast<double>(N) * a.steps;
  std::printf("\nloss %.4f after %d steps (random tokens)\n", loss, a.steps);
  std::printf("time by op over %d forward+backward steps:\n%s\n", a.steps, ops.stats_report().c_str());
  std::printf("  outside ops: %.3f s (zero_grad, loss copy)\n\n", fb_seconds - op_seconds);
  std::printf("model GEMMs: %.1f GFLOP/s = %.0f%% of the baseline sgemm %.1f GFLOP/s (target >= 60%%)\n", gemm_rate,
              100.0 * gemm_rate / base, base);
  std::printf("forward+backward: %.0f tokens/s (%.1f ms/step)\n", tokens / fb_seconds, 1e3 * fb_seconds / a.steps);
  std::printf("training (forward+backward+AdamW): %.0f tokens/s (%.1f ms/step)\n", tokens / train_seconds,
              1e3 * train_seconds / a.steps);
  return 0;
}

// GPU vs CPU for the non-GEMM layers (src/cuda/cuda_embedding.cu, cuda_norms.cu,
// cuda_activations.cu, cuda_crossentropy.cu against their twins in src/cpu): the same random inputs
// of several shapes (sizes of 1, odd sizes, C not a multiple of 4, 8 or 32, V < Vp) go through
// CpuOps and CudaOps, and the outputs are compared.
//
// Tolerances. The CUDA kernels mirror the CPU's operation order (--fmad=false, IEEE division and
// sqrt, the CPU's own exp polynomial, every row sum in the CPU's 8-lane order, the parameter
// gradients summed in the CPU's chunks), so every output must equal the CPU's BIT FOR BIT — NaN
// equal to any NaN — except two: the cross-entropy's lse and loss. Those end in log(Σ exp), which
// is glibc's logf on the CPU (< 1 ulp from the true value) and log in double rounded to float on
// the GPU (correctly rounded); Σ exp itself is bit-identical, so the two logs differ by at most
// 1 ulp(log Σ), and lse = max + log Σ and loss = lse − x[target] each add one more rounding:
//   |Δlse| ≤ 2·ulp(log Σ) + ulp(lse),   |Δloss| ≤ |Δlse| bound + ulp(loss)
// (2 ulps for log Σ leaves room for glibc's FMA path). Inputs whose sums depend on the order of
// addition (values spread over 2^±8) make bit equality a check of the summation order too.
//
// Outputs are poisoned (NaN) before the GPU writes them; accumulating gradients start from
// non-zero values; every GPU op runs twice and must give the same bits (determinism).
// Skipped (ctest exit 4) where there is no GPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda_test_util.h"

using namespace eco_cuda_test;
using eco::cuda::CudaOps;

namespace {




std::vector<int32_t> random_ints(size_t n, int32_t hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, hi - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

std::vector<float> plus(std::vector<float> v, float offset) {
  for (float& x : v) x += offset;
  return v;
}


}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("CUDA embedding forward and backward equal the CPU's bit for bit", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  struct Shape {
    int B, T, C, vocab;
  };
  // vocab > 64 spreads tokens over the GPU's 64 partitions; small vocabs repeat tokens a lot.
  const Shape shapes[] = {{1, 1, 1, 1},   {2, 5, 67, 11},   {3, 17, 96, 7},    {1, 7, 33, 200},
                          {2, 33, 130, 300}, {4, 64, 768, 1000}, {2, 9, 4, 2}};
  uint32_t seed = 100;
  for (const Shape& s : shapes) {
    for (const bool with_wpe : {true, false}) {
      INFO("B=" << s.B << " T=" << s.T << " C=" << s.C << " vocab=" << s.vocab << " wpe=" << with_wpe);
      const size_t N = static_cast<size_t>(s.B) * s.T, C = s.C;
      const size_t wpe_rows = s.T + 2;  // the table may be longer than T
      std::vector<int32_t> tokens = random_ints(N, s.vocab, ++seed);
      // Repeats of the same token, and ids on the partition boundaries.
      for (size_t i = 0; i + 1 < N; i += 3) tokens[i + 1] = tokens[i];
      if (s.vocab > 128 && N >= 4) {
        tokens[0] = 128;
        tokens[N - 3] = 127;
        tokens[N - 2] = 64;
        tokens[N - 1] = 63;
      }
      const std::vector<float> wte = random_floats(s.vocab * C, ++seed);
      const std::vector<float> wpe = random_floats(wpe_rows * C, ++seed);
      const std::vector<float> dout = wide_floats(N * C, ++seed);
      const std::vector<float> dwte0 = random_floats(s.vocab * C, ++seed, 0.1f);
      const std::vector<float> dwpe0 = random_floats(wpe_rows * C, ++seed, 0.1f);

      // Forward.
      std::vector<float> out_cpu(N * C);
      cpu.embedding_forward(out_cpu.data(), tokens.data(), wte.data(), with_wpe ? wpe.data() : nullptr, s.B, s.T,
                            s.C);
      int32_t* tok_d = upload(gpu, tokens);
      float* wte_d = upload(gpu, wte);
      float* wpe_d = upload(gpu, wpe);
      auto gpu_forward = [&] {
        float* out = poisoned<float>(gpu, N * C);
        gpu.embedding_forward(out, tok_d, wte_d, with_wpe ? wpe_d : nullptr, s.B, s.T, s.C);
        return download(gpu, out, N * C);
      };
      const std::vector<float> out_gpu = gpu_forward();
      require_same(out_cpu, out_gpu, "embedding_forward out");
      require_deterministic(out_gpu, gpu_forward(), "embedding_forward out");

      // Backward: accumulates into dwte (and dwpe).
      std::vector<float> dwte_cpu = dwte0, dwpe_cpu = dwpe0;
      cpu.embedding_backward(dwte_cpu.data(), with_wpe ? dwpe_cpu.data() : nullptr, dout.data(), tokens.data(), s.B,
                             s.T, s.C);
      float* dout_d = upload(gpu, dout);
      auto gpu_backward = [&] {
        float* dwte = upload(gpu, dwte0);
        float* dwpe = upload(gpu, dwpe0);
        gpu.embedding_backward(dwte, with_wpe ? dwpe : nullptr, dout_d, tok_d, s.B, s.T, s.C);
        return std::pair{download(gpu, dwte, dwte0.size()), download(gpu, dwpe, dwpe0.size())};
      };
      const auto [dwte_gpu, dwpe_gpu] = gpu_backward();
      require_same(dwte_cpu, dwte_gpu, "embedding_backward dwte");
      require_same(dwpe_cpu, dwpe_gpu, "embedding_backward dwpe");  // untouched without wpe
      const auto [dwte_gpu2, dwpe_gpu2] = gpu_backward();
      require_deterministic(dwte_gpu, dwte_gpu2, "embedding_backward dwte");
      require_deterministic(dwpe_gpu, dwpe_gpu2, "embedding_backward dwpe");
    }
  }
}

// ---------------------------------------------------------------------------------------------

namespace {

struct NormShape {
  int N, C;
};
// N = 1, N not a multiple of the 32-row chunk, several chunks; C < 8, C % 8 != 0, C % 32 != 0.
const NormShape kNormShapes[] = {{1, 1},   {1, 7},    {3, 8},    {5, 33},    {32, 64},  {33, 67},
                                 {37, 768}, {100, 1029}, {65, 2048}, {1, 4099}, {70, 12}, {64, 3}};

}  // namespace

TEST_CASE("CUDA layernorm forward and backward equal the CPU's bit for bit", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const float eps = 1e-5f;
  uint32_t seed = 200;
  for (const NormShape& s : kNormShapes) {
    INFO("N=" << s.N << " C=" << s.C);
    const size_t N = s.N, C = s.C;
    // Values spread over 2^±8 (order-sensitive sums) around a non-zero mean.
    const std::vector<float> inp = plus(wide_floats(N * C, ++seed), 3.0f);
    const std::vector<float> weight = plus(random_floats(C, ++seed, 0.1f), 1.0f);
    const std::vector<float> bias = random_floats(C, ++seed, 0.1f);
    const std::vector<float> dout = wide_floats(N * C, ++seed);
    const std::vector<float> dinp0 = random_floats(N * C, ++seed);
    const std::vector<float> dw0 = random_floats(C, ++seed);
    const std::vector<float> db0 = random_floats(C, ++seed);

    std::vector<float> out_cpu(N * C), mean_cpu(N), rstd_cpu(N);
    cpu.layernorm_forward(out_cpu.data(), mean_cpu.data(), rstd_cpu.data(), inp.data(), weight.data(), bias.data(),
                          s.N, s.C, eps);
    float* inp_d = upload(gpu, inp);
    float* w_d = upload(gpu, weight);
    float* b_d = upload(gpu, bias);
    auto gpu_forward = [&] {
      float* out = poisoned<float>(gpu, N * C);
      float* mean = poisoned<float>(gpu, N);
      float* rstd = poisoned<float>(gpu, N);
      gpu.layernorm_forward(out, mean, rstd, inp_d, w_d, b_d, s.N, s.C, eps);
      return std::tuple{download(gpu, out, N * C), download(gpu, mean, N), download(gpu, rstd, N)};
    };
    const auto [out_gpu, mean_gpu, rstd_gpu] = gpu_forward();
    require_same(out_cpu, out_gpu, "layernorm_forward out");
    require_same(mean_cpu, mean_gpu, "layernorm_forward mean");
    require_same(rstd_cpu, rstd_gpu, "layernorm_forward rstd");
    const auto [out_gpu2, mean_gpu2, rstd_gpu2] = gpu_forward();
    require_deterministic(out_gpu, out_gpu2, "layernorm_forward out");
    require_deterministic(rstd_gpu, rstd_gpu2, "layernorm_forward rstd");

    // Backward from the CPU's saved statistics: dinp, dweight, dbias all accumulate.
    std::vector<float> dinp_cpu = dinp0, dw_cpu = dw0, db_cpu = db0;
    cpu.layernorm_backward(dinp_cpu.data(), dw_cpu.data(), db_cpu.data(), dout.data(), inp.data(), weight.data(),
                           mean_cpu.data(), rstd_cpu.data(), s.N, s.C);
    float* dout_d = upload(gpu, dout);
    float* mean_d = upload(gpu, mean_cpu);
    float* rstd_d = upload(gpu, rstd_cpu);
    auto gpu_backward = [&] {
      float* dinp = upload(gpu, dinp0);
      float* dw = upload(gpu, dw0);
      float* db = upload(gpu, db0);
      gpu.layernorm_backward(dinp, dw, db, dout_d, inp_d, w_d, mean_d, rstd_d, s.N, s.C);
      return std::tuple{download(gpu, dinp, N * C), download(gpu, dw, C), download(gpu, db, C)};
    };
    const auto [dinp_gpu, dw_gpu, db_gpu] = gpu_backward();
    require_same(dinp_cpu, dinp_gpu, "layernorm_backward dinp");
    require_same(dw_cpu, dw_gpu, "layernorm_backward dweight");
    require_same(db_cpu, db_gpu, "layernorm_backward dbias");
    const auto [dinp_gpu2, dw_gpu2, db_gpu2] = gpu_backward();
    require_deterministic(dinp_gpu, dinp_gpu2, "layernorm_backward dinp");
    require_deterministic(dw_gpu, dw_gpu2, "layernorm_backward dweight");
    require_deterministic(db_gpu, db_gpu2, "layernorm_backward dbias");
  }
}

TEST_CASE("CUDA rmsnorm forward and backward equal the CPU's bit for bit", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const float eps = 1e-6f;
  uint32_t seed = 300;
  for (const NormShape& s : kNormShapes) {
    INFO("N=" << s.N << " C=" << s.C);
    const size_t N = s.N, C = s.C;
    const std::vector<float> inp = plus(wide_floats(N * C, ++seed), 0.5f);
    const std::vector<float> weight = plus(random_floats(C, ++seed, 0.1f), 1.0f);
    const std::vector<float> dout = wide_floats(N * C, ++seed);
    const std::vector<float> dinp0 = random_floats(N * C, ++seed);
    const std::vector<float> dw0 = random_floats(C, ++seed);

    std::vector<float> out_cpu(N * C), rstd_cpu(N);
    cpu.rmsnorm_forward(out_cpu.data(), rstd_cpu.data(), inp.data(), weight.data(), s.N, s.C, eps);
    float* inp_d = upload(gpu, inp);
    float* w_d = upload(gpu, weight);
    auto gpu_forward = [&] {
      float* out = poisoned<float>(gpu, N * C);
      float* rstd = poisoned<float>(gpu, N);
      gpu.rmsnorm_forward(out, rstd, inp_d, w_d, s.N, s.C, eps);
      return std::pair{download(gpu, out, N * C), download(gpu, rstd, N)};
    };
    const auto [out_gpu, rstd_gpu] = gpu_forward();
    require_same(out_cpu, out_gpu, "rmsnorm_forward out");
    require_same(rstd_cpu, rstd_gpu, "rmsnorm_forward rstd");
    const auto [out_gpu2, rstd_gpu2] = gpu_forward();
    require_deterministic(out_gpu, out_gpu2, "rmsnorm_forward out");
    require_deterministic(rstd_gpu, rstd_gpu2, "rmsnorm_forward rstd");

    std::vector<float> dinp_cpu = dinp0, dw_cpu = dw0;
    cpu.rmsnorm_backward(dinp_cpu.data(), dw_cpu.data(), dout.data(), inp.data(), weight.data(), rstd_cpu.data(), s.N,
                         s.C);
    float* dout_d = upload(gpu, dout);
    float* rstd_d = upload(gpu, rstd_cpu);
    auto gpu_backward = [&] {
      float* dinp = upload(gpu, dinp0);
      float* dw = upload(gpu, dw0);
      gpu.rmsnorm_backward(dinp, dw, dout_d, inp_d, w_d, rstd_d, s.N, s.C);
      return std::pair{download(gpu, dinp, N * C), download(gpu, dw, C)};
    };
    const auto [dinp_gpu, dw_gpu] = gpu_backward();
    require_same(dinp_cpu, dinp_gpu, "rmsnorm_backward dinp");
    require_same(dw_cpu, dw_gpu, "rmsnorm_backward dweight");
    const auto [dinp_gpu2, dw_gpu2] = gpu_backward();
    require_deterministic(dinp_gpu, dinp_gpu2, "rmsnorm_backward dinp");
    require_deterministic(dw_gpu, dw_gpu2, "rmsnorm_backward dweight");
  }
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("CUDA rope forward and backward equal the CPU's bit for bit", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  struct Shape {
    int B, T, row_stride, n_heads, head_dim;
  };
  // Rows wider than the rotated part (the v third of qkv stays untouched); odd half = 3.
  const Shape shapes[] = {{1, 1, 2, 1, 2}, {2, 7, 72, 6, 8}, {1, 5, 30, 4, 6}, {3, 33, 192, 8, 16},
                          {2, 64, 2304, 24, 64}};
  uint32_t seed = 400;
  for (const Shape& s : shapes) {
    INFO("B=" << s.B << " T=" << s.T << " row_stride=" << s.row_stride << " n_heads=" << s.n_heads
              << " head_dim=" << s.head_dim);
    const int half = s.head_dim / 2, max_T = s.T + 3;
    std::vector<float> cos(static_cast<size_t>(max_T) * half), sin(cos.size());
    for (int t = 0; t < max_T; ++t)
      for (int i = 0; i < half; ++i) {
        const double angle = t * std::pow(10000.0, -2.0 * i / s.head_dim);
        cos[static_cast<size_t>(t) * half + i] = static_cast<float>(std::cos(angle));
        sin[static_cast<size_t>(t) * half + i] = static_cast<float>(std::sin(angle));
      }
    const size_t n = static_cast<size_t>(s.B) * s.T * s.row_stride;
    float* cos_d = upload(gpu, cos);
    float* sin_d = upload(gpu, sin);
    for (const bool forward : {true, false}) {
      INFO((forward ? "rope_forward" : "rope_backward"));
      const std::vector<float> x0 = random_floats(n, ++seed, 2.0f);
      std::vector<float> x_cpu = x0;
      if (forward)
        cpu.rope_forward(x_cpu.data(), cos.data(), sin.data(), s.B, s.T, s.row_stride, s.n_heads, s.head_dim);
      else
        cpu.rope_backward(x_cpu.data(), cos.data(), sin.data(), s.B, s.T, s.row_stride, s.n_heads, s.head_dim);
      auto gpu_run = [&] {
        float* x = upload(gpu, x0);
        if (forward) gpu.rope_forward(x, cos_d, sin_d, s.B, s.T, s.row_stride, s.n_heads, s.head_dim);
        else gpu.rope_backward(x, cos_d, sin_d, s.B, s.T, s.row_stride, s.n_heads, s.head_dim);
        return download(gpu, x, n);
      };
      const std::vector<float> x_gpu = gpu_run();
      require_same(x_cpu, x_gpu, "rope x");
      require_deterministic(x_gpu, gpu_run(), "rope x");
    }
  }
}

// ---------------------------------------------------------------------------------------------

namespace {

// Values that reach both ends of the exp polynomial's clamp, overflow x³, subnormals and the
// specials; NaN last.
constexpr float kSpecials[] = {0.0f,   -0.0f,  1e-30f, -1e-30f, 1e-40f, 0.5f,   -0.5f,  5.0f,   -5.0f,  9.0f,
                               -9.0f,  10.0f,  -10.0f, 11.0f,   -11.0f, 44.0f,  -44.0f, 88.0f,  -88.0f, 100.0f,
                               -100.0f, 1e13f, -1e13f, 1e20f,   -1e20f, 3e38f,  -3e38f, kInf,   -kInf,  kNaN};
constexpr size_t kSpecialStride = 5;  // specials at elements 0, 5, 10, ...
constexpr size_t kNaNIndex = (std::size(kSpecials) - 1) * kSpecialStride;

std::vector<float> activation_inputs(size_t n, uint32_t seed) {
  std::vector<float> x = random_floats(n, seed, 3.0f);
  for (size_t i = 0; i < std::size(kSpecials) && kSpecialStride * i < n; ++i) x[kSpecialStride * i] = kSpecials[i];
  return x;
}

}  // namespace

TEST_CASE("CUDA gelu forward and backward equal the CPU's bit for bit", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  uint32_t seed = 500;
  const size_t sizes[] = {1, 7, 8, 9, 1000, 8193, (size_t{1} << 20) + 3};
  for (const size_t n : sizes) {
    INFO("n=" << n);
    const std::vector<float> inp = activation_inputs(n, ++seed);
    const std::vector<float> dout = random_floats(n, ++seed);
    std::vector<float> out_cpu(n), dinp_cpu(n);
    cpu.gelu_forward(out_cpu.data(), inp.data(), n);
    cpu.gelu_backward(dinp_cpu.data(), inp.data(), dout.data(), n);
    float* inp_d = upload(gpu, inp);
    float* dout_d = upload(gpu, dout);
    auto gpu_run = [&] {
      float* out = poisoned<float>(gpu, n);
      float* dinp = poisoned<float>(gpu, n);
      gpu.gelu_forward(out, inp_d, n);
      gpu.gelu_backward(dinp, inp_d, dout_d, n);
      return std::pair{download(gpu, out, n), download(gpu, dinp, n)};
    };
    const auto [out_gpu, dinp_gpu] = gpu_run();
    require_same(out_cpu, out_gpu, "gelu_forward out");
    require_same(dinp_cpu, dinp_gpu, "gelu_backward dinp");
    const auto [out_gpu2, dinp_gpu2] = gpu_run();
    require_deterministic(out_gpu, out_gpu2, "gelu_forward out");
    require_deterministic(dinp_gpu, dinp_gpu2, "gelu_backward dinp");
    if (n > kNaNIndex) REQUIRE(std::isnan(out_gpu[kNaNIndex]));  // NaN in, NaN out (not clamped away)
  }
}

TEST_CASE("CUDA swiglu forward and backward equal the CPU's bit for bit", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  struct Shape {
    int N, H;
  };
  const Shape shapes[] = {{1, 1}, {3, 7}, {5, 33}, {64, 1000}, {17, 2051}, {1, 4096}};
  uint32_t seed = 600;
  for (const Shape& s : shapes) {
    INFO("N=" << s.N << " H=" << s.H);
    const size_t N = s.N, H = s.H;
    const std::vector<float> inp = activation_inputs(N * 2 * H, ++seed);
    const std::vector<float> dout = random_floats(N * H, ++seed);
    std::vector<float> out_cpu(N * H), dinp_cpu(N * 2 * H);
    cpu.swiglu_forward(out_cpu.data(), inp.data(), s.N, s.H);
    cpu.swiglu_backward(dinp_cpu.data(), inp.data(), dout.data(), s.N, s.H);
    float* inp_d = upload(gpu, inp);
    float* dout_d = upload(gpu, dout);
    auto gpu_run = [&] {
      float* out = poisoned<float>(gpu, N * H);
      float* dinp = poisoned<float>(gpu, N * 2 * H);  // overwritten, both halves
      gpu.swiglu_forward(out, inp_d, s.N, s.H);
      gpu.swiglu_backward(dinp, inp_d, dout_d, s.N, s.H);
      return std::pair{download(gpu, out, N * H), download(gpu, dinp, N * 2 * H)};
    };
    const auto [out_gpu, dinp_gpu] = gpu_run();
    require_same(out_cpu, out_gpu, "swiglu_forward out");
    require_same(dinp_cpu, dinp_gpu, "swiglu_backward dinp");
    const auto [out_gpu2, dinp_gpu2] = gpu_run();
    require_deterministic(out_gpu, out_gpu2, "swiglu_forward out");
    require_deterministic(dinp_gpu, dinp_gpu2, "swiglu_backward dinp");
  }
}

TEST_CASE("CUDA residual forward and backward equal the CPU's bit for bit", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  uint32_t seed = 700;
  for (const size_t n : {size_t{1}, size_t{5}, size_t{1000}, size_t{65537}}) {
    INFO("n=" << n);
    const std::vector<float> a = wide_floats(n, ++seed), b = wide_floats(n, ++seed);
    const std::vector<float> dout = wide_floats(n, ++seed);
    const std::vector<float> da0 = random_floats(n, ++seed), db0 = random_floats(n, ++seed);
    std::vector<float> out_cpu(n), da_cpu = da0, db_cpu = db0, inplace_cpu = a;
    cpu.residual_forward(out_cpu.data(), a.data(), b.data(), n);
    cpu.residual_forward(inplace_cpu.data(), inplace_cpu.data(), b.data(), n);  // out aliases a
    cpu.residual_backward(da_cpu.data(), db_cpu.data(), dout.data(), n);
    float* a_d = upload(gpu, a);
    float* b_d = upload(gpu, b);
    float* dout_d = upload(gpu, dout);
    auto gpu_run = [&] {
      float* out = poisoned<float>(gpu, n);
      float* inplace = upload(gpu, a);
      float* da = upload(gpu, da0);
      float* db = upload(gpu, db0);
      gpu.residual_forward(out, a_d, b_d, n);
      gpu.residual_forward(inplace, inplace, b_d, n);
      gpu.residual_backward(da, db, dout_d, n);
      return std::tuple{download(gpu, out, n), download(gpu, inplace, n), download(gpu, da, n),
                        download(gpu, db, n)};
    };
    const auto [out_gpu, inplace_gpu, da_gpu, db_gpu] = gpu_run();
    require_same(out_cpu, out_gpu, "residual_forward out");
    require_same(inplace_cpu, inplace_gpu, "residual_forward in place");
    require_same(da_cpu, da_gpu, "residual_backward da");
    require_same(db_cpu, db_gpu, "residual_backward db");
    const auto [out_gpu2, inplace_gpu2, da_gpu2, db_gpu2] = gpu_run();
    require_deterministic(out_gpu, out_gpu2, "residual_forward out");
    require_deterministic(da_gpu, da_gpu2, "residual_backward da");
    require_deterministic(db_gpu, db_gpu2, "residual_backward db");
  }
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("CUDA cross-entropy matches the CPU (lse/loss to ~1 ulp of log, gradients bit for bit)", "[cuda]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  struct Shape {
    int N, V, Vp;
    float scale;  // spread of the logits
  };
  // V = 1; V < 8 (no vector body); V not a multiple of 8 or 32; V = Vp; GPT-2's padded vocabulary.
  const Shape shapes[] = {{1, 1, 1, 1.0f},    {1, 5, 8, 2.0f},      {3, 8, 8, 2.0f},       {4, 31, 32, 2.0f},
                          {7, 33, 40, 5.0f},  {5, 100, 128, 30.0f}, {9, 1000, 1024, 2.0f}, {2, 65, 65, 2.0f},
                          {33, 4097, 4160, 3.0f}, {3, 50257, 50304, 2.0f}};
  uint32_t seed = 800;
  for (const Shape& s : shapes) {
    INFO("N=" << s.N << " V=" << s.V << " Vp=" << s.Vp);
    const size_t N = s.N, V = s.V, Vp = s.Vp;
    std::vector<float> logits = random_floats(N * Vp, ++seed, s.scale);
    // Padding columns hold garbage that must be ignored.
    for (size_t n = 0; n < N; ++n)
      for (size_t i = V; i < Vp; ++i) logits[n * Vp + i] = (i % 2) ? kNaN : 1e30f;
    // A non-finite logit poisons its row's loss on both sides.
    const bool nan_row = N >= 3;
    if (nan_row) logits[2 * Vp + V / 2] = kNaN;
    const std::vector<int32_t> targets = random_ints(N, s.V, ++seed);

    std::vector<float> loss_cpu(N), lse_cpu(N);
    cpu.crossentropy_forward(loss_cpu.data(), lse_cpu.data(), logits.data(), targets.data(), s.N, s.V, s.Vp);
    float* logits_d = upload(gpu, logits);
    int32_t* targets_d = upload(gpu, targets);
    auto gpu_forward = [&] {
      float* loss = poisoned<float>(gpu, N);
      float* lse = poisoned<float>(gpu, N);
      gpu.crossentropy_forward(loss, lse, logits_d, targets_d, s.N, s.V, s.Vp);
      return std::pair{download(gpu, loss, N), download(gpu, lse, N)};
    };
    const auto [loss_gpu, lse_gpu] = gpu_forward();
    const auto [loss_gpu2, lse_gpu2] = gpu_forward();
    require_deterministic(loss_gpu, loss_gpu2, "crossentropy_forward losses");
    require_deterministic(lse_gpu, lse_gpu2, "crossentropy_forward lse");
    for (size_t n = 0; n < N; ++n) {
      INFO("row " << n << ": lse cpu " << show(lse_cpu[n]) << " gpu " << show(lse_gpu[n]) << "; loss cpu "
                  << show(loss_cpu[n]) << " gpu " << show(loss_gpu[n]));
      if (nan_row && n == 2) {
        REQUIRE(std::isnan(lse_cpu[n]));
        REQUIRE(std::isnan(lse_gpu[n]));
        REQUIRE(std::isnan(loss_gpu[n]));
        continue;
      }
      const float* x = logits.data() + n * Vp;
      float mx = x[0];
      for (size_t i = 1; i < V; ++i) mx = std::max(mx, x[i]);
      // The bound derived at the top of the file.
      const float log_sum = static_cast<float>(static_cast<double>(lse_cpu[n]) - mx);
      const double tol_lse = 2.0 * ulp_of(log_sum) + ulp_of(lse_cpu[n]);
      const double tol_loss = tol_lse + ulp_of(loss_cpu[n]);
      REQUIRE(std::fabs(static_cast<double>(lse_gpu[n]) - lse_cpu[n]) <= tol_lse);
      REQUIRE(std::fabs(static_cast<double>(loss_gpu[n]) - loss_cpu[n]) <= tol_loss);
      // And both near the float64 value: Σ exp has ~V/32 + 13 roundings per lane chain, each exp
      // is within 1.5 ulp, and x − max rounds with an error ≤ u·|x − max| (u = 2^-24).
      double ref_sum = 0.0, spread = 0.0;
      for (size_t i = 0; i < V; ++i) {
        ref_sum += std::exp(static_cast<double>(x[i]) - mx);
        spread = std::max(spread, static_cast<double>(mx) - x[i]);
      }
      const double ref = mx + std::log(ref_sum);
      const double tol_ref =
          (static_cast<double>(V) / 32 + 16 + spread) * std::ldexp(1.0, -23) + 4.0 * ulp_of(lse_cpu[n]);
      REQUIRE(std::fabs(lse_gpu[n] - ref) <= tol_ref);
    }

    // Backward from the CPU's lse: bit for bit, into a separate buffer and in place.
    float* lse_d = upload(gpu, lse_cpu);
    for (const float dloss : {1.0f / static_cast<float>(s.N), 0.37f}) {
      INFO("dloss=" << dloss);
      std::vector<float> d_cpu(N * Vp), inplace_cpu = logits;
      cpu.crossentropy_backward(d_cpu.data(), logits.data(), lse_cpu.data(), targets.data(), dloss, s.N, s.V, s.Vp);
      cpu.crossentropy_backward(inplace_cpu.data(), inplace_cpu.data(), lse_cpu.data(), targets.data(), dloss, s.N,
                                s.V, s.Vp);
      auto gpu_backward = [&] {
        float* d = poisoned<float>(gpu, N * Vp);
        float* inplace = upload(gpu, logits);
        gpu.crossentropy_backward(d, logits_d, lse_d, targets_d, dloss, s.N, s.V, s.Vp);
        gpu.crossentropy_backward(inplace, inplace, lse_d, targets_d, dloss, s.N, s.V, s.Vp);
        return std::pair{download(gpu, d, N * Vp), download(gpu, inplace, N * Vp)};
      };
      const auto [d_gpu, inplace_gpu] = gpu_backward();
      require_same(d_cpu, d_gpu, "crossentropy_backward dlogits");
      require_same(inplace_cpu, inplace_gpu, "crossentropy_backward in place");
      size_t nonzero_padding = 0;  // +0 exactly
      for (size_t n = 0; n < N; ++n)
        for (size_t i = V; i < Vp; ++i) nonzero_padding += bits_of(d_gpu[n * Vp + i]) != 0;
      REQUIRE(nonzero_padding == 0);
      const auto [d_gpu2, inplace_gpu2] = gpu_backward();
      require_deterministic(d_gpu, d_gpu2, "crossentropy_backward dlogits");
      require_deterministic(inplace_gpu, inplace_gpu2, "crossentropy_backward in place");
    }
  }
}

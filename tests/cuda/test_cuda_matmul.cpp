// GPU vs CPU: the fp32 linear layer (forward, backward with accumulation) and the quantized forward
// GEMM (FP8 cuBLASLt with per-row scales, and the BF16 / fp32 fallbacks), on fresh random inputs
// of odd shapes. Skipped (ctest exit 4) where there is no GPU.
//
// Tolerances are bounds, computed per element from the inputs (u = 2^-24, fp32's unit roundoff):
//   fp32 GEMM: any summation order of K products is within γ_K·Σ|a||b| (γ_K = K·u/(1−K·u)) of the
//     exact sum, on either side, so |gpu − cpu| ≤ 2(K+1)·u·Σ_k|a_k||b_k|; adding a bias or the
//     accumulated previous value c rounds once more on each side: + 2u·(|c| + |result|).
//   Quantized GEMM, BF16 path: the operands are the same exact values on both sides (the GPU
//     widens codes to BF16 exactly and applies the scales to the fp32 sum: two roundings; the CPU
//     rounds code·scale once per operand: relative 2u per product). Tensor cores may truncate
//     rather than round while accumulating (error ≤ 2u per addition), so
//     |gpu − cpu| ≤ (3K + 8)·u·Σ|a||w| + 4u·|result|.
//   Quantized GEMM, FP8 path: the same exact operands, but Hopper's FP8 tensor cores accumulate in
//     a narrower register (~14 retained bits; research/cuda-fp8.md §1.4) and cuBLASLt with
//     FAST_ACCUM = 0 promotes the partial sums to fp32 at least every 128 products (one K tile;
//     DeepSeek-V3's interval). Within a chunk, each addition errs by at most 2^-13 of the running
//     magnitude, which is ≤ the chunk's Σ|a||w|, so a chunk of ≤ 128 adds errs by ≤ 2^-6 of its
//     Σ|a||w|; summed over chunks: |gpu − cpu| ≤ 2^-6·Σ|a||w| + the BF16 path's bound. This is a
//     worst case (truncation at every step, all errors aligned); the test prints the observed
//     ratio so a GPU run shows the real accuracy. The inputs give every row a different power-of-two
//     magnitude (2^-6..2^6), so a misplaced scale errs by far more than the bound.
//   The bias is checked exactly on its own: out(bias) − out(no bias) must equal bias up to the one
//   rounding of the addition (same GEMM plan both times, so the product part is bit-identical).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda_test_util.h"


using eco_cuda_test::download;
using eco_cuda_test::poisoned;
using eco_cuda_test::random_floats;
using eco_cuda_test::upload;

namespace {

constexpr double kU = 0x1p-24;

// Worst |got − want| / tol over all elements (≤ 1 passes); NaN/Inf in got counts as a failure.
struct Verdict {
  double worst_ratio = 0.0;
  size_t worst_index = 0;
  size_t bad = 0;
  double got = 0, want = 0, tol = 0;
};

Verdict judge(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& tol) {
  Verdict v;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double r = std::isfinite(got[i]) ? err / tol[i] : INFINITY;
    if (r > 1.0) ++v.bad;
    if (!(r <= v.worst_ratio)) {
      v.worst_ratio = r;
      v.worst_index = i;
      v.got = got[i];
      v.want = want[i];
      v.tol = tol[i];
    }
  }
  return v;
}

#define CHECK_VERDICT(v)                                                                                        \
  do {                                                                                                          \
    INFO("worst element " << (v).worst_index << ": gpu " << (v).got << " cpu " << (v).want << " tol " << (v).tol \
                          << " (ratio " << (v).worst_ratio << "), " << (v).bad << " elements out of bound");     \
    CHECK((v).bad == 0);                                                                                        \
  } while (0)

// Σ_k |a[n,k]|·|b[o,k]| for row-major a[N,K], b[OC,K]: the magnitude the GEMM bounds scale with.
std::vector<double> abs_products(const std::vector<float>& a, const std::vector<float>& b, int N, int K, int OC) {
  std::vector<double> m(static_cast<size_t>(N) * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = 0.0;
      for (int k = 0; k < K; ++k)
        s += std::fabs(static_cast<double>(a[static_cast<size_t>(n) * K + k])) *
             std::fabs(static_cast<double>(b[static_cast<size_t>(o) * K + k]));
      m[static_cast<size_t>(n) * OC + o] = s;
    }
  return m;
}

// Rows of normal values, each row scaled by its own power of two in [2^-6, 2^6].
std::vector<float> rows_with_magnitudes(int rows, int cols, uint32_t seed) {
  std::vector<float> x = random_floats(static_cast<size_t>(rows) * cols, seed);
  std::mt19937 rng(seed ^ 0x9E3779B9u);
  std::uniform_int_distribution<int> e(-6, 6);
  for (int r = 0; r < rows; ++r) {
    const float f = std::ldexp(1.0f, e(rng));
    for (int c = 0; c < cols; ++c) x[static_cast<size_t>(r) * cols + c] *= f;
  }
  return x;
}

std::vector<float> transpose(const std::vector<float>& x, int rows, int cols) {
  std::vector<float> t(x.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) t[static_cast<size_t>(c) * rows + r] = x[static_cast<size_t>(r) * cols + c];
  return t;
}

int gpu_device() {
  int d = 0;
  cudaGetDevice(&d);
  return d;
}

}  // namespace

TEST_CASE("CUDA matmul_forward matches the CPU (fp32 cuBLASLt, no TF32)", "[cuda][matmul]") {
  eco_cuda_test::require_gpu();
  eco::CpuOps cpu;
  eco::cuda::CudaOps gpu;
  struct Shape {
    int N, C, OC;
    bool bias;
  };
  const Shape shapes[] = {{1, 7, 5, true},   {37, 19, 23, true}, {64, 768, 96, false},
                          {130, 33, 257, true}, {5, 1, 3, true}, {256, 512, 384, true}};
  uint32_t seed = 100;
  for (const Shape& s : shapes) {
    DYNAMIC_SECTION("N=" << s.N << " C=" << s.C << " OC=" << s.OC << (s.bias ? " bias" : "")) {
      const auto inp = random_floats(static_cast<size_t>(s.N) * s.C, ++seed);
      const auto w = random_floats(static_cast<size_t>(s.OC) * s.C, ++seed, 0.1f);
      const auto bias = random_floats(s.OC, ++seed);
      std::vector<float> want(static_cast<size_t>(s.N) * s.OC);
      cpu.matmul_forward(want.data(), inp.data(), w.data(), s.bias ? bias.data() : nullptr, s.N, s.C, s.OC);

      float* g_out = poisoned<float>(gpu, want.size());
      float* g_bias = upload(gpu, bias);
      gpu.matmul_forward(g_out, upload(gpu, inp), upload(gpu, w), s.bias ? g_bias : nullptr, s.N, s.C, s.OC);
      const auto got = download(gpu, g_out, want.size());

      const auto mag = abs_products(inp, w, s.N, s.C, s.OC);
      std::vector<double> tol(want.size());
      for (size_t i = 0; i < tol.size(); ++i)
        tol[i] = 2.0 * (s.C + 1) * kU * mag[i] + 2.0 * kU * (std::fabs(want[i]) + (s.bias ? std::fabs(bias[i % s.OC]) : 0)) +
                 1e-37;
      CHECK_VERDICT(judge(got, want, tol));
    }
  }
}

TEST_CASE("CUDA matmul_backward matches the CPU and accumulates dweight, dbias", "[cuda][matmul]") {
  eco_cuda_test::require_gpu();
  eco::CpuOps cpu;
  eco::cuda::CudaOps gpu;
  struct Shape {
    int N, C, OC;
    bool dinp, dbias;
  };
  const Shape shapes[] = {{1, 7, 5, true, true},      {37, 19, 23, true, true},   {64, 768, 96, false, true},
                          {130, 33, 257, true, false}, {1000, 48, 40, true, true}, {3, 1, 2, true, true}};
  uint32_t seed = 300;
  for (const Shape& s : shapes) {
    DYNAMIC_SECTION("N=" << s.N << " C=" << s.C << " OC=" << s.OC << (s.dinp ? "" : " no dinp")
                         << (s.dbias ? "" : " no dbias")) {
      const auto inp = random_floats(static_cast<size_t>(s.N) * s.C, ++seed);
      const auto w = random_floats(static_cast<size_t>(s.OC) * s.C, ++seed, 0.1f);
      const auto dout = random_floats(static_cast<size_t>(s.N) * s.OC, ++seed);
      // Pre-filled gradients: the GEMM must add to them (gradient accumulation), not overwrite.
      const auto dw0 = random_floats(static_cast<size_t>(s.OC) * s.C, ++seed);
      const auto db0 = random_floats(s.OC, ++seed);

      std::vector<float> dinp(static_cast<size_t>(s.N) * s.C), dw = dw0, db = db0;
      cpu.matmul_backward(s.dinp ? dinp.data() : nullptr, dw.data(), s.dbias ? db.data() : nullptr, dout.data(),
                          inp.data(), w.data(), s.N, s.C, s.OC);

      float* g_dinp = s.dinp ? poisoned<float>(gpu, dinp.size()) : nullptr;
      float* g_dw = upload(gpu, dw0);
      float* g_db = s.dbias ? upload(gpu, db0) : nullptr;
      const float* g_dout = upload(gpu, dout);
      gpu.matmul_backward(g_dinp, g_dw, g_db, g_dout, upload(gpu, inp), upload(gpu, w), s.N, s.C, s.OC);

      if (s.dinp) {
        // dinp[n,c] = Σ_o dout[n,o]·W[o,c]: K = OC.
        const auto mag = abs_products(dout, transpose(w, s.OC, s.C), s.N, s.OC, s.C);
        std::vector<double> tol(dinp.size());
        for (size_t i = 0; i < tol.size(); ++i) tol[i] = 2.0 * (s.OC + 1) * kU * mag[i] + 2.0 * kU * std::fabs(dinp[i]) + 1e-37;
        INFO("dinp");
        CHECK_VERDICT(judge(download(gpu, g_dinp, dinp.size()), dinp, tol));
      }
      {
        // dW[o,c] = dw0 + Σ_n dout[n,o]·inp[n,c]: K = N, plus the accumulated value.
        const auto mag = abs_products(transpose(dout, s.N, s.OC), transpose(inp, s.N, s.C), s.OC, s.N, s.C);
        std::vector<double> tol(dw.size());
        for (size_t i = 0; i < tol.size(); ++i)
          tol[i] = 2.0 * (s.N + 2) * kU * (mag[i] + std::fabs(dw0[i])) + 2.0 * kU * std::fabs(dw[i]) + 1e-37;
        INFO("dweight");
        CHECK_VERDICT(judge(download(gpu, g_dw, dw.size()), dw, tol));
      }
      if (s.dbias) {
        std::vector<double> tol(db.size());
        for (int o = 0; o < s.OC; ++o) {
          double m = std::fabs(db0[o]);
          for (int n = 0; n < s.N; ++n) m += std::fabs(dout[static_cast<size_t>(n) * s.OC + o]);
          tol[o] = 2.0 * (s.N + 2) * kU * m + 1e-37;
        }
        INFO("dbias");
        const auto got = download(gpu, g_db, db.size());
        CHECK_VERDICT(judge(got, db, tol));
        // Deterministic: the same call again adds exactly the same amount.
        gpu.copy_from_host(g_db, db0.data(), db0.size() * sizeof(float));
        gpu.matmul_backward(nullptr, g_dw, g_db, g_dout, upload(gpu, inp), upload(gpu, w), s.N, s.C, s.OC);
        CHECK(eco_cuda_test::first_bit_difference(download(gpu, g_db, db.size()), got) == -1);
      }
    }
  }
}

namespace {

// A quantized operand made by the CPU's quantizer from fp32 rows, held on both backends.
struct Operand {
  eco::QuantRef cpu, gpu;
  std::vector<float> dequant;  // the CPU's dequantized values: what both GEMMs multiply
};

Operand make_operand(eco::CpuOps& cpu, eco::cuda::CudaOps& gpu, const std::vector<float>& x, int rows, int cols,
                     eco::QuantFormat f, eco::ScaleGranularity g) {
  Operand op;
  eco::QuantRef q;
  q.rows = rows;
  q.cols = cols;
  q.format = f;
  q.granularity = g;
  q.codes = cpu.alloc(q.code_bytes() + 1);
  q.scales = q.scale_count() ? cpu.alloc_floats(q.scale_count()) : nullptr;
  cpu.quantize_rows(q, 0, rows, x.data(), eco::Rounding::RTN, nullptr, nullptr);
  op.cpu = q;
  op.gpu = q;
  op.gpu.codes = gpu.alloc(q.code_bytes() + 1);
  gpu.copy_from_host(op.gpu.codes, q.codes, q.code_bytes());
  if (q.scales) {
    op.gpu.scales = gpu.alloc_floats(q.scale_count());
    gpu.copy_from_host(op.gpu.scales, q.scales, q.scale_count() * sizeof(float));
  }
  op.dequant.resize(q.numel());
  cpu.dequantize_rows(op.dequant.data(), q, 0, rows);
  return op;
}

}  // namespace

TEST_CASE("CUDA quantized_matmul_forward matches the CPU's dequantize-then-fp32 GEMM", "[cuda][matmul][fp8]") {
  eco_cuda_test::require_gpu();
  using eco::QuantFormat;
  using eco::ScaleGranularity;
  eco::CpuOps cpu;
  eco::cuda::CudaOps gpu;
  constexpr auto E4 = QuantFormat::E4M3, E5 = QuantFormat::E5M2, I8 = QuantFormat::INT8, B16 = QuantFormat::BF16;
  constexpr auto Row = ScaleGranularity::PerRow, Ten = ScaleGranularity::PerTensor, Blk = ScaleGranularity::Block128;
  struct Case {
    QuantFormat fa, fw;
    ScaleGranularity ga, gw;
    int N, K, OC;
    bool bias;
  };
  const Case cases[] = {
      {E4, E4, Row, Row, 64, 128, 96, true},     // FP8 path
      {E4, E4, Row, Row, 256, 768, 288, true},   // FP8 path, GPT-2's K
      {E4, E4, Row, Row, 1, 64, 32, true},       // one token
      {E4, E4, Row, Row, 37, 100, 52, true},     // K % 16 != 0: BF16 fallback
      {E4, E4, Row, Row, 33, 48, 6, false},      // OC % 4 != 0: BF16 fallback
      {E4, E5, Row, Row, 40, 64, 40, true},      // E4M3 x E5M2
      {E5, E4, Row, Row, 40, 64, 40, false},     // E5M2 x E4M3
      {E5, E5, Row, Row, 20, 32, 12, true},      // no FP8 kernel: BF16 fallback
      {I8, I8, Row, Row, 25, 40, 17, true},      // INT8 codes
      {B16, B16, Row, Row, 19, 30, 21, true},    // BF16 codes (the bf16 weight modes)
      {B16, E4, Row, Row, 17, 32, 9, true},      // mixed
      {E4, E4, Row, Ten, 24, 32, 16, true},      // per-tensor weight scale
      {E4, E4, Row, Blk, 70, 200, 130, true},    // 128x128 blocks: fp32 path
  };
  uint32_t seed = 500;
  for (const Case& c : cases) {
    DYNAMIC_SECTION(eco::to_string(c.fa) << "x" << eco::to_string(c.fw) << " " << eco::to_string(c.ga) << "/"
                                         << eco::to_string(c.gw) << " N=" << c.N << " K=" << c.K << " OC=" << c.OC) {
      const Operand a = make_operand(cpu, gpu, rows_with_magnitudes(c.N, c.K, ++seed), c.N, c.K, c.fa, c.ga);
      const Operand w = make_operand(cpu, gpu, rows_with_magnitudes(c.OC, c.K, ++seed), c.OC, c.K, c.fw, c.gw);
      const auto bias = random_floats(c.OC, ++seed, 4.0f);
      std::vector<float> want(static_cast<size_t>(c.N) * c.OC);
      cpu.quantized_matmul_forward(want.data(), a.cpu, w.cpu, c.bias ? bias.data() : nullptr, c.N, c.K, c.OC);

      float* g_bias = upload(gpu, bias);
      float* g_out = poisoned<float>(gpu, want.size());
      gpu.quantized_matmul_forward(g_out, a.gpu, w.gpu, c.bias ? g_bias : nullptr, c.N, c.K, c.OC);
      const auto got = download(gpu, g_out, want.size());
      const std::string path = eco::cuda::quantized_matmul_path(gpu_device(), a.gpu, w.gpu, c.N, c.K, c.OC);

      const bool fp8_capable = (c.fa == E4 || c.fa == E5) && (c.fw == E4 || c.fw == E5) &&
                               !(c.fa == E5 && c.fw == E5) && c.ga == Row && c.gw == Row;
      const auto mag = abs_products(a.dequant, w.dequant, c.N, c.K, c.OC);
      std::vector<double> tol(want.size());
      double worst_observed = 0.0;  // max |err| / Σ|a||w|: the accumulation's real accuracy
      for (size_t i = 0; i < tol.size(); ++i) {
        tol[i] = (3.0 * c.K + 8.0) * kU * mag[i] + 4.0 * kU * std::fabs(want[i]) + 1e-37;
        if (fp8_capable) tol[i] += 0x1p-6 * mag[i];
        const double b = c.bias ? bias[i % c.OC] : 0.0;
        if (mag[i] > 0) worst_observed = std::max(worst_observed, std::fabs(got[i] - static_cast<double>(want[i])) /
                                                                      (mag[i] + std::fabs(b)));
      }
      std::printf("quantized_matmul_forward %s x %s N=%d K=%d OC=%d: %s; max |gpu-cpu|/sum|a||w| = %.3g\n",
                  eco::to_string(c.fa), eco::to_string(c.fw), c.N, c.K, c.OC, path.c_str(), worst_observed);
      INFO("path: " << path);
      CHECK_VERDICT(judge(got, want, tol));

      if (c.bias) {
        // The bias alone: same GEMM without it; the difference is the bias up to one rounding.
        float* g_plain = poisoned<float>(gpu, want.size());
        gpu.quantized_matmul_forward(g_plain, a.gpu, w.gpu, nullptr, c.N, c.K, c.OC);
        const auto plain = download(gpu, g_plain, want.size());
        size_t off = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          const double d = static_cast<double>(got[i]) - plain[i] - bias[i % c.OC];
          if (!(std::fabs(d) <= kU * std::fabs(got[i]) + 1e-37)) ++off;
        }
        INFO("elements whose bias is not added exactly once: " << off);
        CHECK(off == 0);
      }
    }
  }
}

TEST_CASE("CUDA quantized_matmul_forward rejects operands that do not fit", "[cuda][matmul]") {
  eco_cuda_test::require_gpu();
  eco::cuda::CudaOps gpu;
  eco::QuantRef a, w;
  a.rows = 4;
  a.cols = 16;
  w.rows = 8;
  w.cols = 32;
  float* out = gpu.alloc_floats(32);
  CHECK_THROWS_AS(gpu.quantized_matmul_forward(out, a, w, nullptr, 4, 16, 8), eco::Error);
}

// GPU vs CPU for the device-resident optimizer path: the row quantizer and dequantizer in every
// format and scale granularity (RTN and SR, NaN/Inf included), the fused optimizer step in all nine
// weight modes x AdamW/SGDM x fp32/bf16 states x per-row/per-tensor/128x128 scales, driven through
// WeightOptimizer on each backend (so allocation, keys and panels are the real ones), compared bit
// for bit; the packed low-bit weights (INT4 groups, INT2 / ternary absmean scales, fp32 / bf16
// scales, recomputed or kept) and the block-wise moments (int8, solo4/3/2, m8v4) in the quantizer
// and in the step, also bit for bit; and the step's reductions within the bound of their different
// summation order.
// Skipped (ctest exit 4) where there is no GPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda_test_util.h"
#include "optim/moment_buffer.h"
#include "optim/weight_optimizer.h"

using namespace eco;
using namespace eco_cuda_test;

namespace {

// The bytes of every piece of optimizer state, in checkpoint order.
std::vector<uint8_t> state_bytes(const WeightOptimizer& opt, Ops& ops) {
  std::vector<uint8_t> all;
  for (const StatePiece& p : opt.state_pieces()) {
    std::vector<uint8_t> piece = download(ops, static_cast<const uint8_t*>(p.data), p.bytes);
    all.insert(all.end(), piece.begin(), piece.end());
  }
  return all;
}

struct Shape {
  const char* name;
  size_t rows, cols;
  bool quantize, decay;
};

// Two quantized matrices (one with partial 128x128 blocks), a 1-D tensor that stays fp32.
const Shape kShapes[] = {{"w1", 300, 200, true, true}, {"w2", 64, 48, true, true}, {"b", 1, 77, false, false}};

// One optimizer per backend over the same tensors, initial values and gradients.
struct Side {
  Ops& ops;
  std::vector<float*> values, grads;
  std::unique_ptr<WeightOptimizer> opt;

  Side(Ops& o, const OptimizerSpec& spec, const std::vector<std::vector<float>>& init) : ops(o) {
    const WeightModeTraits tr = traits_of(spec.mode);
    std::vector<OptimTensor> tensors;
    for (size_t i = 0; i < std::size(kShapes); ++i) {
      const Shape& s = kShapes[i];
      const bool master_free = tr.quantized && s.quantize && !tr.master;
      values.push_back(master_free ? nullptr : upload(ops, init[i]));
      grads.push_back(upload(ops, std::vector<float>(s.rows * s.cols, 0.0f)));
      tensors.push_back({s.name, s.rows, s.cols, s.quantize, s.decay, values.back(), grads.back()});
    }
    opt = std::make_unique<WeightOptimizer>(ops, tensors, spec);
    for (size_t i = 0; i < tensors.size(); ++i)
      if (opt->is_quantized(i)) opt->init_quantized(i, init[i].data());
  }
  ~Side() {
    opt.reset();
    for (float* p : values)
      if (p) ops.free(p);
    for (float* p : grads) ops.free(p);
  }
  void set_grads(const std::vector<std::vector<float>>& g) {
    for (size_t i = 0; i < g.size(); ++i) ops.copy_from_host(grads[i], g[i].data(), g[i].size() * sizeof(float));
  }
};

// Four steps of both sides with the same gradients (lr 0 = ECO's guard, a clipped step, two plain
// ones), comparing every state byte and every fp32 value after each. Gradients of step t are
// random_floats(.., grad_seed·t + tensor); zero_lead > 0 zeroes each gradient's first elements.
void step_both_and_compare(Side& c, Side& d, CpuOps& cpu, cuda::CudaOps& gpu, const std::vector<std::vector<float>>& init,
                           uint32_t grad_seed, size_t zero_lead = 0) {
  REQUIRE(first_bit_difference(state_bytes(*c.opt, cpu), state_bytes(*d.opt, gpu)) == -1);
  const float lrs[] = {0.0f, 3e-3f, 1e-2f, 2e-3f};
  const float clip[] = {1.0f, 0.37f, 1.0f, 1.0f};
  for (int t = 1; t <= 4; ++t) {
    std::vector<std::vector<float>> grads;
    for (size_t i = 0; i < std::size(kShapes); ++i) {
      grads.push_back(random_floats(kShapes[i].rows * kShapes[i].cols, grad_seed * t + static_cast<uint32_t>(i)));
      for (size_t j = 0; j < std::min(zero_lead, grads.back().size()); ++j) grads.back()[j] = 0.0f;
    }
    c.set_grads(grads);
    d.set_grads(grads);
    c.opt->step(lrs[t - 1], t, clip[t - 1]);
    d.opt->step(lrs[t - 1], t, clip[t - 1]);
    INFO("after step " << t);
    REQUIRE(first_bit_difference(state_bytes(*c.opt, cpu), state_bytes(*d.opt, gpu)) == -1);
    for (size_t i = 0; i < std::size(kShapes); ++i) {
      if (!c.values[i]) continue;
      REQUIRE(first_bit_difference(download(cpu, c.values[i], init[i].size()),
                                   download(gpu, d.values[i], init[i].size())) == -1);
    }
  }
}

// A rows×cols quantizer input: random values, a NaN, +Inf and −Inf, and an all-zero row 4 (scale 1).
std::vector<float> input_with_specials(size_t rows, size_t cols, uint32_t seed, float scale) {
  std::vector<float> x = random_floats(rows * cols, seed, scale);
  x[17] = std::numeric_limits<float>::quiet_NaN();
  x[1000] = std::numeric_limits<float>::infinity();
  x[2000] = -std::numeric_limits<float>::infinity();
  for (size_t i = 4 * cols; i < 5 * cols; ++i) x[i] = 0.0f;
  return x;
}

}  // namespace

TEST_CASE("GPU optimizer step equals the CPU step bit for bit in every mode", "[cuda][optim]") {
  require_gpu();
  CpuOps cpu;
  cuda::CudaOps gpu;
  std::vector<std::vector<float>> init;
  for (size_t i = 0; i < std::size(kShapes); ++i)
    init.push_back(random_floats(kShapes[i].rows * kShapes[i].cols, 100 + static_cast<uint32_t>(i), 0.05f));
  for (const char* mode : {"fp32", "bf16", "bf16_sr", "master", "master_sr", "naive", "sr", "eco", "eco_sr"}) {
    for (OptimizerKind kind : {OptimizerKind::AdamW, OptimizerKind::Sgdm}) {
      for (StateFormat states : {StateFormat::Fp32, StateFormat::Bf16}) {
        for (ScaleGranularity g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor, ScaleGranularity::Block128}) {
          INFO(mode << (kind == OptimizerKind::AdamW ? " adamw" : " sgdm") << (states == StateFormat::Bf16 ? " bf16" : " fp32")
                    << " states, granularity " << to_string(g));
          OptimizerSpec spec;
          spec.mode = parse_weight_mode(mode);
          spec.kind = kind;
          spec.state_format = states;
          spec.granularity = g;
          spec.seed = 777;
          spec.weight_format = g == ScaleGranularity::PerTensor ? QuantFormat::E5M2 : QuantFormat::E4M3;
          Side c(cpu, spec, init), d(gpu, spec, init);
          step_both_and_compare(c, d, cpu, gpu, init, 1000u);
        }
      }
    }
  }
}

TEST_CASE("GPU row quantizer and dequantizer equal the CPU's in every format and granularity", "[cuda][quant]") {
  require_gpu();
  CpuOps cpu;
  cuda::CudaOps gpu;
  const size_t rows = 260, cols = 300;
  const std::vector<float> x = input_with_specials(rows, cols, 5, 3.0f);
  for (QuantFormat f : {QuantFormat::E4M3, QuantFormat::E5M2, QuantFormat::BF16, QuantFormat::INT8}) {
    for (ScaleGranularity g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor, ScaleGranularity::Block128}) {
      for (bool pow2 : {false, true}) {
        for (Rounding r : {Rounding::RTN, Rounding::SR}) {
          INFO(to_string(f) << " " << to_string(g) << (pow2 ? " pow2" : "") << " " << to_string(r));
          QuantRef qc{nullptr, nullptr, rows, cols, f, g, pow2};
          QuantRef qg = qc;
          std::vector<uint8_t> codes(qc.code_bytes());
          std::vector<float> scales(qc.scale_count(), 1.0f);
          qc.codes = codes.data();
          qc.scales = scales.data();
          qg.codes = poisoned<uint8_t>(gpu, qg.code_bytes());
          qg.scales = qg.scale_count() ? upload(gpu, scales) : nullptr;
          float* xg = upload(gpu, x);
          int64_t bad_c = 0;
          int64_t* bad_g = upload(gpu, std::vector<int64_t>{0});
          const RandomKey key{99, 7, 3};
          // Whole tensor, then (where the granularity allows) a second pass over a row range.
          cpu.quantize_rows(qc, 0, rows, x.data(), r, &key, &bad_c);
          gpu.quantize_rows(qg, 0, rows, xg, r, &key, bad_g);
          if (g != ScaleGranularity::PerTensor) {
            const size_t r0 = 128, r1 = 256;
            cpu.quantize_rows(qc, r0, r1, x.data() + (r0 * cols), r, &key, &bad_c);
            gpu.quantize_rows(qg, r0, r1, xg + r0 * cols, r, &key, bad_g);
          }
          CHECK(download(gpu, bad_g, 1)[0] == bad_c);
          CHECK(bad_c == (g != ScaleGranularity::PerTensor ? 3 : 3));
          REQUIRE(first_bit_difference(download(gpu, static_cast<uint8_t*>(qg.codes), codes.size()), codes) == -1);
          if (qg.scales) REQUIRE(first_bit_difference(download(gpu, qg.scales, scales.size()), scales) == -1);
          std::vector<float> out_c(rows * cols);
          float* out_g = poisoned<float>(gpu, rows * cols);
          cpu.dequantize_rows(out_c.data(), qc, 0, rows);
          gpu.dequantize_rows(out_g, qg, 0, rows);
          REQUIRE(first_bit_difference(download(gpu, out_g, out_c.size()), out_c) == -1);
          for (void* p : {static_cast<void*>(qg.codes), static_cast<void*>(qg.scales), static_cast<void*>(xg),
                          static_cast<void*>(bad_g), static_cast<void*>(out_g)})
            if (p) gpu.free(p);
        }
      }
    }
  }
}

TEST_CASE("GPU reductions: sum of squares and mean within their summation-order bound", "[cuda][reduce]") {
  require_gpu();
  CpuOps cpu;
  cuda::CudaOps gpu;
  for (size_t n : {size_t{1}, size_t{1000}, size_t{65537}, size_t{3000001}}) {
    INFO("n = " << n);
    const std::vector<float> x = random_floats(n, static_cast<uint32_t>(n), 2.0f);
    float* xg = upload(gpu, x);
    double* acc_g = upload(gpu, std::vector<double>{0.5, 0.25});
    double acc_c[2] = {0.5, 0.25};
    cpu.accumulate_sum_squares(&acc_c[0], x.data(), n);
    gpu.accumulate_sum_squares(acc_g, xg, n);
    cpu.accumulate_mean(&acc_c[1], x.data(), n);
    gpu.accumulate_mean(acc_g + 1, xg, n);
    const std::vector<double> got = download(gpu, acc_g, 2);
    // Both sum the same doubles (each x² is exact in double) in different orders: the difference
    // is at most ~n·2^-53 of the sum of magnitudes.
    double mag_sq = 0.0, mag = 0.0;
    for (float v : x) {
      mag_sq += static_cast<double>(v) * v;
      mag += std::fabs(v);
    }
    CHECK(std::fabs(got[0] - acc_c[0]) <= static_cast<double>(n) * 0x1.0p-53 * mag_sq + 1e-300);
    // The mean is rounded to float at the end: equal unless the double sums straddle a float
    // rounding boundary, so allow one float ulp of the mean.
    const double mean_c = acc_c[1] - 0.25, mean_g = got[1] - 0.25;
    CHECK(std::fabs(mean_g - mean_c) <= std::fabs(mean_c) * 0x1.0p-23 + static_cast<double>(n) * 0x1.0p-53 * mag / n);
    gpu.free(xg);
    gpu.free(acc_g);
  }
}

TEST_CASE("GPU low-bit quantizer and dequantizer equal the CPU's in every format, scale and rounding",
          "[cuda][quant][lowbit]") {
  require_gpu();
  CpuOps cpu;
  cuda::CudaOps gpu;
  // 301 columns: a partial INT4 group at the end of each row and padding bits in each row's last byte.
  const size_t rows = 130, cols = 301;
  const std::vector<float> x = input_with_specials(rows, cols, 11, 0.08f);
  struct Case {
    QuantFormat format;
    ScaleGranularity granularity;
    size_t group;
  };
  const Case cases[] = {{QuantFormat::INT4, ScaleGranularity::PerRow, 32},  {QuantFormat::INT4, ScaleGranularity::PerRow, 64},
                        {QuantFormat::INT4, ScaleGranularity::PerRow, 128}, {QuantFormat::INT2, ScaleGranularity::PerRow, 0},
                        {QuantFormat::INT2, ScaleGranularity::PerTensor, 0}, {QuantFormat::TERNARY, ScaleGranularity::PerRow, 0},
                        {QuantFormat::TERNARY, ScaleGranularity::PerTensor, 0}};
  for (const Case& cs : cases) {
    for (LowbitScaleDtype dtype : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
      for (LowbitScaleUpdate update : {LowbitScaleUpdate::Recompute, LowbitScaleUpdate::Keep}) {
        for (Rounding r : {Rounding::RTN, Rounding::SR}) {
          INFO(to_string(cs.format) << " " << to_string(cs.granularity) << " group " << cs.group << " "
                                    << to_string(dtype) << (update == LowbitScaleUpdate::Keep ? " kept" : " recomputed")
                                    << " " << to_string(r));
          QuantRef qc{nullptr, nullptr, rows, cols, cs.format, cs.granularity};
          qc.group_size = cs.group ? cs.group : 128;
          qc.scale_dtype = dtype;
          qc.scale_update = update;
          QuantRef qg = qc;
          std::vector<uint8_t> codes(qc.code_bytes(), 0), scales(qc.scale_bytes(), 0);
          // Kept scales: start from the ones a first quantization computed (both sides the same).
          if (update == LowbitScaleUpdate::Keep) {
            QuantRef first = qc;
            first.scale_update = LowbitScaleUpdate::Recompute;
            first.codes = codes.data();
            first.scales = reinterpret_cast<float*>(scales.data());
            cpu.quantize_rows(first, 0, rows, x.data(), Rounding::RTN, nullptr, nullptr);
          }
          qc.codes = codes.data();
          qc.scales = reinterpret_cast<float*>(scales.data());
          qg.codes = upload(gpu, codes);
          qg.scales = reinterpret_cast<float*>(upload(gpu, scales));
          float* xg = upload(gpu, x);
          int64_t bad_c = 0;
          int64_t* bad_g = upload(gpu, std::vector<int64_t>{0});
          const RandomKey key{99, 7, 3};
          cpu.quantize_rows(qc, 0, rows, x.data(), r, &key, &bad_c);
          gpu.quantize_rows(qg, 0, rows, xg, r, &key, bad_g);
          if (cs.granularity != ScaleGranularity::PerTensor || update == LowbitScaleUpdate::Keep) {
            const size_t r0 = 64, r1 = 129;  // a row range alone, keyed by the whole tensor's indices
            cpu.quantize_rows(qc, r0, r1, x.data() + r0 * cols, r, &key, &bad_c);
            gpu.quantize_rows(qg, r0, r1, xg + r0 * cols, r, &key, bad_g);
          }
          CHECK(bad_c >= 3);
          CHECK(download(gpu, bad_g, 1)[0] == bad_c);
          REQUIRE(first_bit_difference(download(gpu, static_cast<uint8_t*>(qg.codes), codes.size()), codes) == -1);
          REQUIRE(first_bit_difference(download(gpu, reinterpret_cast<uint8_t*>(qg.scales), scales.size()), scales) ==
                  -1);
          std::vector<float> out_c(rows * cols);
          float* out_g = poisoned<float>(gpu, rows * cols);
          cpu.dequantize_rows(out_c.data(), qc, 0, rows);
          gpu.dequantize_rows(out_g, qg, 0, rows);
          REQUIRE(first_bit_difference(download(gpu, out_g, out_c.size()), out_c) == -1);
          for (void* p : {static_cast<void*>(qg.codes), static_cast<void*>(qg.scales), static_cast<void*>(xg),
                          static_cast<void*>(bad_g), static_cast<void*>(out_g)})
            gpu.free(p);
        }
      }
    }
  }
}

TEST_CASE("GPU optimizer step with low-bit weights and block-wise states equals the CPU step bit for bit",
          "[cuda][optim][lowbit]") {
  require_gpu();
  CpuOps cpu;
  cuda::CudaOps gpu;
  std::vector<std::vector<float>> init;
  for (size_t i = 0; i < std::size(kShapes); ++i)
    init.push_back(random_floats(kShapes[i].rows * kShapes[i].cols, 300 + static_cast<uint32_t>(i), 0.05f));
  struct Weights {
    QuantFormat format;
    size_t group;
    ScaleGranularity granularity;
    LowbitScaleDtype dtype;
  };
  const Weights weights[] = {{QuantFormat::E4M3, 128, ScaleGranularity::PerRow, LowbitScaleDtype::F32},
                             {QuantFormat::INT4, 32, ScaleGranularity::PerRow, LowbitScaleDtype::BF16},
                             {QuantFormat::INT4, 128, ScaleGranularity::PerRow, LowbitScaleDtype::F32},
                             {QuantFormat::INT2, 128, ScaleGranularity::PerRow, LowbitScaleDtype::F32},
                             {QuantFormat::TERNARY, 128, ScaleGranularity::PerTensor, LowbitScaleDtype::BF16}};
  for (const Weights& wf : weights) {
    for (StateFormat states : {StateFormat::Fp32, StateFormat::Bf16, StateFormat::Int8, StateFormat::Solo4,
                               StateFormat::Solo3, StateFormat::Solo2, StateFormat::M8V4}) {
      // E4M3 weights are covered with fp32/bf16 states by the test above: here only its block states.
      if (wf.format == QuantFormat::E4M3 && !is_block_state(states)) continue;
      for (const char* mode : {"fp32", "master", "master_sr", "naive", "sr", "eco", "eco_sr"}) {
        // fp32 has no quantized weight: run it once per state format.
        if (std::string(mode) == "fp32" && wf.format != QuantFormat::E4M3 && wf.format != QuantFormat::INT4) continue;
        for (OptimizerKind kind : {OptimizerKind::AdamW, OptimizerKind::Sgdm}) {
          INFO(mode << (kind == OptimizerKind::AdamW ? " adamw" : " sgdm") << ", " << to_string(wf.format)
                    << " weights (group " << wf.group << ", " << to_string(wf.granularity) << ", "
                    << to_string(wf.dtype) << " scales), " << to_string(states) << " states");
          OptimizerSpec spec;
          spec.mode = parse_weight_mode(mode);
          spec.kind = kind;
          spec.state_format = states;
          spec.beta1 = is_block_state(states) ? block_state_spec(states).default_beta1 : 0.9f;
          spec.weight_format = wf.format;
          spec.group_size = wf.group;
          spec.lowbit_granularity = wf.granularity;
          spec.scale_dtype = wf.dtype;
          spec.seed = 4242;
          Side c(cpu, spec, init), d(gpu, spec, init);
          // 256 leading zero gradients: a dead region (m's all-zero block scale, v without positives).
          step_both_and_compare(c, d, cpu, gpu, init, 2000u, 256);
        }
      }
    }
  }
}

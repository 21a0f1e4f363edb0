// Low-bit stored weights (INT4 with group scales, INT2, ternary; issue 11 §1, docs/lowbit.md "Low-bit
// weights in training") in every quantized mode on the CPU backend: codes on the grid, master
// copies equal quantize(master), ECO's m against a step worked by hand, SR unbiased, scale
// maintenance (INT2 / ternary kept bit for bit, INT4 recomputed), checkpoints, the memory report
// and planner, the config keys, ZeRO-1 cuts, and a tiny model that trains.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "cpu/guarded_ops.h"
#include "eco_toy_problem.h"
#include "error_test_util.h"
#include "test_util.h"
#include "tiny_model.h"
#include "train/checkpoint_store.h"
#include "train/config_schema.h"
#include "train/memory_plan.h"
#include "train/model_weights.h"
#include "train/optimizer_checkpoint.h"

using namespace eco;
using namespace eco_test;

namespace {

struct LowbitCase {
  const char* name;
  QuantFormat format;
  size_t group;
};
const LowbitCase kCases[] = {{"int4 g32", QuantFormat::INT4, 32},
                             {"int4 g128", QuantFormat::INT4, 128},
                             {"int2", QuantFormat::INT2, 128},
                             {"ternary", QuantFormat::TERNARY, 128}};
const WeightMode kQuantizedModes[] = {WeightMode::Naive, WeightMode::Sr,     WeightMode::Eco,
                                      WeightMode::EcoSr, WeightMode::Master, WeightMode::MasterSr};

OptimizerSpec lowbit_spec(WeightMode mode, const LowbitCase& c, LowbitScaleDtype dtype = LowbitScaleDtype::F32,
                          ScaleGranularity lowbit_granularity = ScaleGranularity::PerRow) {
  OptimizerSpec s = make_spec(mode);
  s.weight_format = c.format;
  s.group_size = c.group;
  s.scale_dtype = dtype;
  s.lowbit_granularity = lowbit_granularity;
  return s;
}

// 70 columns: INT4 packs them exactly, 2-bit rows end in a half-used byte; with group 32 the last
// group of a row is partial (6 elements), with group 128 the only one is.
const std::vector<ToyTensor> kShapes = {{"fc", 6, 70, true, true}, {"emb", 4, 70, false, false}};

const uint8_t* codes_of(const QuantRef& q) { return static_cast<const uint8_t*>(q.codes); }
const uint8_t* scales_of(const QuantRef& q) { return reinterpret_cast<const uint8_t*>(q.scales); }
std::vector<uint8_t> code_bytes(const QuantRef& q) { return {codes_of(q), codes_of(q) + q.code_bytes()}; }
std::vector<uint8_t> scale_bytes(const QuantRef& q) { return {scales_of(q), scales_of(q) + q.scale_bytes()}; }

// The weight stream of tensor i at step t, as the optimizer keys it (seed, step, id·4 + 0).
RandomKey weight_key(const OptimizerSpec& s, size_t i, int64_t t) {
  return RandomKey{s.seed, static_cast<uint32_t>(t), static_cast<uint32_t>(i) * 4};
}

// Every code on the format's grid, the padding of each row zero, and the forward values equal to
// code · scale.
void check_on_grid(ToyRun& run, size_t i) {
  const QuantRef& q = run.opt().quant_ref(i);
  const LowbitLayout L = q.lowbit_layout();
  const std::vector<float> w = run.forward(i);
  const int lo = lowbit_min_code(L.format), hi = lowbit_max_code(L.format);
  for (size_t r = 0; r < q.rows; ++r) {
    for (size_t c = 0; c < q.cols; ++c) {
      const int code = lowbit_code_at(L, codes_of(q), r, c);
      REQUIRE(code >= lo);
      REQUIRE(code <= hi);
      REQUIRE(w[r * q.cols + c] == static_cast<float>(code) * lowbit_scale_at(L, scales_of(q), r, c));
    }
    const size_t used_bits = (q.cols * static_cast<size_t>(L.bits())) % 8;
    if (used_bits) REQUIRE((codes_of(q)[r * L.row_bytes() + L.row_bytes() - 1] >> used_bits) == 0);
  }
}

}  // namespace

TEST_CASE("low-bit weights in every quantized mode: codes on the grid; masters' copies are quantize(master)",
          "[lowbit][optim]") {
  for (const LowbitCase& c : kCases) {
    for (WeightMode mode : kQuantizedModes) {
      for (LowbitScaleDtype dtype : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
        const OptimizerSpec spec = lowbit_spec(mode, c, dtype);
        INFO(c.name << " " << to_string(mode) << " scales " << to_string(dtype));
        ToyRun run(kShapes, spec, 3);
        REQUIRE(run.opt().is_quantized(0));
        REQUIRE(run.opt().quant_ref(0).format == c.format);
        check_on_grid(run, 0);
        for (int t = 1; t <= 3; ++t) {
          run.step(2e-2f, t);
          check_on_grid(run, 0);
          if (!traits_of(mode).master) continue;
          // The stored copy is the master re-quantized: INT4 with fresh group scales, INT2 / ternary
          // with the kept ones; SR keyed by (seed, step, tensor id).
          const QuantRef& q = run.opt().quant_ref(0);
          std::vector<uint8_t> codes(q.code_bytes()), scales = scale_bytes(q);
          const RandomKey key = weight_key(spec, 0, t);
          const size_t bad = lowbit_quantize_rows(q.lowbit_layout(), 0, q.rows, run.values(0).data(),
                                                  traits_of(mode).rounding, &key, q.scale_update, codes.data(),
                                                  scales.data());
          REQUIRE(bad == 0);
          CHECK(codes == code_bytes(q));
          CHECK(scales == scale_bytes(q));
        }
      }
    }
  }
}

TEST_CASE("low-bit scales: int2 / ternary keep their init absmean bit for bit, int4 recomputes its groups",
          "[lowbit][optim]") {
  for (const LowbitCase& c : kCases) {
    for (WeightMode mode : kQuantizedModes) {
      for (ScaleGranularity g : {ScaleGranularity::PerRow, ScaleGranularity::PerTensor}) {
        if (c.format == QuantFormat::INT4 && g == ScaleGranularity::PerTensor) continue;  // INT4 is grouped
        const OptimizerSpec spec = lowbit_spec(mode, c, LowbitScaleDtype::F32, g);
        INFO(c.name << " " << to_string(mode) << " " << to_string(g));
        ToyRun run(kShapes, spec, 5, 1.0);
        const QuantRef& q = run.opt().quant_ref(0);
        const std::vector<uint8_t> init_scales = scale_bytes(q);
        // The init scales are the absmean (INT2 / ternary) or group absmax / 7 (INT4) of W0.
        std::vector<uint8_t> expect(q.scale_bytes());
        lowbit_compute_scales(q.lowbit_layout(), run.init(0).data(), expect.data());
        CHECK(init_scales == expect);
        for (int t = 1; t <= 5; ++t) run.step(5e-2f, t);
        if (c.format != QuantFormat::INT4) {
          CHECK(scale_bytes(q) == init_scales);
          continue;
        }
        CHECK(scale_bytes(q) != init_scales);
        // Recomputed from the updated weights: every group's largest element sits on ±7.
        const LowbitLayout L = q.lowbit_layout();
        for (size_t r = 0; r < q.rows; ++r)
          for (size_t c0 = 0; c0 < q.cols; c0 += L.group_size) {
            int top = 0;
            for (size_t col = c0; col < std::min(q.cols, c0 + L.group_size); ++col)
              top = std::max(top, std::abs(lowbit_code_at(L, codes_of(q), r, col)));
            CHECK(top == 7);
          }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ECO: m after a master-free step equals the DESIGN.md §4 step worked by hand in fp32, with the
// error e = w~ − dequant(quantize(w~)) of the low-bit quantizer (the tested oracle of
// quant/lowbit_tensor.h, with the stored scales kept for INT2 / ternary) folded in.
TEST_CASE("low-bit ECO: m, v and the stored weights equal the fp32 step worked by hand, bit for bit",
          "[lowbit][eco][optim]") {
  const size_t rows = 3, cols = 40;
  for (const LowbitCase& c : kCases) {
    for (WeightMode mode : {WeightMode::Eco, WeightMode::EcoSr, WeightMode::Naive, WeightMode::Sr}) {
      OptimizerSpec spec = lowbit_spec(mode, c);
      spec.weight_decay = 0.1f;
      const bool eco = traits_of(mode).error_feedback;
      INFO(c.name << " " << to_string(mode));
      ToyRun run({{"w", rows, cols, true, true}}, spec, 7);
      Uniform u(99);
      const float lrs[] = {2e-2f, 5e-3f, 0.0f, 1e-2f};  // step 3: η = 0, nothing injected
      size_t injected = 0;
      for (int t = 1; t <= 4; ++t) {
        const float lr = lrs[t - 1];
        const QuantRef& q = run.opt().quant_ref(0);
        const std::vector<float> w = run.forward(0), m0 = moments(run.opt().m(0)), v0 = moments(run.opt().v(0));
        std::vector<float>& g = run.grad(0);
        for (float& x : g) x = static_cast<float>(u.next(-1.0, 1.0));
        // By hand, in the formula's order.
        const size_t n = rows * cols;
        const float b1 = spec.beta1, b2 = spec.beta2, eps = spec.eps, wd = spec.weight_decay;
        const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t)));
        const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t)));
        std::vector<float> m(n), v(n), d(n), wt(n), wq(n);
        for (size_t j = 0; j < n; ++j) {
          m[j] = b1 * m0[j] + (1 - b1) * g[j];
          v[j] = b2 * v0[j] + (1 - b2) * (g[j] * g[j]);
          d[j] = std::sqrt(v[j] / bc2) + eps;
          wt[j] = w[j] - lr * ((m[j] / bc1) / d[j] + wd * w[j]);
        }
        std::vector<uint8_t> codes(q.code_bytes()), scales = scale_bytes(q);
        const RandomKey key = weight_key(spec, 0, t);
        REQUIRE(lowbit_quantize_rows(q.lowbit_layout(), 0, rows, wt.data(), traits_of(mode).rounding, &key,
                                     q.scale_update, codes.data(), scales.data()) == 0);
        lowbit_dequantize(q.lowbit_layout(), codes.data(), scales.data(), wq.data());
        if (eco && lr != 0.0f)
          for (size_t j = 0; j < n; ++j) {
            const float e = wt[j] - wq[j];
            injected += e != 0.0f;
            m[j] = m[j] + (1 - 1 / b1) * bc1 * d[j] * e / lr;
          }
        run.opt().step(lr, t);
        INFO("step " << t << " lr " << lr);
        CHECK(first_bit_difference(moments(run.opt().m(0)), m) == -1);
        CHECK(first_bit_difference(moments(run.opt().v(0)), v) == -1);
        CHECK(first_bit_difference(run.forward(0), wq) == -1);
        CHECK(code_bytes(q) == codes);
        CHECK(scale_bytes(q) == scales);
      }
      if (eco) CHECK(injected > 100);  // the low-bit error is large: almost every element injects
    }
  }
}

// One SR update is unbiased: over many seeds the mean stored weight is the clamped w~ (clamped to
// the grid's ends; INT4's recomputed scale never clips).
TEST_CASE("low-bit SR: one update is unbiased in expectation", "[lowbit][sr][optim]") {
  const size_t rows = 2, cols = 32, n = rows * cols;
  const int seeds = 1500;
  for (const LowbitCase& c : kCases) {
    INFO(c.name);
    std::vector<double> sum(n, 0.0);
    std::vector<float> wt(n);
    float scale0 = 0.0f;
    for (int s = 0; s < seeds; ++s) {
      OptimizerSpec spec = lowbit_spec(WeightMode::Sr, c);
      spec.seed = 1000 + static_cast<uint64_t>(s);
      ToyRun run({{"w", rows, cols, true, false}}, spec, 13);
      const std::vector<float> w = run.forward(0);
      run.compute_grads();
      const std::vector<float> g = run.grad(0);
      run.opt().step(3e-2f, 1);
      const std::vector<float> after = run.forward(0);
      for (size_t j = 0; j < n; ++j) sum[j] += after[j];
      if (s == 0) {
        // Step 1 from zero moments: m̂ = g, v̂ = g², w~ = w − η·g/(|g| + ε).
        const AdamStepConsts k = make_adam_consts(3e-2f, spec.beta1, spec.beta2, spec.eps, 0.0f, 1);
        for (size_t j = 0; j < n; ++j) {
          float m = 0.0f, v = 0.0f;
          const float d = adam_moments(g[j], m, v, k);
          wt[j] = adamw_new_weight(w[j], m, d, k);
        }
        scale0 = lowbit_scale_at(run.opt().quant_ref(0).lowbit_layout(), scales_of(run.opt().quant_ref(0)), 0, 0);
      }
    }
    const LowbitLayout L = stored_weight_ref(lowbit_spec(WeightMode::Sr, c), rows, cols).lowbit_layout();
    size_t checked = 0;
    for (size_t j = 0; j < n; ++j) {
      const size_t r = j / cols;
      // The scale this element was quantized with: INT4's comes from w~ (the same in every run),
      // INT2 / ternary keep the init one.
      std::vector<uint8_t> sc(L.scale_bytes());
      if (c.format == QuantFormat::INT4) lowbit_compute_scales(L, wt.data(), sc.data());
      const float s = c.format == QuantFormat::INT4 ? lowbit_scale_at(L, sc.data(), r, j % cols) : scale0;
      if (c.format != QuantFormat::INT4 && r != 0) continue;  // scale0 is row 0's (per-row scales)
      const double lo = lowbit_min_code(L.format) * static_cast<double>(s), hi = lowbit_max_code(L.format) * static_cast<double>(s);
      const double expect = std::clamp(static_cast<double>(wt[j]), lo, hi);
      const double mean = sum[j] / seeds;
      // SR variance ≤ s²/4: the mean's standard error ≤ s / (2·sqrt(seeds)); allow 5 of them.
      CHECK(std::fabs(mean - expect) <= 5.0 * s / (2.0 * std::sqrt(static_cast<double>(seeds))));
      ++checked;
    }
    CHECK(checked >= cols);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("low-bit checkpoints: save / load round trip continues bit-identically", "[lowbit][optim][checkpoint]") {
  const auto root = eco_test::scratch_dir("lowbit_ckpt");
  int k = 0;
  for (const LowbitCase& c : kCases) {
    for (WeightMode mode : kQuantizedModes) {
      const OptimizerSpec spec = lowbit_spec(mode, c, k % 2 ? LowbitScaleDtype::BF16 : LowbitScaleDtype::F32);
      INFO(c.name << " " << to_string(mode));
      auto same = [](ToyRun& a, ToyRun& b) {
        for (size_t i = 0; i < a.size(); ++i) {
          CHECK(first_bit_difference(a.forward(i), b.forward(i)) == -1);
          CHECK(first_bit_difference(moments(a.opt().m(i)), moments(b.opt().m(i))) == -1);
          CHECK(first_bit_difference(moments(a.opt().v(i)), moments(b.opt().v(i))) == -1);
          CHECK(first_bit_difference(a.values(i), b.values(i)) == -1);
          if (!a.opt().is_quantized(i)) continue;
          CHECK(code_bytes(a.opt().quant_ref(i)) == code_bytes(b.opt().quant_ref(i)));
          CHECK(scale_bytes(a.opt().quant_ref(i)) == scale_bytes(b.opt().quant_ref(i)));
        }
      };
      ToyRun a(kShapes, spec, 41);
      for (int t = 1; t <= 3; ++t) a.step(1e-2f, t);
      CheckpointWriter w(root / std::to_string(k++), 3);
      save_optimizer_state(a.opt(), a.ops(), w);
      const auto dir = w.commit();
      // The same problem, its state scrambled: everything must come from the checkpoint (INT2 /
      // ternary's kept scales included: b's are overwritten first).
      ToyRun b(kShapes, spec, 41);
      for (int t = 1; t <= 2; ++t) b.step(7e-2f, t + 10);
      const QuantRef& qb = b.opt().quant_ref(0);
      for (size_t s = 0; s < qb.scale_count(); ++s)
        lowbit_scale_store(reinterpret_cast<uint8_t*>(qb.scales), s, qb.scale_dtype, 0.375f);
      load_optimizer_state(b.opt(), b.ops(), load_checkpoint(dir));
      same(a, b);
      for (int t = 4; t <= 7; ++t) {
        a.step(1e-2f, t);
        b.step(1e-2f, t);
      }
      same(a, b);
    }
  }
  // Another group size is another layout: a CheckpointError, not a silent misread.
  ToyRun a(kShapes, lowbit_spec(WeightMode::Eco, kCases[0]), 41);
  CheckpointWriter w(root / "g32", 1);
  save_optimizer_state(a.opt(), a.ops(), w);
  const auto dir = w.commit();
  ToyRun b(kShapes, lowbit_spec(WeightMode::Eco, kCases[1]), 41);
  CHECK_THROWS_AS(load_optimizer_state(b.opt(), b.ops(), load_checkpoint(dir)), CheckpointError);
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("low-bit memory report: packed codes and scales to the byte", "[lowbit][optim][memory]") {
  const size_t R = 6, C = 70, nq = R * C, nf = 4 * 70;
  std::printf("low-bit weights, quantized-layer static bytes/param (eco, AdamW fp32 states), 6x70 tensor:\n");
  for (const LowbitCase& c : kCases) {
    for (LowbitScaleDtype dtype : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
      for (WeightMode mode : kQuantizedModes) {
        INFO(c.name << " " << to_string(mode) << " " << to_string(dtype));
        ToyRun run(kShapes, lowbit_spec(mode, c, dtype), 1);
        const MemoryReport r = run.opt().memory();
        const size_t row_bytes = c.format == QuantFormat::INT4 ? 35 : 18;  // ceil(70·bits / 8)
        const size_t scales_per_row = c.format == QuantFormat::INT4 ? (70 + c.group - 1) / c.group : 1;
        const size_t scale_size = dtype == LowbitScaleDtype::F32 ? 4 : 2;
        CHECK(r.weight_bytes == R * row_bytes + nf * 4);
        CHECK(r.scale_bytes == R * scales_per_row * scale_size);
        CHECK(r.master_bytes == (traits_of(mode).master ? nq * 4 : 0));
        CHECK(r.quantized_static_bytes == R * row_bytes + R * scales_per_row * scale_size + r.master_bytes + 2 * nq * 4);
        if (mode == WeightMode::Eco)
          std::printf("  %-9s %s scales: %.4f (weights %.4f)\n", c.name, to_string(dtype), r.quantized_bytes_per_param(),
                      r.quantized_bytes_per_param() - 8.0);
      }
    }
  }
}

TEST_CASE("low-bit memory plan equals what the model and optimizer allocate", "[lowbit][memory]") {
  const int B = 2, T = 8;
  for (const LowbitCase& c : kCases) {
    for (const char* mode : {"naive", "eco_sr", "master", "master_sr"}) {
      for (LowbitScaleDtype dtype : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
        for (bool tensor_scale : {false, true}) {
          INFO(c.name << " " << mode << " " << to_string(dtype) << " tensor scale " << tensor_scale);
          OptimizerSpec spec = lowbit_spec(parse_weight_mode(mode), c, dtype,
                                           tensor_scale ? ScaleGranularity::PerTensor : ScaleGranularity::PerRow);
          const ModelConfig mcfg = tiny_config(Arch::Llama, false, 40);
          CpuOps ops;
          ModelWeights w(mcfg, ops, spec, /*quantize_activations=*/true, /*fp8_backward=*/false);
          const MemoryReport r = w.memory(B, T);
          GPT::LinearQuantization q;
          q.quantize_activations = true;
          const MemoryPlan p = plan_memory(mcfg, spec, q, ops, B, T);
          CHECK(p.num_params == r.num_params);
          CHECK(p.scale_bytes == r.scale_bytes);
          CHECK(p.weight_bytes + p.code_bytes == r.weight_bytes);
          CHECK(p.master_bytes == r.master_bytes);
          CHECK(p.m_bytes == r.m_bytes);
          CHECK(p.activation_bytes == r.activation_bytes);
          CHECK(p.linear_params == r.quantized_params);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("low-bit config keys: parsed into the optimizer spec; bad values name their key", "[lowbit][config]") {
  const auto dir = eco_test::scratch_dir("lowbit_config");
  std::ofstream(dir / "train.bin") << "x";
  std::ofstream(dir / "val.bin") << "x";
  const nlohmann::json base = {{"data", {{"train", (dir / "train.bin").string()}, {"val", (dir / "val.bin").string()}}}};
  auto resolve = [&](const std::vector<std::string>& overrides) {
    return Config::from_json(base, overrides, eco_train_schema());
  };
  const OptimizerSpec s = optimizer_spec_from(resolve({"optim.mode=eco_sr", "optim.weight_format=int4",
                                                       "optim.group_size=64", "optim.scale_dtype=bf16"}));
  CHECK(s.weight_format == QuantFormat::INT4);
  CHECK(s.group_size == 64);
  CHECK(s.scale_dtype == LowbitScaleDtype::BF16);
  CHECK(s.lowbit_granularity == ScaleGranularity::PerRow);
  const OptimizerSpec t = optimizer_spec_from(resolve({"optim.weight_format=ternary", "optim.lowbit_scale=tensor"}));
  CHECK(t.weight_format == QuantFormat::TERNARY);
  CHECK(t.lowbit_granularity == ScaleGranularity::PerTensor);
  CHECK(t.group_size == 128);
  CHECK(t.scale_dtype == LowbitScaleDtype::F32);
  auto error_of = [&](const std::vector<std::string>& overrides) -> std::string {
    try {
      resolve(overrides);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  CHECK(contains(error_of({"optim.group_size=48"}), "optim.group_size"));
  CHECK(contains(error_of({"optim.group_size=256"}), "optim.group_size"));
  CHECK(contains(error_of({"optim.lowbit_scale=block128"}), "optim.lowbit_scale"));
  CHECK(contains(error_of({"optim.scale_dtype=fp16"}), "optim.scale_dtype"));
  CHECK(contains(error_of({"optim.weight_format=int3"}), "optim.weight_format"));
}

// ---------------------------------------------------------------------------------------------
// ZeRO-1: two optimizers own halves of the rows; their gathered codes and scales equal one
// unsharded optimizer's (low-bit rows are byte-aligned, so a row cut is a byte cut).
TEST_CASE("low-bit weights under ZeRO-1: row cuts gather to the unsharded state", "[lowbit][zero1]") {
  const std::vector<ToyTensor> shapes = {{"a", 5, 70, true, true}, {"b", 3, 70, false, false}, {"c", 7, 36, true, true}};
  for (const LowbitCase& c : kCases) {
    for (WeightMode mode : {WeightMode::EcoSr, WeightMode::Master}) {
      for (LowbitScaleDtype dtype : {LowbitScaleDtype::F32, LowbitScaleDtype::BF16}) {
        INFO(c.name << " " << to_string(mode) << " " << to_string(dtype));
        const OptimizerSpec spec = lowbit_spec(mode, c, dtype);
        ToyRun whole(shapes, spec, 9);
        // The same tensors sharded over two "ranks", each with its own copy of the stored weights.
        struct Rank {
          std::vector<std::vector<float>> values, grads;
          std::unique_ptr<WeightOptimizer> opt;
        };
        CpuOps ops;
        Rank ranks[2];
        for (int r = 0; r < 2; ++r) {
          std::vector<OptimTensor> ts;
          size_t offset = 0;
          ranks[r].values.resize(shapes.size());
          ranks[r].grads.resize(shapes.size());
          for (size_t i = 0; i < shapes.size(); ++i) {
            OptimTensor t;
            t.name = shapes[i].name;
            t.rows = shapes[i].rows;
            t.cols = shapes[i].cols;
            t.quantize = shapes[i].quantize;
            t.weight_decay = shapes[i].decay;
            if (!whole.values(i).empty()) ranks[r].values[i] = whole.values(i);
            ranks[r].grads[i].assign(t.rows * t.cols, 0.0f);
            t.value = ranks[r].values[i].empty() ? nullptr : ranks[r].values[i].data();
            t.grad = ranks[r].grads[i].data();
            t.offset = offset;
            offset += t.rows * t.cols;
            ts.push_back(t);
          }
          ranks[r].opt = std::make_unique<WeightOptimizer>(ops, ts, spec, OptimizerShard{r, 2});
          for (size_t i = 0; i < shapes.size(); ++i)
            if (ranks[r].opt->is_quantized(i)) ranks[r].opt->init_quantized(i, whole.init(i).data());
        }
        for (int t = 1; t <= 3; ++t) {
          whole.compute_grads();
          for (int r = 0; r < 2; ++r)
            for (size_t i = 0; i < shapes.size(); ++i) ranks[r].grads[i] = whole.grad(i);
          whole.opt().step(2e-2f, t);
          for (int r = 0; r < 2; ++r) ranks[r].opt->step(2e-2f, t);
          // All-gather by hand: each rank's block of every region goes to the other.
          std::vector<GatherRegion> regions[2] = {ranks[0].opt->gather_regions(), ranks[1].opt->gather_regions()};
          REQUIRE(regions[0].size() == regions[1].size());
          for (size_t g = 0; g < regions[0].size(); ++g) {
            const size_t first = regions[0][g].bytes[0];
            auto* r0 = static_cast<uint8_t*>(regions[0][g].base);
            auto* r1 = static_cast<uint8_t*>(regions[1][g].base);
            std::memcpy(r0 + first, r1 + first, regions[1][g].bytes[1]);
            std::memcpy(r1, r0, first);
          }
          for (size_t i = 0; i < shapes.size(); ++i) {
            if (!whole.opt().is_quantized(i)) continue;
            for (int r = 0; r < 2; ++r) {
              INFO("step " << t << " tensor " << i << " rank " << r);
              CHECK(code_bytes(ranks[r].opt->quant_ref(i)) == code_bytes(whole.opt().quant_ref(i)));
              CHECK(scale_bytes(ranks[r].opt->quant_ref(i)) == scale_bytes(whole.opt().quant_ref(i)));
            }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A tiny model trains with low-bit weights: the loss of one repeated batch falls.
TEST_CASE("tiny model with low-bit weights: the loss falls (eco_sr int4, sr ternary, ...)", "[lowbit][train]") {
  const ModelConfig mcfg = tiny_config(Arch::GPT2, true, 0, 2);
  const Batch b = make_batch(mcfg.vocab_size, 4, 4, 8);
  struct Run {
    WeightMode mode;
    LowbitCase lowbit;
    bool quantize_activations;
  };
  const Run runs[] = {{WeightMode::EcoSr, kCases[0], true},  {WeightMode::EcoSr, kCases[1], false},
                      {WeightMode::Sr, kCases[3], true},     {WeightMode::EcoSr, kCases[3], true},
                      {WeightMode::EcoSr, kCases[2], true},  {WeightMode::Master, kCases[0], true}};
  std::printf("tiny GPT-2 (d 32, 2 layers), one batch of 4x8, AdamW lr 1e-2, 40 steps:\n");
  auto train = [&](Ops& ops, const Run& run) {
    OptimizerSpec spec = lowbit_spec(run.mode, run.lowbit);
    spec.seed = 5;
    spec.weight_decay = 0.0f;
    ModelWeights w(mcfg, ops, spec, run.quantize_activations, /*fp8_backward=*/false);
    w.init(21);
    std::vector<float> losses;
    for (int t = 1; t <= 40; ++t) {
      w.model().zero_grad();
      losses.push_back(w.model().forward(b.x.data(), b.y.data(), b.B, b.T));
      w.model().backward();
      w.step(1e-2f, t, 1.0f, nullptr);
    }
    return losses;
  };
  for (const Run& run : runs) {
    CpuOps ops;
    const std::vector<float> losses = train(ops, run);
    // The guarded backend crashes on any host dereference of backend memory: the low-bit path
    // touches its codes and scales only through ops, as a device backend needs.
    GuardedOps guarded;
    CHECK(train(guarded, run) == losses);
    std::printf("  %-7s %-9s act %s: loss %.3f -> %.3f\n", to_string(run.mode), run.lowbit.name,
                run.quantize_activations ? "e4m3" : "fp32", losses.front(), losses.back());
    INFO(to_string(run.mode) << " " << run.lowbit.name << ": " << losses.front() << " -> " << losses.back());
    CHECK(std::isfinite(losses.back()));
    CHECK(losses.back() < losses.front() - 1.0f);
  }
}

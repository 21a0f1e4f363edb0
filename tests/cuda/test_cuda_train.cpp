// Whole training runs on the GPU through the eco_train binary (the tiny byte-level model of
// tests/train_fixture.h): the loss curve follows the CPU's in fp32 and in eco_sr, a GPU run resumes
// bit-exactly, and a CPU checkpoint continues on the GPU. Skipped (ctest exit 4) without a GPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../tiny_model.h"
#include "../train_fixture.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda_test_util.h"
#include "train/model_weights.h"

using namespace eco_test;

namespace {

std::string cmd(const TinyRun& r) { return eco_train_bin() + " --config " + (r.dir / "config.json").string(); }

std::vector<double> train_losses(const std::filesystem::path& run_dir) {
  std::vector<double> out;
  for (const auto& rec : read_metrics(run_dir))
    if (rec.contains("train_loss")) out.push_back(rec["train_loss"].get<double>());
  return out;
}

std::vector<std::string> records_without_speed(const std::filesystem::path& run_dir) {
  std::vector<std::string> out;
  for (auto rec : read_metrics(run_dir)) {
    rec.erase("tokens_per_s");
    out.push_back(rec.dump());
  }
  return out;
}

TinyRun tiny(const std::string& name, const std::string& mode, const std::string& device, int steps = 50) {
  TinyRun r(name);
  r.config["optim"]["mode"] = mode;
  r.config["train"]["steps"] = steps;
  r.config["train"]["device"] = device;
  r.config["train"]["sample_tokens"] = 0;
  r.write_config();
  return r;
}

// Runs c (CPU) and g (GPU), both configured for 50 steps, and checks the GPU's loss curve: the first
// step within 1e-4 (same weights and data; only summation order differs), every step within
// `bound` relative, and training happens.
void check_gpu_follows_cpu(const TinyRun& c, const TinyRun& g, double bound) {
  REQUIRE(run_command(cmd(c), c.dir / "log.txt") == 0);
  REQUIRE(run_command(cmd(g), g.dir / "log.txt") == 0);
  const std::vector<double> lc = train_losses(c.dir / "run"), lg = train_losses(g.dir / "run");
  REQUIRE(lc.size() == 50);
  REQUIRE(lg.size() == 50);
  CHECK(std::fabs(lg[0] - lc[0]) <= 1e-4 * lc[0]);
  for (size_t i = 0; i < lc.size(); ++i) {
    INFO("step " << i + 1 << ": cpu " << lc[i] << ", gpu " << lg[i]);
    CHECK(std::fabs(lg[i] - lc[i]) <= bound * lc[i]);
  }
  CHECK(lg.back() < lg.front() - 0.5);  // it trains
}

}  // namespace

TEST_CASE("50 steps on the GPU follow the CPU's loss curve (fp32 and eco_sr)", "[cuda][train]") {
  eco_cuda_test::require_gpu();
  for (const char* mode : {"fp32", "eco_sr"}) {
    INFO(mode);
    TinyRun c = tiny(std::string("cuda_curve_cpu_") + mode, mode, "cpu");
    TinyRun g = tiny(std::string("cuda_curve_gpu_") + mode, mode, "cuda");
    // The first step sees identical weights and data: only summation order (GEMMs, norms, softmax)
    // and CUDA's exp/tanh differ, ~1e-6 relative. The difference then grows with training (each
    // update amplifies it), and SR draws the same bits, so the curves stay together: 1% at step 50
    // bounds it generously and still catches a wrong kernel (which moves the loss by far more).
    check_gpu_follows_cpu(c, g, 0.01);
  }
}

TEST_CASE("50 steps below FP8 on the GPU follow the CPU's loss curve (int4 + m8v4 eco_sr, ternary + solo4 sr)",
          "[cuda][train][lowbit]") {
  eco_cuda_test::require_gpu();
  struct Case {
    const char *mode, *weights, *states;
  };
  for (const Case& k : {Case{"eco_sr", "int4", "m8v4"}, Case{"sr", "ternary", "solo4"}}) {
    INFO(k.mode << ", " << k.weights << " weights, " << k.states << " states");
    const std::string tag = std::string(k.weights) + "_" + k.states;
    TinyRun c = tiny("cuda_lowbit_cpu_" + tag, k.mode, "cpu");
    TinyRun g = tiny("cuda_lowbit_gpu_" + tag, k.mode, "cuda");
    for (TinyRun* r : {&c, &g}) {
      r->config["optim"]["weight_format"] = k.weights;
      r->config["optim"]["state_format"] = k.states;
      r->config["optim"]["group_size"] = 32;  // the tiny model's K is 32
      r->write_config();
    }
    // As above, the optimizer step and the codecs are bit-exact (test_cuda_optim); the forward's
    // summation order differs, and with 2-bit weights one flipped SR decision moves a weight by a
    // whole scale, so the curves may part faster than in FP8. 3% is a first bound, not yet
    // calibrated on a GPU; a wrong kernel stalls or breaks training, far beyond it.
    check_gpu_follows_cpu(c, g, 0.03);
  }
}

TEST_CASE("a GPU run resumes bit-exactly, and a CPU checkpoint continues on the GPU", "[cuda][train][resume]") {
  eco_cuda_test::require_gpu();
  TinyRun whole = tiny("cuda_resume_whole", "eco_sr", "cuda", 30);
  REQUIRE(run_command(cmd(whole), whole.dir / "log.txt") == 0);

  TinyRun parts = tiny("cuda_resume_parts", "eco_sr", "cuda", 30);
  REQUIRE(run_command(cmd(parts) + " --stop-after 13", parts.dir / "log1.txt") == 0);
  REQUIRE(run_command(cmd(parts) + " --resume", parts.dir / "log2.txt") == 0);
  CHECK(records_without_speed(parts.dir / "run") == records_without_speed(whole.dir / "run"));
  for (const char* blob : {"codes.bin", "scales.f32", "m.bin", "v.bin", "values.f32"})
    CHECK(read_text(parts.dir / "run/ckpt_00000030" / blob) == read_text(whole.dir / "run/ckpt_00000030" / blob));

  // 10 steps on the CPU, the rest on the GPU from the CPU's checkpoint.
  TinyRun mixed = tiny("cuda_resume_mixed", "eco_sr", "cpu", 30);
  REQUIRE(run_command(cmd(mixed) + " --stop-after 10", mixed.dir / "log1.txt") == 0);
  REQUIRE(run_command(cmd(mixed) + " --resume --set train.device=cuda", mixed.dir / "log2.txt") == 0);
  CHECK(read_text(mixed.dir / "log2.txt").find("resumed from") != std::string::npos);
  const std::vector<double> lm = train_losses(mixed.dir / "run"), lw = train_losses(whole.dir / "run");
  REQUIRE(lm.size() == 30);
  for (size_t i = 0; i < lm.size(); ++i) CHECK(std::fabs(lm[i] - lw[i]) <= 0.01 * lw[i]);
  // And back: the GPU's checkpoint continues on the CPU.
  TinyRun back = tiny("cuda_resume_back", "eco_sr", "cuda", 30);
  REQUIRE(run_command(cmd(back) + " --stop-after 10", back.dir / "log1.txt") == 0);
  REQUIRE(run_command(cmd(back) + " --resume --set train.device=cpu", back.dir / "log2.txt") == 0);
  CHECK(train_losses(back.dir / "run").size() == 30);
}

// ---- sparse MoE: in-process training on CudaOps against CpuOps ----
//
// The MoE models of tests/test_moe.cpp (tiny: d 32, 4 heads, vocabulary 67, 2 layers, 4 experts
// top-2) trained through eco::ModelWeights for 8 steps of fresh 2x8 batches (N = 16 tokens), the
// same init seed, batches and optimizer seed on both backends, the loop of src/train/trainer.cpp:
// reset_moe_totals() before the forward, update_expert_bias(read_moe_totals(), rate) after the step.
//
// Why the routing is the same on both backends, and what guards it. moe_route runs the same
// per-token code (core/moe_math.h, the shared exponential) on both, so equal logits give the same
// experts, gates and dispatch plan bit for bit (test_cuda_moe). The logits themselves come from
// GEMMs (router, attention, norms, the layer-0 experts) that sum in a different order: at step 1
// they differ by ~1e-7 relative per operation (γ_C·Σ|terms|, C = 32), ~1e-6 through two layers, and
// the difference grows with each update as the weights drift apart (in eco_sr also through an E4M3
// activation code or an SR draw that lands on the other side of its threshold). A token whose K-th
// and (K+1)-th best scores (probability + bias) are closer than that picks another expert on the
// GPU: routing is not continuous, so a flip cannot be excluded, only made unlikely and caught.
// Made unlikely: the init seed (6) was chosen on the CPU among 40 for the largest routing margins
// of these six runs (gpt2 / llama / idle expert x fp32 / eco_sr, 8 steps, 16 tokens): the smallest
// gap between the K-th and (K+1)-th score over every token, MoE layer and step is 3.9e-5 (gpt2
// eco_sr, step 4; fp32 runs >= 1.9e-4), and CPU runs whose initial resident weights are perturbed
// by 1e-5 relative (10-100x the GPU's step-1 difference) keep every routed and kept count of every
// run; at 1e-4 one of the six (gpt2 eco_sr) changes from step 4, at 3e-4 none, at 1e-3 three.
// Caught: the routed and kept counts of every expert in every layer at every step (MoeTotals,
// exact integers) must be EQUAL, checked before the loss — a flipped choice changes two of them,
// and the failure then says "routing", not "kernel" — and the load stats built from them (load
// min/max/entropy, dropped fraction) and the expert bias (a function of the counts alone) must be
// bit-identical. The tolerances below assume equal routing.
//
// Tolerances:
// - Step 1 loss (identical weights and data): summation order and CUDA's exp/tanh only, ~1e-6
//   relative; 1e-4 relative as in the dense case (an E4M3 activation code that rounds the other way
//   in eco_sr moves one element of one row by one E4M3 step, far below 1e-6 of the loss).
// - Steps 2-8: the difference compounds through the updates (Adam's m/sqrt(v) passes a gradient's
//   relative difference on to its update). Measured on the CPU: initial weights perturbed by 1e-3
//   relative (1000x rounding) move the loss by at most 1.8e-4 relative over the 8 steps (eco_sr,
//   with routing flips), 1e-5 by at most 7e-6. So 1e-3 relative (the dense case allows 1% at step
//   50), which a wrong gate, slot, combine or expert GEMM still exceeds.
// - Step-1 gradients in fp32 (no quantization anywhere): each element within 1e-3 of its tensor's
//   largest |g| on the CPU (+1e-7): sums of at most 4C = 128 products have error <= 128·2^-24 ≈ 8e-6
//   of their Σ|terms|, which leaves a factor 100 for cancellation. Not checked in eco_sr, where one
//   activation code rounding the other way moves a few elements of an expert gradient by ~1/8 of a
//   row's contribution. This is what catches a wrong backward kernel (router backward, combine
//   backward, gather backward) that 8 steps at lr 3e-3 would barely show in the loss.
// - aux and z losses (from the router probabilities and log-sum-exps, continuous in the weights):
//   the loss tolerance of the step, relative, + 1e-7.
namespace {

using eco::Arch;
using eco::GPT;
using eco::ModelConfig;

ModelConfig moe_tiny(Arch arch) {
  ModelConfig c = tiny_config(arch, /*tied=*/true, /*mlp_hidden=*/48);
  c.moe.experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_hidden = 24;
  c.moe.activation = arch == Arch::Llama ? eco::MlpActivation::SwiGlu : eco::MlpActivation::Gelu;
  c.moe.aux_loss_coef = 0.01f;
  c.moe.z_loss_coef = 0.001f;
  return c;
}

// gpt2, MoE in both layers.
ModelConfig moe_gpt2() { return moe_tiny(Arch::GPT2); }

// llama: layer 0 dense, layer 1 MoE with a shared expert, capacity ceil(1.0·16·2/4) = 8 rows per
// expert (drops whenever the loads are uneven), and the aux-loss-free bias moving the selection.
ModelConfig moe_llama() {
  ModelConfig c = moe_tiny(Arch::Llama);
  c.tied_head = false;
  c.moe.first_layer = 1;
  c.moe.shared_expert = true;
  c.moe.capacity_factor = 1.0f;
  c.moe.bias_update_rate = 1e-2f;
  return c;
}

constexpr int kMoeSteps = 8;
constexpr float kMoeLr = 3e-3f;

struct MoeTrace {
  std::vector<float> losses;                            // per step (cross-entropy)
  std::vector<std::vector<double>> totals;              // per step: MoeTotals::values
  std::vector<std::vector<eco::MoeLayerStats>> stats;   // per step, per MoE layer
  std::vector<std::vector<float>> bias;                 // per step, after its bias update
  std::vector<float> grads1;                            // step 1's gradient, every tensor
  std::vector<float> params;                            // the resident parameters after the last step
  std::vector<eco::ParamTensor> tensors;                // the model's layout (eco_sr: experts external)
};

// Trains cfg on `ops` as the trainer does; bias0 (if not null) is the initial expert bias.
MoeTrace train_moe(eco::Ops& ops, const ModelConfig& cfg, eco::WeightMode mode, const std::vector<float>* bias0) {
  eco::OptimizerSpec spec;
  spec.mode = mode;
  spec.seed = 5;
  const bool quantized = mode != eco::WeightMode::Fp32;
  eco::ModelWeights w(cfg, ops, spec, /*quantize_activations=*/quantized, /*fp8_backward=*/false);
  w.init(6);  // the seed with the widest routing margins (see above)
  GPT& m = w.model();
  if (bias0) m.set_expert_bias(*bias0);
  MoeTrace tr;
  tr.tensors = m.tensors();
  for (int t = 1; t <= kMoeSteps; ++t) {
    const Batch b = make_batch(cfg.vocab_size, 100u + static_cast<uint32_t>(t));
    m.zero_grad();
    m.reset_moe_totals();
    tr.losses.push_back(m.forward(b.x.data(), b.y.data(), b.B, b.T));
    m.backward();
    if (t == 1) {
      tr.grads1.resize(m.num_params());
      ops.copy_to_host(tr.grads1.data(), m.grads(), tr.grads1.size() * sizeof(float));
    }
    const eco::MoeTotals totals = m.read_moe_totals();
    tr.totals.push_back(totals.values);
    tr.stats.push_back(GPT::moe_stats(cfg, totals));
    w.step(kMoeLr, t, 1.0f, nullptr);  // throws if an update made a weight non-finite
    m.update_expert_bias(totals, cfg.moe.bias_update_rate);
    tr.bias.push_back(m.expert_bias());
  }
  tr.params.resize(m.resident_param_count());
  m.download_params(tr.params.data());
  return tr;
}

double loss_tolerance(size_t step_index) { return step_index == 0 ? 1e-4 : 1e-3; }

// Every check of the comment above, GPU trace g against CPU trace c.
void compare_moe_traces(const ModelConfig& cfg, const MoeTrace& c, const MoeTrace& g, bool check_grads) {
  const size_t E = static_cast<size_t>(cfg.moe.experts);
  const size_t stride = 3 * E + 2;
  REQUIRE(c.losses.size() == static_cast<size_t>(kMoeSteps));
  REQUIRE(g.losses.size() == c.losses.size());
  for (size_t s = 0; s < c.losses.size(); ++s) {
    INFO("step " << s + 1 << ": cpu loss " << c.losses[s] << ", gpu loss " << g.losses[s]);
    REQUIRE(std::isfinite(g.losses[s]));
    // The routing first: unequal counts mean an expert choice flipped, and then the loss
    // comparison below is not about the kernels any more.
    REQUIRE(g.totals[s].size() == c.totals[s].size());
    for (size_t l = 0; l < c.totals[s].size() / stride; ++l)
      for (size_t e = 0; e < 2 * E; ++e) {
        INFO("MoE layer " << l << (e < E ? ", routed to expert " : ", kept by expert ") << e % E);
        REQUIRE(g.totals[s][l * stride + e] == c.totals[s][l * stride + e]);
      }
    for (size_t l = 0; l < c.totals[s].size() / stride; ++l)
      REQUIRE(g.totals[s][l * stride + 3 * E + 1] == c.totals[s][l * stride + 3 * E + 1]);  // tokens
    const double tol = loss_tolerance(s);
    CHECK(std::fabs(static_cast<double>(g.losses[s]) - c.losses[s]) <= tol * c.losses[s]);
    REQUIRE(g.stats[s].size() == c.stats[s].size());
    for (size_t l = 0; l < c.stats[s].size(); ++l) {
      const eco::MoeLayerStats &cs = c.stats[s][l], &gs = g.stats[s][l];
      INFO("MoE stats of layer " << cs.layer);
      CHECK(gs.layer == cs.layer);
      CHECK(gs.load_min == cs.load_min);
      CHECK(gs.load_max == cs.load_max);
      CHECK(gs.load_entropy == cs.load_entropy);
      CHECK(gs.dropped_fraction == cs.dropped_fraction);
      CHECK(std::isfinite(gs.aux_loss));
      CHECK(std::isfinite(gs.z_loss));
      CHECK(std::fabs(gs.aux_loss - cs.aux_loss) <= tol * std::fabs(cs.aux_loss) + 1e-7);
      CHECK(std::fabs(gs.z_loss - cs.z_loss) <= tol * std::fabs(cs.z_loss) + 1e-7);
    }
    INFO("expert bias after the step's update");
    CHECK(eco_cuda_test::first_bit_difference(c.bias[s], g.bias[s]) == -1);
  }
  size_t bad = 0;
  for (float x : g.params) bad += std::isfinite(x) ? 0 : 1;
  CHECK(bad == 0);
  if (!check_grads) return;
  REQUIRE(g.grads1.size() == c.grads1.size());
  for (const eco::ParamTensor& t : c.tensors) {
    double scale = 0;
    for (size_t i = 0; i < t.numel; ++i) scale = std::max(scale, std::fabs(static_cast<double>(c.grads1[t.offset + i])));
    size_t out = 0, first = 0;
    for (size_t i = 0; i < t.numel; ++i) {
      const double d = std::fabs(static_cast<double>(g.grads1[t.offset + i]) - c.grads1[t.offset + i]);
      if (!(d <= 1e-3 * scale + 1e-7) && out++ == 0) first = i;
    }
    INFO(t.name << ": " << out << " of " << t.numel << " step-1 gradient elements off; first " << first << ": cpu "
                << c.grads1[t.offset + first] << ", gpu " << g.grads1[t.offset + first] << " (tensor max |g| " << scale
                << ")");
    CHECK(out == 0);
  }
}

}  // namespace

TEST_CASE("MoE training on the GPU follows the CPU step by step (gpt2 all-MoE; llama dense + MoE, shared expert, "
          "capacity, expert bias)",
          "[cuda][train][moe]") {
  eco_cuda_test::require_gpu();
  struct Variant {
    const char* name;
    ModelConfig cfg;
  };
  for (const Variant& v : {Variant{"gpt2, 4 experts top-2 in every layer", moe_gpt2()},
                           Variant{"llama, dense layer + MoE layer, shared expert, capacity 1.0, bias", moe_llama()}})
    for (eco::WeightMode mode : {eco::WeightMode::Fp32, eco::WeightMode::EcoSr}) {
      const bool fp32 = mode == eco::WeightMode::Fp32;
      INFO(v.name << ", " << (fp32 ? "fp32" : "eco_sr"));
      eco::CpuOps cpu;
      eco::cuda::CudaOps gpu;
      const MoeTrace c = train_moe(cpu, v.cfg, mode, nullptr);
      const MoeTrace g = train_moe(gpu, v.cfg, mode, nullptr);
      compare_moe_traces(v.cfg, c, g, /*check_grads=*/fp32);
      if (v.cfg.moe.bias_update_rate > 0.0f)  // the bias did move
        CHECK(c.bias.back() != std::vector<float>(c.bias.back().size(), 0.0f));
      if (v.cfg.moe.capacity_factor > 0.0f) {
        double dropped = 0;
        for (const auto& st : c.stats) dropped += st[0].dropped_fraction;
        CHECK(dropped > 0.0);  // the capacity did drop assignments
      }
    }
}

TEST_CASE("MoE training with an expert that receives no tokens: finite on the GPU and equal to the CPU",
          "[cuda][train][moe]") {
  eco_cuda_test::require_gpu();
  // Expert 0 of every MoE layer gets bias -10: with probabilities in [0, 1] and the bias moving by
  // 8·1e-3 at most, it can never be among the top 2 of 4. Its GEMMs are skipped (no rows) and its
  // gradient must be exactly zero on the GPU; in fp32 its weights then only decay (AdamW with
  // m = v = 0, the bit-identical optimizer step), so they must equal the CPU's bit for bit.
  ModelConfig cfg = moe_gpt2();
  cfg.moe.bias_update_rate = 1e-3f;
  const size_t E = static_cast<size_t>(cfg.moe.experts);
  std::vector<float> bias(static_cast<size_t>(cfg.moe_layer_count()) * E, 0.0f);
  for (size_t l = 0; l < bias.size() / E; ++l) bias[l * E] = -10.0f;
  for (eco::WeightMode mode : {eco::WeightMode::Fp32, eco::WeightMode::EcoSr}) {
    const bool fp32 = mode == eco::WeightMode::Fp32;
    INFO((fp32 ? "fp32" : "eco_sr"));
    eco::CpuOps cpu;
    eco::cuda::CudaOps gpu;
    const MoeTrace c = train_moe(cpu, cfg, mode, &bias);
    const MoeTrace g = train_moe(gpu, cfg, mode, &bias);
    for (const std::vector<double>& v : g.totals)
      for (size_t l = 0; l < v.size() / (3 * E + 2); ++l) {
        REQUIRE(v[l * (3 * E + 2)] == 0.0);      // routed to expert 0
        REQUIRE(v[l * (3 * E + 2) + E] == 0.0);  // kept by expert 0
      }
    compare_moe_traces(cfg, c, g, /*check_grads=*/fp32);
    for (const eco::ParamTensor& t : g.tensors) {
      if (t.name.find(".expert.0.") == std::string::npos) continue;
      INFO(t.name);
      for (size_t i = 0; i < t.numel; ++i) REQUIRE(g.grads1[t.offset + i] == 0.0f);
      if (!fp32) continue;  // eco_sr keeps the experts quantized, outside params()
      REQUIRE(t.offset + t.numel <= g.params.size());
      const std::vector<float> gw(g.params.begin() + static_cast<long>(t.offset),
                                  g.params.begin() + static_cast<long>(t.offset + t.numel));
      const std::vector<float> cw(c.params.begin() + static_cast<long>(t.offset),
                                  c.params.begin() + static_cast<long>(t.offset + t.numel));
      CHECK(eco_cuda_test::first_bit_difference(cw, gw) == -1);
    }
  }
}

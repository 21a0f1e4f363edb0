// eco_train --plan: the per-rank figures of a small config against values computed by hand (what
// each mode stores per parameter, what ZeRO-1 and expert parallelism divide), the communication
// formulas, the report's text (every mode, both GPUs), and the --plan / --world flags.
#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/cli.h"
#include "train/model_setup.h"
#include "train/model_weights.h"
#include "train/plan_report.h"

using namespace eco;

namespace {

// Llama, one layer, d 64, 2 heads, MLP 128 (fc [256, 64]), tied head, vocab 256; data paths unset.
std::vector<std::string> small_dense() {
  return {"model.arch=llama", "model.vocab_size=256",  "model.padded_vocab=256", "model.n_layer=1",
          "model.n_head=2",   "model.d_model=64",      "model.mlp_hidden=128",   "model.max_seq_len=32",
          "model.tied_head=true", "train.batch_size=2", "train.seq_len=16",      "train.device=cuda"};
}

// Its tensors: wte 256x64; ln1, ln2, lnf 64 each; qkv 192x64, attproj 64x64, fc 256x64, fcproj 64x128.
constexpr size_t kParams = 16384 + 3 * 64 + 12288 + 4096 + 16384 + 8192;  // 57536
constexpr size_t kLinear = 12288 + 4096 + 16384 + 8192;                   // 40960, quantized in FP8 modes
constexpr size_t kOther = kParams - kLinear;                               // 16576, fp32 always
constexpr size_t kRows = 192 + 64 + 256 + 64;                              // one scale per row

MemoryPlan plan_for(const Config& cfg, const char* mode, const RankLayout& layout) {
  OptimizerSpec spec = optimizer_spec_from(cfg);
  spec.mode = parse_weight_mode(mode);
  const ModelConfig mcfg = model_config_from(cfg);
  GPT::LinearQuantization q;
  q.quantize_activations = true;
  return plan_memory(mcfg, spec, q, cuda_footprint(mcfg, 2, 16), 2, 16, layout);
}

}  // namespace

TEST_CASE("plan: bytes per parameter of each mode, by hand", "[plan]") {
  const Config cfg = load_config_for_plan("", small_dense());
  const RankLayout one;
  const MemoryPlan fp32 = plan_for(cfg, "fp32", one);
  CHECK(fp32.num_params == kParams);
  CHECK(fp32.linear_params == kLinear);
  CHECK(fp32.weight_bytes == 4 * kParams);
  CHECK(fp32.code_bytes + fp32.scale_bytes + fp32.master_bytes == 0);
  CHECK(fp32.m_bytes == 4 * kParams);
  CHECK(fp32.v_bytes == 4 * kParams);
  CHECK(fp32.grad_bytes == 4 * kParams);
  CHECK(fp32.optimizer_scratch_bytes + fp32.gemm_scratch_bytes == 0);  // the CUDA backend's step needs none

  // master: FP8 codes + row scales + a 4-byte master of each quantized weight.
  const MemoryPlan master = plan_for(cfg, "master", one);
  CHECK(master.weight_bytes == 4 * kOther);
  CHECK(master.code_bytes == kLinear);
  CHECK(master.scale_bytes == 4 * kRows);
  CHECK(master.master_bytes == 4 * kLinear);
  CHECK(master.m_bytes == 4 * kParams);
  CHECK(master.v_bytes == 4 * kParams);

  // eco (and naive, sr, eco_sr): no master; m and v stay (ECO folds the error into m).
  for (const char* mode : {"naive", "sr", "eco", "eco_sr"}) {
    INFO(mode);
    const MemoryPlan p = plan_for(cfg, mode, one);
    CHECK(p.master_bytes == 0);
    CHECK(p.code_bytes == kLinear);
    CHECK(p.v_bytes == 4 * kParams);
    CHECK(p.static_bytes() == master.static_bytes() - 4 * kLinear);
  }
  // bf16 keeps a master; bf16_sr does not; both store 2-byte codes without scales.
  const MemoryPlan bf16 = plan_for(cfg, "bf16", one), bf16_sr = plan_for(cfg, "bf16_sr", one);
  CHECK(bf16.code_bytes == 2 * kLinear);
  CHECK(bf16.scale_bytes == 0);
  CHECK(bf16.master_bytes == 4 * kLinear);
  CHECK(bf16_sr.master_bytes == 0);

  // SGDM with bf16 states: one 2-byte moment.
  const Config sgdm = load_config_for_plan("", [] {
    auto o = small_dense();
    o.push_back("optim.optimizer=sgdm");
    o.push_back("optim.state_format=bf16");
    return o;
  }());
  const MemoryPlan s = plan_for(sgdm, "eco", one);
  CHECK(s.m_bytes == 2 * kParams);
  CHECK(s.v_bytes == 0);
}

TEST_CASE("plan: ZeRO-1 divides m and v by the world; communication by the ring formulas", "[plan]") {
  const Config cfg = load_config_for_plan("", small_dense());
  const RankLayout dp4{4, 1, false}, zero4{4, 1, true};
  for (const char* mode : {"fp32", "master", "eco"}) {
    INFO(mode);
    const MemoryPlan full = plan_for(cfg, mode, dp4), sharded = plan_for(cfg, mode, zero4);
    CHECK(full.m_bytes == 4 * kParams);  // plain data parallel: everything on every rank
    // The trainer's cut of the flat space (dist/zero1.h): a quarter, up to the row it must not split.
    CHECK(sharded.m_bytes >= kParams);
    CHECK(sharded.m_bytes <= kParams + 4 * 256);
    CHECK(sharded.v_bytes == sharded.m_bytes);
    CHECK(sharded.master_bytes == full.master_bytes);  // masters stay whole (only their updates shard)
    CHECK(sharded.weight_bytes == full.weight_bytes);  // weights, codes and grads stay whole
    CHECK(sharded.code_bytes == full.code_bytes);
    CHECK(sharded.grad_bytes == full.grad_bytes);
  }
  const OptimizerSpec base = optimizer_spec_from(cfg);
  const ModelConfig mcfg = model_config_from(cfg);
  OptimizerSpec eco = base;
  eco.mode = WeightMode::Eco;
  const CommPlan ar = plan_communication(mcfg, eco, 2, 16, 1, dp4);
  CHECK(ar.grad_bytes == Approx(2.0 * 3 / 4 * 4 * kParams));
  CHECK(ar.weight_gather_bytes == 0);
  const CommPlan z = plan_communication(mcfg, eco, 2, 16, 1, zero4);
  CHECK(z.grad_bytes == Approx(3.0 / 4 * 4 * kParams));
  // All-gather of what a rank stores: fp32 for the non-linear tensors, FP8 codes + row scales.
  CHECK(z.weight_gather_bytes == Approx(3.0 / 4 * (4 * kOther + kLinear + 4 * kRows)));
  OptimizerSpec fp32 = base;
  CHECK(plan_communication(mcfg, fp32, 2, 16, 1, zero4).weight_gather_bytes == Approx(3.0 / 4 * 4 * kParams));
  CHECK(plan_communication(mcfg, eco, 2, 16, 1, RankLayout{}).total() == 0);
}

TEST_CASE("plan: expert parallelism holds experts/ep experts per rank; the all-to-all formula", "[plan]") {
  auto overrides = small_dense();
  for (const char* kv : {"moe.experts=8", "moe.top_k=2", "moe.expert_hidden=32", "moe.activation=gelu", "dist.ep=4"}) overrides.push_back(kv);
  const Config cfg = load_config_for_plan("", overrides);
  const ModelConfig mcfg = model_config_from(cfg);
  const size_t expert = 32 * 64 + 64 * 32;  // fc.w [32, 64] + fcproj.w [64, 32] (gelu: two matrices)
  const MemoryPlan one = plan_for(cfg, "eco", RankLayout{});
  const MemoryPlan ep4 = plan_for(cfg, "eco", RankLayout{8, 4, false});
  CHECK(one.num_params - ep4.num_params == 6 * expert);  // 2 of 8 experts held
  CHECK(ep4.code_bytes == 2 * expert);                    // only the experts are quantized
  CHECK(ep4.m_bytes == 4 * ep4.num_params);
  const MemoryPlan ep4z = plan_for(cfg, "eco", RankLayout{8, 4, true});
  // Expert state over their data-parallel degree 8/4 = 2 (rows 32 and 64 halve exactly).
  const size_t dense = one.num_params - 8 * expert;
  // The layer is all MoE (no dense MLP): wte, 3 norms, qkv, attproj, router, each a multiple of 8.
  CHECK(dense == 16384 + 3 * 64 + 12288 + 4096 + 8 * 64);
  CHECK(ep4z.m_bytes == 4 * (dense / 8 + expert));

  OptimizerSpec eco = optimizer_spec_from(cfg);
  eco.mode = WeightMode::Eco;
  const CommPlan c = plan_communication(mcfg, eco, 2, 16, 3, RankLayout{8, 4, false});
  // 32 tokens x top-2 rows of 64 fp32, 3/4 leave the rank, dispatch + combine, fwd + bwd, 3 micro-batches.
  CHECK(c.expert_all_to_all_bytes == Approx(32.0 * 2 * 64 * 4 * 3 / 4 * 2 * 2 * 3));
  // Gradients: the non-expert tensors over 8 ranks, this rank's 2 experts over 2 ranks.
  CHECK(c.grad_bytes == Approx(2.0 * 7 / 8 * 4 * dense + 2.0 * 1 / 2 * 4 * 2 * expert));
}

TEST_CASE("plan report: every mode side by side, both GPUs, the assumptions", "[plan]") {
  auto overrides = small_dense();
  for (const char* kv : {"moe.experts=8", "moe.top_k=2", "dist.ep=2", "dist.zero=1"}) overrides.push_back(kv);
  const std::string text = plan_report(load_config_for_plan("", overrides), 4);
  // The table's header: one column per mode, in this order.
  const size_t header = text.find("memory per rank");
  REQUIRE(header != std::string::npos);
  std::istringstream words(text.substr(header, text.find('\n', header) - header));
  std::vector<std::string> columns;
  for (std::string w; words >> w;) columns.push_back(w);
  const std::vector<std::string> modes = {"fp32", "bf16", "bf16_sr", "master", "master_sr", "naive", "sr", "eco", "eco_sr"};
  REQUIRE(columns.size() >= modes.size());
  CHECK(std::vector<std::string>(columns.end() - static_cast<long>(modes.size()), columns.end()) == modes);
  for (const char* row : {"weights fp32", "codes", "scales", "master", "grads", "activations", "optimizer scratch",
                          "total", "fits 80 GB", "fits 141 GB", "grad reduce-scatter", "weight all-gather",
                          "expert all-to-all", "world 4, dist.ep 2, dist.zero 1", "4 of 8 experts"})
    CHECK(text.find(row) != std::string::npos);
  CHECK(text.find("NO") == std::string::npos);  // a tiny model fits everywhere
  CHECK_THROWS_AS(plan_report(load_config_for_plan("", overrides), 3), ConfigError);  // ep 2 does not divide 3
}

TEST_CASE("plan: the data files need not exist; other config errors still stop it", "[plan]") {
  auto overrides = small_dense();
  overrides.push_back("data.train=/nonexistent/train_*.bin");
  CHECK_NOTHROW(load_config_for_plan("", overrides));
  overrides.push_back("model.n_head=3");  // 64 is not divisible by 3
  CHECK_THROWS_AS(load_config_for_plan("", overrides), ConfigError);
}

TEST_CASE("cli: --plan and --world", "[plan][cli]") {
  auto parse = [](std::vector<std::string> words) {
    words.insert(words.begin(), "eco_train");
    std::vector<char*> argv;
    for (std::string& w : words) argv.push_back(w.data());
    return parse_cli(static_cast<int>(argv.size()), argv.data());
  };
  const CliArgs a = parse({"--config", "x.json", "--plan", "--world", "64"});
  CHECK(a.plan);
  CHECK(a.world == 64);
  CHECK(parse({"--config", "x.json", "--plan"}).world == 1);
  auto message = [&](std::vector<std::string> words) {
    try {
      parse(std::move(words));
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message({"--config", "x.json", "--plan", "--world", "0"}).find("--world: expected an integer in [1,") !=
        std::string::npos);
  CHECK(message({"--config", "x.json", "--plan", "--world", "-2"}).find("--world") != std::string::npos);
  CHECK(message({"--config", "x.json", "--plan", "--world"}).find("needs a value") != std::string::npos);
  CHECK(message({"--config", "x.json", "--world", "8"}).find("--world is for --plan") != std::string::npos);
  CHECK(message({"--config", "x.json", "--plan", "--resume"}).find("--plan only prints") != std::string::npos);
  CHECK(cli_usage().find("--plan") != std::string::npos);
  CHECK(cli_usage().find("--world N") != std::string::npos);
}

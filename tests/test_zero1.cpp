// ZeRO-1 (docs/distributed.md "ZeRO-1"). Without MPI: the partition (row / band / tensor alignment,
// balance, more ranks than places to cut) and the sharded optimizer, every rank of a world built in
// one process — each rank's update of its own rows equals the unsharded update bit for bit (SR and
// bf16 moments keyed by the global element), its moments are 1/W of the bytes, and the all-gather
// regions put the whole model back together. With MPI (skipped otherwise): eco_train under
// `mpirun -np 2` and `-np 4` with dist.zero=1 against one process and against plain data
// parallel (tolerances derived in test_data_parallel.cpp), the bytes on the wire against the
// formula, the moments' memory per rank (checkpoints: test_zero1_resume.cpp).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dist/zero1.h"
#include "mpi_train_fixture.h"
#include "optim/weight_optimizer.h"
#include "train/backend.h"

using namespace eco_test;

namespace {

std::vector<eco::ShardTensor> shapes(const std::vector<std::pair<size_t, size_t>>& rc, size_t align_of_2d) {
  std::vector<eco::ShardTensor> t;
  size_t off = 0;
  for (auto [r, c] : rc) {
    t.push_back({off, r, c, r > 1 ? std::min(align_of_2d, r) : 1});
    off += r * c;
  }
  return t;
}

// Every cut of b is allowed (a tensor boundary or a multiple of align_rows rows inside one).
void check_cuts(const std::vector<eco::ShardTensor>& t, const std::vector<size_t>& b) {
  for (size_t k = 0; k + 1 < b.size(); ++k) REQUIRE(b[k] <= b[k + 1]);
  for (size_t cut : b) {
    bool ok = false;
    for (const eco::ShardTensor& s : t) {
      if (cut == s.offset || cut == s.offset + s.rows * s.cols) ok = true;
      if (cut > s.offset && cut < s.offset + s.rows * s.cols)
        ok = (cut - s.offset) % (s.align_rows * s.cols) == 0;
      if (cut >= s.offset && cut < s.offset + s.rows * s.cols) break;
    }
    INFO("cut " << cut);
    CHECK(ok);
  }
}

}  // namespace

TEST_CASE("zero1_partition: aligned, balanced, a pure function of the shapes", "[zero1]") {
  const std::vector<std::pair<size_t, size_t>> rc = {{256, 32}, {32, 32}, {1, 32}, {96, 32}, {1, 96},
                                                     {300, 64}, {1, 64}, {130, 128}, {1, 7}};
  for (size_t align : {size_t{1}, size_t{128}, size_t{1} << 30}) {  // per row, 128-row bands, per tensor
    const auto t = shapes(rc, align);
    size_t total = 0, unit = 0;
    for (const auto& s : t) {
      total += s.rows * s.cols;
      unit = std::max(unit, std::min(s.align_rows, s.rows) * s.cols);
    }
    for (int W : {1, 2, 3, 4, 7, 64}) {
      INFO("align " << align << " W " << W);
      const std::vector<size_t> b = eco::zero1_partition(t, W);
      REQUIRE(b.size() == static_cast<size_t>(W) + 1);
      CHECK(b.front() == 0);
      CHECK(b.back() == total);
      check_cuts(t, b);
      // Each cut is within half an alignment unit of its ideal place.
      for (int k = 1; k < W; ++k) {
        const double ideal = static_cast<double>(total) * k / W;
        CHECK(std::abs(static_cast<double>(b[k]) - ideal) <= unit / 2.0 + 1.0);
      }
      // The order the tensors are listed in does not matter.
      auto shuffled = t;
      std::reverse(shuffled.begin(), shuffled.end());
      CHECK(eco::zero1_partition(shuffled, W) == b);
    }
  }
  // Per row: rows of the 300x64 tensor are cut at any row.
  {
    const auto t = shapes({{300, 64}}, 1);
    const auto b = eco::zero1_partition(t, 4);
    CHECK(b == std::vector<size_t>{0, 75 * 64, 150 * 64, 225 * 64, 300 * 64});
  }
  // 128-row bands: 300 rows = bands of 128, 128, 44.
  {
    const auto t = shapes({{300, 64}}, 128);
    CHECK(eco::zero1_partition(t, 2) == std::vector<size_t>{0, 128 * 64, 300 * 64});
    CHECK(eco::zero1_partition(t, 3) == std::vector<size_t>{0, 128 * 64, 256 * 64, 300 * 64});
  }
  // More ranks than places to cut (per-tensor scales, 3 tensors): some ranks own nothing.
  {
    const auto t = shapes({{64, 64}, {64, 64}, {64, 64}}, size_t{1} << 30);
    const auto b = eco::zero1_partition(t, 8);
    check_cuts(t, b);
    int empty = 0;
    for (int r = 0; r < 8; ++r) empty += b[r] == b[r + 1];
    CHECK(empty == 5);
  }
  CHECK(eco::shard_align_rows(false, eco::ScaleGranularity::PerTensor, 50) == 1);
  CHECK(eco::shard_align_rows(true, eco::ScaleGranularity::PerRow, 50) == 1);
  CHECK(eco::shard_align_rows(true, eco::ScaleGranularity::Block128, 50) == 128);
  CHECK(eco::shard_align_rows(true, eco::ScaleGranularity::PerTensor, 50) == 50);
  // Tensors that do not tile the space.
  CHECK_THROWS_AS(eco::zero1_partition({{0, 2, 2, 1}, {5, 2, 2, 1}}, 2), std::invalid_argument);
  CHECK_THROWS_AS(eco::zero1_partition({{0, 2, 2, 1}}, 0), std::invalid_argument);
}

namespace {

// A little model in one flat buffer: fp32 tensors and quantizable 2-D ones, interleaved.
struct Flat {
  std::vector<std::pair<size_t, size_t>> shapes = {{40, 16}, {1, 16}, {300, 16}, {1, 300}, {130, 48}, {1, 7}, {64, 33}};
  std::vector<bool> quantize = {false, false, true, false, true, false, true};
  size_t total() const {
    size_t n = 0;
    for (auto [r, c] : shapes) n += r * c;
    return n;
  }
};

// One rank's optimizer over its own copies of the values and (already summed) gradients.
struct RankOpt {
  std::vector<float> values, grads;
  std::unique_ptr<eco::WeightOptimizer> opt;
};

RankOpt make_rank(eco::Ops& ops, const Flat& f, const eco::OptimizerSpec& spec, eco::OptimizerShard shard,
                  const std::vector<float>& init) {
  RankOpt r;
  r.values = init;
  r.grads.assign(f.total(), 0.0f);
  const eco::WeightModeTraits tr = eco::traits_of(spec.mode);
  std::vector<eco::OptimTensor> ts;
  size_t off = 0;
  for (size_t i = 0; i < f.shapes.size(); ++i) {
    eco::OptimTensor t;
    t.name = "t" + std::to_string(i);
    t.rows = f.shapes[i].first;
    t.cols = f.shapes[i].second;
    t.quantize = f.quantize[i];
    t.weight_decay = t.rows > 1;
    t.value = tr.quantized && t.quantize && !tr.master ? nullptr : r.values.data() + off;
    t.grad = r.grads.data() + off;
    t.offset = off;
    ts.push_back(t);
    off += t.rows * t.cols;
  }
  r.opt = std::make_unique<eco::WeightOptimizer>(ops, ts, spec, shard);
  off = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (r.opt->is_quantized(i)) r.opt->init_quantized(i, init.data() + off);
    off += ts[i].rows * ts[i].cols;
  }
  return r;
}

}  // namespace

TEST_CASE("sharded optimizer: each rank's rows equal the unsharded update; 1/W of the moments; gather rebuilds the model",
          "[zero1][optim]") {
  auto ops = eco::make_backend(eco::BackendChoice{"cpu", 1, 0});
  const Flat f;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> init(f.total());
  for (float& x : init) x = nd(rng);
  struct Case {
    const char* mode;
    eco::ScaleGranularity g;
    eco::StateFormat sf;
  };
  for (const Case c : {Case{"eco_sr", eco::ScaleGranularity::PerRow, eco::StateFormat::Bf16},
                       Case{"eco", eco::ScaleGranularity::Block128, eco::StateFormat::Fp32},
                       Case{"sr", eco::ScaleGranularity::PerTensor, eco::StateFormat::Fp32},
                       Case{"master_sr", eco::ScaleGranularity::PerRow, eco::StateFormat::Bf16},
                       Case{"fp32", eco::ScaleGranularity::PerRow, eco::StateFormat::Fp32},
                       // Block-wise moments: cuts on whole 128-element blocks of each tensor.
                       Case{"eco_sr", eco::ScaleGranularity::PerRow, eco::StateFormat::M8V4},
                       Case{"sr", eco::ScaleGranularity::PerTensor, eco::StateFormat::Solo3},
                       Case{"fp32", eco::ScaleGranularity::PerRow, eco::StateFormat::Solo2}}) {
    eco::OptimizerSpec spec;
    spec.mode = eco::parse_weight_mode(c.mode);
    spec.granularity = c.g;
    spec.state_format = c.sf;
    if (eco::is_block_state(c.sf)) spec.beta1 = eco::block_state_spec(c.sf).default_beta1;
    spec.seed = 11;
    for (int W : {2, 3, 5}) {
      INFO(c.mode << " " << eco::to_string(c.g) << " " << eco::to_string(c.sf) << " states, W " << W);
      RankOpt whole = make_rank(*ops, f, spec, {}, init);
      std::vector<RankOpt> ranks;
      for (int r = 0; r < W; ++r) ranks.push_back(make_rank(*ops, f, spec, {r, W}, init));
      // Three steps with the same (summed) gradients everywhere, then the all-gather by hand.
      for (int t = 1; t <= 3; ++t) {
        std::vector<float> g(f.total());
        for (float& x : g) x = nd(rng);
        whole.grads = g;
        whole.opt->step(1e-2f, t, 0.7f);
        for (RankOpt& r : ranks) {
          r.grads = g;
          r.opt->step(1e-2f, t, 0.7f);
        }
        const auto regions0 = ranks[0].opt->gather_regions();
        for (size_t k = 0; k < regions0.size(); ++k) {
          size_t at = 0;
          for (int src = 0; src < W; ++src) {
            const size_t n = regions0[k].bytes[src];
            for (int dst = 0; dst < W; ++dst) {
              if (dst == src || n == 0) continue;
              const eco::GatherRegion from = ranks[src].opt->gather_regions()[k];
              const eco::GatherRegion to = ranks[dst].opt->gather_regions()[k];
              std::memcpy(static_cast<char*>(to.base) + at, static_cast<const char*>(from.base) + at, n);
            }
            at += n;
          }
        }
      }
      size_t m_sum = 0;
      const size_t m_whole = whole.opt->memory().m_bytes;
      for (int r = 0; r < W; ++r) {
        const eco::WeightOptimizer& o = *ranks[r].opt;
        m_sum += o.memory().m_bytes;
        if (!eco::is_block_state(c.sf)) CHECK(o.memory().m_bytes == o.memory().v_bytes);
        for (size_t i = 0; i < f.shapes.size(); ++i) {
          const size_t n = f.shapes[i].first * f.shapes[i].second;
          // The stored weights, gathered: the whole model, equal to the unsharded one's.
          std::vector<float> a(n), b(n);
          whole.opt->weight_values(i, a.data());
          o.weight_values(i, b.data());
          REQUIRE(std::memcmp(a.data(), b.data(), n * sizeof(float)) == 0);
          // The moments of the owned rows, bit for bit.
          const auto [r0, r1] = o.owned_rows(i, r);
          const size_t cols = f.shapes[i].second;
          if (eco::is_block_state(c.sf) && r0 < r1) {
            INFO("tensor " << i << " rows [" << r0 << ", " << r1 << ")");
            CHECK(r0 * cols % 128 == 0);
            CHECK((r1 * cols % 128 == 0 || r1 == f.shapes[i].first));
          }
          for (size_t e = r0 * cols; e < r1 * cols; ++e) {
            REQUIRE(o.m(i).get(e) == whole.opt->m(i).get(e));
            REQUIRE(o.v(i).get(e) == whole.opt->v(i).get(e));
          }
        }
        // Each rank holds about 1/W of the moments: with per-row cuts within a row (<= 300
        // elements) of it; 128-row bands and whole tensors are coarse units in a model this small.
        const double share = static_cast<double>(o.memory().m_bytes) / static_cast<double>(m_whole);
        if (c.g == eco::ScaleGranularity::PerRow && !eco::is_block_state(c.sf)) CHECK(std::abs(share - 1.0 / W) < 300.0 / f.total());
      }
      CHECK(m_sum == m_whole);
    }
  }
}

// ---- eco_train under mpirun ----

namespace {

std::string zero_config(TinyRun& r, const std::string& name, int ranks, const std::string& mode, bool zero) {
  const std::string file = write_config(r, name, ranks, mode);
  nlohmann::json c = nlohmann::json::parse(read_text(r.dir / file));
  c["dist"]["zero"] = zero ? 1 : 0;
  std::ofstream(r.dir / file) << c.dump(2);
  return file;
}

uint64_t number_after(const std::string& s, const std::string& key) {
  const size_t at = s.find(key);
  REQUIRE(at != std::string::npos);
  return std::stoull(s.substr(at + key.size()));
}

}  // namespace

TEST_CASE("ZeRO-1 on 2 and 4 ranks reproduces one process and plain data parallel (fp32, eco_sr)", "[zero1][mpi]") {
  if (!mpi_available()) return;
  for (const std::string mode : {"fp32", "eco_sr"}) {
    TinyRun r("zero1_match_" + mode);
    const Run one = eco_train(0, r, zero_config(r, "w1", 1, mode, false));
    REQUIRE(one.rc == 0);
    const uint64_t m_one = read_metrics(r.dir / "w1")[0]["memory"]["m_bytes"].get<uint64_t>();
    for (int np : {2, 4}) {
      INFO(mode << ", np " << np);
      const std::string name = "z" + std::to_string(np);
      const Run z = eco_train(np, r, zero_config(r, name, np, mode, true));
      INFO(z.out);
      REQUIRE(z.rc == 0);
      CHECK(contains(z.out, "ZeRO-1 over " + std::to_string(np) + " ranks"));
      const double loss_tol = mode == "fp32" ? 1e-5 : 1e-3, norm_tol = mode == "fp32" ? 1e-5 : 2e-2;
      auto worst = compare_curves(r.dir / "w1", r.dir / name);
      CHECK(worst.at("train_loss") <= loss_tol);
      CHECK(worst.at("val_loss") <= loss_tol);
      CHECK(worst.at("grad_norm") <= norm_tol);
      std::printf("ZeRO-1 %s np %d vs 1 process: max rel diff train loss %.2e, val loss %.2e, grad norm %.2e (%.1f s)\n",
                  mode.c_str(), np, worst.at("train_loss"), worst.at("val_loss"), worst.at("grad_norm"), z.seconds);
      if (np == 2) {
        const std::string dp = "d" + std::to_string(np);
        REQUIRE(eco_train(np, r, zero_config(r, dp, np, mode, false)).rc == 0);
        worst = compare_curves(r.dir / dp, r.dir / name);
        CHECK(worst.at("train_loss") <= loss_tol);
        CHECK(worst.at("grad_norm") <= norm_tol);
        std::printf("ZeRO-1 %s np %d vs data parallel: max rel diff train loss %.2e, grad norm %.2e\n", mode.c_str(), np,
                    worst.at("train_loss"), worst.at("grad_norm"));
      }
      // Bytes on the wire per step. Rank 0: reduce-scatter 4(P - owned), all-gather (W-1) x its
      // block. All ranks: 4(W-1)P and (W-1) x the stored bytes, i.e. per rank on average
      // (W-1)/W x 4P and (W-1)/W x (1 byte per FP8 code + 4 per scale + 4 per fp32 weight).
      const uint64_t owned = number_after(z.out, "rank 0 owns ");
      const uint64_t params = number_after(z.out, "rank 0 owns " + std::to_string(owned) + " of ");
      const uint64_t block = number_after(z.out, "parameters and all-gathers ");
      CHECK(number_after(z.out, "reduce-scatter ") == 4 * (params - owned));
      CHECK(number_after(z.out, "all-gather ") == static_cast<uint64_t>(np - 1) * block);
      const uint64_t rs_all = number_after(z.out, "together sent ");
      const uint64_t ag_all = number_after(z.out, "in reduce-scatters (4 x (W-1) x P) and ");
      // The tiny model's stored weights: in eco_sr 24 576 FP8 codes, 576 per-row scales and 10 112
      // fp32 parameters; in fp32 mode 4 bytes each.
      const uint64_t quantized = 24576, scales = 576;
      const uint64_t stored = mode == "fp32" ? 4 * params : quantized + 4 * scales + 4 * (params - quantized);
      CHECK(number_after(z.out, "all-gathers ((W-1) x ") == stored);
      CHECK(rs_all == 4 * static_cast<uint64_t>(np - 1) * params);
      CHECK(ag_all == static_cast<uint64_t>(np - 1) * stored);
      std::printf("ZeRO-1 %s np %d bytes/step, mean per rank: reduce-scatter %.0f, all-gather %.0f (= (W-1)/W x %llu "
                  "stored bytes); rank 0: %llu + %llu; data parallel: %.0f\n",
                  mode.c_str(), np, rs_all / static_cast<double>(np), ag_all / static_cast<double>(np),
                  static_cast<unsigned long long>(stored), static_cast<unsigned long long>(4 * (params - owned)),
                  static_cast<unsigned long long>((np - 1) * block), 2.0 * (np - 1) / np * 4.0 * params);
      // Moments per rank (rank 0's memory record): about 1/W of one process's.
      const uint64_t m_z = read_metrics(r.dir / name)[0]["memory"]["m_bytes"].get<uint64_t>();
      CHECK(std::abs(static_cast<double>(m_z) / m_one - 1.0 / np) < 0.1 / np + 0.02);
      std::printf("ZeRO-1 %s np %d: m bytes on rank 0 %llu of %llu (%.3f)\n", mode.c_str(), np,
                  static_cast<unsigned long long>(m_z), static_cast<unsigned long long>(m_one),
                  static_cast<double>(m_z) / m_one);
    }
  }
}

TEST_CASE("ZeRO-1 with fp32 masters (gathered in runs) and with 128x128 block scales matches one process",
          "[zero1][mpi]") {
  if (!mpi_available()) return;
  for (const std::string variant : {"master", "eco_sr_block128"}) {
    TinyRun r("zero1_" + variant);
    const std::string mode = variant == "master" ? "master" : "eco_sr";
    auto cfg = [&](const std::string& name, int np) {
      const std::string file = zero_config(r, name, np, mode, np > 1);
      nlohmann::json c = nlohmann::json::parse(read_text(r.dir / file));
      if (variant != "master") c["optim"]["scaling"] = "block128";
      std::ofstream(r.dir / file) << c.dump(2);
      return file;
    };
    REQUIRE(eco_train(0, r, cfg("w1", 1)).rc == 0);
    const Run z = eco_train(2, r, cfg("z2", 2));
    INFO(z.out);
    REQUIRE(z.rc == 0);
    const auto worst = compare_curves(r.dir / "w1", r.dir / "z2");
    CHECK(worst.at("train_loss") <= 1e-3);
    CHECK(worst.at("val_loss") <= 1e-3);
    CHECK(worst.at("grad_norm") <= 2e-2);
    std::printf("ZeRO-1 %s np 2 vs 1 process: max rel diff train loss %.2e, grad norm %.2e\n", variant.c_str(),
                worst.at("train_loss"), worst.at("grad_norm"));
  }
}

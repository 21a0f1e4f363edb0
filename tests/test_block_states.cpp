// Block-wise optimizer states (optim.state_format int8 / solo4 / solo3 / solo2) inside the
// optimizer: MomentBuffer over a raw buffer is exactly the tested codec (BlockMoment), one step of
// the optimizer with block states equals the fp32-state step followed by the block encoding of m
// and v (keys as the optimizer draws them), the memory report counts the packed bytes, the toy
// problem converges, ZeRO-1 cuts fall on whole blocks, and element-wise stores are refused. The codecs are
// test_state_codecs.cpp; checkpoints round-trip in test_optimizer_modes.cpp.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "eco_toy_problem.h"
#include "optim/moment_buffer.h"
#include "optim/state_block.h"

using namespace eco;
using eco_test::first_bit_difference;
using eco_test::make_spec;
using eco_test::moments;
using eco_test::ToyRun;
using eco_test::ToyTensor;

namespace {

constexpr StateFormat kBlockFormats[] = {StateFormat::Int8, StateFormat::Solo4, StateFormat::Solo3, StateFormat::Solo2,
                                         StateFormat::M8V4};

std::vector<float> wavy(size_t n, float scale, bool positive) {
  std::vector<float> x(n);
  eco_test::Uniform u(n);
  for (size_t i = 0; i < n; ++i) {
    const double v = u.next(-1.0, 1.0) * scale;
    x[i] = static_cast<float>(positive ? v * v : v);
  }
  return x;
}

}  // namespace

TEST_CASE("MomentBuffer over a raw buffer stores and loads block-wise exactly as BlockMoment", "[state][optim]") {
  const size_t n = 1000;  // 7 whole blocks and a tail of 104
  const RandomKey key{5, 3, 9};
  for (StateFormat f : kBlockFormats) {
    for (MomentKind kind : {MomentKind::Signed, MomentKind::Log}) {
      INFO(to_string(f) << (kind == MomentKind::Signed ? " m" : " v"));
      const BlockStateSpec s = block_state_spec(f);
      const int bits = kind == MomentKind::Signed ? s.m_bits : s.v_bits;
      const std::vector<float> x = wavy(n, 1e-3f, kind == MomentKind::Log);
      std::vector<uint8_t> storage(MomentBuffer::storage_bytes(f, kind, n), 0xAB);
      std::memset(storage.data(), 0, storage.size());
      MomentBuffer mb = MomentBuffer::view(storage.data(), n, f, 0, kind);
      CHECK(mb.bytes() == storage.size());
      std::vector<float> zeros(n);
      mb.load(0, n, zeros.data());
      for (float z : zeros) REQUIRE(z == 0.0f);  // zeroed storage is zero state
      // In two spans (the first 4 blocks, then the rest with the tail): the same as one encode.
      mb.store(0, 512, x.data(), key);
      mb.store(512, n - 512, x.data() + 512, key);
      BlockMoment ref(kind, bits, n, 0, s.v_quantile);
      (void)ref.encode(x.data(), key, Rounding::SR);
      std::vector<float> want(n), got(n);
      ref.decode(want.data());
      mb.load(0, n, got.data());
      CHECK(first_bit_difference(got, want) == -1);
      CHECK(mb.get(700) == want[700]);
      CHECK(std::memcmp(storage.data(), ref.codes().data(), ref.codes().size()) == 0);
      // Not whole blocks, and element-wise stores: refused.
      CHECK_THROWS_AS(mb.store(64, 128, x.data(), key), Error);
      CHECK_THROWS_AS(mb.load(0, 100, got.data()), Error);
      CHECK_THROWS_AS(mb.set(3, 1.0f, key), Error);
      // An owning buffer behaves the same.
      MomentBuffer own(n, f, kind);
      own.store(0, n, x.data(), key);
      own.load(0, n, got.data());
      CHECK(first_bit_difference(got, want) == -1);
    }
  }
}

TEST_CASE("one step with block-wise states is the fp32-state step, then m and v encoded block-wise", "[state][optim]") {
  const std::vector<ToyTensor> shapes = {{"fc", 24, 40, true, true}, {"b", 1, 24, false, false}};
  for (WeightMode mode : {WeightMode::Fp32, WeightMode::Master, WeightMode::EcoSr, WeightMode::Eco}) {
    for (StateFormat f : kBlockFormats) {
      INFO(to_string(mode) << " " << to_string(f));
      const BlockStateSpec s = block_state_spec(f);
      ToyRun ref(shapes, make_spec(mode), 3);
      ToyRun blk(shapes, make_spec(mode, OptimizerKind::AdamW, f), 3);
      ref.step(2e-3f, 1);  // from zero moments both runs compute the same fp32 m, v and weights
      blk.step(2e-3f, 1);
      for (size_t i = 0; i < shapes.size(); ++i) {
        INFO("tensor " << i);
        // Identical weights after the step: the update used the same fp32 moments.
        CHECK(first_bit_difference(ref.forward(i), blk.forward(i)) == -1);
        const std::vector<float> m = moments(ref.opt().m(i)), v = moments(ref.opt().v(i));
        // The optimizer's keys: stream 4·tensor + 1 (m) / + 2 (v), step t (weight_optimizer.cpp).
        const RandomKey km{make_spec(mode).seed, 1, static_cast<uint32_t>(4 * i + 1)};
        const RandomKey kv{make_spec(mode).seed, 1, static_cast<uint32_t>(4 * i + 2)};
        BlockMoment bm(MomentKind::Signed, s.m_bits, m.size()), bv(MomentKind::Log, s.v_bits, v.size(), 0, s.v_quantile);
        (void)bm.encode(m.data(), km, Rounding::SR);
        (void)bv.encode(v.data(), kv, Rounding::SR);
        std::vector<float> want_m(m.size()), want_v(v.size());
        bm.decode(want_m.data());
        bv.decode(want_v.data());
        CHECK(first_bit_difference(moments(blk.opt().m(i)), want_m) == -1);
        CHECK(first_bit_difference(moments(blk.opt().v(i)), want_v) == -1);
      }
      // The memory report counts the packed codes and block parameters.
      const MemoryReport r = blk.opt().memory();
      CHECK(r.m_bytes == MomentBuffer::storage_bytes(f, MomentKind::Signed, 960) +
                             MomentBuffer::storage_bytes(f, MomentKind::Signed, 24));
      CHECK(r.v_bytes == MomentBuffer::storage_bytes(f, MomentKind::Log, 960) +
                             MomentBuffer::storage_bytes(f, MomentKind::Log, 24));
    }
  }
}

// Not asserted: eco_sr with 2-bit m (solo2) diverges here (measured 163 -> 372): ECO's injection is
// large next to m and a 2-bit m turns it into noise of the same size (docs/lowbit.md, "ECO with a
// low-bit m"). It is printed so the table stays honest.
TEST_CASE("block-wise states: the toy problem converges in every weight mode family", "[state][optim][toy]") {
  const std::vector<ToyTensor> shape = {{"w", 16, 64, true, false}};
  std::printf("block-wise states, AdamW lr 2e-3, 1200 steps:\n");
  for (WeightMode mode : {WeightMode::Master, WeightMode::EcoSr, WeightMode::Sr}) {
    for (StateFormat f :
         {StateFormat::Fp32, StateFormat::Int8, StateFormat::M8V4, StateFormat::Solo4, StateFormat::Solo2}) {
      OptimizerSpec spec = make_spec(mode, OptimizerKind::AdamW, f);
      if (f != StateFormat::Fp32) spec.beta1 = block_state_spec(f).default_beta1;
      ToyRun run(shape, spec, 11, 1.0);
      const double l0 = run.loss();
      for (int t = 1; t <= 1200; ++t) run.step(2e-3f, t);
      std::printf("  %-7s %-6s loss %.4f -> %.5f\n", to_string(mode), to_string(f), l0, run.loss());
      INFO(to_string(mode) << " " << to_string(f));
      if (!(mode == WeightMode::EcoSr && f == StateFormat::Solo2)) CHECK(run.loss() < l0 / 10);
    }
  }
}

TEST_CASE("block-wise states under ZeRO-1: cuts fall on whole 128-element blocks of each tensor", "[state][optim]") {
  OptimizerSpec spec = make_spec(WeightMode::Fp32, OptimizerKind::AdamW, StateFormat::Solo4);
  // 128 / gcd(cols, 128) rows per block unit, never more than the tensor's rows.
  CHECK(zero1_align_rows(spec, false, 64, 32) == 4);
  CHECK(zero1_align_rows(spec, false, 300, 16) == 8);
  CHECK(zero1_align_rows(spec, false, 64, 33) == 64);   // 128 rows a unit: the tensor is not cut
  CHECK(zero1_align_rows(spec, false, 1, 768) == 1);
  CHECK(zero1_align_rows(spec, false, 1000, 768) == 1);  // 768 = 6 blocks a row
  spec.mode = WeightMode::EcoSr;
  spec.granularity = ScaleGranularity::Block128;
  CHECK(zero1_align_rows(spec, true, 1000, 100) == 128);  // lcm(128-row scale bands, 32)
  spec.state_format = StateFormat::Fp32;
  CHECK(zero1_align_rows(spec, false, 300, 16) == 1);
  // A shard's moments start on a block: a 2-rank optimizer over one 64x32 tensor cuts at row 32.
  CpuOps ops;
  std::vector<float> value(64 * 32), grad(64 * 32);
  OptimTensor t{"w", 64, 32, false, false, value.data(), grad.data()};
  WeightOptimizer opt(ops, {t}, make_spec(WeightMode::Fp32, OptimizerKind::AdamW, StateFormat::Solo4),
                      OptimizerShard{1, 2});
  CHECK(opt.owned_rows(0, 1) == std::pair<size_t, size_t>{32, 64});
  CHECK(opt.memory().m_bytes == MomentBuffer::storage_bytes(StateFormat::Solo4, MomentKind::Signed, 32 * 32));
}

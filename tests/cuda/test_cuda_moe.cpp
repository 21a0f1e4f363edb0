// GPU vs CPU for the sparse-MoE ops (src/cuda/cuda_moe.cu against src/cpu/cpu_moe.cpp): routing,
// the dispatch plan, gather / combine and their backwards, the router backward and the per-expert
// prob sums, on random inputs (with and without the selection bias, renormalized or not, logits
// with many exact ties, capacity 0 / capacity that drops / capacity above every load, an expert no
// token picks, K up to 8, E up to 1024, N*K over many 1024-assignment chunks) and on a hand case.
//
// Tolerances.
// - Bit for bit (NaN equal to any NaN): probs, expert_idx, gates, counts, slot_of, token_of (the
//   whole buffer: rows past the kept ones must stay untouched), gather, gather backward, combine,
//   dexpert_out, dlogits. The GPU runs the CPU's per-token code (core/moe_math.h) and its sums over
//   j in the CPU's order, with --fmad=false.
// - lse = max + logf(Σ): Σ is bit-identical, the two logfs (glibc, CUDA; each < 1 ulp) differ by at
//   most 2 ulp(log Σ), and the add rounds once more:  |Δlse| ≤ 2·ulp(log Σ) + ulp(lse).
// - dgates = Σ_c dy·eo: the CPU sums sequentially, the GPU in a warp tree. Each is within
//   γ_C·Σ|dy·eo| of the exact dot (plus u per rounded product), so
//   |Δ| ≤ 2·(C + 2)·2^-24·Σ_c |dy_c·eo_c|.
// - prob sums: both sum in double (relative error ≤ N·2^-53, far below a float ulp) and round
//   sums[e] + Σ to float once; they can differ only at a rounding boundary: |Δ| ≤ 1 ulp.
// Outputs are poisoned before the GPU writes them; every GPU op runs twice and must give the same
// bits. Skipped (ctest exit 4) where there is no GPU.
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


void require_same(const std::vector<int32_t>& cpu, const std::vector<int32_t>& gpu, const std::string& what) {
  REQUIRE(cpu.size() == gpu.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < cpu.size(); ++i)
    if (cpu[i] != gpu[i] && bad++ == 0) first = i;
  INFO(what << ": " << bad << " of " << cpu.size() << " differ"
            << (bad ? "; first at " + std::to_string(first) + ": cpu " + std::to_string(cpu[first]) + ", gpu " +
                          std::to_string(gpu[first])
                    : std::string()));
  REQUIRE(bad == 0);
}

// |cpu - gpu| <= tol[i] everywhere (NaN only against NaN).
void require_close(const std::vector<float>& cpu, const std::vector<float>& gpu, const std::vector<double>& tol,
                   const std::string& what) {
  REQUIRE(cpu.size() == gpu.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const bool ok = (std::isnan(cpu[i]) && std::isnan(gpu[i])) ||
                    std::fabs(static_cast<double>(cpu[i]) - static_cast<double>(gpu[i])) <= tol[i];
    if (!ok && bad++ == 0) first = i;
  }
  INFO(what << ": " << bad << " of " << cpu.size() << " outside the tolerance"
            << (bad ? "; first at " + std::to_string(first) + ": cpu " + show(cpu[first]) + ", gpu " +
                          show(gpu[first]) + ", tol " + std::to_string(tol[first])
                    : std::string()));
  REQUIRE(bad == 0);
}




// Multiples of 0.5 in [-2, 2]: many exactly equal logits per row, hence equal probs (ties).
std::vector<float> tied_floats(size_t n, uint32_t seed) {
  std::vector<float> v = random_floats(n, seed);
  for (float& x : v) x = std::fmin(2.0f, std::fmax(-2.0f, std::round(2.0f * x) / 2.0f));
  return v;
}

// K distinct experts per token, expert 0 taking about a third of the draws (so a capacity drops
// its late tokens) and expert 3 never drawn when that leaves K others (an expert with no tokens).
std::vector<int32_t> skewed_assignments(int N, int K, int E, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, E - 1);
  const bool skip3 = E > 3 && E - 1 >= K;
  std::vector<int32_t> idx(static_cast<size_t>(N) * K);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < K; ++j) {
      int32_t e;
      bool again;
      do {
        e = rng() % 3 == 0 ? 0 : d(rng);
        again = skip3 && e == 3;
        for (int i = 0; i < j; ++i) again = again || idx[static_cast<size_t>(n) * K + i] == e;
      } while (again);
      idx[static_cast<size_t>(n) * K + j] = e;
    }
  return idx;
}

struct Plan {
  std::vector<int32_t> counts, slot_of, token_of;
  int rows = 0;
};

Plan cpu_plan(eco::CpuOps& cpu, const std::vector<int32_t>& idx, int N, int K, int E, int capacity) {
  Plan p;
  p.counts.assign(2 * static_cast<size_t>(E), -1);
  p.slot_of.assign(idx.size(), -1);
  p.token_of.assign(idx.size(), -1);  // the GPU's poison: rows past the kept ones must stay so
  cpu.moe_dispatch_plan(p.counts.data(), p.slot_of.data(), p.token_of.data(), idx.data(), N, K, E, capacity);
  for (int e = 0; e < E; ++e) p.rows += p.counts[e];
  return p;
}

Plan gpu_plan(CudaOps& gpu, const int32_t* idx_d, int N, int K, int E, int capacity) {
  const size_t NK = static_cast<size_t>(N) * K;
  int32_t* counts = poisoned<int32_t>(gpu, 2 * static_cast<size_t>(E));
  int32_t* slot_of = poisoned<int32_t>(gpu, NK);
  int32_t* token_of = poisoned<int32_t>(gpu, NK);
  gpu.moe_dispatch_plan(counts, slot_of, token_of, idx_d, N, K, E, capacity);
  Plan p;
  p.counts = download(gpu, counts, 2 * static_cast<size_t>(E));
  p.slot_of = download(gpu, slot_of, NK);
  p.token_of = download(gpu, token_of, NK);
  for (int e = 0; e < E; ++e) p.rows += p.counts[e];
  return p;
}

struct Shape {
  int N, E, K;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("CUDA moe_route equals the CPU's (lse within the logs' ulps)", "[cuda][moe]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const Shape shapes[] = {{1, 1, 1}, {5, 8, 8}, {40, 3, 2}, {1000, 32, 4}, {333, 64, 8}, {77, 1024, 8}, {129, 16, 1}};
  uint32_t seed = 1000;
  for (const Shape& s : shapes) {
    for (const bool tied : {false, true}) {
      for (const bool with_bias : {false, true}) {
        for (const bool renormalize : {false, true}) {
          INFO("N=" << s.N << " E=" << s.E << " K=" << s.K << " tied=" << tied << " bias=" << with_bias
                    << " renormalize=" << renormalize);
          const size_t N = s.N, E = s.E, K = s.K;
          std::vector<float> logits = tied ? tied_floats(N * E, ++seed) : wide_floats(N * E, ++seed);
          if (N > 2 && E > 2) logits[E + E / 2] = kNaN;  // row 1: NaN probs, still K distinct experts
          // A bias of the probabilities' size, so it changes the selection; ties in it too.
          std::vector<float> bias = tied ? tied_floats(E, ++seed) : random_floats(E, ++seed, 0.05f);
          if (tied)
            for (float& b : bias) b *= 0.01f;
          const float* bias_h = with_bias ? bias.data() : nullptr;

          std::vector<float> probs_cpu(N * E), lse_cpu(N), gates_cpu(N * K);
          std::vector<int32_t> idx_cpu(N * K);
          cpu.moe_route(probs_cpu.data(), lse_cpu.data(), idx_cpu.data(), gates_cpu.data(), logits.data(), bias_h, s.N,
                        s.E, s.K, renormalize);

          float* logits_d = upload(gpu, logits);
          float* bias_d = with_bias ? upload(gpu, bias) : nullptr;
          auto run = [&] {
            float* probs = poisoned<float>(gpu, N * E);
            float* lse = poisoned<float>(gpu, N);
            int32_t* idx = poisoned<int32_t>(gpu, N * K);
            float* gates = poisoned<float>(gpu, N * K);
            gpu.moe_route(probs, lse, idx, gates, logits_d, bias_d, s.N, s.E, s.K, renormalize);
            return std::tuple{download(gpu, probs, N * E), download(gpu, lse, N), download(gpu, idx, N * K),
                              download(gpu, gates, N * K)};
          };
          const auto [probs_gpu, lse_gpu, idx_gpu, gates_gpu] = run();
          require_same(probs_cpu, probs_gpu, "moe_route probs");
          require_same(idx_cpu, idx_gpu, "moe_route expert_idx");
          require_same(gates_cpu, gates_gpu, "moe_route gates");
          std::vector<double> lse_tol(N);
          for (size_t n = 0; n < N; ++n) {
            float mx = logits[n * E];
            for (size_t e = 1; e < E; ++e) mx = logits[n * E + e] > mx ? logits[n * E + e] : mx;
            lse_tol[n] = 2.0 * ulp_of(lse_cpu[n] - mx) + ulp_of(lse_cpu[n]);
          }
          require_close(lse_cpu, lse_gpu, lse_tol, "moe_route lse");
          const auto [probs2, lse2, idx2, gates2] = run();
          require_deterministic(probs_gpu, probs2, "moe_route probs");
          require_deterministic(lse_gpu, lse2, "moe_route lse");
          require_deterministic(idx_gpu, idx2, "moe_route expert_idx");
          require_deterministic(gates_gpu, gates2, "moe_route gates");
        }
      }
    }
  }
}

TEST_CASE("CUDA moe_route breaks ties to the lower expert (hand case)", "[cuda][moe]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const int N = 3, E = 4, K = 2;
  // Row 0: all equal; row 1: experts 1 and 2 tie on top; row 2: 3 first, then the tie of 0 and 1.
  const std::vector<float> logits = {1, 1, 1, 1, 0, 2, 2, 0, 1, 1, 0, 3};
  const std::vector<float> bias = {0.0f, 0.0f, 0.5f, 0.0f};  // lifts expert 2 above every tie
  struct Expect {
    bool bias;
    std::vector<int32_t> idx;
  };
  const Expect expects[] = {{false, {0, 1, 1, 2, 3, 0}}, {true, {2, 0, 2, 1, 3, 2}}};
  for (const Expect& x : expects) {
    for (const bool renormalize : {false, true}) {
      INFO("bias=" << x.bias << " renormalize=" << renormalize);
      std::vector<float> probs_cpu(N * E), lse_cpu(N), gates_cpu(N * K);
      std::vector<int32_t> idx_cpu(N * K);
      cpu.moe_route(probs_cpu.data(), lse_cpu.data(), idx_cpu.data(), gates_cpu.data(), logits.data(),
                    x.bias ? bias.data() : nullptr, N, E, K, renormalize);
      float* probs = poisoned<float>(gpu, N * E);
      float* lse = poisoned<float>(gpu, N);
      int32_t* idx = poisoned<int32_t>(gpu, N * K);
      float* gates = poisoned<float>(gpu, N * K);
      gpu.moe_route(probs, lse, idx, gates, upload(gpu, logits), x.bias ? upload(gpu, bias) : nullptr, N, E, K,
                    renormalize);
      require_same(x.idx, idx_cpu, "hand expert_idx (cpu)");
      require_same(x.idx, download(gpu, idx, N * K), "hand expert_idx (gpu)");
      require_same(gates_cpu, download(gpu, gates, N * K), "hand gates");
      require_same(probs_cpu, download(gpu, probs, N * E), "hand probs");
      if (!x.bias) CHECK(gates_cpu[0] == (renormalize ? 0.5f : 0.25f));  // row 0: probs exactly 1/4
    }
  }
}

TEST_CASE("CUDA moe_dispatch_plan equals the CPU's plan", "[cuda][moe]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  // N*K: empty, tiny, one partial chunk, just over two chunks, many chunks; E up to 1024; K up to 8.
  const Shape shapes[] = {{0, 8, 4},    {1, 1, 1},     {3, 4, 2},     {1000, 32, 4}, {2049, 5, 1},
                          {300, 1024, 8}, {70000, 64, 4}, {4096, 2, 2}, {999, 9, 8}};
  uint32_t seed = 2000;
  for (const Shape& s : shapes) {
    const size_t NK = static_cast<size_t>(s.N) * s.K;
    const std::vector<int32_t> idx = skewed_assignments(s.N, s.K, s.E, ++seed);
    const Plan dropless = cpu_plan(cpu, idx, s.N, s.K, s.E, 0);
    int max_load = 0;
    for (int e = 0; e < s.E; ++e) max_load = std::max(max_load, dropless.counts[s.E + e]);
    const int mean_load = static_cast<int>(NK / s.E);
    // Dropless, a capacity below the mean (most experts drop), 1, exactly the max, above the max.
    for (const int capacity : {0, std::max(1, mean_load / 2), 1, std::max(1, max_load), max_load + 7}) {
      INFO("N=" << s.N << " E=" << s.E << " K=" << s.K << " capacity=" << capacity);
      const Plan want = cpu_plan(cpu, idx, s.N, s.K, s.E, capacity);
      int32_t* idx_d = upload(gpu, idx);
      const Plan got = gpu_plan(gpu, idx_d, s.N, s.K, s.E, capacity);
      require_same(want.counts, got.counts, "plan counts");
      require_same(want.slot_of, got.slot_of, "plan slot_of");
      require_same(want.token_of, got.token_of, "plan token_of (rows past the kept ones untouched)");
      const Plan again = gpu_plan(gpu, idx_d, s.N, s.K, s.E, capacity);
      require_deterministic(got.slot_of, again.slot_of, "plan slot_of");
      require_deterministic(got.token_of, again.token_of, "plan token_of");
      if (s.E > 3 && s.E - 1 >= s.K) CHECK(want.counts[3] == 0);  // the expert nobody picks
      if (capacity > 0 && capacity < max_load) CHECK(want.rows < static_cast<int>(NK));  // it drops
    }
  }
}

TEST_CASE("CUDA moe_dispatch_plan on a hand case", "[cuda][moe]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const int N = 4, K = 2, E = 4;
  const std::vector<int32_t> idx = {0, 1, 1, 0, 0, 2, 0, 1};  // expert 3: no tokens
  struct Expect {
    int capacity;
    std::vector<int32_t> counts, slot_of, token_of;
  };
  const Expect expects[] = {
      {0, {4, 3, 1, 0, 4, 3, 1, 0}, {0, 4, 5, 1, 2, 7, 3, 6}, {0, 1, 2, 3, 0, 1, 3, 2}},
      {2, {2, 2, 1, 0, 4, 3, 1, 0}, {0, 2, 3, 1, -1, 4, -1, -1}, {0, 1, 0, 1, 2, -1, -1, -1}},
  };
  for (const Expect& x : expects) {
    INFO("capacity=" << x.capacity);
    const Plan want = cpu_plan(cpu, idx, N, K, E, x.capacity);
    require_same(x.counts, want.counts, "hand counts (cpu)");
    require_same(x.slot_of, want.slot_of, "hand slot_of (cpu)");
    require_same(x.token_of, want.token_of, "hand token_of (cpu)");
    const Plan got = gpu_plan(gpu, upload(gpu, idx), N, K, E, x.capacity);
    require_same(x.counts, got.counts, "hand counts (gpu)");
    require_same(x.slot_of, got.slot_of, "hand slot_of (gpu)");
    require_same(x.token_of, got.token_of, "hand token_of (gpu)");
  }
}

TEST_CASE("CUDA moe gather / combine and their backwards equal the CPU's", "[cuda][moe]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const Shape shapes[] = {{1, 1, 1}, {37, 8, 8}, {1000, 32, 4}, {300, 1024, 8}, {513, 6, 2}};
  const int Cs[] = {1, 33, 64, 130};
  uint32_t seed = 3000;
  for (const Shape& s : shapes) {
    const size_t N = s.N, K = s.K, NK = N * K;
    const std::vector<int32_t> idx = skewed_assignments(s.N, s.K, s.E, ++seed);
    for (const int capacity : {0, std::max(1, static_cast<int>(NK / s.E / 2))}) {
      const Plan plan = cpu_plan(cpu, idx, s.N, s.K, s.E, capacity);
      const int32_t* slot_d = upload(gpu, plan.slot_of);
      const int32_t* token_d = upload(gpu, plan.token_of);
      const size_t rows = plan.rows;
      for (const int Ci : Cs) {
        INFO("N=" << s.N << " E=" << s.E << " K=" << s.K << " capacity=" << capacity << " rows=" << rows
                  << " C=" << Ci);
        const size_t C = Ci;
        const std::vector<float> x = wide_floats(N * C, ++seed);
        const std::vector<float> eo = wide_floats(rows * C, ++seed);  // expert outputs, or dxp
        const std::vector<float> dy = wide_floats(N * C, ++seed);
        std::vector<float> gates = random_floats(NK, ++seed, 0.3f);
        for (float& g : gates) g = std::fabs(g);
        const float* x_d = upload(gpu, x);
        const float* eo_d = upload(gpu, eo);
        const float* dy_d = upload(gpu, dy);
        const float* gates_d = upload(gpu, gates);

        // Gather.
        std::vector<float> out_cpu(rows * C);
        cpu.moe_gather(out_cpu.data(), x.data(), plan.token_of.data(), static_cast<int>(rows), Ci);
        auto gather = [&] {
          float* out = poisoned<float>(gpu, rows * C);
          gpu.moe_gather(out, x_d, token_d, static_cast<int>(rows), Ci);
          return download(gpu, out, rows * C);
        };
        const std::vector<float> out_gpu = gather();
        require_same(out_cpu, out_gpu, "moe_gather");
        require_deterministic(out_gpu, gather(), "moe_gather");

        // Gather backward (eo plays dxp): overwrites dx, zeros where every slot was dropped.
        std::vector<float> dx_cpu(N * C, kNaN);
        cpu.moe_gather_backward(dx_cpu.data(), eo.data(), plan.slot_of.data(), s.N, s.K, Ci);
        auto gather_backward = [&] {
          float* dx = poisoned<float>(gpu, N * C);
          gpu.moe_gather_backward(dx, eo_d, slot_d, s.N, s.K, Ci);
          return download(gpu, dx, N * C);
        };
        const std::vector<float> dx_gpu = gather_backward();
        require_same(dx_cpu, dx_gpu, "moe_gather_backward");
        require_deterministic(dx_gpu, gather_backward(), "moe_gather_backward");

        // Combine.
        std::vector<float> y_cpu(N * C, kNaN);
        cpu.moe_combine(y_cpu.data(), eo.data(), gates.data(), plan.slot_of.data(), s.N, s.K, Ci);
        auto combine = [&] {
          float* y = poisoned<float>(gpu, N * C);
          gpu.moe_combine(y, eo_d, gates_d, slot_d, s.N, s.K, Ci);
          return download(gpu, y, N * C);
        };
        const std::vector<float> y_gpu = combine();
        require_same(y_cpu, y_gpu, "moe_combine");
        require_deterministic(y_gpu, combine(), "moe_combine");

        // Combine backward: dexpert_out has room for N*K rows, rows >= `rows` must stay as they were.
        const std::vector<float> dexp0 = random_floats(NK * C, ++seed);
        std::vector<float> dexp_cpu = dexp0, dgates_cpu(NK, kNaN);
        cpu.moe_combine_backward(dexp_cpu.data(), dgates_cpu.data(), dy.data(), eo.data(), gates.data(),
                                 plan.slot_of.data(), s.N, s.K, Ci);
        auto combine_backward = [&] {
          float* dexp = upload(gpu, dexp0);
          float* dgates = poisoned<float>(gpu, NK);
          gpu.moe_combine_backward(dexp, dgates, dy_d, eo_d, gates_d, slot_d, s.N, s.K, Ci);
          return std::pair{download(gpu, dexp, NK * C), download(gpu, dgates, NK)};
        };
        const auto [dexp_gpu, dgates_gpu] = combine_backward();
        require_same(dexp_cpu, dexp_gpu, "moe_combine_backward dexpert_out");
        std::vector<double> tol(NK, 0.0);
        for (size_t a = 0; a < NK; ++a) {
          const int32_t slot = plan.slot_of[a];
          if (slot < 0) continue;  // exactly 0 on both
          double mag = 0.0;
          for (size_t c = 0; c < C; ++c)
            mag += std::fabs(static_cast<double>(dy[(a / K) * C + c]) * eo[static_cast<size_t>(slot) * C + c]);
          tol[a] = 2.0 * (static_cast<double>(C) + 2.0) * std::ldexp(1.0, -24) * mag;
        }
        require_close(dgates_cpu, dgates_gpu, tol, "moe_combine_backward dgates");
        const auto [dexp_gpu2, dgates_gpu2] = combine_backward();
        require_deterministic(dexp_gpu, dexp_gpu2, "moe_combine_backward dexpert_out");
        require_deterministic(dgates_gpu, dgates_gpu2, "moe_combine_backward dgates");
      }
    }
  }
}

TEST_CASE("CUDA moe_router_backward equals the CPU's bit for bit", "[cuda][moe]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const Shape shapes[] = {{1, 1, 1}, {5, 8, 8}, {1000, 32, 4}, {333, 64, 8}, {77, 1024, 8}};
  uint32_t seed = 4000;
  for (const Shape& s : shapes) {
    for (const bool renormalize : {false, true}) {
      for (const auto& [aux_scale, z_scale] : {std::pair{0.0f, 0.0f}, std::pair{0.01f, 1e-3f}}) {
        INFO("N=" << s.N << " E=" << s.E << " K=" << s.K << " renormalize=" << renormalize
                  << " aux_scale=" << aux_scale << " z_scale=" << z_scale);
        const size_t N = s.N, E = s.E, K = s.K;
        const std::vector<float> logits = wide_floats(N * E, ++seed);
        const std::vector<float> bias = random_floats(E, ++seed, 0.05f);
        std::vector<float> probs(N * E), lse(N), gates(N * K);
        std::vector<int32_t> idx(N * K);
        cpu.moe_route(probs.data(), lse.data(), idx.data(), gates.data(), logits.data(), bias.data(), s.N, s.E, s.K,
                      renormalize);
        const Plan plan = cpu_plan(cpu, idx, s.N, s.K, s.E, 0);
        const std::vector<int32_t> routed(plan.counts.begin() + s.E, plan.counts.end());
        const std::vector<float> dgates = wide_floats(N * K, ++seed);

        std::vector<float> dlogits_cpu(N * E, kNaN);
        cpu.moe_router_backward(dlogits_cpu.data(), probs.data(), lse.data(), idx.data(), gates.data(),
                                dgates.data(), routed.data(), aux_scale, z_scale, s.N, s.E, s.K, renormalize);
        const float* probs_d = upload(gpu, probs);
        const float* lse_d = upload(gpu, lse);
        const int32_t* idx_d = upload(gpu, idx);
        const float* gates_d = upload(gpu, gates);
        const float* dgates_d = upload(gpu, dgates);
        const int32_t* routed_d = upload(gpu, routed);
        auto run = [&] {
          float* dlogits = poisoned<float>(gpu, N * E);
          gpu.moe_router_backward(dlogits, probs_d, lse_d, idx_d, gates_d, dgates_d, routed_d, aux_scale, z_scale,
                                  s.N, s.E, s.K, renormalize);
          return download(gpu, dlogits, N * E);
        };
        const std::vector<float> dlogits_gpu = run();
        require_same(dlogits_cpu, dlogits_gpu, "moe_router_backward dlogits");
        require_deterministic(dlogits_gpu, run(), "moe_router_backward dlogits");
      }
    }
  }
}

TEST_CASE("CUDA moe_accumulate_prob_sums matches the CPU's within an ulp", "[cuda][moe]") {
  require_gpu();
  CudaOps gpu;
  eco::CpuOps cpu;
  const Shape shapes[] = {{1, 1, 1}, {37, 5, 2}, {1000, 32, 4}, {300, 1024, 8}, {70000, 64, 4}, {100003, 33, 2}};
  uint32_t seed = 5000;
  for (const Shape& s : shapes) {
    INFO("N=" << s.N << " E=" << s.E);
    const size_t N = s.N, E = s.E, K = s.K;
    const std::vector<float> logits = wide_floats(N * E, ++seed);
    std::vector<float> probs(N * E), lse(N), gates(N * K);
    std::vector<int32_t> idx(N * K);
    cpu.moe_route(probs.data(), lse.data(), idx.data(), gates.data(), logits.data(), nullptr, s.N, s.E, s.K, false);
    std::vector<float> sums0 = random_floats(E, ++seed, 10.0f);
    for (float& x : sums0) x = std::fabs(x);
    std::vector<float> sums_cpu = sums0;
    cpu.moe_accumulate_prob_sums(sums_cpu.data(), probs.data(), s.N, s.E);
    const float* probs_d = upload(gpu, probs);
    auto run = [&] {
      float* sums = upload(gpu, sums0);
      gpu.moe_accumulate_prob_sums(sums, probs_d, s.N, s.E);
      return download(gpu, sums, E);
    };
    const std::vector<float> sums_gpu = run();
    std::vector<double> tol(E);
    for (size_t e = 0; e < E; ++e) tol[e] = ulp_of(sums_cpu[e]);
    require_close(sums_cpu, sums_gpu, tol, "moe_accumulate_prob_sums");
    require_deterministic(sums_gpu, run(), "moe_accumulate_prob_sums");
  }
}

// Expert parallelism in one process (no MPI): G threads play the G ranks of one expert-parallel
// group, each with its own CPU backend and model holding E/G experts, exchanging rows through
// shared memory (ThreadExchange). The reference is one model holding every expert:
//
// - the layout: the ranks' expert tensors partition the whole model's, every other tensor is on
//   every rank, global indices and names agree, the experts come last;
// - rank r's loss on batch r equals the whole model's loss on batch r bit for bit (the forward of a
//   row does not depend on which rank runs it), in fp32 and with FP8 experts (eco_sr);
// - rank r's gradient of every tensor the ranks share equals the whole model's on batch r alone,
//   and its gradient of each of its experts equals the whole model's accumulated over batches
//   0..G-1 in order, bit for bit: each expert block is the same GEMM call with the same rows in the
//   same order as one process accumulating those micro-batches. This is the equality that catches
//   the classic G-fold scaling bug of expert gradients.
// The trainer under mpirun (DP x EP, checkpoints across EP degrees) is test_expert_parallel_mpi.cpp.
#include <catch2/catch.hpp>

#include <barrier>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "model/gpt.h"
#include "tiny_model.h"
#include "train/model_weights.h"

using eco::GPT;
using eco::ModelConfig;

namespace {

ModelConfig moe_config(eco::Arch arch) {
  ModelConfig c = eco_test::tiny_config(arch, /*tied=*/true, /*mlp_hidden=*/48, /*n_layer=*/3);
  c.moe.experts = 4;
  c.moe.top_k = 2;
  c.moe.first_layer = 1;
  c.moe.expert_hidden = 24;
  c.moe.activation = arch == eco::Arch::Llama ? eco::MlpActivation::SwiGlu : eco::MlpActivation::Gelu;
  c.moe.aux_loss_coef = 0.05f;
  c.moe.z_loss_coef = 0.01f;
  return c;
}

// The group's shared memory: each rank posts its send buffer and sizes, all wait, each copies its
// blocks out of the peers' buffers, all wait again (so no buffer is reused early).
struct ThreadGroup {
  explicit ThreadGroup(int g) : size(g), sync(g), send(static_cast<size_t>(g)), sizes(static_cast<size_t>(g)) {}
  int size;
  std::barrier<> sync;
  std::vector<const unsigned char*> send;
  std::vector<std::vector<size_t>> sizes;
};

class ThreadExchange final : public eco::ExpertExchange {
 public:
  ThreadExchange(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size; }
  void exchange_host(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                     const std::vector<size_t>& recv_bytes) override {
    exchange(send, send_bytes, recv, recv_bytes);
  }
  void exchange(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                const std::vector<size_t>& recv_bytes) override {
    const size_t me = static_cast<size_t>(rank_);
    g_.send[me] = static_cast<const unsigned char*>(send);
    g_.sizes[me] = send_bytes;
    g_.sync.arrive_and_wait();
    size_t at = 0;
    for (size_t p = 0; p < static_cast<size_t>(g_.size); ++p) {
      size_t from = 0;  // where p's block for this rank starts in p's send buffer
      for (size_t q = 0; q < me; ++q) from += g_.sizes[p][q];
      const size_t n = g_.sizes[p][me];
      if (n != recv_bytes[p]) mismatch = true;
      if (n) std::memcpy(static_cast<unsigned char*>(recv) + at, g_.send[p] + from, n);
      at += recv_bytes[p];
    }
    g_.sync.arrive_and_wait();
    ++calls;
  }
  bool mismatch = false;
  int calls = 0;

 private:
  ThreadGroup& g_;
  int rank_;
};

// What a model computed: its loss(es) and every tensor's gradient by name.
struct Result {
  std::vector<float> losses;
  std::map<std::string, std::vector<float>> grads;
};

std::map<std::string, std::vector<float>> grads_by_name(const GPT& m) {
  std::vector<float> all(m.num_params());
  std::memcpy(all.data(), m.grads(), all.size() * sizeof(float));  // CPU backend: host memory
  std::map<std::string, std::vector<float>> out;
  for (const eco::ParamTensor& t : m.tensors())
    out[t.name].assign(all.begin() + static_cast<std::ptrdiff_t>(t.offset),
                       all.begin() + static_cast<std::ptrdiff_t>(t.offset + t.numel));
  return out;
}

eco::OptimizerSpec spec_of(eco::WeightMode mode) {
  eco::OptimizerSpec s;
  s.mode = mode;
  s.seed = 3;
  return s;
}

// The whole model: per batch alone (fresh gradients), and accumulated over all batches in order.
void run_whole(const ModelConfig& c, eco::WeightMode mode, const std::vector<eco_test::Batch>& batches,
               std::vector<Result>* alone, Result* accumulated) {
  eco::CpuOps ops;
  eco::ModelWeights w(c, ops, spec_of(mode), /*quantize_activations=*/mode != eco::WeightMode::Fp32, false);
  w.init(11);
  for (const eco_test::Batch& b : batches) {
    w.model().zero_grad();
    Result r;
    r.losses.push_back(w.model().forward(b.x.data(), b.y.data(), b.B, b.T));
    w.model().backward();
    r.grads = grads_by_name(w.model());
    alone->push_back(std::move(r));
  }
  w.model().zero_grad();
  for (const eco_test::Batch& b : batches) {
    accumulated->losses.push_back(w.model().forward(b.x.data(), b.y.data(), b.B, b.T));
    w.model().backward();
  }
  accumulated->grads = grads_by_name(w.model());
}

// G ranks of one expert-parallel group, rank r on batch r.
std::vector<Result> run_split(const ModelConfig& c, eco::WeightMode mode, const std::vector<eco_test::Batch>& batches,
                              int* exchange_calls) {
  const int G = static_cast<int>(batches.size());
  ThreadGroup group(G);
  std::vector<Result> out(static_cast<size_t>(G));
  std::vector<std::exception_ptr> failed(static_cast<size_t>(G));
  std::vector<int> calls(static_cast<size_t>(G), 0);
  std::vector<bool> mismatch(static_cast<size_t>(G), false);
  std::vector<std::thread> threads;
  for (int r = 0; r < G; ++r) {
    threads.emplace_back([&, r] {
      const size_t ri = static_cast<size_t>(r);
      try {
        eco::CpuOps ops;
        eco::ModelWeights w(c, ops, spec_of(mode), mode != eco::WeightMode::Fp32, false, eco::OptimizerShard{},
                            eco::ExpertSplit{r, G});
        ThreadExchange x(group, r);
        w.model().set_expert_exchange(&x);
        w.init(11);
        w.model().zero_grad();
        const eco_test::Batch& b = batches[ri];
        out[ri].losses.push_back(w.model().forward(b.x.data(), b.y.data(), b.B, b.T));
        w.model().backward();
        out[ri].grads = grads_by_name(w.model());
        calls[ri] = x.calls;
        mismatch[ri] = x.mismatch;
      } catch (...) {
        failed[ri] = std::current_exception();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < G; ++r) {
    if (failed[static_cast<size_t>(r)]) std::rethrow_exception(failed[static_cast<size_t>(r)]);
    REQUIRE_FALSE(mismatch[static_cast<size_t>(r)]);
  }
  *exchange_calls = calls[0];
  return out;
}

bool is_expert(const std::string& name) { return name.find(".expert.") != std::string::npos; }

}  // namespace

TEST_CASE("expert-parallel layout: the ranks' experts partition the model's, every other tensor everywhere",
          "[moe][ep]") {
  const ModelConfig c = moe_config(eco::Arch::GPT2);
  for (bool external : {false, true}) {
    eco::GptOptions whole_opts;
    whole_opts.external_linear_weights = external;
    const std::vector<eco::ParamTensor> whole = GPT::parameter_tensors(c, whole_opts);
    std::map<std::string, int> held;  // expert tensor -> ranks holding it
    for (int r = 0; r < 2; ++r) {
      eco::GptOptions o = whole_opts;
      o.expert_rank = r;
      o.expert_ranks = 2;
      const std::vector<eco::ParamTensor> mine = GPT::parameter_tensors(c, o);
      size_t first_expert = SIZE_MAX, last_other = 0, experts = 0;
      for (const eco::ParamTensor& t : mine) {
        INFO(t.name);
        REQUIRE(t.global_index < whole.size());
        CHECK(whole[t.global_index].name == t.name);
        CHECK(whole[t.global_index].numel == t.numel);
        if (t.kind == eco::ParamKind::Expert) {
          CHECK(t.expert / 2 == r);  // experts 0,1 on rank 0, 2,3 on rank 1
          ++held[t.name];
          ++experts;
          first_expert = std::min(first_expert, t.offset);
        } else {
          last_other = std::max(last_other, t.offset + t.numel);
        }
      }
      CHECK(experts == 2 * 2 * 2);  // 2 MoE layers x 2 local experts x 2 matrices
      CHECK(last_other <= first_expert);  // the experts come last
      CHECK(mine.size() == whole.size() - experts);
    }
    CHECK(held.size() == 2 * 4 * 2);
    for (const auto& [name, n] : held) CHECK(n == 1);
  }
  eco::GptOptions bad;
  bad.expert_ranks = 3;
  CHECK_THROWS_AS(GPT::parameter_tensors(c, bad), eco::ConfigError);
  ModelConfig dense = eco_test::tiny_config(eco::Arch::GPT2, true);
  bad.expert_ranks = 2;
  CHECK_THROWS_AS(GPT::parameter_tensors(dense, bad), eco::ConfigError);
  eco::CpuOps ops;
  eco::GptOptions two;
  two.expert_ranks = 2;
  GPT m(c, ops, two);
  const eco_test::Batch b = eco_test::make_batch(c.vocab_size, 1);
  CHECK_THROWS_AS(m.forward(b.x.data(), b.y.data(), b.B, b.T), eco::Error);  // no exchange set
}

TEST_CASE("expert parallel in one process: losses and gradients equal the whole model's bit for bit", "[moe][ep]") {
  struct Case {
    eco::Arch arch;
    eco::WeightMode mode;
    int G;
    float capacity;
  };
  for (const Case k : {Case{eco::Arch::GPT2, eco::WeightMode::Fp32, 2, 0.0f},
                       Case{eco::Arch::Llama, eco::WeightMode::Fp32, 4, 1.0f},
                       Case{eco::Arch::GPT2, eco::WeightMode::EcoSr, 2, 1.0f},
                       Case{eco::Arch::Llama, eco::WeightMode::EcoSr, 4, 0.0f}}) {
    ModelConfig c = moe_config(k.arch);
    c.moe.capacity_factor = k.capacity;
    if (k.arch == eco::Arch::Llama) c.moe.shared_expert = true;
    INFO((k.arch == eco::Arch::GPT2 ? "gpt2" : "llama") << " " << eco::to_string(k.mode) << " G=" << k.G
                                                        << " capacity " << k.capacity);
    std::vector<eco_test::Batch> batches;
    for (int r = 0; r < k.G; ++r) batches.push_back(eco_test::make_batch(c.vocab_size, 40u + static_cast<uint32_t>(r)));
    std::vector<Result> alone;
    Result accumulated;
    run_whole(c, k.mode, batches, &alone, &accumulated);
    int calls = 0;
    const std::vector<Result> split = run_split(c, k.mode, batches, &calls);
    // Per MoE layer: counts, rows and outputs in the forward, output and input gradients in the backward.
    CHECK(calls == 2 * 5);
    size_t experts_checked = 0, shared_checked = 0;
    for (int r = 0; r < k.G; ++r) {
      const Result& mine = split[static_cast<size_t>(r)];
      CHECK(mine.losses[0] == alone[static_cast<size_t>(r)].losses[0]);
      for (const auto& [name, g] : mine.grads) {
        INFO("rank " << r << " " << name);
        const std::vector<float>& want =
            is_expert(name) ? accumulated.grads.at(name) : alone[static_cast<size_t>(r)].grads.at(name);
        REQUIRE(g.size() == want.size());
        CHECK(std::memcmp(g.data(), want.data(), g.size() * sizeof(float)) == 0);
        bool nonzero = false;
        for (float v : g) nonzero = nonzero || v != 0.0f;
        CHECK(nonzero);
        (is_expert(name) ? experts_checked : shared_checked) += 1;
      }
    }
    CHECK(experts_checked == 2 * 4 * 2);  // every expert of the model, once
    CHECK(shared_checked > 0);
  }
}

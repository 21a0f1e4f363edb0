// The model side of the FP8 work: linear weights the model does not own (a LinearWeightSource)
// and fake-quantized GEMM operands. References: a normal fp32 model (bit-identical results when
// the source serves its weights), a float64 model with the linear inputs quantized by hand, and
// an ops wrapper that records every GEMM operand the model hands to the backend.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "model/gpt.h"
#include "model/llmc_io.h"
#include "quant/quant_rows.h"
#include "ref_layers.h"
#include "tiny_model.h"
#include "test_util.h"

using eco::Arch;
using eco::GPT;
using eco::GptOptions;
using eco::ModelConfig;
using eco::ParamKind;
using eco::ParamTensor;
using eco::QuantFormat;
using ref::Vec;

namespace {

using eco_test::Batch;
using eco_test::make_batch;
ModelConfig tiny(Arch arch, bool tied, int n_layer = 2) { return eco_test::tiny_config(arch, tied, 0, n_layer); }

struct Variant {
  const char* name;
  ModelConfig cfg;
};
std::vector<Variant> variants() {
  return {{"gpt2", tiny(Arch::GPT2, true)}, {"llama tied", tiny(Arch::Llama, true)},
          {"llama untied", tiny(Arch::Llama, false)}};
}

std::vector<float> tensor_values(const GPT& m, const ParamTensor& t) {
  return std::vector<float>(m.params() + t.offset, m.params() + t.offset + t.numel);
}
std::vector<float> tensor_grads(const GPT& m, const ParamTensor& t) {
  return std::vector<float>(m.grads() + t.offset, m.grads() + t.offset + t.numel);
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Serves fp32 values held in host vectors (copied from a donor model), as the optimizer serves
// its dequantized stored weights.
class HostLinearSource final : public eco::LinearWeightSource {
 public:
  HostLinearSource(eco::Ops& ops, const GPT& donor) : ops_(ops), values_(donor.tensors().size()) {
    for (size_t i = 0; i < donor.tensors().size(); ++i)
      if (donor.tensors()[i].kind == ParamKind::Linear) values_[i] = tensor_values(donor, donor.tensors()[i]);
  }
  void linear_weight_values(size_t i, float* out) const override {
    REQUIRE(!values_.at(i).empty());  // asked only for Linear tensors
    ++calls;
    ops_.copy_from_host(out, values_[i].data(), values_[i].size() * sizeof(float));
  }
  mutable int calls = 0;

 private:
  eco::Ops& ops_;
  std::vector<std::vector<float>> values_;
};

// Larger weights than the 0.02 init, so activations (and their quantization) matter to the loss.
void make_weights_sizeable(GPT& m) {
  for (size_t i = 0; i < m.num_params(); ++i) m.params()[i] *= 5.0f;
  for (const ParamTensor& t : m.tensors())
    if (t.kind == ParamKind::Norm || t.kind == ParamKind::Bias)
      for (size_t i = 0; i < t.numel; ++i)
        m.params()[t.offset + i] =
            0.5f + 0.1f * static_cast<float>(i % 7) - (t.kind == ParamKind::Bias ? 0.8f : 0.0f);
}

std::vector<float> all_grads(GPT& m, const Batch& b, float* loss) {
  m.zero_grad();
  *loss = m.forward(b.x.data(), b.y.data(), b.B, b.T);
  m.backward();
  return std::vector<float>(m.grads(), m.grads() + m.num_params());
}

// The whole model in float64 (as tests/test_model_grad.cpp), with every block linear's input
// rounded to fp32 and fake-quantized per row to `fmt` when `quantize` is set.
double ref_loss(const GPT& m, const Vec& P, const Batch& bt, bool quantize, QuantFormat fmt = QuantFormat::E4M3) {
  const ModelConfig& c = m.config();
  const int B = bt.B, T = bt.T, N = B * T, C = c.d_model, NH = c.n_head, H = c.hidden(), Vp = c.padded_vocab;
  const bool gpt2 = c.arch == Arch::GPT2;
  auto view = [&](const std::string& name) {
    const ParamTensor& t = m.tensor(name);
    return Vec(P.begin() + static_cast<long>(t.offset), P.begin() + static_cast<long>(t.offset + t.numel));
  };
  auto norm = [&](const Vec& x, const std::string& p) {
    return gpt2 ? ref::layernorm(x, view(p + ".w"), view(p + ".b"), N, C, c.norm_eps)
                : ref::rmsnorm(x, view(p + ".w"), N, C, c.norm_eps);
  };
  auto lin = [&](const Vec& x_in, const std::string& p, int in, int out) {
    Vec x = x_in;
    if (quantize) {
      std::vector<float> f(x.begin(), x.end()), q(f.size());
      eco::quantize_dequantize_rows(fmt, f.data(), q.data(), N, in);
      x.assign(q.begin(), q.end());
    }
    if (!gpt2) return ref::linear(x, view(p + ".w"), nullptr, N, in, out);
    const Vec b = view(p + ".b");
    return ref::linear(x, view(p + ".w"), &b, N, in, out);
  };
  const Vec wte = view("wte");
  Vec wpe;
  if (gpt2) wpe = view("wpe");
  Vec x = ref::embedding(bt.x, wte, gpt2 ? &wpe : nullptr, B, T, C);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    Vec qkv = lin(norm(x, h + "ln1"), h + "qkv", C, 3 * C);
    if (!gpt2) qkv = ref::rope(qkv, B, T, 3 * C, 2 * NH, C / NH, c.rope_theta);
    x = ref::add(x, lin(ref::attention(qkv, B, T, C, NH), h + "attproj", C, C));
    const Vec f = lin(norm(x, h + "ln2"), h + "fc", C, gpt2 ? H : 2 * H);
    x = ref::add(x, lin(gpt2 ? ref::gelu(f) : ref::swiglu(f, N, H), h + "fcproj", H, C));
  }
  const Vec logits = ref::linear(norm(x, "lnf"), view(c.tied_head ? "wte" : "head.w"), nullptr, N, C, Vp);
  const Vec losses = ref::crossentropy(logits, bt.y, N, c.vocab_size, Vp);
  return std::accumulate(losses.begin(), losses.end(), 0.0) / N;
}

// CpuOps with a record of every GEMM operand: for each forward GEMM the input it received and the
// output of the op that ran just before it (the unquantized activation the model started from);
// for each backward GEMM the input and output gradient it received.
class RecordingOps final : public eco::Ops {
 public:
  struct Gemm {
    const float* weight;
    int N, C, OC;
    std::vector<float> inp, before, dout;
  };
  std::vector<Gemm> fwd, bwd;

  std::string describe() const override { return "recording " + cpu.describe(); }
  size_t attention_saved_floats(int B, int T, int NH) const override { return cpu.attention_saved_floats(B, T, NH); }
  void* alloc(size_t bytes) override { return cpu.alloc(bytes); }
  void free(void* p) override { cpu.free(p); }
  void fill_zero(void* p, size_t bytes) override { cpu.fill_zero(p, bytes); }
  void copy_from_host(void* d, const void* s, size_t bytes) override { cpu.copy_from_host(d, s, bytes); }
  void copy_to_host(void* d, const void* s, size_t bytes) override { cpu.copy_to_host(d, s, bytes); }
  void copy(void* d, const void* s, size_t bytes) override { cpu.copy(d, s, bytes); }
  void embedding_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int B, int T,
                         int C) override {
    cpu.embedding_forward(out, tok, wte, wpe, B, T, C);
  }
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int B, int T,
                          int C) override {
    cpu.embedding_backward(dwte, dwpe, dout, tok, B, T, C);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b, int N,
                         int C, float eps) override {
    cpu.layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps);
    keep(out, static_cast<size_t>(N) * C);
  }
  void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* mean, const float* rstd, int N, int C) override {
    cpu.layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int N, int C, float eps) override {
    cpu.rmsnorm_forward(out, rstd, inp, w, N, C, eps);
    keep(out, static_cast<size_t>(N) * C);
  }
  void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w, const float* rstd,
                        int N, int C) override {
    cpu.rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
  }
  void matmul_forward(float* out, const float* inp, const float* w, const float* b, int N, int C, int OC) override {
    fwd.push_back({w, N, C, OC, copy_of(inp, static_cast<size_t>(N) * C), last_, {}});
    cpu.matmul_forward(out, inp, w, b, N, C, OC);
  }
  void matmul_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w, int N,
                       int C, int OC) override {
    bwd.push_back({w, N, C, OC, copy_of(inp, static_cast<size_t>(N) * C), {},
                   copy_of(dout, static_cast<size_t>(N) * OC)});
    cpu.matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC);
  }
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) override {
    cpu.attention_forward(out, att, qkv, B, T, C, NH);
    keep(out, static_cast<size_t>(B) * T * C);
  }
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C,
                          int NH) override {
    cpu.attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
  }
  void rope_forward(float* x, const float* c, const float* s, int B, int T, int stride, int nh, int hd) override {
    cpu.rope_forward(x, c, s, B, T, stride, nh, hd);
  }
  void rope_backward(float* dx, const float* c, const float* s, int B, int T, int stride, int nh, int hd) override {
    cpu.rope_backward(dx, c, s, B, T, stride, nh, hd);
  }
  void gelu_forward(float* out, const float* inp, size_t n) override {
    cpu.gelu_forward(out, inp, n);
    keep(out, n);
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override {
    cpu.gelu_backward(dinp, inp, dout, n);
  }
  void swiglu_forward(float* out, const float* inp, int N, int H) override {
    cpu.swiglu_forward(out, inp, N, H);
    keep(out, static_cast<size_t>(N) * H);
  }
  void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) override {
    cpu.swiglu_backward(dinp, inp, dout, N, H);
  }
  void residual_forward(float* out, const float* a, const float* b, size_t n) override {
    cpu.residual_forward(out, a, b, n);
  }
  void residual_backward(float* da, float* db, const float* dout, size_t n) override {
    cpu.residual_backward(da, db, dout, n);
  }
  void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* tgt, int N, int V,
                            int Vp) override {
    cpu.crossentropy_forward(losses, lse, logits, tgt, N, V, Vp);
  }
  void crossentropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* tgt, float dloss,
                             int N, int V, int Vp) override {
    cpu.crossentropy_backward(dlogits, logits, lse, tgt, dloss, N, V, Vp);
  }
  void moe_route(float* p, float* lse, int32_t* idx, float* g, const float* logits, const float* bias, int N, int E,
                 int K, bool renorm) override {
    cpu.moe_route(p, lse, idx, g, logits, bias, N, E, K, renorm);
  }
  void moe_dispatch_plan(int32_t* counts, int32_t* slot, int32_t* tok, const int32_t* idx, int N, int K, int E,
                         int cap) override {
    cpu.moe_dispatch_plan(counts, slot, tok, idx, N, K, E, cap);
  }
  void moe_gather(float* out, const float* x, const int32_t* tok, int rows, int C) override {
    cpu.moe_gather(out, x, tok, rows, C);
  }
  void moe_gather_backward(float* dx, const float* dxp, const int32_t* slot, int N, int K, int C) override {
    cpu.moe_gather_backward(dx, dxp, slot, N, K, C);
  }
  void moe_combine(float* y, const float* eo, const float* g, const int32_t* slot, int N, int K, int C) override {
    cpu.moe_combine(y, eo, g, slot, N, K, C);
  }
  void moe_combine_backward(float* deo, float* dg, const float* dy, const float* eo, const float* g,
                            const int32_t* slot, int N, int K, int C) override {
    cpu.moe_combine_backward(deo, dg, dy, eo, g, slot, N, K, C);
  }
  void moe_router_backward(float* dl, const float* p, const float* lse, const int32_t* idx, const float* g,
                           const float* dg, const int32_t* routed, float aux, float z, int N, int E, int K,
                           bool renorm) override {
    cpu.moe_router_backward(dl, p, lse, idx, g, dg, routed, aux, z, N, E, K, renorm);
  }
  void moe_accumulate_prob_sums(float* sums, const float* p, int N, int E) override {
    cpu.moe_accumulate_prob_sums(sums, p, N, E);
  }
  void quantize_rows(const eco::QuantRef& q, size_t r0, size_t r1, const float* x, eco::Rounding r,
                     const eco::RandomKey* key, int64_t* bad) override {
    cpu.quantize_rows(q, r0, r1, x, r, key, bad);
  }
  void dequantize_rows(float* out, const eco::QuantRef& q, size_t r0, size_t r1) override {
    cpu.dequantize_rows(out, q, r0, r1);
  }
  void quantized_matmul_forward(float* out, const eco::QuantRef& a, const eco::QuantRef& w, const float* b, int N,
                                int K, int OC) override {
    cpu.quantized_matmul_forward(out, a, w, b, N, K, OC);
  }
  void optimizer_step(const eco::OptimStepArgs& a) override { cpu.optimizer_step(a); }
  void accumulate_sum_squares(double* acc, const float* x, size_t n) override { cpu.accumulate_sum_squares(acc, x, n); }
  void accumulate_mean(double* acc, const float* x, size_t n) override { cpu.accumulate_mean(acc, x, n); }


 private:
  static std::vector<float> copy_of(const float* p, size_t n) { return std::vector<float>(p, p + n); }
  void keep(const float* out, size_t n) { last_ = copy_of(out, n); }
  eco::CpuOps cpu;
  std::vector<float> last_;
};

std::vector<float> qdq(QuantFormat f, const std::vector<float>& x, int rows, int cols) {
  std::vector<float> out(x.size());
  eco::quantize_dequantize_rows(f, x.data(), out.data(), rows, cols);
  return out;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("external linear weights: layout puts the linears behind the resident tensors", "[model][fp8]") {
  for (const Variant& v : variants()) {
    SECTION(v.name) {
      eco::CpuOps ops;
      GPT normal(v.cfg, ops);
      GPT ext(v.cfg, ops, GptOptions{true});
      REQUIRE(normal.resident_param_count() == normal.num_params());
      REQUIRE_FALSE(normal.options().external_linear_weights);
      REQUIRE(ext.options().external_linear_weights);
      REQUIRE(ext.num_params() == normal.num_params());
      size_t linear = 0;
      for (const ParamTensor& t : normal.tensors())
        if (t.kind == ParamKind::Linear) linear += t.numel;
      REQUIRE(linear == static_cast<size_t>(v.cfg.n_layer) * (3 * 32 * 32 + 32 * 32 + 2 * 32 * v.cfg.hidden() +
                                                              (v.cfg.arch == Arch::GPT2 ? 0 : 32 * v.cfg.hidden())));
      REQUIRE(ext.resident_param_count() == ext.num_params() - linear);

      // Same tensors in the same order (tensor indices mean the same in both), new offsets:
      // residents below resident_param_count, linears above, every float covered exactly once.
      REQUIRE(ext.tensors().size() == normal.tensors().size());
      std::vector<std::pair<size_t, size_t>> spans;
      for (size_t i = 0; i < ext.tensors().size(); ++i) {
        const ParamTensor &e = ext.tensors()[i], &n = normal.tensors()[i];
        REQUIRE(e.name == n.name);
        REQUIRE(e.shape == n.shape);
        REQUIRE(e.kind == n.kind);
        if (e.kind == ParamKind::Linear) REQUIRE(e.offset >= ext.resident_param_count());
        else REQUIRE(e.offset + e.numel <= ext.resident_param_count());
        spans.emplace_back(e.offset, e.numel);
      }
      std::sort(spans.begin(), spans.end());
      size_t off = 0;
      for (const auto& s : spans) {
        REQUIRE(s.first == off);
        off += s.second;
      }
      REQUIRE(off == ext.num_params());
      // Stacked groups stay contiguous and in layer order.
      REQUIRE(ext.tensor("h.1.qkv.w").offset == ext.tensor("h.0.qkv.w").offset + 96 * 32);
      REQUIRE(ext.tensor("h.1.ln1.w").offset == ext.tensor("h.0.ln1.w").offset + 32);
    }
  }
}

TEST_CASE("external linear weights: init_tensor_values equals init_weights bit for bit", "[model][fp8]") {
  for (const Variant& v : variants()) {
    SECTION(v.name) {
      eco::CpuOps ops;
      GPT normal(v.cfg, ops);
      GPT ext(v.cfg, ops, GptOptions{true});
      normal.init_weights(2024);
      ext.init_weights(2024);
      std::vector<float> host;
      for (size_t i = 0; i < normal.tensors().size(); ++i) {
        const ParamTensor& t = normal.tensors()[i];
        INFO(t.name);
        const std::vector<float> expect = tensor_values(normal, t);
        host.assign(t.numel, -7.0f);
        ext.init_tensor_values(i, 2024, host.data());
        REQUIRE(same_bits(host, expect));
        host.assign(t.numel, -7.0f);
        normal.init_tensor_values(i, 2024, host.data());
        REQUIRE(same_bits(host, expect));
        if (t.kind != ParamKind::Linear) REQUIRE(same_bits(tensor_values(ext, ext.tensors()[i]), expect));
      }
      // A different seed gives different linear weights (the seed reaches the streams).
      size_t qkv = 0;
      while (ext.tensors()[qkv].name != "h.0.qkv.w") ++qkv;
      std::vector<float> other(ext.tensors()[qkv].numel);
      ext.init_tensor_values(qkv, 2025, other.data());
      REQUIRE_FALSE(same_bits(other, tensor_values(normal, normal.tensors()[qkv])));
      REQUIRE_THROWS_AS(ext.init_tensor_values(ext.tensors().size(), 1, other.data()), eco::Error);
    }
  }
}

TEST_CASE("external linear weights: bit-identical loss and gradients to the fp32 model", "[model][fp8]") {
  for (const Variant& v : variants()) {
    SECTION(v.name) {
      eco::CpuOps ops;
      GPT normal(v.cfg, ops);
      normal.init_weights(7);
      make_weights_sizeable(normal);
      GPT ext(v.cfg, ops, GptOptions{true});
      for (const ParamTensor& t : normal.tensors())
        if (t.kind != ParamKind::Linear)
          std::copy(normal.params() + t.offset, normal.params() + t.offset + t.numel,
                    ext.params() + ext.tensor(t.name).offset);
      HostLinearSource source(ops, normal);
      REQUIRE_THROWS_AS(ext.set_linear_weight_source(nullptr), eco::Error);
      const Batch b0 = make_batch(v.cfg.vocab_size, 3);
      REQUIRE_THROWS_AS(ext.forward(b0.x.data(), b0.y.data(), b0.B, b0.T), eco::Error);  // no source yet
      ext.set_linear_weight_source(&source);

      for (int step = 0; step < 2; ++step) {
        const Batch b = step == 0 ? b0 : make_batch(v.cfg.vocab_size, 11, 3, 5);
        float ln = 0, le = 0;
        all_grads(normal, b, &ln);
        source.calls = 0;
        all_grads(ext, b, &le);
        REQUIRE(source.calls == 8 * v.cfg.n_layer);  // each linear: forward GEMM, backward GEMMs
        REQUIRE(std::memcmp(&ln, &le, sizeof ln) == 0);
        const size_t nlog = static_cast<size_t>(b.B) * b.T * v.cfg.padded_vocab;
        REQUIRE(std::memcmp(normal.logits(), ext.logits(), nlog * sizeof(float)) == 0);  // dlogits by now
        for (size_t i = 0; i < normal.tensors().size(); ++i) {
          INFO(normal.tensors()[i].name);
          REQUIRE(same_bits(tensor_grads(ext, ext.tensors()[i]), tensor_grads(normal, normal.tensors()[i])));
        }
      }

      // A model that owns its linears but reads them from a source (master modes: the forward
      // uses the quantized copy): the source wins over params().
      GPT owner(v.cfg, ops);
      owner.upload_params(std::vector<float>(normal.params(), normal.params() + normal.num_params()).data());
      for (const ParamTensor& t : owner.tensors())
        if (t.kind == ParamKind::Linear) std::fill(owner.params() + t.offset, owner.params() + t.offset + t.numel, 0.0f);
      owner.set_linear_weight_source(&source);
      float lo = 0, ln = 0;
      const std::vector<float> go = all_grads(owner, b0, &lo), gn = all_grads(normal, b0, &ln);
      REQUIRE(std::memcmp(&lo, &ln, sizeof lo) == 0);
      REQUIRE(same_bits(go, gn));
      owner.set_linear_weight_source(nullptr);  // back to its own (zeroed) linears
      float lz = 0;
      all_grads(owner, b0, &lz);
      REQUIRE(lz != ln);
    }
  }
}

TEST_CASE("external linear weights: resident-only buffers, llm.c refuses, scratch is counted", "[model][fp8]") {
  eco::CpuOps ops;
  const ModelConfig cfg = tiny(Arch::GPT2, true);
  GPT ext(cfg, ops, GptOptions{true});
  GPT normal(cfg, ops);
  // upload/download move exactly the resident floats.
  std::vector<float> up(ext.resident_param_count());
  for (size_t i = 0; i < up.size(); ++i) up[i] = static_cast<float>(i % 1000) * 0.001f;
  ext.upload_params(up.data());
  std::vector<float> down(ext.resident_param_count() + 1, 42.0f);
  ext.download_params(down.data());
  REQUIRE(std::equal(up.begin(), up.end(), down.begin()));
  REQUIRE(down.back() == 42.0f);

  const auto dir = eco_test::scratch_dir("gpt_quantized_llmc");
  try {
    eco::save_llmc(ext, dir / "m.bin");
    FAIL("save_llmc accepted an external-weight model");
  } catch (const eco::ConfigError& e) {
    REQUIRE(std::string(e.what()).find("llm.c import/export needs the fp32 weights in the model") != std::string::npos);
  }
  normal.init_weights(1);
  eco::save_llmc(normal, dir / "m.bin");
  REQUIRE_THROWS_AS(eco::load_llmc(ext, dir / "m.bin"), eco::ConfigError);
  REQUIRE_NOTHROW(eco::load_llmc(normal, dir / "m.bin"));

  // activation_bytes: the weight scratch (largest linear, fc.w [128, 32]) and the operand scratch
  // ([N, max in] inputs, [N, max out] output gradients, the codes and scales being made), each a
  // 64-byte aligned slice.
  const int B = 2, T = 8;
  const size_t N = B * T, H = cfg.hidden();
  auto slice = [](size_t floats) { return (floats * sizeof(float) + 63) / 64 * 64; };
  const size_t base = normal.activation_bytes(B, T);
  REQUIRE(ext.activation_bytes(B, T) == base + 128 * 32 * sizeof(float));
  GPT::LinearQuantization q;
  q.quantize_activations = true;
  normal.set_linear_quantization(q);
  // Plus the codes and per-row scales of the operand being quantized (2 bytes per element, as wide
  // as the widest operand: fc's output H here).
  const size_t operand = (N * H * 2 + 63) / 64 * 64 + slice(N);
  REQUIRE(normal.activation_bytes(B, T) == base + slice(N * H) + operand);
  q.quantize_output_grads = true;
  normal.set_linear_quantization(q);
  const size_t max_out = std::max<size_t>(3 * 32, H);  // qkv or fc
  REQUIRE(normal.activation_bytes(B, T) == base + slice(N * H) + slice(N * max_out) + operand);
  HostLinearSource source(ops, normal);
  normal.set_linear_weight_source(&source);
  REQUIRE(normal.activation_bytes(B, T) ==
          base + slice(N * H) + slice(N * max_out) + operand + 128 * 32 * sizeof(float));

  // Changing the quantization between forward and backward cancels the pending backward.
  const Batch b = make_batch(cfg.vocab_size, 1);
  normal.forward(b.x.data(), b.y.data(), B, T);
  normal.set_linear_quantization(GPT::LinearQuantization{});
  REQUIRE_THROWS_AS(normal.backward(), eco::Error);
  REQUIRE(normal.activation_bytes(B, T) == base + 128 * 32 * sizeof(float));
}

TEST_CASE("quantized activations: the loss is the model with its linear inputs quantized by hand", "[model][fp8]") {
  for (const Variant& v : variants()) {
    SECTION(v.name) {
      eco::CpuOps ops;
      GPT m(v.cfg, ops);
      m.init_weights(7);
      make_weights_sizeable(m);
      const Batch b = make_batch(v.cfg.vocab_size, 3);
      const Vec P(m.params(), m.params() + m.num_params());
      const float plain = m.forward(b.x.data(), b.y.data(), b.B, b.T);
      GPT::LinearQuantization q;
      q.quantize_activations = true;
      m.set_linear_quantization(q);
      const float e4m3 = m.forward(b.x.data(), b.y.data(), b.B, b.T);
      const double ref = ref_loss(m, P, b, true);
      INFO(v.name << ": fp32 " << plain << ", E4M3 inputs " << e4m3 << ", float64 reference with E4M3 inputs " << ref);
      // The reference agrees to fp32 rounding (as the unquantized model does with its own
      // reference); quantization moves the loss far more than that.
      REQUIRE(std::fabs(e4m3 - ref) <= 2e-5 * ref);
      REQUIRE(std::fabs(plain - ref) > 20 * std::fabs(e4m3 - ref));
      q.act_format = QuantFormat::BF16;
      m.set_linear_quantization(q);
      const float bf16 = m.forward(b.x.data(), b.y.data(), b.B, b.T);
      const double ref_bf16 = ref_loss(m, P, b, true, QuantFormat::BF16);
      INFO("BF16 inputs " << bf16 << ", reference " << ref_bf16);
      REQUIRE(std::fabs(bf16 - ref_bf16) <= 2e-5 * ref_bf16);
      REQUIRE(bf16 != plain);
    }
  }
}

// Straight-through estimator: the last block's MLP-out weight W feeds nothing quantized downstream
// (residual, final norm, head, loss) and its quantized input does not depend on W, so the STE
// gradient of W IS the derivative of the quantized model's loss — which float64 finite differences
// of the hand-quantized reference give exactly. A backward that multiplied doutᵀ by the
// unquantized input would be off by E4M3's rounding (a few percent); the bound is 0.1%.
TEST_CASE("quantized activations: the weight gradient uses the quantized input (finite differences)",
          "[model][fp8]") {
  for (const Variant& v : variants()) {
    SECTION(v.name) {
      eco::CpuOps ops;
      GPT m(v.cfg, ops);
      m.init_weights(7);
      make_weights_sizeable(m);
      GPT::LinearQuantization q;
      q.quantize_activations = true;
      m.set_linear_quantization(q);
      const Batch b = make_batch(v.cfg.vocab_size, 3);
      float loss = 0;
      const std::vector<float> g = all_grads(m, b, &loss);
      Vec P(m.params(), m.params() + m.num_params());
      const ParamTensor& w = m.tensor("h." + std::to_string(v.cfg.n_layer - 1) + ".fcproj.w");
      double scale = 0;
      for (size_t i = 0; i < w.numel; ++i) scale = std::max(scale, std::fabs(static_cast<double>(g[w.offset + i])));
      REQUIRE(scale > 1e-3);
      double worst = 0;
      for (size_t i = 0; i < w.numel; i += 37) {
        const size_t k = w.offset + i;
        const double p0 = P[k], h = 1e-5 * std::max(1.0, std::fabs(p0));
        P[k] = p0 + h;
        const double fp = ref_loss(m, P, b, true);
        P[k] = p0 - h;
        const double fm = ref_loss(m, P, b, true);
        P[k] = p0;
        const double fd = (fp - fm) / (2 * h);
        INFO(w.name << "[" << i << "]: grad " << g[k] << ", float64 FD " << fd << " (max |g| " << scale << ")");
        REQUIRE(std::fabs(g[k] - fd) <= 1e-3 * std::fabs(fd) + 1e-4 * scale);
        worst = std::max(worst, std::fabs(g[k] - fd) / scale);
      }
      // And the unquantized model's gradient is measurably different (the check has teeth).
      GPT plain(v.cfg, ops);
      plain.upload_params(std::vector<float>(P.begin(), P.end()).data());
      float lp = 0;
      const std::vector<float> gp = all_grads(plain, b, &lp);
      const std::vector<float> gw(g.begin() + w.offset, g.begin() + w.offset + w.numel),
          gpw(gp.begin() + w.offset, gp.begin() + w.offset + w.numel);
      INFO("worst |g - fd| / max|g| = " << worst << "; relative difference to the unquantized gradient "
                                         << rel_diff(gpw, gw));
      REQUIRE(rel_diff(gpw, gw) > 20 * std::max(worst, 1e-4));
    }
  }
}

// Every block GEMM, forward and backward, as the backend sees it: the forward input is the
// preceding op's output quantized per row to E4M3 (the head's is not quantized), and each backward
// GEMM of that weight receives exactly (bit for bit) the operand its forward multiplied.
TEST_CASE("quantized activations: backward GEMMs get the forward's quantized operand", "[model][fp8]") {
  for (const Variant& v : variants()) {
    SECTION(v.name) {
      RecordingOps ops;
      GPT m(v.cfg, ops);
      m.init_weights(5);
      make_weights_sizeable(m);
      GPT::LinearQuantization q;
      q.quantize_activations = true;
      m.set_linear_quantization(q);
      const Batch b = make_batch(v.cfg.vocab_size, 9);
      m.zero_grad();
      m.forward(b.x.data(), b.y.data(), b.B, b.T);
      m.backward();
      const int N = b.B * b.T;
      REQUIRE(ops.fwd.size() == static_cast<size_t>(4 * v.cfg.n_layer + 1));
      REQUIRE(ops.bwd.size() == ops.fwd.size());
      std::map<const float*, const RecordingOps::Gemm*> by_weight;
      for (const RecordingOps::Gemm& f : ops.fwd) {
        REQUIRE(f.N == N);
        REQUIRE(f.before.size() == f.inp.size());
        if (&f == &ops.fwd.back()) {  // the head
          REQUIRE(f.OC == v.cfg.padded_vocab);
          REQUIRE(same_bits(f.inp, f.before));
        } else {
          REQUIRE(same_bits(f.inp, qdq(QuantFormat::E4M3, f.before, N, f.C)));
          REQUIRE_FALSE(same_bits(f.inp, f.before));
        }
        REQUIRE(by_weight.emplace(f.weight, &f).second);
      }
      for (const RecordingOps::Gemm& bk : ops.bwd) {
        REQUIRE(by_weight.count(bk.weight) == 1);
        const RecordingOps::Gemm& f = *by_weight.at(bk.weight);
        REQUIRE(bk.C == f.C);
        REQUIRE(bk.OC == f.OC);
        REQUIRE(same_bits(bk.inp, f.inp));
      }
    }
  }
}

TEST_CASE("quantized output gradients: E5M2 rows into both backward GEMMs, a small change to the grads",
          "[model][fp8]") {
  for (const Variant& v : variants()) {
    SECTION(v.name) {
      RecordingOps ops;
      GPT m(v.cfg, ops);
      m.init_weights(5);
      make_weights_sizeable(m);
      const Batch b = make_batch(v.cfg.vocab_size, 13);
      float l0 = 0, l1 = 0;
      const std::vector<float> g0 = all_grads(m, b, &l0);
      const std::vector<RecordingOps::Gemm> plain_bwd = ops.bwd;
      ops.fwd.clear();
      ops.bwd.clear();
      GPT::LinearQuantization q;
      q.quantize_output_grads = true;
      m.set_linear_quantization(q);
      const std::vector<float> g1 = all_grads(m, b, &l1);
      REQUIRE(std::memcmp(&l0, &l1, sizeof l0) == 0);  // the forward is untouched
      // The first backward GEMM (the head) is not a block linear: same output gradient. The next
      // (last block's MLP out) gets the same residual-stream gradient as without quantization,
      // but as E5M2 rows.
      REQUIRE(ops.bwd.size() == plain_bwd.size());
      REQUIRE(same_bits(ops.bwd[0].dout, plain_bwd[0].dout));
      REQUIRE(same_bits(ops.bwd[1].dout, qdq(QuantFormat::E5M2, plain_bwd[1].dout, ops.bwd[1].N, ops.bwd[1].OC)));
      REQUIRE_FALSE(same_bits(ops.bwd[1].dout, plain_bwd[1].dout));

      // E5M2 keeps 2 mantissa bits (up to 12.5% relative rounding per element, ~4% rms); over the
      // whole gradient the change measured 4-7%, single linear weights up to 9% (layer 0, where
      // the rounding of every later layer has accumulated).
      const double whole = rel_diff(g1, g0);
      INFO(v.name << ": relative gradient change " << whole);
      REQUIRE(whole > 0.0);
      REQUIRE(whole < 0.10);
      for (const ParamTensor& t : m.tensors()) {
        if (t.kind != ParamKind::Linear) continue;
        const std::vector<float> a(g1.begin() + t.offset, g1.begin() + t.offset + t.numel),
            c(g0.begin() + t.offset, g0.begin() + t.offset + t.numel);
        INFO(t.name << ": relative change " << rel_diff(a, c));
        REQUIRE(rel_diff(a, c) > 0.0);
        REQUIRE(rel_diff(a, c) < 0.15);
      }
    }
  }
}

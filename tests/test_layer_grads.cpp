// Every CPU layer against float64 references (tests/ref_layers.h): the fp32 forward against the
// reference forward, and the backward against central finite differences of the reference, of the
// scalar Σ dout·f(x). Shapes have odd sizes (vector tails) and enough rows to take the parallel
// paths; gradients that must accumulate are pre-filled and those that must be overwritten are
// pre-filled with garbage.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "ref_layers.h"

using ref::Vec;

namespace {

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {
    const double u1 = uniform() + 1e-300, u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

std::vector<float> randn(size_t n, double scale, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(scale * r.normal());
  return v;
}

Vec to_d(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// |got − want| <= rtol·|want| + atol·max|want| for every element; reports the worst one.
void require_close(const std::string& what, const float* got, const Vec& want, double rtol, double atol) {
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  size_t worst = 0;
  double worst_excess = -1e300;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double excess = err - (rtol * std::fabs(want[i]) + atol * scale);
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  INFO(what << ": worst element " << worst << " got " << got[worst] << " want " << want[worst] << " (max |want| "
            << scale << ")");
  REQUIRE(worst_excess <= 0.0);
}

// Forward tolerance: a handful of fp32 roundings; backward: FD in double is exact to ~1e-9, the
// fp32 backward sums tens of terms.
constexpr double kFwdRtol = 2e-5, kFwdAtol = 2e-6;
constexpr double kBwdRtol = 2e-4, kBwdAtol = 2e-5;

std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

}  // namespace

TEST_CASE("embedding: token + position forward, scatter-add backward", "[layers]") {
  eco::CpuOps ops;
  const int B = 3, T = 5, C = 11, V = 6, Vp = 8;
  std::vector<int32_t> tok(B * T);
  for (int i = 0; i < B * T; ++i) tok[i] = (i * 7 + 3) % V;  // repeated ids: accumulation order matters
  auto wte = randn(static_cast<size_t>(Vp) * C, 0.5, 1), wpe = randn(static_cast<size_t>(T) * C, 0.5, 2);
  auto dout = randn(static_cast<size_t>(B) * T * C, 1.0, 3);
  for (bool with_pos : {true, false}) {
    std::vector<float> out(dout.size());
    ops.embedding_forward(out.data(), tok.data(), wte.data(), with_pos ? wpe.data() : nullptr, B, T, C);
    Vec dwte_d = to_d(wte), dwpe_d = to_d(wpe);
    require_close("embedding forward", out.data(), ref::embedding(tok, dwte_d, with_pos ? &dwpe_d : nullptr, B, T, C),
                  kFwdRtol, kFwdAtol);
    const auto g0 = randn(wte.size(), 1.0, 4), p0 = randn(wpe.size(), 1.0, 5);
    auto dwte = g0, dwpe = p0;
    ops.embedding_backward(dwte.data(), with_pos ? dwpe.data() : nullptr, dout.data(), tok.data(), B, T, C);
    Vec wte_d = to_d(wte), wpe_d = to_d(wpe), dout_d = to_d(dout);
    auto f = [&] { return ref::dot(dout_d, ref::embedding(tok, wte_d, with_pos ? &wpe_d : nullptr, B, T, C)); };
    require_close("d wte (accumulated)", minus(dwte, g0).data(), ref::fd_grad(wte_d, f), kBwdRtol, kBwdAtol);
    if (with_pos) require_close("d wpe (accumulated)", minus(dwpe, p0).data(), ref::fd_grad(wpe_d, f), kBwdRtol, kBwdAtol);
    else REQUIRE(dwpe == p0);
  }
}

TEST_CASE("layernorm forward and backward", "[layers]") {
  eco::CpuOps ops;
  const int N = 70, C = 21;  // 3 row chunks, C not a multiple of 8
  auto x = randn(static_cast<size_t>(N) * C, 1.5, 10), w = randn(C, 1.0, 11), b = randn(C, 1.0, 12);
  for (int i = 0; i < C; ++i) x[i] += 3.0f;  // a row with a large mean
  auto dout = randn(x.size(), 1.0, 13);
  std::vector<float> out(x.size()), mean(N), rstd(N);
  ops.layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  Vec xd = to_d(x), wd = to_d(w), bd = to_d(b), dd = to_d(dout);
  require_close("layernorm forward", out.data(), ref::layernorm(xd, wd, bd, N, C, 1e-5), kFwdRtol, kFwdAtol);
  const auto dx0 = randn(x.size(), 1.0, 14), dw0 = randn(C, 1.0, 15), db0 = randn(C, 1.0, 16);
  auto dx = dx0, dw = dw0, db = db0;
  ops.layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                         C);
  auto f = [&] { return ref::dot(dd, ref::layernorm(xd, wd, bd, N, C, 1e-5)); };
  require_close("layernorm dinp (+=)", minus(dx, dx0).data(), ref::fd_grad(xd, f), kBwdRtol, kBwdAtol);
  require_close("layernorm dweight", minus(dw, dw0).data(), ref::fd_grad(wd, f), kBwdRtol, kBwdAtol);
  require_close("layernorm dbias", minus(db, db0).data(), ref::fd_grad(bd, f), kBwdRtol, kBwdAtol);
}

TEST_CASE("rmsnorm forward and backward", "[layers]") {
  eco::CpuOps ops;
  const int N = 70, C = 19;
  auto x = randn(static_cast<size_t>(N) * C, 1.5, 20), w = randn(C, 1.0, 21), dout = randn(x.size(), 1.0, 22);
  std::vector<float> out(x.size()), rstd(N);
  ops.rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  Vec xd = to_d(x), wd = to_d(w), dd = to_d(dout);
  require_close("rmsnorm forward", out.data(), ref::rmsnorm(xd, wd, N, C, 1e-5), kFwdRtol, kFwdAtol);
  const auto dx0 = randn(x.size(), 1.0, 23), dw0 = randn(C, 1.0, 24);
  auto dx = dx0, dw = dw0;
  ops.rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  auto f = [&] { return ref::dot(dd, ref::rmsnorm(xd, wd, N, C, 1e-5)); };
  require_close("rmsnorm dinp (+=)", minus(dx, dx0).data(), ref::fd_grad(xd, f), kBwdRtol, kBwdAtol);
  require_close("rmsnorm dweight", minus(dw, dw0).data(), ref::fd_grad(wd, f), kBwdRtol, kBwdAtol);
}

TEST_CASE("linear (matmul) forward and backward, with and without bias", "[layers]") {
  eco::CpuOps ops;
  // The larger shapes make the GEMMs split across threads, along rows (96×70×390) and along
  // columns (8×600×500), with and without transposed operands.
  struct Shape { int N, C, OC; };
  for (Shape s : {Shape{5, 7, 9}, Shape{96, 70, 390}, Shape{8, 600, 500}}) {
    for (bool with_bias : {true, false}) {
      INFO("N " << s.N << " C " << s.C << " OC " << s.OC << " bias " << with_bias);
      auto x = randn(static_cast<size_t>(s.N) * s.C, 1.0, 30), W = randn(static_cast<size_t>(s.OC) * s.C, 0.3, 31);
      auto bias = randn(s.OC, 1.0, 32), dout = randn(static_cast<size_t>(s.N) * s.OC, 1.0, 33);
      std::vector<float> out(dout.size());
      ops.matmul_forward(out.data(), x.data(), W.data(), with_bias ? bias.data() : nullptr, s.N, s.C, s.OC);
      Vec xd = to_d(x), Wd = to_d(W), bd = to_d(bias), dd = to_d(dout);
      require_close("linear forward", out.data(), ref::linear(xd, Wd, with_bias ? &bd : nullptr, s.N, s.C, s.OC),
                    kFwdRtol, kFwdAtol);
      std::vector<float> dx(x.size(), 1e30f);  // must be overwritten
      const auto dW0 = randn(W.size(), 1.0, 34), db0 = randn(s.OC, 1.0, 35);
      auto dW = dW0, db = db0;
      ops.matmul_backward(dx.data(), dW.data(), with_bias ? db.data() : nullptr, dout.data(), x.data(), W.data(), s.N,
                          s.C, s.OC);
      // The reference is linear in each argument, so a wide step is exact and FD stays cheap.
      auto f = [&] { return ref::dot(dd, ref::linear(xd, Wd, with_bias ? &bd : nullptr, s.N, s.C, s.OC)); };
      if (s.N * s.C * s.OC < 100000) {
        require_close("linear dinp", dx.data(), ref::fd_grad(xd, f), kBwdRtol, kBwdAtol);
        require_close("linear dweight (+=)", minus(dW, dW0).data(), ref::fd_grad(Wd, f), kBwdRtol, kBwdAtol);
      } else {
        // Too many entries for FD of the whole reference: check the closed forms, which FD
        // validated on the small shape (dinp = dout·W, dW = doutᵀ·x).
        Vec dx_ref(x.size(), 0.0), dW_ref(W.size(), 0.0);
        for (int n = 0; n < s.N; ++n)
          for (int o = 0; o < s.OC; ++o)
            for (int c = 0; c < s.C; ++c) {
              dx_ref[static_cast<size_t>(n) * s.C + c] += dd[static_cast<size_t>(n) * s.OC + o] * Wd[static_cast<size_t>(o) * s.C + c];
              dW_ref[static_cast<size_t>(o) * s.C + c] += dd[static_cast<size_t>(n) * s.OC + o] * xd[static_cast<size_t>(n) * s.C + c];
            }
        require_close("linear dinp (split GEMM)", dx.data(), dx_ref, kBwdRtol, kBwdAtol);
        require_close("linear dweight (split GEMM, +=)", minus(dW, dW0).data(), dW_ref, kBwdRtol, kBwdAtol);
      }
      if (with_bias) require_close("linear dbias (+=)", minus(db, db0).data(), ref::fd_grad(bd, f), kBwdRtol, kBwdAtol);
      else REQUIRE(db == db0);
    }
  }
}

TEST_CASE("causal attention forward and backward", "[layers]") {
  eco::CpuOps ops;
  const int B = 2, T = 11, C = 12, NH = 3;
  auto qkv = randn(static_cast<size_t>(B) * T * 3 * C, 1.0, 40), dout = randn(static_cast<size_t>(B) * T * C, 1.0, 41);
  std::vector<float> out(dout.size()), att(static_cast<size_t>(B) * NH * T * T, 7.0f);
  ops.attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  Vec qd = to_d(qkv), dd = to_d(dout);
  require_close("attention forward", out.data(), ref::attention(qd, B, T, C, NH), kFwdRtol, kFwdAtol);
  for (int bh = 0; bh < B * NH; ++bh)
    for (int t = 0; t < T; ++t) {
      double row = 0;
      for (int j = 0; j < T; ++j) {
        const float p = att[(static_cast<size_t>(bh) * T + t) * T + j];
        if (j > t) REQUIRE(p == 0.0f);
        row += p;
      }
      REQUIRE(row == Approx(1.0).epsilon(1e-5));
    }
  std::vector<float> dqkv(qkv.size(), 1e30f);
  ops.attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  auto f = [&] { return ref::dot(dd, ref::attention(qd, B, T, C, NH)); };
  require_close("attention dqkv", dqkv.data(), ref::fd_grad(qd, f), kBwdRtol, kBwdAtol);
}

TEST_CASE("rope forward and backward (q and k heads of a qkv row, v untouched)", "[layers]") {
  eco::CpuOps ops;
  const int B = 2, T = 9, C = 16, NH = 2, hd = C / NH, stride = 3 * C;
  const double theta = 10000.0;
  Vec cos_d, sin_d;
  ref::rope_tables(T, hd, theta, &cos_d, &sin_d);
  std::vector<float> cosf(cos_d.begin(), cos_d.end()), sinf(sin_d.begin(), sin_d.end());
  const auto x = randn(static_cast<size_t>(B) * T * stride, 1.0, 50);
  auto y = x;
  ops.rope_forward(y.data(), cosf.data(), sinf.data(), B, T, stride, 2 * NH, hd);
  Vec xd = to_d(x);
  require_close("rope forward", y.data(), ref::rope(xd, B, T, stride, 2 * NH, hd, theta), kFwdRtol, kFwdAtol);
  for (int bt = 0; bt < B * T; ++bt)
    for (int c = 2 * C; c < 3 * C; ++c) REQUIRE(y[static_cast<size_t>(bt) * stride + c] == x[static_cast<size_t>(bt) * stride + c]);
  const auto dout = randn(x.size(), 1.0, 51);
  auto dx = dout;
  ops.rope_backward(dx.data(), cosf.data(), sinf.data(), B, T, stride, 2 * NH, hd);
  Vec dd = to_d(dout);
  auto f = [&] { return ref::dot(dd, ref::rope(xd, B, T, stride, 2 * NH, hd, theta)); };
  require_close("rope dinp", dx.data(), ref::fd_grad(xd, f), kBwdRtol, kBwdAtol);
}

TEST_CASE("gelu (tanh form) forward and backward, including the tails", "[layers]") {
  eco::CpuOps ops;
  auto x = randn(20011, 2.5, 60);  // > one parallel chunk, odd length
  x[0] = -12.0f, x[1] = 12.0f, x[2] = 0.0f, x[3] = -5.5f, x[4] = 1e-4f;
  const auto dout = randn(x.size(), 1.0, 61);
  std::vector<float> y(x.size()), dx(x.size(), 1e30f);
  ops.gelu_forward(y.data(), x.data(), x.size());
  require_close("gelu forward", y.data(), ref::gelu(to_d(x)), kFwdRtol, kFwdAtol);
  ops.gelu_backward(dx.data(), x.data(), dout.data(), x.size());
  // Elementwise: the FD of Σ dout·gelu(x) w.r.t. x_i is dout_i·gelu'(x_i).
  Vec want(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i], h = 1e-6 * std::max(1.0, std::fabs(xi));
    want[i] = dout[i] * (ref::gelu1(xi + h) - ref::gelu1(xi - h)) / (2 * h);
  }
  require_close("gelu dinp", dx.data(), want, kBwdRtol, kBwdAtol);
}

TEST_CASE("swiglu forward and backward", "[layers]") {
  eco::CpuOps ops;
  const int N = 9, H = 13;
  auto x = randn(static_cast<size_t>(N) * 2 * H, 2.0, 70);
  x[0] = -30.0f, x[1] = 30.0f;
  const auto dout = randn(static_cast<size_t>(N) * H, 1.0, 71);
  std::vector<float> y(dout.size()), dx(x.size(), 1e30f);
  ops.swiglu_forward(y.data(), x.data(), N, H);
  Vec xd = to_d(x), dd = to_d(dout);
  require_close("swiglu forward", y.data(), ref::swiglu(xd, N, H), kFwdRtol, kFwdAtol);
  ops.swiglu_backward(dx.data(), x.data(), dout.data(), N, H);
  auto f = [&] { return ref::dot(dd, ref::swiglu(xd, N, H)); };
  require_close("swiglu dinp", dx.data(), ref::fd_grad(xd, f), kBwdRtol, kBwdAtol);
}

TEST_CASE("residual add forward and backward", "[layers]") {
  eco::CpuOps ops;
  const size_t n = 9001;
  const auto a = randn(n, 1.0, 80), b = randn(n, 1.0, 81), dout = randn(n, 1.0, 82);
  std::vector<float> y(n);
  ops.residual_forward(y.data(), a.data(), b.data(), n);
  Vec ad = to_d(a), bd = to_d(b), dd = to_d(dout);
  require_close("residual forward", y.data(), ref::add(ad, bd), kFwdRtol, kFwdAtol);
  const auto da0 = randn(n, 1.0, 83), db0 = randn(n, 1.0, 84);
  auto da = da0, db = db0;
  ops.residual_backward(da.data(), db.data(), dout.data(), n);
  // f is linear: d/da_i Σ dout·(a+b) = dout_i; FD of the first entries confirms the reference.
  Vec small_a(ad.begin(), ad.begin() + 50), small_b(bd.begin(), bd.begin() + 50), small_d(dd.begin(), dd.begin() + 50);
  auto f = [&] { return ref::dot(small_d, ref::add(small_a, small_b)); };
  Vec fd_a = ref::fd_grad(small_a, f), fd_b = ref::fd_grad(small_b, f);
  require_close("residual da (+=)", minus(da, da0).data(), fd_a, kBwdRtol, kBwdAtol);
  require_close("residual db (+=)", minus(db, db0).data(), fd_b, kBwdRtol, kBwdAtol);
  for (size_t i = 0; i < n; ++i) {
    REQUIRE(da[i] == da0[i] + dout[i]);  // the very same fp32 add, so bit-exact
    REQUIRE(db[i] == db0[i] + dout[i]);
  }
}

TEST_CASE("softmax cross-entropy over a padded vocabulary", "[layers]") {
  eco::CpuOps ops;
  const int N = 6, V = 37, Vp = 48;
  auto logits = randn(static_cast<size_t>(N) * Vp, 3.0, 90);
  for (int n = 0; n < N; ++n)
    for (int v = V; v < Vp; ++v) logits[static_cast<size_t>(n) * Vp + v] = 50.0f;  // padding must not count
  std::vector<int32_t> tgt = {0, 36, 5, 5, 17, 29};
  std::vector<float> losses(N), lse(N);
  ops.crossentropy_forward(losses.data(), lse.data(), logits.data(), tgt.data(), N, V, Vp);
  Vec ld = to_d(logits);
  require_close("cross-entropy forward", losses.data(), ref::crossentropy(ld, tgt, N, V, Vp), kFwdRtol, kFwdAtol);
  const float dloss = 0.37f;
  std::vector<float> dlogits(logits.size(), 1e30f);
  ops.crossentropy_backward(dlogits.data(), logits.data(), lse.data(), tgt.data(), dloss, N, V, Vp);
  Vec ones(N, static_cast<double>(dloss));
  auto f = [&] { return ref::dot(ones, ref::crossentropy(ld, tgt, N, V, Vp)); };
  require_close("cross-entropy dlogits", dlogits.data(), ref::fd_grad(ld, f), kBwdRtol, kBwdAtol);
  for (int n = 0; n < N; ++n)
    for (int v = V; v < Vp; ++v) REQUIRE(dlogits[static_cast<size_t>(n) * Vp + v] == 0.0f);
  // In place (dlogits aliasing logits) gives the same bits.
  auto inplace = logits;
  ops.crossentropy_backward(inplace.data(), inplace.data(), lse.data(), tgt.data(), dloss, N, V, Vp);
  REQUIRE(inplace == dlogits);
}

TEST_CASE("cross-entropy on a GPT-2 sized row: extreme logits stay finite and exact", "[layers]") {
  eco::CpuOps ops;
  const int N = 3, V = 50257, Vp = 50304;
  auto logits = randn(static_cast<size_t>(N) * Vp, 4.0, 95);
  logits[17] = 80.0f;                         // one dominant logit in row 0
  logits[Vp + 5] = -200.0f;                   // a target with a tiny probability in row 1
  std::vector<int32_t> tgt = {17, 5, V - 1};
  std::vector<float> losses(N), lse(N);
  ops.crossentropy_forward(losses.data(), lse.data(), logits.data(), tgt.data(), N, V, Vp);
  require_close("cross-entropy forward (large V)", losses.data(), ref::crossentropy(to_d(logits), tgt, N, V, Vp), 1e-5,
                1e-6);
  std::vector<float> d(logits.size());
  ops.crossentropy_backward(d.data(), logits.data(), lse.data(), tgt.data(), 1.0f, N, V, Vp);
  for (int n = 0; n < N; ++n) {
    double s = 0;
    for (int v = 0; v < Vp; ++v) s += d[static_cast<size_t>(n) * Vp + v];
    REQUIRE(std::fabs(s) < 1e-5);  // softmax sums to one, minus the one-hot
  }
}

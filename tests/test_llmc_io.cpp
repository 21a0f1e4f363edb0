// llm.c GPT-2 fp32 checkpoint import/export: round trip, the tensor order against a file written
// here from llm.c's documented layout, and every kind of bad file.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "model/gpt.h"
#include "model/llmc_io.h"
#include "test_util.h"

using eco::GPT;
using eco::ModelConfig;
namespace fs = std::filesystem;

namespace {

ModelConfig small_gpt2() {
  ModelConfig c;
  c.arch = eco::Arch::GPT2;
  c.vocab_size = 67;
  c.padded_vocab = 128;
  c.n_layer = 2;
  c.n_head = 4;
  c.d_model = 32;
  c.max_seq_len = 16;
  return c;
}

std::vector<char> read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_all(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// llm.c's 16 tensors in file order with their sizes (from llm.c's train_gpt2.c layout).
struct LlmcTensor {
  const char* name;
  size_t numel;
};
std::vector<LlmcTensor> llmc_tensors(int maxT, int Vp, int L, int C) {
  const size_t c = C, l = L;
  return {{"wte", static_cast<size_t>(Vp) * c}, {"wpe", static_cast<size_t>(maxT) * c}, {"ln1w", l * c},
          {"ln1b", l * c}, {"qkvw", l * 3 * c * c}, {"qkvb", l * 3 * c}, {"attprojw", l * c * c},
          {"attprojb", l * c}, {"ln2w", l * c}, {"ln2b", l * c}, {"fcw", l * 4 * c * c}, {"fcb", l * 4 * c},
          {"fcprojw", l * 4 * c * c}, {"fcprojb", l * c}, {"lnfw", c}, {"lnfb", c}};
}

// A distinct value for element i of llm.c tensor k.
float marker(size_t k, size_t i) { return static_cast<float>(k + 1) + static_cast<float>(i % 4096) * 1e-4f; }

void require_checkpoint_error(const std::function<void()>& f, const std::string& must_contain) {
  try {
    f();
    FAIL("no CheckpointError");
  } catch (const eco::CheckpointError& e) {
    INFO(e.what());
    REQUIRE(std::string(e.what()).find(must_contain) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("llm.c export then import is bit-identical and gives the same loss", "[llmc]") {
  const fs::path dir = eco_test::scratch_dir("llmc_roundtrip");
  eco::CpuOps ops;
  GPT a(small_gpt2(), ops);
  a.init_weights(99);
  std::vector<int32_t> x(32), y(32);
  for (int i = 0; i < 32; ++i) x[i] = (i * 11 + 2) % 67, y[i] = (i * 5 + 1) % 67;
  const float loss_a = a.forward(x.data(), y.data(), 2, 16);
  eco::save_llmc(a, dir / "model.bin");
  REQUIRE(fs::file_size(dir / "model.bin") == 1024 + a.num_params() * 4);

  const ModelConfig read = eco::model_config_from_llmc(dir / "model.bin");
  REQUIRE(read.n_layer == 2);
  REQUIRE(read.n_head == 4);
  REQUIRE(read.d_model == 32);
  REQUIRE(read.vocab_size == 67);
  REQUIRE(read.padded_vocab == 128);
  REQUIRE(read.max_seq_len == 16);
  REQUIRE(read.hidden() == 128);

  GPT b(read, ops);
  b.init_weights(1);  // different weights, to be replaced
  eco::load_llmc(b, dir / "model.bin");
  REQUIRE(b.num_params() == a.num_params());
  REQUIRE(std::memcmp(a.params(), b.params(), a.num_params() * sizeof(float)) == 0);
  REQUIRE(b.forward(x.data(), y.data(), 2, 16) == loss_a);

  // Overwriting an existing export leaves no temporary files behind.
  a.init_weights(100);
  eco::save_llmc(a, dir / "model.bin");
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++files;
  REQUIRE(files == 1);
  eco::load_llmc(b, dir / "model.bin");
  REQUIRE(std::memcmp(a.params(), b.params(), a.num_params() * sizeof(float)) == 0);
}

TEST_CASE("llm.c import puts every llm.c tensor where the model reads it", "[llmc]") {
  const fs::path dir = eco_test::scratch_dir("llmc_layout");
  const int maxT = 16, V = 67, Vp = 128, L = 2, NH = 4, C = 32;
  std::vector<int32_t> header(256, 0);
  header[0] = 20240326, header[1] = 3, header[2] = maxT, header[3] = V, header[4] = L, header[5] = NH, header[6] = C,
  header[7] = Vp;
  std::vector<float> body;
  const auto tensors = llmc_tensors(maxT, Vp, L, C);
  for (size_t k = 0; k < tensors.size(); ++k)
    for (size_t i = 0; i < tensors[k].numel; ++i) body.push_back(marker(k, i));
  {
    std::ofstream f(dir / "hand.bin", std::ios::binary);
    f.write(reinterpret_cast<const char*>(header.data()), 1024);
    f.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size() * 4));
  }
  eco::CpuOps ops;
  GPT m(small_gpt2(), ops);
  eco::load_llmc(m, dir / "hand.bin");
  // Model tensor name → (llm.c tensor index, per-layer size), for every layer.
  struct Map {
    const char* suffix;
    size_t k, per_layer;
  };
  const size_t c = C;
  const Map per_layer[] = {{"ln1.w", 2, c},           {"ln1.b", 3, c},         {"qkv.w", 4, 3 * c * c},
                           {"qkv.b", 5, 3 * c},       {"attproj.w", 6, c * c}, {"attproj.b", 7, c},
                           {"ln2.w", 8, c},           {"ln2.b", 9, c},         {"fc.w", 10, 4 * c * c},
                           {"fc.b", 11, 4 * c},       {"fcproj.w", 12, 4 * c * c}, {"fcproj.b", 13, c}};
  for (int l = 0; l < L; ++l)
    for (const Map& mp : per_layer) {
      const eco::ParamTensor& t = m.tensor("h." + std::to_string(l) + "." + mp.suffix);
      REQUIRE(t.numel == mp.per_layer);
      for (size_t i = 0; i < t.numel; ++i) REQUIRE(m.params()[t.offset + i] == marker(mp.k, l * mp.per_layer + i));
    }
  const std::pair<const char*, size_t> whole[] = {{"wte", 0}, {"wpe", 1}, {"lnf.w", 14}, {"lnf.b", 15}};
  for (const auto& [name, k] : whole) {
    const eco::ParamTensor& t = m.tensor(name);
    for (size_t i = 0; i < t.numel; ++i) REQUIRE(m.params()[t.offset + i] == marker(k, i));
  }
}

TEST_CASE("bad llm.c files raise CheckpointError naming the file", "[llmc]") {
  const fs::path dir = eco_test::scratch_dir("llmc_bad");
  eco::CpuOps ops;
  GPT m(small_gpt2(), ops);
  m.init_weights(3);
  const fs::path good = dir / "good.bin";
  eco::save_llmc(m, good);
  const std::vector<char> bytes = read_all(good);
  const std::string path_text = (dir / "x.bin").string();

  auto variant = [&](const std::function<void(std::vector<char>&)>& edit) {
    std::vector<char> b = bytes;
    edit(b);
    write_all(dir / "x.bin", b);
  };
  auto set_int = [](std::vector<char>& b, int index, int32_t v) { std::memcpy(b.data() + 4 * index, &v, 4); };

  variant([&](std::vector<char>& b) { set_int(b, 0, 12345); });
  require_checkpoint_error([&] { eco::load_llmc(m, dir / "x.bin"); }, path_text);
  require_checkpoint_error([&] { eco::model_config_from_llmc(dir / "x.bin"); }, "magic");

  variant([&](std::vector<char>& b) { set_int(b, 1, 5); });
  require_checkpoint_error([&] { eco::load_llmc(m, dir / "x.bin"); }, "bf16");
  variant([&](std::vector<char>& b) { set_int(b, 1, 7); });
  require_checkpoint_error([&] { eco::load_llmc(m, dir / "x.bin"); }, "version 7");

  variant([&](std::vector<char>& b) { b.resize(100); });
  require_checkpoint_error([&] { eco::model_config_from_llmc(dir / "x.bin"); }, "truncated");
  variant([&](std::vector<char>& b) { b.resize(b.size() - 4); });
  require_checkpoint_error([&] { eco::load_llmc(m, dir / "x.bin"); }, "truncated");
  variant([&](std::vector<char>& b) { b.push_back(0); });
  require_checkpoint_error([&] { eco::load_llmc(m, dir / "x.bin"); }, "trailing");
  variant([&](std::vector<char>& b) { set_int(b, 6, 30); });  // C not divisible by NH
  require_checkpoint_error([&] { eco::load_llmc(m, dir / "x.bin"); }, "corrupt header");
  require_checkpoint_error([&] { eco::load_llmc(m, dir / "missing.bin"); }, (dir / "missing.bin").string());

  // A valid file of another shape: every differing field is listed.
  ModelConfig other = small_gpt2();
  other.d_model = 64;
  other.n_layer = 3;
  GPT big(other, ops);
  try {
    eco::load_llmc(big, good);
    FAIL("no CheckpointError");
  } catch (const eco::CheckpointError& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.find(good.string()) != std::string::npos);
    REQUIRE(msg.find("n_layer 2 in the file vs 3") != std::string::npos);
    REQUIRE(msg.find("d_model 32 in the file vs 64") != std::string::npos);
    REQUIRE(msg.find("vocab") == std::string::npos);
  }
  // The failed loads left the model untouched.
  GPT check(small_gpt2(), ops);
  check.init_weights(3);
  REQUIRE(std::memcmp(check.params(), m.params(), m.num_params() * sizeof(float)) == 0);

  // llm.c files hold gpt2 only.
  ModelConfig llama = small_gpt2();
  llama.arch = eco::Arch::Llama;
  GPT lm(llama, ops);
  REQUIRE_THROWS_AS(eco::load_llmc(lm, good), eco::ConfigError);
  REQUIRE_THROWS_AS(eco::save_llmc(lm, dir / "llama.bin"), eco::ConfigError);
}

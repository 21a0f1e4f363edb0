#include "model/llmc_io.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"

namespace eco {
namespace {

constexpr int32_t kMagic = 20240326;
constexpr int32_t kVersionFp32 = 3;
constexpr int32_t kVersionBf16 = 5;
constexpr size_t kHeaderInts = 256;
constexpr size_t kHeaderBytes = kHeaderInts * sizeof(int32_t);

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw CheckpointError(path.string() + ": " + what);
}

// Parameter count of an llm.c GPT-2 with this header (64-bit: a corrupt header must not overflow).
uint64_t llmc_param_count(const int32_t* h) {
  const uint64_t maxT = h[2], L = h[4], C = h[6], Vp = h[7];
  const uint64_t per_layer = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C);
  return Vp * C + maxT * C + L * per_layer + 2 * C;
}

struct Header {
  int32_t h[kHeaderInts];
  uint64_t file_bytes;
};

Header read_header(const std::filesystem::path& path, std::ifstream& f) {
  Header hd{};
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail(path, "no such llm.c checkpoint file");
  hd.file_bytes = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read the file size: " + ec.message());
  f.open(path, std::ios::binary);
  if (!f) fail(path, "cannot open for reading");
  if (hd.file_bytes < kHeaderBytes)
    fail(path, "truncated: " + std::to_string(hd.file_bytes) + " bytes, shorter than the 1024-byte llm.c header");
  f.read(reinterpret_cast<char*>(hd.h), kHeaderBytes);
  if (!f) fail(path, "cannot read the 1024-byte header");
  const int32_t* h = hd.h;
  if (h[0] != kMagic)
    fail(path, "not an llm.c GPT-2 model file (magic " + std::to_string(h[0]) + ", expected " +
                   std::to_string(kMagic) + ")");
  if (h[1] == kVersionBf16)
    fail(path, "version 5 (bf16) checkpoints are not supported; export an fp32 (version 3) file from llm.c");
  if (h[1] != kVersionFp32)
    fail(path, "unsupported llm.c checkpoint version " + std::to_string(h[1]) + " (only fp32 version 3 is read)");
  const int32_t maxT = h[2], V = h[3], L = h[4], NH = h[5], C = h[6], Vp = h[7];
  if (maxT <= 0 || V <= 0 || L <= 0 || NH <= 0 || C <= 0 || Vp < V || C % NH != 0)
    fail(path, "corrupt header: maxT " + std::to_string(maxT) + ", V " + std::to_string(V) + ", L " +
                   std::to_string(L) + ", NH " + std::to_string(NH) + ", C " + std::to_string(C) + ", Vp " +
                   std::to_string(Vp));
  const uint64_t expected = kHeaderBytes + llmc_param_count(h) * sizeof(float);
  if (hd.file_bytes != expected)
    fail(path, std::string(hd.file_bytes < expected ? "truncated: " : "unexpected trailing data: ") +
                   std::to_string(hd.file_bytes) + " bytes, the header's shape needs " + std::to_string(expected));
  return hd;
}

ModelConfig config_from_header(const int32_t* h) {
  ModelConfig m;
  m.arch = Arch::GPT2;
  m.max_seq_len = h[2];
  m.vocab_size = h[3];
  m.n_layer = h[4];
  m.n_head = h[5];
  m.d_model = h[6];
  m.padded_vocab = h[7];
  m.mlp_hidden = 4 * h[6];
  m.tied_head = true;
  return m;
}

// The file body is every parameter in fp32; a model whose linear weights live elsewhere (in an
// optimizer's quantized store) has no such buffer.
void require_fp32_weights(const GPT& model, const char* what) {
  if (model.options().external_linear_weights)
    throw ConfigError(std::string("llm.c import/export needs the fp32 weights in the model; this model's linear "
                                  "weights are external (a master-free quantized mode), so ") +
                      what + " through a model built without external_linear_weights (an fp32 staging model)");
}

}  // namespace

ModelConfig model_config_from_llmc(const std::filesystem::path& path) {
  std::ifstream f;
  const Header hd = read_header(path, f);
  return config_from_header(hd.h);
}

void load_llmc(GPT& model, const std::filesystem::path& path) {
  require_fp32_weights(model, "import");
  const ModelConfig& cfg = model.config();
  if (cfg.arch != Arch::GPT2)
    throw ConfigError("model.arch: llm.c checkpoints hold the gpt2 architecture; cannot load " + path.string() +
                      " into a llama model");
  std::ifstream f;
  const Header hd = read_header(path, f);
  const ModelConfig file = config_from_header(hd.h);
  std::string diff;
  auto check = [&](const char* key, int in_file, int in_model) {
    if (in_file == in_model) return;
    if (!diff.empty()) diff += ", ";
    diff += key;
    diff += ' ';
    diff += std::to_string(in_file);
    diff += " in the file vs ";
    diff += std::to_string(in_model);
    diff += " in the model";
  };
  check("max_seq_len", file.max_seq_len, cfg.max_seq_len);
  check("vocab_size", file.vocab_size, cfg.vocab_size);
  check("padded_vocab", file.padded_vocab, cfg.padded_vocab);
  check("n_layer", file.n_layer, cfg.n_layer);
  check("n_head", file.n_head, cfg.n_head);
  check("d_model", file.d_model, cfg.d_model);
  check("mlp_hidden", file.mlp_hidden, cfg.hidden());
  if (cfg.moe.enabled()) fail(path, "is a dense llm.c model; an MoE model (moe.experts > 0) cannot start from it");
  if (!diff.empty()) fail(path, "shape does not match the model config (" + diff + "); set model.* to the file's shape");
  if (llmc_param_count(hd.h) != model.num_params())
    fail(path, "holds " + std::to_string(llmc_param_count(hd.h)) + " parameters, the model has " +
                   std::to_string(model.num_params()));
  std::vector<float> body(model.num_params());
  f.read(reinterpret_cast<char*>(body.data()), static_cast<std::streamsize>(body.size() * sizeof(float)));
  if (!f) fail(path, "read failed in the parameter data (truncated while reading?)");
  model.upload_params(body.data());
}

void save_llmc(const GPT& model, const std::filesystem::path& path) {
  require_fp32_weights(model, "export");
  const ModelConfig& cfg = model.config();
  if (cfg.arch != Arch::GPT2 || !cfg.tied_head || cfg.hidden() != 4 * cfg.d_model || cfg.moe.enabled())
    throw ConfigError("--export-llmc: the llm.c format holds only the dense gpt2 architecture (tied head, MLP "
                      "4·d_model, no MoE)");
  std::vector<int32_t> header(kHeaderInts, 0);
  header[0] = kMagic;
  header[1] = kVersionFp32;
  header[2] = cfg.max_seq_len;
  header[3] = cfg.vocab_size;
  header[4] = cfg.n_layer;
  header[5] = cfg.n_head;
  header[6] = cfg.d_model;
  header[7] = cfg.padded_vocab;
  std::vector<float> body(model.num_params());
  model.download_params(body.data());

  atomic_write_with(path, [&](DurableFile& out) {
    out.write(header.data(), kHeaderBytes);
    out.write(body.data(), body.size() * sizeof(float));
  });
}

}  // namespace eco

#pragma once
// A tiny end-to-end setup for tests that run the eco_train binary: synthetic byte-level shards
// written by hand (llm.c format) and a small config.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace eco_test {

// Writes an llm.c token shard (magic 20240520, version 1) without using the project's writer.
inline void write_raw_shard(const std::filesystem::path& p, const std::vector<uint16_t>& toks) {
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = static_cast<int32_t>(toks.size());
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header.data()), 1024);
  f.write(reinterpret_cast<const char*>(toks.data()), static_cast<std::streamsize>(toks.size() * 2));
}

// Learnable byte text: a few sentences repeated with small variations.
inline std::vector<uint16_t> synthetic_tokens(size_t n, uint32_t seed) {
  const char* words[] = {"the ", "whale ", "sea ", "ship ", "captain ", "white ", "a ", "and ", "of ", "to "};
  std::vector<uint16_t> out;
  uint32_t s = seed;
  while (out.size() < n) {
    s = s * 1664525u + 1013904223u;
    const char* w = words[(s >> 16) % 10];
    for (const char* c = w; *c && out.size() < n; ++c) out.push_back(static_cast<uint8_t>(*c));
    if (((s >> 8) & 7) == 0 && out.size() < n) out.push_back('.');
  }
  return out;
}

// Directory with data/train.bin, data/val.bin and a config.json for a 2-layer byte model.
struct TinyRun {
  std::filesystem::path dir;
  nlohmann::json config;

  explicit TinyRun(const std::string& name) : dir(scratch_dir(name)) {
    std::filesystem::create_directories(dir / "data");
    write_raw_shard(dir / "data/train.bin", synthetic_tokens(40000, 1));
    write_raw_shard(dir / "data/val.bin", synthetic_tokens(8000, 2));
    config = {
        {"model", {{"arch", "gpt2"}, {"vocab_size", 256}, {"n_layer", 2}, {"n_head", 2}, {"d_model", 32}, {"max_seq_len", 32}}},
        {"data", {{"train", (dir / "data/train.bin").string()}, {"val", (dir / "data/val.bin").string()}, {"tokenizer", "byte"}}},
        {"optim", {{"lr", 3e-3}, {"warmup_steps", 3}}},
        {"train", {{"steps", 30}, {"batch_size", 4}, {"seq_len", 32}, {"eval_every", 10}, {"eval_batches", 2},
                   {"sample_tokens", 8}, {"checkpoint_every", 10}, {"threads", 2}}},
        {"log", {{"dir", (dir / "run").string()}, {"every", 5}}}};
  }

  std::filesystem::path write_config(const std::string& file = "config.json") const {
    std::ofstream(dir / file) << config.dump(2);
    return dir / file;
  }
};

inline std::string eco_train_bin() { return (std::filesystem::path(ECO_BINARY_DIR) / "eco_train").string(); }

// Runs a shell command, returns its exit status (not the raw wait status); output goes to `log`.
inline int run_command(const std::string& cmd, const std::filesystem::path& log) {
  int rc = std::system((cmd + " > " + log.string() + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline std::vector<nlohmann::json> read_metrics(const std::filesystem::path& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream f(run_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace eco_test

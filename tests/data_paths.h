#pragma once
// Where tests find the fetched data (tools/fetch_data.sh): $ECO_DATA, else <source>/data.
#include <cstdlib>
#include <filesystem>

#include "test_util.h"

namespace eco_test {

inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("ECO_DATA"); env && *env) return env;
  return source_dir() / "data";
}

inline std::filesystem::path tokenizer_dir() { return data_dir() / "tokenizer"; }

inline bool have_tokenizer_files() {
  return std::filesystem::exists(tokenizer_dir() / "encoder.json") &&
         std::filesystem::exists(tokenizer_dir() / "vocab.bpe");
}

// Skips the whole test program (ctest "skipped") when GPT-2's tokenizer files are not installed.
// It exits at once, so call it before any check of the program has run: a skip must not hide a
// failure.
inline void require_tokenizer_files() {
  if (!have_tokenizer_files())
    skip("GPT-2 tokenizer files not found in " + tokenizer_dir().string() +
         "; run tools/fetch_data.sh (or set ECO_DATA) to install them");
}

}  // namespace eco_test

// The GPT-2 tokenizer: golden vectors (ids agreed by js-tiktoken and gpt-3-encoder), round trips,
// the heap BPE against a plain quadratic scan, and damaged tokenizer files. Needs the files from
// tools/fetch_data.sh; without them the whole program reports "skipped" (so every test case here
// needs them: a skip must never hide a failure of a test that ran before it). The tests that need
// no data are in test_byte_tokenizer.cpp.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/gpt2_bpe.h"
#include "data/gpt2_vocab.h"
#include "data/tokenizer.h"
#include "data_paths.h"
#include "test_util.h"
#include "error_test_util.h"

namespace fs = std::filesystem;
using Ids = std::vector<uint32_t>;

using eco_test::contains;
using eco_test::data_error_of;
using eco_test::HangGuard;

namespace {

// tiktoken's merge loop written the obvious way: scan all adjacent pairs, merge the leftmost of
// lowest rank, repeat.
Ids reference_bpe(const std::string& piece, const eco::TokenRanks& ranks) {
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  while (parts.size() > 1) {
    size_t best = 0;
    uint32_t best_rank = std::numeric_limits<uint32_t>::max();
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto it = ranks.find(parts[i] + parts[i + 1]);
      if (it != ranks.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<uint32_t>::max()) break;
    parts[best] += parts[best + 1];
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  Ids ids;
  for (const auto& p : parts) ids.push_back(ranks.find(p)->second);
  return ids;
}

}  // namespace

TEST_CASE("GPT-2 tokenizer: golden vectors", "[data][tokenizer][gpt2]") {
  eco_test::require_tokenizer_files();
  eco::Gpt2Tokenizer tok(eco_test::tokenizer_dir().string());
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot() == 50256);
  CHECK(tok.encode("Hello world") == Ids{15496, 995});
  CHECK(tok.encode("Call me Ishmael.") == Ids{14134, 502, 1148, 21720, 417, 13});
  CHECK(tok.encode(" It's  2024!\n\n  x") == Ids{632, 338, 220, 48609, 0, 628, 220, 2124});
  CHECK(tok.encode("don't DON'T you'll") == Ids{9099, 470, 23917, 6, 51, 345, 1183});
  CHECK(tok.encode("h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82") ==
        Ids{71, 2634, 18798, 10545, 245, 98, 17312, 105, 45739, 252, 32485});
  CHECK(tok.encode("a\tb  \n c") == Ids{64, 197, 65, 220, 220, 198, 269});
  CHECK(tok.encode("").empty());
  // The separator is only ever added by eco_prepare; in text it is ordinary characters.
  const Ids eot_text = tok.encode("<|endoftext|>");
  CHECK(eot_text.size() > 1);
  CHECK(std::find(eot_text.begin(), eot_text.end(), 50256u) == eot_text.end());
  CHECK(tok.decode(Ids{50256}) == "<|endoftext|>");
  CHECK(tok.decode(Ids{15496, 50300}) == "Hello<|unknown:50300|>");
  CHECK(eco::make_tokenizer("gpt2", eco_test::tokenizer_dir().string())->vocab_size() == 50257);
}

TEST_CASE("GPT-2 tokenizer: decode(encode(s)) == s, invalid UTF-8 is refused", "[data][tokenizer][gpt2]") {
  eco_test::require_tokenizer_files();
  eco::Gpt2Tokenizer tok(eco_test::tokenizer_dir().string());
  const std::vector<std::string> texts = {
      "It was the best of times,\r\nit was the worst of times.\n\n\n",
      "  leading and trailing   \t\t\n",
      "Numbers 1234567 3.14159 and 1,000,000; dates 1851-10-18.",
      "\u00FE\u00E6t w\u00E6s g\u014Dd cyning! \u00F0\u00E6r",  // Old English letters
      "\u201CCurly quotes\u201D \u2014 em-dash, caf\u00E9, na\u00EFve, \u03A9\u03BC\u03B5\u03B3\u03B1",
      "emoji \U0001F469\u200D\U0001F4BB\U0001F3FD and CJK \u4F60\u597D\u4E16\u754C",
      "NEL\u0085here NBSP\u00A0there BOM\uFEFFx",
      "they're we've I'm she'd it'll 's 't",
      std::string(3000, 'a') + std::string(500, ' ') + "z",
  };
  for (const std::string& s : texts) {
    INFO(s.substr(0, 60));
    const Ids ids = tok.encode(s);
    for (uint32_t id : ids) CHECK(id < 50256);
    CHECK(tok.decode(ids) == s);
  }
  const std::string msg = data_error_of([&] { tok.encode("valid start \xE6\x97 then bad"); });
  CHECK(contains(msg, "UTF-8"));
  CHECK(contains(msg, "offset 12"));
}

TEST_CASE("heap BPE merges exactly like the quadratic scan", "[data][tokenizer][gpt2]") {
  eco_test::require_tokenizer_files();
  const eco::Gpt2Vocab vocab = eco::load_gpt2_vocab(eco_test::tokenizer_dir().string());
  // Pieces over a small alphabet create many competing and tied merges; plus some real words.
  const std::string alphabet = "aeinorst";
  uint64_t s = 12345;
  std::vector<std::string> pieces = {"Ishmael", " unconditionally", "aaaaaaaaaaaaaaaaaaaaaaaaa", " Ġ", "\xC3\xBE\xC3\xA6t"};
  for (int i = 0; i < 3000; ++i) {
    std::string p = (i % 2) ? " " : "";
    const int len = 1 + static_cast<int>((s >> 33) % 24);
    for (int k = 0; k < len; ++k) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      p.push_back(alphabet[(s >> 40) % alphabet.size()]);
    }
    pieces.push_back(p);
  }
  for (const std::string& p : pieces) {
    INFO(p);
    Ids got;
    eco::gpt2_bpe_merge(p, vocab.ranks, got);
    REQUIRE(got == reference_bpe(p, vocab.ranks));
  }
}

TEST_CASE("GPT-2 tokenizer files: missing or mismatched files are DataErrors", "[data][tokenizer][gpt2]") {
  eco_test::require_tokenizer_files();
  const fs::path dir = eco_test::scratch_dir("tokenizer_files");
  const std::string missing = data_error_of([&] { eco::Gpt2Tokenizer t(dir.string()); });
  CHECK(contains(missing, "encoder.json"));
  CHECK(contains(missing, "fetch_data.sh"));

  fs::copy_file(eco_test::tokenizer_dir() / "encoder.json", dir / "encoder.json");
  std::ifstream in(eco_test::tokenizer_dir() / "vocab.bpe");
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::swap(lines[100], lines[101]);  // two merges out of rank order
  std::ofstream out(dir / "vocab.bpe");
  for (const auto& l : lines) out << l << "\n";
  out.close();
  const std::string mismatch = data_error_of([&] { eco::Gpt2Tokenizer t(dir.string()); });
  CHECK(contains(mismatch, "vocab.bpe:101"));
  CHECK(contains(mismatch, "merge 99"));
}

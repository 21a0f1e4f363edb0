// Our GPT-2 tokenizer against an independent implementation, js-tiktoken's "gpt2" encoding run by
// node (tests/tiktoken_encode.mjs): every document of both corpora, hand-made edge cases of the
// regex (Unicode whitespace, CRLF, emoji, contractions, long runs) and seeded random strings of
// tricky characters. Every id must agree. Needs what tools/fetch_data.sh installs (tokenizer,
// corpora, js-tiktoken in data/node) and node; skipped without them.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "data_paths.h"
#include "test_util.h"

namespace fs = std::filesystem;
using Ids = std::vector<uint32_t>;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Ids read_u32(const fs::path& p) {
  const std::string bytes = read_file(p);
  Ids ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  return ids;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

std::vector<std::string> edge_cases() {
  std::vector<std::string> v = {
      // Whitespace that JavaScript's \s and PCRE2's \s disagree on, and its neighbours.
      "a\u0085b", "a \u0085 b", "\u0085\u0085x", "word\u0085", "x \u0085\n y",
      "a\u00A0b", "a \u00A0b", "\u00A0\u00A0 x", "end\u00A0", "\u00A0",
      "a\uFEFFb", "\uFEFFstart", "a\u180Eb", "a \u180E b", "a\u2028b\u2029c", "wide\u3000space\u3000\u3000x",
      "wait!\u0085\u0085", "end.\uFEFF", "a\u180E!b", "?\u00A0?", "x\u2028!",
      "zero\u200Bwidth", "a\u2009thin\u202Fnarrow\u205Fmath", "\u1680ogham", "\v\f\v x",
      // Line ends.
      "line one\r\nline two\r\n\r\nline three", "\r\r\n x", "a\rb", "trailing\r\n", "\n\n\n\nx\n\n",
      // Emoji and other astral characters.
      "emoji \U0001F642\U0001F642 \U0001F469\u200D\U0001F4BB \U0001F44D\U0001F3FD \U0001F1FA\U0001F1F8!",
      "\U0001F600x\U0001F600 \U0001D400\U0001D401 (math bold) \U00020000 (CJK ext B)",
      // Old English and other scripts.
      "\u00DE\u00E6t w\u00E6s g\u014Dd cyning! \u00F0\u00E6r \u01BFyn \u021Dear \u00C6\u00D0\u00DE",
      "\u03A9\u03BC\u03AD\u03B3\u03B1 \u041F\u0440\u0438\u0432\u0435\u0442 \u4F60\u597D\u4E16\u754C \uD55C\uAD6D\uC5B4 "
      "\u0645\u0631\u062D\u0628\u0627 \u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35 \u0928\u092E\u0938\u094D\u0924\u0947",
      "e\u0301 combining\u0301\u0302 marks \u0301\u0301x", "\u0663\u0664\u0665 \u216B \u00BD \u2460 digits 12345678901234567890",
      "abc123def 3.14 1,000,000 v2.0.1 0x1F",
      // Contractions: only ASCII apostrophe and lower case are special.
      "they're we've I'm she'd it'll 's 't 're 've 'm 'll 'd", "DON'T YOU'LL", "it\u2019s curly", "''s '''", "can't've",
      "'", "x'", "'\n's",
      // Runs.
      std::string(1000, ' ') + "word", std::string(300, '\n') + "x", " \t\n \t\n  x  \n\n", "   ", "\t",
      "word   ", "a  \n  b", std::string(1200, 'x'), "Pneumonoultramicroscopicsilicovolcanoconiosis" + std::string(200, 'z'),
      std::string(500, '!') + "?" + std::string(300, '-'), std::string(400, '7'),
      // The separator's text is ordinary text.
      "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>",
      "",
  };
  // Seeded random strings over characters that exercise every branch of the regex.
  const std::vector<uint32_t> pool = {'a', 'Z', 'e', ' ', ' ', ' ', '\n', '\r', '\t', '\'', 's', 't', 'l', 'v',
                                      '1', '9', '.', ',', '!', '-', 0x85, 0xA0, 0xFEFF, 0x180E, 0x2028, 0x3000,
                                      0xE9, 0xFE, 0x3A9, 0x4F60, 0x663, 0x301, 0x200D, 0x1F642, 0x2019, 0xBD};
  uint64_t s = 2024;
  for (int i = 0; i < 300; ++i) {
    std::string str;
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const int len = 1 + static_cast<int>((s >> 33) % 40);
    for (int k = 0; k < len; ++k) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      str += utf8(pool[(s >> 35) % pool.size()]);
    }
    v.push_back(str);
  }
  return v;
}

bool have_node_oracle(const fs::path& node_prefix) {
  return fs::exists(node_prefix / "node_modules/js-tiktoken/package.json") &&
         std::system("node --version > /dev/null 2>&1") == 0;
}

// Runs the oracle over `files` (split across two node processes: the machine may have 2 cores);
// the ids of files[i] land in work/i.u32. Returns "" or what went wrong (no Catch macros here: this
// runs on a second thread, and Catch is not thread-safe).
std::string run_oracle(const fs::path& node_prefix, const std::vector<fs::path>& files, const fs::path& work) {
  const fs::path script = eco_test::source_dir() / "tests/tiktoken_encode.mjs";
  // Alternate files by size between the two lists so both processes get about half the bytes.
  std::vector<size_t> idx(files.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return fs::file_size(files[a]) > fs::file_size(files[b]); });
  std::vector<std::future<int>> jobs;
  for (int part = 0; part < 2; ++part) {
    const fs::path list = work / ("list" + std::to_string(part) + ".txt");
    const fs::path out = work / ("out" + std::to_string(part));
    fs::create_directories(out);
    std::ofstream l(list);
    std::vector<size_t> mine;
    for (size_t k = part; k < idx.size(); k += 2) mine.push_back(idx[k]);
    for (size_t i : mine) l << files[i].string() << "\n";
    l.close();
    std::ofstream(work / ("map" + std::to_string(part) + ".txt")) << [&] {
      std::string m;
      for (size_t i : mine) m += std::to_string(i) + "\n";
      return m;
    }();
    const std::string cmd = "node '" + script.string() + "' '" + node_prefix.string() + "' '" + list.string() + "' '" +
                            out.string() + "' > '" + (work / ("node" + std::to_string(part) + ".log")).string() +
                            "' 2>&1";
    jobs.push_back(std::async(std::launch::async, [cmd] { return std::system(cmd.c_str()); }));
  }
  std::string error;
  for (size_t part = 0; part < jobs.size(); ++part) {
    if (jobs[part].get() != 0)
      error += "node failed: " + read_file(work / ("node" + std::to_string(part) + ".log")) + "\n";
  }
  if (!error.empty()) return error;
  // Rename the outputs to the files' overall indices.
  for (int part = 0; part < 2; ++part) {
    std::ifstream m(work / ("map" + std::to_string(part) + ".txt"));
    size_t global = 0, local = 0;
    while (m >> global) {
      fs::rename(work / ("out" + std::to_string(part)) / (std::to_string(local) + ".u32"),
                 work / (std::to_string(global) + ".u32"));
      ++local;
    }
  }
  return "";
}

// Compares one document; on a mismatch reports where, with the text around it.
bool same_ids(eco::Gpt2Tokenizer& tok, const std::string& name, const Ids& ours, const Ids& oracle) {
  if (ours == oracle) return true;
  size_t i = 0;
  while (i < ours.size() && i < oracle.size() && ours[i] == oracle[i]) ++i;
  const size_t from = i >= 5 ? i - 5 : 0;
  auto window = [&](const Ids& v) {
    std::string s;
    for (size_t k = from; k < std::min(v.size(), i + 5); ++k) s += std::to_string(v[k]) + " ";
    return s;
  };
  const Ids prefix(ours.begin(), ours.begin() + static_cast<std::ptrdiff_t>(i));
  const std::string before = tok.decode(prefix);
  FAIL_CHECK(name << ": first difference at token " << i << " (byte " << before.size() << "; " << ours.size()
                  << " ids vs the oracle's " << oracle.size() << ")\n  ours:   " << window(ours)
                  << "\n  oracle: " << window(oracle) << "\n  text before: ..."
                  << before.substr(before.size() > 60 ? before.size() - 60 : 0));
  return false;
}

}  // namespace

TEST_CASE("GPT-2 tokenizer equals js-tiktoken on both corpora and on edge cases", "[data][tokenizer][parity]") {
  eco_test::require_tokenizer_files();
  const fs::path data = eco_test::data_dir();
  const fs::path node_prefix = data / "node";
  if (!have_node_oracle(node_prefix))
    eco_test::skip("js-tiktoken (the oracle) is not installed in " + node_prefix.string() +
                   " or node is missing; run tools/fetch_data.sh");
  std::vector<fs::path> corpus;
  for (const char* split : {"tiny/train", "tiny/val", "large/train", "large/val"}) {
    const fs::path dir = data / "corpus" / split;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".txt") corpus.push_back(e.path());
  }
  if (corpus.empty()) eco_test::skip("no corpus in " + (data / "corpus").string() + "; run tools/fetch_data.sh");
  if (!fs::is_directory(data / "corpus/large/train"))
    WARN("the large corpus is absent (fetch_data.sh --tiny-only?); comparing the tiny corpus only");
  std::sort(corpus.begin(), corpus.end());

  const fs::path work = eco_test::scratch_dir("tokenizer_parity");
  const std::vector<std::string> cases = edge_cases();
  std::vector<fs::path> files;
  for (size_t i = 0; i < cases.size(); ++i) {
    files.push_back(work / ("edge_" + std::to_string(i) + ".txt"));
    std::ofstream(files.back(), std::ios::binary) << cases[i];
  }
  files.insert(files.end(), corpus.begin(), corpus.end());

  const auto t0 = std::chrono::steady_clock::now();
  auto oracle = std::async(std::launch::async, [&] { return run_oracle(node_prefix, files, work); });
  eco::Gpt2Tokenizer tok(eco_test::tokenizer_dir().string());
  std::vector<Ids> ours;
  size_t bytes = 0;
  for (const fs::path& f : files) {
    const std::string text = read_file(f);
    bytes += text.size();
    ours.push_back(tok.encode(text));
  }
  const double ours_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string oracle_error = oracle.get();
  INFO(oracle_error);
  REQUIRE(oracle_error.empty());
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  size_t tokens = 0, mismatched = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string name = i < cases.size() ? "edge case " + std::to_string(i) + " \"" + cases[i].substr(0, 40) + "\""
                                              : files[i].string();
    tokens += ours[i].size();
    if (!same_ids(tok, name, ours[i], read_u32(work / (std::to_string(i) + ".u32")))) ++mismatched;
  }
  std::printf("parity: %zu edge cases + %zu corpus documents, %zu bytes, %zu tokens, %zu mismatched; "
              "ours %.1f s, with the oracle %.1f s\n",
              cases.size(), corpus.size(), bytes, tokens, mismatched, ours_s, total_s);
  CHECK(mismatched == 0);
}

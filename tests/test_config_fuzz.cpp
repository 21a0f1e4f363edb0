// Config fuzzing: the shipped configs, mutated as text (byte flips, deletions, inserted JSON
// fragments, extreme numbers, deep nesting, wrong types, duplicate keys, unicode) and loaded with
// random --set overrides. Every case must either load or throw eco::ConfigError with a one-line
// message; any other exception fails the test, and a crash fails ctest. A config that loads must
// also be usable: its ints read as ints, and it dumps and resolves back to itself.
//
// Fixed seed and case count, so a failure reproduces: the failing case's index, text and
// overrides are printed.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/splitmix.h"
#include "test_util.h"
#include "train/config_schema.h"

namespace fs = std::filesystem;
using eco::Config;

namespace {

constexpr uint64_t kSeed = 20240611;
constexpr int kCases = 3000;

struct Rng {
  uint64_t state;
  uint64_t next() { return eco::splitmix64(state); }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }
  bool percent(int p) { return below(100) < static_cast<size_t>(p); }
  template <typename T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }
};

// Values and bits of JSON that have broken parsers and validators: numbers at and beyond every
// limit (double, int64, uint64, int32, the schema's bounds), wrong types, invalid escapes and
// UTF-8, comments, unbalanced brackets, duplicate keys.
const std::vector<std::string> kFragments = {
    "0", "-0", "1", "-1", "0.5", "-0.5", "1e3", "1.0", "2.5e-3", "1e308", "1e309", "1e400", "-1e400", "1e-400",
    "4.9e-324", "2147483647", "2147483648", "4294967296", "4294967297", "9007199254740993", "1000000000001",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "18446744073709551615", "18446744073709551616", "99999999999999999999999999999", "1099511627776", "1025",
    "1048577", "NaN", "Infinity", "-Infinity", "0x10", "01", "+1", ".5", "1.", "null", "true", "false", "\"\"",
    "\"x\"", "\"gpt2\"", "\"llama\"", "\"eco_sr\"", "\"fp32\"", "\"3\"", "\"1e400\"", "\"\\u0000\"", "\"\\ud800\"",
    "\"\\udc00\\ud800\"", "\"\\uZZZZ\"", "\"\\x41\"", "\"caf\xc3\xa9\"", "\"\xf0\x9f\x98\x80\"", "\"\xff\xfe\"",
    "\"\xc3\"", "\xef\xbb\xbf", "\"a\nb\"", "[]", "{}", "[1, 2]", "{\"a\": 1}", "[[[[]]]]", "[1,", "{\"a\":", "]",
    "}", ",", ":", "\"", "// comment\n", "/* comment */", "/*", "*/", "\"steps\": 1, \"steps\": 2",
    "\"train\": {\"steps\": 5}, ", "\"model\": 3, ", "\"optim\": {\"mode\": 7}, ", "\"nope\": 1, ", "\"\": 0, ",
    "\"train\": {\"batch_size\": 4294967297}, ", "\"train\": {\"grad_accum\": 9223372036854775807}, ",
    "\"train\": {\"threads\": 100000000}, "};

// Strings for --set values of string and path keys, and for keys themselves.
const std::vector<std::string> kTexts = {"", "x", "runs/fuzz", "*", "?", "[", "no/such/file.bin", "caf\xc3\xa9",
                                         "\xff", "a\nb", "\"quoted\"", "\"unterminated", "eco", "llama", "gpt2",
                                         "byte", "e5m2", "block128", "sgdm", "linear", "-1", "1e400"};

// In-range integers that break rules across keys (divisibility, seq_len <= max_seq_len, tokens
// per micro-batch and per step) when they meet.
const std::vector<std::string> kInts = {"0", "1", "2", "3", "7", "24", "64", "100", "128", "1000", "1024", "2048",
                                        "65536", "1048576", "2097152", "2147483647"};

std::string deep_nesting(Rng& rng) {
  // Around the parser's limit (64) and far beyond it.
  const size_t depth = rng.percent(70) ? 60 + rng.below(10) : 1000 + rng.below(100000);
  std::string s(depth, rng.percent(50) ? '[' : '{');
  if (s[0] == '{') {
    s.clear();
    for (size_t i = 0; i < depth; ++i) s += "{\"a\":";
  }
  if (rng.percent(50)) return s;
  s += "1";
  for (size_t i = 0; i < depth; ++i) s += s[0] == '[' ? ']' : '}';
  return s;
}

std::string random_fragment(Rng& rng) {
  switch (rng.below(8)) {
    case 0: return deep_nesting(rng);
    case 1: return std::string(1, static_cast<char>(rng.below(256)));
    case 2: return "\"" + std::string(rng.below(3000), 'z') + "\"";
    default: return rng.pick(kFragments);
  }
}

// Positions of every number and string in the text (keys only with `keys`): replacing a value
// keeps the rest valid JSON, so the case reaches validation rather than stopping at the parser.
std::vector<std::pair<size_t, size_t>> tokens(const std::string& text, bool keys) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < text.size() && text[j] != '"') j += text[j] == '\\' ? 2 : 1;
      j = std::min(j + 1, text.size());
      const size_t next = text.find_first_not_of(" \t\r\n", j);
      const bool is_key = next != std::string::npos && text[next] == ':';
      if (keys || !is_key) out.emplace_back(i, j - i);
      i = j;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t j = i + 1;
      while (j < text.size() && std::string_view("0123456789.eE+-").find(text[j]) != std::string_view::npos) ++j;
      out.emplace_back(i, j - i);
      i = j;
    } else {
      ++i;
    }
  }
  return out;
}

void mutate(std::string& text, Rng& rng) {
  const size_t pos = rng.below(text.size() + 1);
  // Mostly value replacements: byte-level damage almost always stops at the parser.
  switch (rng.below(10)) {
    case 0:  // flip one byte
      if (!text.empty()) text[rng.below(text.size())] = static_cast<char>(rng.below(256));
      break;
    case 1:  // delete a run of bytes
      text.erase(pos, 1 + rng.below(20));
      break;
    case 2:  // insert a fragment anywhere
      text.insert(pos, random_fragment(rng));
      break;
    case 3:  // duplicate a section or key right after the opening brace
      if (const size_t brace = text.find('{'); brace != std::string::npos)
        text.insert(brace + 1, rng.pick(std::vector<std::string>{"\"train\": {\"steps\": 3}, ", "\"model\": {}, ",
                                                                    "\"optim\": {\"lr\": -1}, ", "\"log\": null, "}));
      break;
    default: {  // replace a number or a string with a fragment (wrong type, extreme value)
      const auto toks = tokens(text, /*keys=*/rng.percent(20));
      if (toks.empty()) break;
      const auto [at, len] = rng.pick(toks);
      text.replace(at, len, random_fragment(rng));
      break;
    }
  }
}

std::vector<std::string> random_overrides(Rng& rng, const eco::Schema& schema) {
  std::vector<std::string> out;
  const size_t n = rng.below(4);
  for (size_t i = 0; i < n; ++i) {
    const eco::SchemaEntry& entry = schema.entries[rng.below(schema.entries.size())];
    std::string key = entry.key;
    if (rng.percent(10)) key = rng.pick(std::vector<std::string>{"train", "model", "nope.key", "", " train.steps ",
                                                                  "train.stpes", "a\nb", "train..steps"});
    std::string value = rng.percent(50) ? random_fragment(rng) : rng.pick(kTexts);
    if (entry.type == eco::ValueType::Int && rng.percent(60)) value = rng.pick(kInts);
    if (rng.percent(3)) out.push_back(key);  // no '='
    else out.push_back(key + "=" + value);
  }
  return out;
}

std::string shown(const std::string& s) { return s.size() > 400 ? s.substr(0, 400) + "...(" + std::to_string(s.size()) + " bytes)" : s; }

}  // namespace

TEST_CASE("mutated configs and random --set overrides load or give a ConfigError", "[config][fuzz]") {
  const eco::Schema& schema = eco::eco_train_schema();
  std::vector<std::string> seeds;
  for (const auto& entry : fs::directory_iterator(eco_test::source_dir() / "configs")) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::sort(seeds.begin(), seeds.end());  // directory order differs between machines
  REQUIRE(seeds.size() >= 9);

  // The shipped configs name data/ files that need not exist here: existing stand-ins, given
  // first so the random overrides can still replace them.
  const fs::path dir = eco_test::scratch_dir("config_fuzz");
  std::ofstream(dir / "train.bin") << "x";
  std::ofstream(dir / "val.bin") << "x";
  const std::vector<std::string> data_overrides = {"data.train=" + (dir / "train.bin").string(),
                                                   "data.val=" + (dir / "val.bin").string()};
  const std::string file = (dir / "case.json").string();

  Rng rng{kSeed};
  int loaded = 0, refused = 0;
  for (int i = 0; i < kCases; ++i) {
    std::string text = rng.pick(seeds);
    const size_t n_mutations = rng.below(3);  // 0: the shipped text, with random overrides only
    for (size_t m = 0; m < n_mutations; ++m) mutate(text, rng);
    std::vector<std::string> overrides = data_overrides;
    for (std::string& o : random_overrides(rng, schema)) overrides.push_back(std::move(o));
    std::ofstream(file, std::ios::binary | std::ios::trunc) << text;

    std::string sets;
    for (const std::string& o : overrides) sets += "\n--set " + shown(o);
    INFO("case " << i << "\ntext: " << shown(text) << sets);
    try {
      const Config cfg = Config::load(file, overrides, schema);
      ++loaded;
      // The bounds guarantee what the code relies on: every int-sized key reads as an int, and
      // the resolved config can be written out and read back as the same run.
      for (const eco::SchemaEntry& e : schema.entries)
        if (e.type == eco::ValueType::Int && e.range.hi && *e.range.hi <= INT32_MAX) (void)cfg.get_int32(e.key);
      const std::string dumped = cfg.dump();
      REQUIRE(Config::from_json(nlohmann::json::parse(dumped), {}, schema).resolved() == cfg.resolved());
    } catch (const eco::ConfigError& e) {
      ++refused;
      const std::string msg = e.what();
      CHECK(msg.find('\n') == std::string::npos);
      CHECK(msg.rfind("config error: ", 0) == 0);
    } catch (const std::exception& e) {
      FAIL("case " << i << ": " << typeid(e).name() << " escaped: " << e.what());
    }
  }
  // Both outcomes are common, so the cases reach every stage: parsing, keys, types, cross-checks.
  INFO("loaded " << loaded << ", refused " << refused);
  CHECK(loaded > kCases / 20);
  CHECK(refused > kCases / 4);
}

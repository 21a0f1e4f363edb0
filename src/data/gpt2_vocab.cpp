#include "data/gpt2_vocab.h"

#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_read.h"
#include "data/tokenizer.h"

namespace eco {
namespace {

constexpr size_t kMerges = 50000;
constexpr const char* kFetchHint = " (run tools/fetch_data.sh to install GPT-2's tokenizer files)";

// Both files are about 1 MB; the bound keeps a wrong path (a FIFO, a huge file) from blocking or
// exhausting memory.
std::string read_file(const std::filesystem::path& p) {
  std::string text, error;
  if (!read_small_file(p, text, error, size_t{16} << 20)) {
    if (error == "no such file") throw DataError("GPT-2 tokenizer file " + p.string() + " not found" + kFetchHint);
    throw DataError("cannot read GPT-2 tokenizer file " + p.string() + ": " + error + kFetchHint);
  }
  return text;
}

// Decodes one UTF-8 code point at s[i] (the files are valid UTF-8; checked before).
uint32_t next_codepoint(std::string_view s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

class AlphabetDecoder {
 public:
  AlphabetDecoder() {
    const std::vector<uint32_t> fwd = gpt2_byte_to_codepoint();
    for (uint32_t b = 0; b < 256; ++b) {
      if (fwd[b] >= inverse_.size()) inverse_.resize(fwd[b] + 1, -1);
      inverse_[fwd[b]] = static_cast<int>(b);
    }
  }
  // The raw bytes a token string stands for, or false when it uses a character outside the alphabet.
  bool decode(std::string_view s, std::string& out) const {
    out.clear();
    if (first_invalid_utf8(s) != s.size()) return false;
    for (size_t i = 0; i < s.size();) {
      const uint32_t cp = next_codepoint(s, i);
      if (cp >= inverse_.size() || inverse_[cp] < 0) return false;
      out.push_back(static_cast<char>(inverse_[cp]));
    }
    return true;
  }

 private:
  std::vector<int> inverse_;
};

}  // namespace

std::vector<uint32_t> gpt2_byte_to_codepoint() {
  std::vector<uint32_t> map(256);
  uint32_t next_extra = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? b : next_extra++;
  }
  return map;
}

Gpt2Vocab load_gpt2_vocab(const std::string& dir) {
  const std::filesystem::path enc_path = std::filesystem::path(dir) / "encoder.json";
  const std::filesystem::path bpe_path = std::filesystem::path(dir) / "vocab.bpe";
  const AlphabetDecoder alphabet;
  Gpt2Vocab v;
  v.token_bytes.resize(Gpt2Tokenizer::kVocabSize);
  std::vector<bool> seen(Gpt2Tokenizer::kVocabSize, false);
  // Read both before parsing either, so a missing vocab.bpe is reported before a long parse.
  const std::string enc_text = read_file(enc_path);
  const std::string merges = read_file(bpe_path);
  JsonParse parsed = parse_json(enc_text);
  if (!parsed.ok()) throw DataError(enc_path.string() + " is not valid JSON: " + parsed.error + kFetchHint);
  const nlohmann::json enc = std::move(parsed.value);
  if (!enc.is_object() || enc.size() != Gpt2Tokenizer::kVocabSize)
    throw DataError(enc_path.string() + " should map " + std::to_string(Gpt2Tokenizer::kVocabSize) +
                    " tokens to ids; this is not GPT-2's encoder.json" + kFetchHint);
  std::string bytes;
  for (const auto& [key, value] : enc.items()) {
    if (!value.is_number_unsigned() || value.get<uint64_t>() >= Gpt2Tokenizer::kVocabSize)
      throw DataError(enc_path.string() + ": token \"" + key + "\" has an id outside [0, 50257)");
    const auto id = value.get<uint32_t>();
    if (seen[id]) throw DataError(enc_path.string() + ": id " + std::to_string(id) + " is used twice");
    seen[id] = true;
    if (id == Gpt2Tokenizer::kEndOfText) {
      if (key != "<|endoftext|>")
        throw DataError(enc_path.string() + ": id 50256 should be \"<|endoftext|>\", found \"" + key + "\"");
      v.token_bytes[id] = key;
      continue;
    }
    if (!alphabet.decode(key, bytes))
      throw DataError(enc_path.string() + ": token \"" + key + "\" uses a character outside GPT-2's byte alphabet");
    if (id < 256 && bytes.size() != 1)
      throw DataError(enc_path.string() + ": id " + std::to_string(id) + " should be a single byte");
    v.token_bytes[id] = bytes;
    if (!v.ranks.emplace(bytes, id).second)
      throw DataError(enc_path.string() + ": two ids stand for the same bytes (\"" + key + "\")");
  }

  // vocab.bpe: a "#version" line, then one merge "A B" per line, in rank order.
  std::istringstream lines(merges);
  std::string line, left, right;
  size_t n = 0;
  size_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos ||
        !alphabet.decode(std::string_view(line).substr(0, space), left) ||
        !alphabet.decode(std::string_view(line).substr(space + 1), right))
      throw DataError(bpe_path.string() + ":" + std::to_string(line_no) + ": expected a merge \"A B\", found \"" +
                      line + "\"");
    const uint32_t id = 256 + static_cast<uint32_t>(n);
    if (n >= kMerges || v.token_bytes[id] != left + right)
      throw DataError(bpe_path.string() + ":" + std::to_string(line_no) + ": merge " + std::to_string(n) +
                      " does not create token " + std::to_string(id) + " of " + enc_path.string() +
                      "; the two files are not GPT-2's matching pair" + kFetchHint);
    ++n;
  }
  if (n != kMerges)
    throw DataError(bpe_path.string() + " has " + std::to_string(n) + " merges; GPT-2's has " +
                    std::to_string(kMerges) + kFetchHint);
  return v;
}

}  // namespace eco

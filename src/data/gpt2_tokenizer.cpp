// GPT-2 byte-level BPE, with tiktoken's exact rules (so ids equal js-tiktoken's "gpt2" encoding):
//  1. The text (valid UTF-8) is cut into pieces by GPT-2's regex (gpt2_pretokenizer.h).
//  2. A piece that is itself a token becomes that token.
//  3. Otherwise BPE merges its bytes by rank (gpt2_bpe.h); rank = GPT-2 token id.
// Real text repeats its pieces a lot, so the ids of each distinct piece are cached.
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "data/gpt2_bpe.h"
#include "data/gpt2_pretokenizer.h"
#include "data/gpt2_vocab.h"
#include "data/tokenizer.h"

namespace eco {
namespace {

// Bounds the cache on adversarial input (every piece distinct); real corpora stay far below it.
constexpr size_t kMaxCachedPieces = 1 << 20;

}  // namespace

struct Gpt2Tokenizer::Impl {
  Gpt2Vocab vocab;
  Gpt2PreTokenizer pretokenizer;
  std::unordered_map<std::string, std::vector<uint32_t>, StringViewHash, std::equal_to<>> cache;

  void encode_piece(std::string_view piece, std::vector<uint32_t>& out) {
    if (const auto hit = cache.find(piece); hit != cache.end()) {
      out.insert(out.end(), hit->second.begin(), hit->second.end());
      return;
    }
    std::vector<uint32_t> ids;
    if (const auto whole = vocab.ranks.find(piece); whole != vocab.ranks.end()) ids.push_back(whole->second);
    else gpt2_bpe_merge(piece, vocab.ranks, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cache.size() >= kMaxCachedPieces) cache.clear();
    cache.emplace(std::string(piece), std::move(ids));
  }
};

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& dir) : impl_(std::make_unique<Impl>()) {
  impl_->vocab = load_gpt2_vocab(dir);
}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

std::vector<uint32_t> Gpt2Tokenizer::encode(std::string_view text) {
  if (const size_t bad = first_invalid_utf8(text); bad != text.size())
    throw DataError("text is not valid UTF-8 at byte offset " + std::to_string(bad) +
                    " (convert it to UTF-8 first, e.g. iconv -f LATIN1 -t UTF-8)");
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 4 + 16);  // English prose averages ~4.3 bytes per token
  impl_->pretokenizer.split(text, [&](std::string_view piece) { impl_->encode_piece(piece, ids); });
  return ids;
}

std::string Gpt2Tokenizer::decode(std::span<const uint32_t> ids) const {
  std::string out;
  for (uint32_t id : ids) {
    if (id < kVocabSize) out += impl_->vocab.token_bytes[id];
    else out += "<|unknown:" + std::to_string(id) + "|>";
  }
  return out;
}

}  // namespace eco

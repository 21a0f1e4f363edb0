#pragma once
// GPT-2's vocabulary as raw bytes, read from OpenAI's original files:
//  - encoder.json maps 50,257 token strings to ids. The strings are written in GPT-2's
//    "bytes_to_unicode" alphabet (every byte shown as a printable character) and are mapped back
//    to the bytes they stand for here.
//  - vocab.bpe lists the 50,000 merges in rank order; merge i creates token 256 + i. We check this
//    so the two files cannot silently come from different vocabularies, and it is what makes
//    "merge rank" and "token id" the same number.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace eco {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Raw bytes -> id, looked up by string_view without building a std::string.
using TokenRanks = std::unordered_map<std::string, uint32_t, StringViewHash, std::equal_to<>>;

struct Gpt2Vocab {
  std::vector<std::string> token_bytes;  // id -> bytes ("<|endoftext|>" for the special token)
  TokenRanks ranks;                      // bytes -> id for the mergeable tokens (all but 50256)
};

// GPT-2's byte -> code point table: printable Latin-1 bytes map to themselves, the other 68 bytes
// to U+0100 upward in byte order.
std::vector<uint32_t> gpt2_byte_to_codepoint();

// DataError naming the file when either is missing, malformed, or inconsistent with the other.
Gpt2Vocab load_gpt2_vocab(const std::string& dir);

}  // namespace eco

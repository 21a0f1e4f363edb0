#pragma once
// GPT-2's pre-tokenization: the text is cut into pieces by the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// and BPE runs inside each piece. \s here is JavaScript's \s (the oracle, js-tiktoken, runs the
// pattern as a JS RegExp): Unicode Zs, \t \n \v \f \r, U+2028, U+2029 and U+FEFF. That differs
// from PCRE2's own \s (which adds U+0085 and U+180E and lacks U+FEFF), so the class is spelled out.
// Matching uses PCRE2 (UTF + UCP, JIT when available).
#include <cstddef>
#include <memory>
#include <string_view>

namespace eco {

class Gpt2PreTokenizer {
 public:
  Gpt2PreTokenizer();
  ~Gpt2PreTokenizer();
  Gpt2PreTokenizer(const Gpt2PreTokenizer&) = delete;
  Gpt2PreTokenizer& operator=(const Gpt2PreTokenizer&) = delete;

  // Calls on_piece(std::string_view) for each piece, in order; the pieces tile `text`.
  // `text` must be valid UTF-8 (the caller checks; the engine's per-call check is skipped).
  template <class F>
  void split(std::string_view text, F&& on_piece) {
    size_t pos = 0, start = 0, end = 0;
    while (next_piece(text, pos, start, end)) {
      on_piece(text.substr(start, end - start));
      pos = end;
    }
  }

 private:
  // The next match at or after pos: [start, end). False at the end of the text.
  bool next_piece(std::string_view text, size_t pos, size_t& start, size_t& end);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eco

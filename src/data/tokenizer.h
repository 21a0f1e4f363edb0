#pragma once
// Text <-> token ids. Two tokenizers:
//  - ByteTokenizer: id = byte value (vocab 256), for fast CPU runs on any text.
//  - Gpt2Tokenizer: GPT-2's byte-level BPE (vocab 50257), loaded from OpenAI's original encoder.json
//    + vocab.bpe (tools/fetch_data.sh puts them in data/tokenizer). Its ids equal js-tiktoken's
//    getEncoding("gpt2") byte for byte; see gpt2_tokenizer.cpp for the exact rules.
// Text given to encode() must be valid UTF-8; invalid input is a DataError naming the byte offset
// (the reference tokenizers work on Unicode strings, so there is no one right answer for raw bytes).
// decode() returns the raw bytes of the tokens, which may end inside a UTF-8 character.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace eco {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Not thread-safe (a tokenizer may cache work); use one instance per thread.
  virtual std::vector<uint32_t> encode(std::string_view text) = 0;
  // Ids outside the vocabulary (e.g. samples from a model's padded rows) decode to "<|unknown:ID|>"
  // so that printing a sample never fails.
  virtual std::string decode(std::span<const uint32_t> ids) const = 0;
  virtual uint32_t vocab_size() const = 0;
  // The document separator eco_prepare puts before every document.
  virtual uint32_t eot() const = 0;
  virtual std::string name() const = 0;
};

// Ids 0..255 are the bytes. The document separator is byte 0 (NUL): plain text never contains it,
// so it is unambiguous without growing the vocabulary past 256. Any byte string is accepted.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<uint32_t> encode(std::string_view text) override;
  std::string decode(std::span<const uint32_t> ids) const override;
  uint32_t vocab_size() const override { return 256; }
  uint32_t eot() const override { return 0; }
  std::string name() const override { return "byte"; }
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  static constexpr uint32_t kVocabSize = 50257;
  static constexpr uint32_t kEndOfText = 50256;  // "<|endoftext|>"; never produced by encode()

  // Loads dir/encoder.json and dir/vocab.bpe; DataError when they are missing or do not belong
  // together (run tools/fetch_data.sh to get them).
  explicit Gpt2Tokenizer(const std::string& dir);
  ~Gpt2Tokenizer() override;
  Gpt2Tokenizer(const Gpt2Tokenizer&) = delete;
  Gpt2Tokenizer& operator=(const Gpt2Tokenizer&) = delete;

  // encode_ordinary semantics: "<|endoftext|>" in the text is encoded as ordinary text.
  std::vector<uint32_t> encode(std::string_view text) override;
  std::string decode(std::span<const uint32_t> ids) const override;
  uint32_t vocab_size() const override { return kVocabSize; }
  uint32_t eot() const override { return kEndOfText; }
  std::string name() const override { return "gpt2"; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "byte" or "gpt2" (which reads `dir`); ConfigError for any other name.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir);

// Offset of the first byte that is not part of valid UTF-8 (overlong forms, surrogates and code
// points above U+10FFFF are invalid), or text.size() when all of it is valid.
size_t first_invalid_utf8(std::string_view text);

}  // namespace eco

// Tokenizer pieces that need no data files: the byte tokenizer, strict UTF-8 validation and
// GPT-2's byte alphabet (checked against values written out by hand).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/gpt2_vocab.h"
#include "data/tokenizer.h"

using Ids = std::vector<uint32_t>;

TEST_CASE("byte tokenizer: ids are the bytes, any byte string round-trips", "[data][tokenizer]") {
  eco::ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  all += "Call me Ishmael. \xF0\x9F\x99\x82";
  const Ids ids = tok.encode(all);
  REQUIRE(ids.size() == all.size());
  for (size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == static_cast<unsigned char>(all[i]));
  CHECK(tok.decode(ids) == all);
  CHECK(tok.decode(Ids{104, 105, 300}) == "hi<|unknown:300|>");
  CHECK(tok.vocab_size() == 256);
  CHECK(tok.eot() == 0);
  CHECK(eco::make_tokenizer("byte", "")->name() == "byte");
  CHECK_THROWS_AS(eco::make_tokenizer("sentencepiece", ""), eco::ConfigError);
}

TEST_CASE("strict UTF-8 validation reports the first bad byte", "[data][tokenizer]") {
  CHECK(eco::first_invalid_utf8("") == 0);
  CHECK(eco::first_invalid_utf8("plain ASCII, longer than eight bytes") == 36);
  CHECK(eco::first_invalid_utf8("h\xC3\xA9llo \xE6\x97\xA5 \xF0\x9F\x99\x82 \xF4\x8F\xBF\xBF") == 20);
  CHECK(eco::first_invalid_utf8("abc\x80") == 3);                  // lone continuation byte
  CHECK(eco::first_invalid_utf8("abcdefghij\xC0\xAF") == 10);      // overlong '/'
  CHECK(eco::first_invalid_utf8("ab\xE0\x80\xAF") == 2);           // overlong 3-byte
  CHECK(eco::first_invalid_utf8("ab\xED\xA0\x80") == 2);           // UTF-16 surrogate
  CHECK(eco::first_invalid_utf8("ab\xF4\x90\x80\x80") == 2);       // above U+10FFFF
  CHECK(eco::first_invalid_utf8("ab\xF5\x80\x80\x80") == 2);
  CHECK(eco::first_invalid_utf8("abc\xE6\x97") == 3);              // truncated at the end
  CHECK(eco::first_invalid_utf8("abc\xE6\x97x") == 3);
  CHECK(eco::first_invalid_utf8("\xC3\xA9\xFF") == 2);
}

TEST_CASE("GPT-2's byte alphabet: printable bytes are themselves, the rest from U+0100 up", "[data][tokenizer]") {
  const std::vector<uint32_t> m = eco::gpt2_byte_to_codepoint();
  REQUIRE(m.size() == 256);
  CHECK(m['A'] == 'A');
  CHECK(m['!'] == '!');
  CHECK(m[0xE9] == 0xE9);
  CHECK(m[0] == 0x100);
  CHECK(m['\n'] == 0x10A);  // "Ċ"
  CHECK(m[' '] == 0x120);   // "Ġ"
  CHECK(m[0x7F] == 0x121);
  CHECK(m[0xAD] == 0x143);  // the soft hyphen is the 68th and last remapped byte
  std::vector<uint32_t> sorted = m;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
}

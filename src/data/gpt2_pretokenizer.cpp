#include "data/gpt2_pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>

#include "core/error.h"

namespace eco {
namespace {

// JavaScript's \s (ECMAScript WhiteSpace + LineTerminator): Zs as of Unicode 15, TAB VT FF CR LF,
// LS, PS and the BOM.
constexpr const char* kSpace =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
    "\\x{FEFF}";

std::string gpt2_pattern() {
  const std::string s = kSpace;
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + s + "\\p{L}\\p{N}]+|[" + s + "]+(?![^" + s + "])|[" +
         s + "]+";
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

struct Gpt2PreTokenizer::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_data* match = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  ~Impl() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(match);
    pcre2_code_free(code);
  }
};

Gpt2PreTokenizer::Gpt2PreTokenizer() : impl_(std::make_unique<Impl>()) {
  const std::string pattern = gpt2_pattern();
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                              &err, &err_offset, nullptr);
  if (!impl_->code)
    throw SystemError("PCRE2 cannot compile the GPT-2 pattern at offset " + std::to_string(err_offset) + ": " +
                      pcre2_message(err));
  // JIT makes matching several times faster; without it (unsupported CPU) the interpreter is used.
  if (pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0) {
    impl_->context = pcre2_match_context_create(nullptr);
    // Long runs of one class (e.g. megabytes of whitespace) need more than the default 32 KiB.
    impl_->jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    if (impl_->context && impl_->jit_stack) pcre2_jit_stack_assign(impl_->context, nullptr, impl_->jit_stack);
  }
  impl_->match = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  if (!impl_->match) throw SystemError("out of memory creating PCRE2 match data");
}

Gpt2PreTokenizer::~Gpt2PreTokenizer() = default;

bool Gpt2PreTokenizer::next_piece(std::string_view text, size_t pos, size_t& start, size_t& end) {
  if (pos >= text.size()) return false;
  const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                             PCRE2_NO_UTF_CHECK, impl_->match, impl_->context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw DataError("GPT-2 pre-tokenizer failed at byte " + std::to_string(pos) + ": " + pcre2_message(rc));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(impl_->match);
  start = ov[0];
  end = ov[1];
  return end > start;
}

}  // namespace eco

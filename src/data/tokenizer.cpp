#include "data/tokenizer.h"

#include "core/error.h"

namespace eco {

std::vector<uint32_t> ByteTokenizer::encode(std::string_view text) {
  std::vector<uint32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(std::span<const uint32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (uint32_t id : ids) {
    if (id < 256) out.push_back(static_cast<char>(id));
    else out += "<|unknown:" + std::to_string(id) + "|>";
  }
  return out;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2") return std::make_unique<Gpt2Tokenizer>(dir);
  throw ConfigError("unknown tokenizer \"" + name + "\"; use \"gpt2\" or \"byte\"");
}

}  // namespace eco

#pragma once
// JSON from outside the program (config files, --set values, checkpoint manifests, metrics lines,
// tokenizer files) parsed without handing control to the library's failure modes: no exception of
// its own type escapes, numbers that overflow a double are errors rather than a different exception
// class, and nesting is bounded before anything recursive (copy, dump, destruction of deep trees)
// can run out of stack. Callers turn `error` into their own typed error naming the file.
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace eco {

// Deep enough for any file this project writes or reads (configs nest 3 levels, manifests 5).
inline constexpr int kMaxJsonDepth = 64;

struct JsonParse {
  nlohmann::json value;  // discarded (null) when error is set
  std::string error;     // "" on success, else e.g. "parse error at line 3, column 7: ..."
  bool ok() const { return error.empty(); }
};

// Parses `text` as one JSON document; `allow_comments` accepts // and /* */ comments.
JsonParse parse_json(std::string_view text, bool allow_comments = false, int max_depth = kMaxJsonDepth);

// Reads a whole regular file into `out`; on failure returns false and sets `error` to the OS's
// reason ("no such file", "it is a directory", "not a regular file", "larger than N bytes").
// Never blocks on a FIFO or device.
bool read_small_file(const std::filesystem::path& path, std::string& out, std::string& error,
                     size_t max_bytes = size_t{64} << 20);

// nlohmann's message without its "[json.exception.type_error.302] " tag.
std::string json_error_text(const std::exception& e);

}  // namespace eco

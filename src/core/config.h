#pragma once
// A run's configuration: a JSON file merged over a schema's defaults, then `--set a.b=value`
// overrides, then validated key by key and across keys. Every problem is a ConfigError (exit
// code 2) whose one-line message names the full key path and what was expected, so a run stops
// before any work. The schema (src/train/config_schema.cpp for eco_train) is data: a table of
// entries plus cross-key checks, also rendered as --help-config text and as docs/config.md.
//
// Relative paths in a config (data.train, log.dir, ...) are resolved from the current working
// directory of the process, not from the config file's directory: the same config behaves the
// same whether it is passed as configs/x.json or /abs/configs/x.json.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace eco {

class Config;

enum class ValueType {
  Int,      // JSON integer (an integral float such as 1e3 is accepted and stored as an integer)
  Float,    // any JSON number, stored as a double
  Bool,     // true / false
  String,   // any string
  Enum,     // a string from `choices`
  Path,     // a string naming an existing file, directory or glob match ("" = not given)
  OutPath,  // a string naming something the run creates; not checked
};

// Inclusive/exclusive numeric bounds of an Int or Float entry; unset = unbounded.
struct Range {
  std::optional<double> lo, hi;
  bool lo_open = false, hi_open = false;

  static Range any() { return {}; }
  static Range at_least(double lo) { return {lo, std::nullopt, false, false}; }          // [lo, inf)
  static Range above(double lo) { return {lo, std::nullopt, true, false}; }              // (lo, inf)
  static Range closed(double lo, double hi) { return {lo, hi, false, false}; }           // [lo, hi]
  static Range closed_open(double lo, double hi) { return {lo, hi, false, true}; }       // [lo, hi)
  bool contains(double x) const;
  std::string describe() const;  // ">= 1", "> 0", "in [0, 1)", "" when unbounded
};

struct SchemaEntry {
  std::string key;                   // full dotted path, e.g. "optim.lr"
  ValueType type = ValueType::String;
  nlohmann::json default_value;
  Range range;                       // Int, Float
  std::vector<std::string> choices;  // Enum
  std::string help;
  bool required = false;             // String / Path / OutPath: "" is an error ("<key>: required")
  bool check_exists = true;          // Path: false = accept a path that does not exist (yet)
};

// Entry builders that keep a schema table readable.
SchemaEntry int_key(std::string key, int64_t def, Range range, std::string help);
SchemaEntry float_key(std::string key, double def, Range range, std::string help);
SchemaEntry bool_key(std::string key, bool def, std::string help);
SchemaEntry string_key(std::string key, std::string def, std::string help);
SchemaEntry enum_key(std::string key, std::string def, std::vector<std::string> choices, std::string help);
SchemaEntry path_key(std::string key, std::string def, std::string help, bool required = false, bool check_exists = true);
SchemaEntry out_path_key(std::string key, std::string def, std::string help);

// A rule over several keys, run after every key has passed its own check. `check` throws
// ConfigError (use throw_config_error); `description` documents the rule in the help output.
struct CrossCheck {
  std::string description;
  std::function<void(const Config&)> check;
};

struct Section {
  std::string name;  // "model"
  std::string help;  // one line, for the help text and docs
};

struct Schema {
  std::vector<Section> sections;       // order of the help/docs; every key's first component must be one
  std::vector<SchemaEntry> entries;    // in display order
  std::vector<CrossCheck> cross_checks;

  const SchemaEntry* find(std::string_view key) const;  // nullptr when the key is not in the schema
  nlohmann::json defaults() const;                      // nested JSON of every default value
};

// "expected ..." phrase for an entry: "an integer >= 1", "a number in [0, 1)", "one of "a", "b"".
std::string describe_expected(const SchemaEntry& entry);

// Throws ConfigError("config error: <key>: <what>").
[[noreturn]] void throw_config_error(const std::string& key, const std::string& what);

class Config {
 public:
  // Reads the JSON file at `path` ("" = no file: defaults and overrides only; // and /* */
  // comments are allowed), then as from_json. A file that cannot be read (missing, a directory,
  // a FIFO, too large) or is not valid JSON (syntax, a number beyond a double, nesting deeper
  // than kMaxJsonDepth) is a ConfigError naming the file.
  static Config load(const std::string& path, const std::vector<std::string>& overrides, const Schema& schema);
  // Merges `j` over the schema defaults, applies "a.b=value" overrides in order (value parsed as
  // JSON if it parses, else taken as a string; string-typed keys always take the text as given
  // unless it is a quoted JSON string), validates. Every problem is a ConfigError; string values
  // must be valid UTF-8 so the resolved config can always be written back as JSON.
  static Config from_json(const nlohmann::json& j, const std::vector<std::string>& overrides, const Schema& schema);

  // Typed access by full key path. Asking for a key that is not in the resolved config, or for
  // the wrong type, is a programming error: std::logic_error.
  int64_t get_int(const std::string& key) const;
  // get_int for a value the code holds in an int. The schema bounds every such key to fit, so a
  // value outside int's range is a programming error (a missing bound): std::logic_error.
  int get_int32(const std::string& key) const;
  double get_float(const std::string& key) const;  // also reads Int entries
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;  // String, Enum, Path, OutPath

  const nlohmann::json& resolved() const { return resolved_; }  // every key, defaults filled
  std::string dump() const { return resolved_.dump(2); }

 private:
  explicit Config(nlohmann::json resolved) : resolved_(std::move(resolved)) {}
  const nlohmann::json& at(const std::string& key) const;

  nlohmann::json resolved_;
};

// The closest key to `given` among `candidates` ("" when nothing is close): by edit distance of
// the full path, else by the last component (so "train.lr" suggests "optim.lr").
std::string suggest_key(const std::string& given, const std::vector<std::string>& candidates);

// --help-config text: every key with type, default, allowed values and meaning, by section.
std::string schema_help_text(const Schema& schema);
// The same as markdown tables, one per section, then the cross-key rules (for docs/config.md).
std::string schema_markdown(const Schema& schema);

}  // namespace eco

#include "core/config.h"

#include <glob.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#include <stdexcept>

#include "core/error.h"
#include "core/json_read.h"

namespace eco {
namespace {

using nlohmann::json;

// Integral bounds print exactly up to 2^53 (train.seed's bound is 2^53 - 1), where doubles stop
// holding every integer; beyond that %g is as exact as the stored double.
std::string format_number(double x) {
  char buf[48];
  if (std::nearbyint(x) == x && std::fabs(x) <= 0x1p53) std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(x));
  else std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

// `s` cut to at most `max_bytes` (with "..."), never inside a UTF-8 sequence.
std::string shorten(std::string s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t cut = max_bytes - 3;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "...";
}

// The value as the user wrote it, short enough for a one-line message. Invalid UTF-8 (possible in
// --set text) is shown as U+FFFD instead of making dump() throw.
std::string show(const json& v) { return shorten(v.dump(-1, ' ', false, json::error_handler_t::replace), 60); }

// A key, path or --set item as the user typed it, fit for a one-line message: control characters
// (a newline in a key from the file, or in a shell argument) escaped, long text cut.
std::string printable(const std::string& text, size_t max_bytes = 100) {
  std::string out;
  for (const unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
    if (out.size() > max_bytes) break;  // shorten() below cuts there; the rest cannot show
  }
  return shorten(std::move(out), max_bytes);
}

// Whether `s` can be written as a JSON string: the resolved config is dumped to config.json and
// into checkpoints, and nlohmann refuses invalid UTF-8 there with an exception.
bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

void set_path(json& root, const std::string& key, json value) {
  json* node = &root;
  for (const std::string& part : split_key(key)) node = &(*node)[part];
  *node = std::move(value);
}

json& leaf(json& root, const std::string& key) {
  json* node = &root;
  for (const std::string& part : split_key(key)) node = &(*node)[part];
  return *node;
}

bool is_string_typed(ValueType t) { return t != ValueType::Int && t != ValueType::Float && t != ValueType::Bool; }

// Every dotted prefix of a key that is itself a section ("model" for "model.arch").
std::set<std::string> section_prefixes(const Schema& schema) {
  std::set<std::string> out;
  for (const SchemaEntry& e : schema.entries) {
    for (size_t dot = e.key.find('.'); dot != std::string::npos; dot = e.key.find('.', dot + 1))
      out.insert(e.key.substr(0, dot));
  }
  return out;
}

std::vector<std::string> all_names(const Schema& schema) {
  std::vector<std::string> names;
  for (const SchemaEntry& e : schema.entries) names.push_back(e.key);
  for (const std::string& p : section_prefixes(schema)) names.push_back(p);
  return names;
}

std::string unknown_key_message(const std::string& key, const Schema& schema) {
  std::string msg = "unknown key \"" + printable(key) + "\"";
  std::string near = suggest_key(key, all_names(schema));
  if (!near.empty()) msg += " (did you mean \"" + near + "\"?)";
  else msg += " (eco_train --help-config lists every key)";
  return msg;
}

std::string first_key_of(const std::string& section, const Schema& schema) {
  for (const SchemaEntry& e : schema.entries)
    if (e.key.rfind(section + ".", 0) == 0) return e.key;
  return section;
}

// Copies the file's values into `out`, rejecting unknown keys and non-object sections.
void merge_values(const json& node, const std::string& prefix, const Schema& schema,
                  const std::set<std::string>& prefixes, json& out) {
  for (const auto& [k, v] : node.items()) {
    const std::string full = prefix.empty() ? k : prefix + "." + k;
    if (schema.find(full)) {
      set_path(out, full, v);
    } else if (prefixes.count(full)) {
      if (!v.is_object())
        throw_config_error(full, "expected an object of keys such as \"" + first_key_of(full, schema) + "\", got " + show(v));
      merge_values(v, full, schema, prefixes, out);
    } else {
      throw ConfigError("config error: " + unknown_key_message(full, schema));
    }
  }
}

// parse_json, not json::parse: a value nested thousands deep must not build a tree that show()
// would dump recursively, and a number beyond a double must not escape as an exception. Text that
// does not parse is kept as a string; the type check then names the key.
json parse_override_value(const SchemaEntry& entry, const std::string& text) {
  JsonParse parsed = parse_json(text);
  if (is_string_typed(entry.type)) return parsed.ok() && parsed.value.is_string() ? std::move(parsed.value) : json(text);
  return parsed.ok() ? std::move(parsed.value) : json(text);
}

void apply_override(const std::string& item, const Schema& schema, const std::set<std::string>& prefixes, json& out) {
  const size_t eq = item.find('=');
  if (eq == std::string::npos)
    throw ConfigError("config error: --set \"" + printable(item) + "\": expected KEY=VALUE, e.g. optim.lr=3e-4");
  std::string key = item.substr(0, eq);
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(0, 1);
  const SchemaEntry* entry = schema.find(key);
  if (!entry) {
    if (prefixes.count(key))
      throw ConfigError("config error: --set " + printable(item) + ": \"" + key +
                        "\" is a section; set one of its keys, e.g. " + first_key_of(key, schema) + "=...");
    throw ConfigError("config error: --set " + printable(item) + ": " + unknown_key_message(key, schema));
  }
  set_path(out, key, parse_override_value(*entry, item.substr(eq + 1)));
}

bool path_matches(const std::string& text) {
  if (text.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    const int rc = glob(text.c_str(), 0, nullptr, &g);
    const bool found = rc == 0 && g.gl_pathc > 0;
    globfree(&g);
    return found;
  }
  std::error_code ec;
  return std::filesystem::exists(text, ec);
}

// Checks one value's type, range and choices; stores it in its canonical JSON type.
void validate_entry(const SchemaEntry& e, json& v) {
  auto wrong = [&]() { throw_config_error(e.key, "expected " + describe_expected(e) + ", got " + show(v)); };
  switch (e.type) {
    case ValueType::Int: {
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) wrong();
      if (v.is_number_float()) {
        const double d = v.get<double>();
        if (!std::isfinite(d) || std::nearbyint(d) != d || std::fabs(d) >= 9.2e18) wrong();
        v = static_cast<int64_t>(d);
      }
      if (!v.is_number_integer()) wrong();
      v = v.get<int64_t>();
      if (!e.range.contains(static_cast<double>(v.get<int64_t>()))) wrong();
      return;
    }
    case ValueType::Float:
      if (!v.is_number() || !e.range.contains(v.get<double>())) wrong();  // report the value as written
      v = v.get<double>();
      return;
    case ValueType::Bool:
      if (!v.is_boolean()) wrong();
      return;
    case ValueType::String:
    case ValueType::Enum:
    case ValueType::Path:
    case ValueType::OutPath: {
      if (!v.is_string()) wrong();
      const std::string& s = v.get_ref<const std::string&>();
      if (e.type == ValueType::Enum) {
        bool ok = false;
        for (const std::string& c : e.choices) ok = ok || c == s;
        if (!ok) wrong();
      }
      if (!valid_utf8(s)) throw_config_error(e.key, "expected valid UTF-8 text, got " + show(v));
      if (s.empty()) {
        if (e.required) throw_config_error(e.key, "required: set it in the config file or with --set " + e.key + "=...");
        return;
      }
      if (e.type == ValueType::Path && e.check_exists && !path_matches(s)) {
        std::string msg = "no file matches \"" + printable(s, 400) + "\"";
        if (std::filesystem::path(s).is_relative()) {
          std::error_code ec;
          msg += " (relative paths are resolved from the current directory, " +
                 std::filesystem::current_path(ec).string() + ")";
        }
        throw_config_error(e.key, msg);
      }
      return;
    }
  }
}

const char* json_type_name(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  return v.type_name();
}

}  // namespace

bool Range::contains(double x) const {
  if (lo && (lo_open ? !(x > *lo) : !(x >= *lo))) return false;
  if (hi && (hi_open ? !(x < *hi) : !(x <= *hi))) return false;
  return true;
}

std::string Range::describe() const {
  if (lo && hi)
    return std::string("in ") + (lo_open ? "(" : "[") + format_number(*lo) + ", " + format_number(*hi) + (hi_open ? ")" : "]");
  if (lo) return (lo_open ? "> " : ">= ") + format_number(*lo);
  if (hi) return (hi_open ? "< " : "<= ") + format_number(*hi);
  return "";
}

SchemaEntry int_key(std::string key, int64_t def, Range range, std::string help) {
  SchemaEntry e{std::move(key), ValueType::Int, def, range, {}, std::move(help)};
  return e;
}
SchemaEntry float_key(std::string key, double def, Range range, std::string help) {
  return SchemaEntry{std::move(key), ValueType::Float, def, range, {}, std::move(help)};
}
SchemaEntry bool_key(std::string key, bool def, std::string help) {
  return SchemaEntry{std::move(key), ValueType::Bool, def, {}, {}, std::move(help)};
}
SchemaEntry string_key(std::string key, std::string def, std::string help) {
  return SchemaEntry{std::move(key), ValueType::String, std::move(def), {}, {}, std::move(help)};
}
SchemaEntry enum_key(std::string key, std::string def, std::vector<std::string> choices, std::string help) {
  return SchemaEntry{std::move(key), ValueType::Enum, std::move(def), {}, std::move(choices), std::move(help)};
}
SchemaEntry path_key(std::string key, std::string def, std::string help, bool required, bool check_exists) {
  SchemaEntry e{std::move(key), ValueType::Path, std::move(def), {}, {}, std::move(help)};
  e.required = required;
  e.check_exists = check_exists;
  return e;
}
SchemaEntry out_path_key(std::string key, std::string def, std::string help) {
  return SchemaEntry{std::move(key), ValueType::OutPath, std::move(def), {}, {}, std::move(help)};
}

const SchemaEntry* Schema::find(std::string_view key) const {
  for (const SchemaEntry& e : entries)
    if (e.key == key) return &e;
  return nullptr;
}

json Schema::defaults() const {
  json out = json::object();
  for (const SchemaEntry& e : entries) set_path(out, e.key, e.default_value);
  return out;
}

std::string describe_expected(const SchemaEntry& e) {
  const std::string range = e.range.describe();
  switch (e.type) {
    case ValueType::Int: return range.empty() ? "an integer" : "an integer " + range;
    case ValueType::Float: return range.empty() ? "a number" : "a number " + range;
    case ValueType::Bool: return "true or false";
    case ValueType::String: return "a string";
    case ValueType::Path:
    case ValueType::OutPath: return "a path (string)";
    case ValueType::Enum: {
      std::string s = "one of ";
      for (size_t i = 0; i < e.choices.size(); ++i) s += (i ? ", \"" : "\"") + e.choices[i] + "\"";
      return s;
    }
  }
  return "";
}

void throw_config_error(const std::string& key, const std::string& what) {
  throw ConfigError("config error: " + key + ": " + what);
}

Config Config::load(const std::string& path, const std::vector<std::string>& overrides, const Schema& schema) {
  json j = json::object();
  if (!path.empty()) {
    // read_small_file: a FIFO or device given as --config is refused instead of blocking forever.
    std::string text, why;
    const std::string shown = printable(path, 400);
    if (!read_small_file(path, text, why)) throw ConfigError("config error: cannot read config file \"" + shown + "\": " + why);
    JsonParse parsed = parse_json(text, /*allow_comments=*/true);
    if (!parsed.ok()) throw ConfigError("config error: " + shown + ": not valid JSON: " + parsed.error);
    j = std::move(parsed.value);
    if (!j.is_object())
      throw ConfigError("config error: " + shown + ": expected a JSON object of sections, got " + json_type_name(j));
  }
  return from_json(j, overrides, schema);
}

Config Config::from_json(const json& j, const std::vector<std::string>& overrides, const Schema& schema) {
  if (!j.is_null() && !j.is_object())
    throw ConfigError(std::string("config error: expected a JSON object of sections, got ") + json_type_name(j));
  const std::set<std::string> prefixes = section_prefixes(schema);
  json out = schema.defaults();
  if (j.is_object()) merge_values(j, "", schema, prefixes, out);
  for (const std::string& item : overrides) apply_override(item, schema, prefixes, out);
  for (const SchemaEntry& e : schema.entries) validate_entry(e, leaf(out, e.key));
  Config cfg(std::move(out));
  for (const CrossCheck& c : schema.cross_checks) c.check(cfg);
  return cfg;
}

const json& Config::at(const std::string& key) const {
  const json* node = &resolved_;
  for (const std::string& part : split_key(key)) {
    if (!node->is_object() || !node->contains(part))
      throw std::logic_error("Config: no key \"" + key + "\" in the resolved config (not in the schema?)");
    node = &(*node)[part];
  }
  return *node;
}

int64_t Config::get_int(const std::string& key) const {
  const json& v = at(key);
  if (!v.is_number_integer()) throw std::logic_error("Config::get_int(\"" + key + "\"): the value is " + json_type_name(v));
  return v.get<int64_t>();
}

int Config::get_int32(const std::string& key) const {
  const int64_t v = get_int(key);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    throw std::logic_error("Config::get_int32(\"" + key + "\"): " + std::to_string(v) +
                           " does not fit in an int; the schema must bound this key to int's range");
  return static_cast<int>(v);
}

double Config::get_float(const std::string& key) const {
  const json& v = at(key);
  if (!v.is_number()) throw std::logic_error("Config::get_float(\"" + key + "\"): the value is " + json_type_name(v));
  return v.get<double>();
}

bool Config::get_bool(const std::string& key) const {
  const json& v = at(key);
  if (!v.is_boolean()) throw std::logic_error("Config::get_bool(\"" + key + "\"): the value is " + json_type_name(v));
  return v.get<bool>();
}

std::string Config::get_string(const std::string& key) const {
  const json& v = at(key);
  if (!v.is_string()) throw std::logic_error("Config::get_string(\"" + key + "\"): the value is " + json_type_name(v));
  return v.get<std::string>();
}

}  // namespace eco

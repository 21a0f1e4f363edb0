// The schema as documentation: plain text for `--help-config` and markdown for docs/config.md.
// Both come from the same table as the validation, so the docs cannot drift from the checks.
#include <string>

#include "core/config.h"

namespace eco {
namespace {

const char* type_name(ValueType t) {
  switch (t) {
    case ValueType::Int: return "int";
    case ValueType::Float: return "float";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Enum: return "enum";
    case ValueType::Path: return "path";
    case ValueType::OutPath: return "output path";
  }
  return "";
}

std::string allowed(const SchemaEntry& e) {
  std::string s;
  switch (e.type) {
    case ValueType::Int:
    case ValueType::Float: s = e.range.describe(); break;
    case ValueType::Bool: s = "true, false"; break;
    case ValueType::Enum:
      for (size_t i = 0; i < e.choices.size(); ++i) s += (i ? ", " : "") + e.choices[i];
      break;
    case ValueType::Path: s = e.check_exists ? "existing file, dir or glob" : "not checked"; break;
    case ValueType::String:
    case ValueType::OutPath: break;
  }
  if (e.required) s += s.empty() ? "required" : "; required";
  return s.empty() ? "any" : s;
}

std::string escape_cell(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// Greedy word wrap; the first line starts with `first`, the others with `rest` (same width).
std::string wrap(const std::string& text, const std::string& first, const std::string& rest, size_t width) {
  std::string out, line = first;
  size_t indent = first.size();
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(start, end - start);
    if (line.size() > indent && line.size() + 1 + word.size() > width) {
      out += line + "\n";
      line = rest;
      indent = rest.size();
    }
    line += (line.size() > indent ? " " : "") + word;
    start = end + 1;
  }
  if (line.size() > indent) out += line + "\n";
  return out;
}

bool in_section(const SchemaEntry& e, const std::string& section) { return e.key.rfind(section + ".", 0) == 0; }

}  // namespace

std::string schema_help_text(const Schema& schema) {
  std::string out =
      "Config keys. A config file is a JSON object with one object per section; any key can be\n"
      "overridden with --set KEY=VALUE (VALUE is read as JSON when it parses, else as text).\n"
      "Relative paths are resolved from the current directory, not from the config file's.\n";
  for (const Section& sec : schema.sections) {
    out += "\n[" + sec.name + "] " + sec.help + "\n";
    for (const SchemaEntry& e : schema.entries) {
      if (!in_section(e, sec.name)) continue;
      out += "  " + e.key + " = " + e.default_value.dump() + "   (" + type_name(e.type) + ": " + allowed(e) + ")\n";
      out += wrap(e.help, "      ", "      ", 100);
    }
  }
  if (!schema.cross_checks.empty()) {
    out += "\nRules across keys:\n";
    for (const CrossCheck& c : schema.cross_checks) out += wrap(c.description, "  - ", "    ", 100);
  }
  return out;
}

std::string schema_markdown(const Schema& schema) {
  std::string out;
  for (const Section& sec : schema.sections) {
    out += "## `" + sec.name + "`\n\n" + sec.help + "\n\n";
    out += "| Key | Type | Default | Allowed | Meaning |\n|---|---|---|---|---|\n";
    for (const SchemaEntry& e : schema.entries) {
      if (!in_section(e, sec.name)) continue;
      out += "| `" + e.key + "` | " + type_name(e.type) + " | `" + escape_cell(e.default_value.dump()) + "` | " +
             escape_cell(allowed(e)) + " | " + escape_cell(e.help) + " |\n";
    }
    out += "\n";
  }
  if (!schema.cross_checks.empty()) {
    out += "## Rules across keys\n\n";
    for (const CrossCheck& c : schema.cross_checks) out += "- " + c.description + "\n";
    out += "\n";
  }
  return out;
}

}  // namespace eco

// eco_report: summarises finished runs (one per optimizer mode) into results.md and gnuplot data:
// the ablation table (final val loss, gap to the master-weight run, static memory, tokens/s), the
// validation curves and the static-memory vs loss points. tools/ablate.sh drives it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/json_read.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// metrics.jsonl grows ~130 bytes a step; 1 GiB holds millions of steps and still fits in memory.
constexpr size_t kMaxMetricsBytes = size_t{1} << 30;

struct RunSummary {
  std::string name;  // optim.mode of the run
  fs::path dir;
  std::vector<std::pair<int64_t, double>> val;  // (step, val_loss)
  double final_val = NAN;
  double tokens_per_s = NAN;  // median over train steps
  double bytes_per_param_quantized = NAN;
  double bytes_per_param_total = NAN;
  double static_bytes = NAN;
  int skipped_steps = 0;
  bool diverged = false;
};

// Every problem with a run directory's files is a DataError (exit 3) that starts with the file
// (and line) and says what is wrong there.
[[noreturn]] void bad(const std::string& where, const std::string& what) { throw eco::DataError(where + ": " + what); }

std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// An integer that fits in int64 (nlohmann would wrap a larger unsigned one silently).
bool is_int64(const json& v) {
  return v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX));
}

// The value at a dotted path of objects, or nullptr when any part is missing.
const json* find_path(const json& root, std::initializer_list<const char*> keys) {
  const json* node = &root;
  for (const char* k : keys) {
    if (!node->is_object()) return nullptr;
    const auto it = node->find(k);
    if (it == node->end()) return nullptr;
    node = &*it;
  }
  return node;
}

std::string read_run_file(const fs::path& dir, const char* name, size_t max_bytes) {
  const fs::path path = dir / name;
  std::string text, why;
  if (!eco::read_small_file(path, text, why, max_bytes)) {
    std::error_code ec;
    const bool missing = !fs::exists(path, ec);
    bad(path.string(), "cannot read: " + why + (missing ? " (is " + dir.string() + " an eco_train run directory?)" : ""));
  }
  return text;
}

// The run's name (optim.mode) and length (train.steps) from its resolved config.json.
void read_run_config(const fs::path& dir, RunSummary& r, int64_t& steps) {
  const std::string where = (dir / "config.json").string();
  const eco::JsonParse cfg = eco::parse_json(read_run_file(dir, "config.json", size_t{64} << 20));
  if (!cfg.ok()) bad(where, "not valid JSON: " + cfg.error);
  if (!cfg.value.is_object()) bad(where, "expected a JSON object (the run's resolved config), got " + show(cfg.value));
  const json* mode = find_path(cfg.value, {"optim", "mode"});
  if (!mode) bad(where, "no optim.mode (eco_train writes the resolved config, with every key)");
  if (!mode->is_string()) bad(where, "optim.mode: expected a string, got " + show(*mode));
  r.name = mode->get<std::string>();
  const json* s = find_path(cfg.value, {"train", "steps"});
  if (!s) bad(where, "no train.steps (eco_train writes the resolved config, with every key)");
  if (!is_int64(*s)) bad(where, "train.steps: expected an integer, got " + show(*s));
  steps = s->get<int64_t>();
}

// A number, or NaN when the field is absent or null (eco_train writes a non-finite value as null).
double number_or_nan(const json& rec, const char* key, const std::string& where) {
  const auto it = rec.find(key);
  if (it == rec.end() || it->is_null()) return NAN;
  if (!it->is_number()) bad(where, std::string(key) + ": expected a number or null, got " + show(*it));
  return it->get<double>();
}

void read_record(const json& rec, const std::string& where, RunSummary& r, std::vector<double>& tps) {
  if (!rec.is_object()) bad(where, "expected a JSON object, got " + show(rec));
  if (rec.contains("val_loss")) {
    const auto step = rec.find("step");
    if (step == rec.end()) bad(where, "a val_loss record without a step");
    if (!is_int64(*step)) bad(where, "step: expected an integer, got " + show(*step));
    r.val.emplace_back(step->get<int64_t>(), number_or_nan(rec, "val_loss", where));
  }
  if (const double t = number_or_nan(rec, "tokens_per_s", where); !std::isnan(t)) tps.push_back(t);
  if (const auto it = rec.find("skipped"); it != rec.end()) {
    if (!it->is_boolean()) bad(where, "skipped: expected true or false, got " + show(*it));
    if (it->get<bool>()) ++r.skipped_steps;
  }
  if (const auto it = rec.find("memory"); it != rec.end()) {
    if (!it->is_object()) bad(where, "memory: expected an object, got " + show(*it));
    r.bytes_per_param_quantized = number_or_nan(*it, "quantized_bytes_per_param", where + ": memory");
    r.bytes_per_param_total = number_or_nan(*it, "bytes_per_param", where + ": memory");
    r.static_bytes = number_or_nan(*it, "static_bytes", where + ": memory");
  }
}

// metrics.jsonl, one record a line. eco_train writes and flushes whole lines, so only the last
// line can be torn (the run crashed or was killed while writing it, or a power loss left zeros):
// such a line is skipped with a warning, as eco_train --resume itself drops it, and the rest of
// the run is still worth a table. Any other malformed line means the file was damaged or edited:
// a table built by skipping it could be silently wrong, so it is an error.
void read_metrics(const fs::path& dir, RunSummary& r, std::vector<double>& tps) {
  const std::string path = (dir / "metrics.jsonl").string();
  const std::string text = read_run_file(dir, "metrics.jsonl", kMaxMetricsBytes);
  size_t start = 0;
  for (int64_t line_no = 1; start < text.size(); ++line_no) {
    const size_t nl = text.find('\n', start);
    const bool torn = nl == std::string::npos;
    const std::string_view line = std::string_view(text).substr(start, torn ? std::string::npos : nl - start);
    start = torn ? text.size() : nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = path + ": line " + std::to_string(line_no);
    eco::JsonParse rec = eco::parse_json(line);
    // The parser counts lines within this one line: its "line 1" would read as the file's.
    if (const std::string one = "parse error at line 1, "; rec.error.rfind(one, 0) == 0)
      rec.error = "parse error at " + rec.error.substr(one.size());
    if (!rec.ok()) {
      if (torn) {
        std::fprintf(stderr, "eco_report: warning: %s is cut off (%s); skipped\n", where.c_str(), rec.error.c_str());
        continue;
      }
      bad(where, "not valid JSON: " + rec.error);
    }
    read_record(rec.value, where, r, tps);
  }
}

RunSummary summarise(const fs::path& dir) {
  RunSummary r;
  r.dir = dir;
  int64_t steps = 0;
  read_run_config(dir, r, steps);
  std::vector<double> tps;
  read_metrics(dir, r, tps);
  if (!r.val.empty() && r.val.back().first == steps) r.final_val = r.val.back().second;
  r.diverged = !std::isfinite(r.final_val);
  if (!tps.empty()) {
    std::nth_element(tps.begin(), tps.begin() + tps.size() / 2, tps.end());
    r.tokens_per_s = tps[tps.size() / 2];
  }
  return r;
}

std::string fmt(const char* f, double v) {
  if (!std::isfinite(v)) return "—";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    fs::path out;
    std::vector<fs::path> runs;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--out") {
        if (i + 1 >= argc) throw eco::ConfigError("flag --out needs a value (see --help)");
        out = argv[++i];
      } else if (a == "-h" || a == "--help") {
        std::puts("usage: eco_report --out DIR RUN_DIR...\n"
                  "Writes DIR/results.md (ablation table), DIR/val_loss.dat and DIR/pareto.dat (gnuplot data).\n"
                  "exit codes: 0 ok, 2 bad flag, 3 unreadable or malformed run directory, 6 cannot write DIR");
        return 0;
      } else if (a.rfind('-', 0) == 0) {
        throw eco::ConfigError("unknown flag \"" + a + "\" (see --help; a run directory starting with '-' can be given as ./" +
                               a + ")");
      } else if (a.empty()) {
        throw eco::ConfigError("empty RUN_DIR argument (see --help)");
      } else {
        runs.emplace_back(a);
      }
    }
    if (out.empty() || runs.empty()) throw eco::ConfigError("usage: eco_report --out DIR RUN_DIR... (see --help)");
    std::vector<RunSummary> rs;
    for (const auto& d : runs) rs.push_back(summarise(d));
    double master = NAN;
    for (const auto& r : rs)
      if (r.name == "master") master = r.final_val;

    std::string md = "| mode | final val loss | gap to master | static B/param (quantized layers) | static B/param (model) | "
                     "static memory | tokens/s | skipped steps |\n|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : rs) {
      std::string gap = std::isfinite(master) && !r.diverged ? fmt("%+.2f%%", 100.0 * (r.final_val - master) / master) : "—";
      md += "| `" + r.name + "` | " + (r.diverged ? std::string("diverged") : fmt("%.4f", r.final_val)) + " | " + gap +
            " | " + fmt("%.2f", r.bytes_per_param_quantized) + " | " + fmt("%.2f", r.bytes_per_param_total) + " | " +
            fmt("%.2f MiB", r.static_bytes / 1048576.0) + " | " + fmt("%.0f", r.tokens_per_s) + " | " +
            std::to_string(r.skipped_steps) + " |\n";
    }
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec) throw eco::SystemError("--out " + out.string() + ": cannot create the directory: " + ec.message());
    eco::atomic_write_file(out / "results.md", md);

    // val_loss.dat: one gnuplot data block per run (separated by two blank lines, named by mode):
    // step, val loss, and the gap to the master run's val loss at the same step in % (the curves
    // themselves differ by less than a line width next to the initial loss).
    std::map<int64_t, double> master_curve;
    for (const auto& r : rs)
      if (r.name == "master") master_curve.insert(r.val.begin(), r.val.end());
    std::string val, pareto;
    for (const auto& r : rs) {
      val += "\"" + r.name + "\"\n";
      for (auto [s, v] : r.val) {
        if (!std::isfinite(v)) continue;
        auto m = master_curve.find(s);
        double gap = m != master_curve.end() ? 100.0 * (v - m->second) / m->second : NAN;
        val += std::to_string(s) + " " + fmt("%.6f", v) + " " + (std::isfinite(gap) ? fmt("%.4f", gap) : "NaN") + "\n";
      }
      val += "\n\n";
      if (!r.diverged && std::isfinite(r.bytes_per_param_quantized))
        pareto += "\"" + r.name + "\" " + fmt("%.4f", r.bytes_per_param_quantized) + " " + fmt("%.6f", r.final_val) + "\n";
    }
    eco::atomic_write_file(out / "val_loss.dat", val);
    eco::atomic_write_file(out / "pareto.dat", pareto);
    std::fputs(md.c_str(), stdout);
    return 0;
  } catch (const eco::Error& e) {
    std::fprintf(stderr, "eco_report: %s\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "eco_report: out of memory\n");
    return 6;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eco_report: internal error: %s\n", e.what());
    return 1;
  }
}

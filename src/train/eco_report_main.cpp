// eco_report: summarises finished runs (one per optimizer mode) into results.md and gnuplot data:
// the ablation table (final val loss, gap to the master-weight run, static memory, tokens/s), the
// validation curves and the static-memory vs loss points. tools/ablate.sh drives it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

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

RunSummary summarise(const fs::path& dir) {
  RunSummary r;
  r.dir = dir;
  std::ifstream cfg_in(dir / "config.json");
  if (!cfg_in) throw eco::DataError(dir.string() + ": no config.json (is this an eco_train run directory?)");
  json cfg = json::parse(cfg_in);
  r.name = cfg["optim"]["mode"].get<std::string>();
  std::ifstream in(dir / "metrics.jsonl");
  if (!in) throw eco::DataError(dir.string() + ": no metrics.jsonl");
  std::vector<double> tps;
  std::string line;
  while (std::getline(in, line)) {
    json rec = json::parse(line, nullptr, false);
    if (rec.is_discarded()) continue;
    if (rec.contains("val_loss")) {
      double v = rec["val_loss"].is_number() ? rec["val_loss"].get<double>() : NAN;
      r.val.emplace_back(rec["step"].get<int64_t>(), v);
    }
    if (rec.contains("tokens_per_s")) tps.push_back(rec["tokens_per_s"].get<double>());
    if (rec.value("skipped", false)) ++r.skipped_steps;
    if (rec.contains("memory")) {
      const json& m = rec["memory"];
      r.bytes_per_param_quantized = m.value("quantized_bytes_per_param", NAN);
      r.bytes_per_param_total = m.value("bytes_per_param", NAN);
      r.static_bytes = m.value("static_bytes", NAN);
    }
  }
  const int64_t steps = cfg["train"]["steps"].get<int64_t>();
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
      std::string a = argv[i];
      if (a == "--out" && i + 1 < argc) out = argv[++i];
      else if (a == "-h" || a == "--help") {
        std::puts("usage: eco_report --out DIR RUN_DIR...\n"
                  "Writes DIR/results.md (ablation table), DIR/val_loss.dat and DIR/pareto.dat (gnuplot data).");
        return 0;
      } else runs.emplace_back(a);
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
    fs::create_directories(out);
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
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eco_report: %s\n", e.what());
    return 1;
  }
}

#include "train/cli.h"

#include <cerrno>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "train/config_schema.h"

namespace eco {
namespace {
constexpr int64_t kMaxWorld = 1 << 20;  // far beyond any cluster; keeps the planned products in range
}  // namespace

std::string cli_usage() {
  return R"(usage: eco_train --config FILE [options]

Trains a GPT model as described by a JSON config (see configs/ and docs/config.md).

options:
  --config FILE        the run's JSON config (required)
  --set KEY=VALUE      override one config key, e.g. --set optim.lr=3e-4 (repeatable; VALUE is
                       parsed as JSON when it parses, otherwise taken as a string)
  --out DIR            output directory (same as --set log.dir=DIR): metrics.jsonl, config.json,
                       checkpoints
  --resume             continue from the newest valid checkpoint in the output directory; the
                       continuation is bit-identical to an uninterrupted run
  --overwrite          start afresh in an output directory that holds an earlier run, deleting its
                       checkpoints and metrics (without it, such a directory is refused)
  --stop-after N       write a checkpoint and exit after N steps of this invocation (for
                       time-limited jobs; continue later with --resume)
  --threads N          CPU threads (same as --set train.threads=N; 0 = all cores)
  --export-llmc PATH   at the end, write the weights as an llm.c GPT-2 fp32 checkpoint
  --plan               print what one rank needs (memory per optim.mode, whether it fits on an
                       80 GB and a 141 GB GPU, bytes sent per step) and exit without training or
                       allocating the model; the data files need not exist (see docs/memory.md)
  --world N            the number of ranks --plan plans for (default 1); dist.ep and dist.zero
                       come from the config (e.g. --set dist.ep=8 --set dist.zero=1)
  --help-config        list every config key with its type, default and meaning
  -h, --help           this text

One eco_train at a time per output directory (it is locked while a run is alive).

exit codes: 0 ok, 2 bad flag or config (also: output directory in use or holding another run),
3 bad data, 4 bad checkpoint, 5 training diverged, 6 system error (disk, memory, output directory
cannot be created), 128+N stopped by signal N (SIGINT, SIGTERM, SIGHUP) after writing a checkpoint
)";
}

CliArgs parse_cli(int argc, char** argv) {
  CliArgs args;
  bool world_given = false;
  auto value_of = [&](int& i, std::string_view flag) -> std::string {
    if (i + 1 >= argc) throw ConfigError("flag " + std::string(flag) + " needs a value (see --help)");
    return argv[++i];
  };
  auto int_of = [&](const std::string& s, std::string_view flag) -> int64_t {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    // ERANGE: strtoll clamps an overlong number to LLONG_MAX, which would pass as a real value.
    if (s.empty() || *end != '\0' || v < 0 || errno == ERANGE)
      throw ConfigError("flag " + std::string(flag) + ": expected a non-negative integer, got \"" + s + "\"");
    return v;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--config") args.config_path = value_of(i, a);
    else if (a == "--set") {
      std::string kv = value_of(i, a);
      if (kv.find('=') == std::string::npos)
        throw ConfigError("flag --set: expected KEY=VALUE, got \"" + kv + "\"");
      args.overrides.push_back(kv);
    } else if (a == "--out") args.out_dir = value_of(i, a);
    else if (a == "--resume") args.resume = true;
    else if (a == "--overwrite") args.overwrite = true;
    else if (a == "--stop-after") args.stop_after = int_of(value_of(i, a), a);
    else if (a == "--threads") {
      // Checked here against the schema's bound, before narrowing to int could turn 2^32 + 1 into 1.
      const std::string text = value_of(i, a);
      const int64_t n = int_of(text, a);
      const SchemaEntry& entry = *eco_train_schema().find("train.threads");
      if (!entry.range.contains(static_cast<double>(n)))
        throw ConfigError("flag --threads: expected " + describe_expected(entry) + ", got " + text);
      args.threads = static_cast<int>(n);
    }
    else if (a == "--export-llmc") args.export_llmc = value_of(i, a);
    else if (a == "--plan") args.plan = true;
    else if (a == "--world") {
      const std::string text = value_of(i, a);
      const int64_t n = int_of(text, a);
      if (n < 1 || n > kMaxWorld)
        throw ConfigError("flag --world: expected an integer in [1, " + std::to_string(kMaxWorld) + "], got " + text);
      args.world = static_cast<int>(n);
      world_given = true;
    }
    else if (a == "--help-config") args.help_config = true;
    else if (a == "-h" || a == "--help") args.help = true;
    else throw ConfigError("unknown flag \"" + std::string(a) + "\" (see --help)");
  }
  if (!args.help && !args.help_config && args.config_path.empty())
    throw ConfigError("missing --config FILE (see --help)");
  if (world_given && !args.plan)
    throw ConfigError("--world is for --plan; a training run takes its world size from the launcher (mpirun, srun)");
  if (args.plan && (args.resume || args.overwrite || args.stop_after > 0 || !args.export_llmc.empty()))
    throw ConfigError("--plan only prints the memory plan; drop --resume, --overwrite, --stop-after and --export-llmc");
  if (args.resume && args.overwrite)
    throw ConfigError("--resume and --overwrite contradict each other: continue the run, or discard it");
  if (!args.out_dir.empty()) args.overrides.push_back("log.dir=" + args.out_dir);
  if (args.threads >= 0) args.overrides.push_back("train.threads=" + std::to_string(args.threads));
  return args;
}

}  // namespace eco

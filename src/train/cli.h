#pragma once
// Command-line flags of eco_train.
#include <cstdint>
#include <string>
#include <vector>

namespace eco {

struct CliArgs {
  std::string config_path;
  std::vector<std::string> overrides;  // "a.b=value" from --set, in order
  std::string out_dir;                 // --out, same as log.dir
  bool resume = false;
  bool overwrite = false;              // --overwrite: discard the previous run in the run directory
  bool help = false;
  bool help_config = false;
  std::string export_llmc;             // --export-llmc PATH: write the weights in llm.c format at the end
  int64_t stop_after = 0;              // --stop-after N: checkpoint and exit after N steps of this run
  int threads = -1;                    // --threads N overrides train.threads
  bool plan = false;                   // --plan: print the memory plan per rank and exit (no training)
  int world = 1;                       // --world N: the world size --plan plans for
};

// Throws ConfigError (exit code 2) on an unknown flag or a missing value.
CliArgs parse_cli(int argc, char** argv);

std::string cli_usage();

}  // namespace eco

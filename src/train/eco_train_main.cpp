// eco_train: the training CLI. Parses flags, validates the config, runs; every eco::Error is
// printed once as one line and turned into its exit code.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <new>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/communicator.h"
#include "train/cli.h"
#include "train/config_schema.h"
#include "train/plan_report.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  eco::init_logging();
  eco::install_stop_handlers();
  int rank = 0;  // for the tag of an error printed before the logger knows it
  try {
    eco::CliArgs args = eco::parse_cli(argc, argv);
    if (args.help) {
      std::fputs(eco::cli_usage().c_str(), stdout);
      return 0;
    }
    if (args.help_config) {
      std::fputs(eco::schema_help_text(eco::eco_train_schema()).c_str(), stdout);
      return 0;
    }
    // The memory plan allocates nothing, needs no data files and starts no MPI.
    if (args.plan) return eco::run_plan(args);
    // Once per process, before the config: under mpirun/srun every rank joins here (and an error
    // below is printed by each rank that has it, tagged with its rank).
    std::unique_ptr<eco::Communicator> comm = eco::make_communicator();
    rank = comm->rank();
    eco::init_logging(rank);
    eco::Config cfg = eco::Config::load(args.config_path, args.overrides, eco::eco_train_schema());
    return eco::run_training(cfg, args, *comm);
  } catch (const eco::ConfigError& e) {
    if (rank == 0) std::fprintf(stderr, "eco_train: %s\n", e.what());
    else std::fprintf(stderr, "eco_train (rank %d): %s\n", rank, e.what());
    return e.exit_code();
  } catch (const eco::Error& e) {
    spdlog::error("{}", e.what());
    return e.exit_code();
  } catch (const std::filesystem::filesystem_error& e) {
    // A file operation the code did not wrap itself: still the system's answer, with the path.
    spdlog::error("system error: {} (path: {})", e.code().message(), e.path1().string());
    return 6;
  } catch (const std::bad_alloc&) {
    spdlog::error("out of memory: reduce train.batch_size, train.seq_len or the model size");
    return 6;
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", e.what());
    return 1;
  }
}

#pragma once
// The training run: model, optimizer, data, eval, sampling, metrics and checkpoints, driven by a
// validated config. The CLI (eco_train_main.cpp) only parses flags and calls run_training.
#include <string>

#include "core/config.h"
#include "dist/communicator.h"
#include "train/cli.h"

namespace eco {

// SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session) ask for a checkpoint and a clean
// exit (128 + N) at the end of the current step, or right after setup when no step has run yet.
// run_training installs them; the CLI installs them first thing, so a signal that arrives while
// the config is read or the model is built is honoured too. SA_RESETHAND: a second signal of the
// same kind kills at once, as users expect from a second Ctrl-C; checkpoints are written
// atomically, so that loses nothing either.
void install_stop_handlers();

// Runs (or resumes) the training described by `cfg` on the ranks of `comm`: data parallel when
// comm.world() > 1 (docs/distributed.md). Throws eco::Error subclasses on bad input; a failure on
// one rank makes every rank throw (dist/rank_agreement.h). Returns the exit code.
int run_training(const Config& cfg, const CliArgs& args, Communicator& comm);

}  // namespace eco

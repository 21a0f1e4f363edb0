#pragma once
// The training run: model, optimizer, data, eval, sampling, metrics and checkpoints, driven by a
// validated config. The CLI (eco_train_main.cpp) only parses flags and calls run_training.
#include <string>

#include "core/config.h"
#include "train/cli.h"

namespace eco {

// Runs (or resumes) the training described by `cfg`. Throws eco::Error subclasses on bad input.
int run_training(const Config& cfg, const CliArgs& args);  // returns the exit code

}  // namespace eco

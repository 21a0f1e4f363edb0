#pragma once
// Builds the model's shape from the config's "model" section.
#include "core/config.h"
#include "model/model_config.h"

namespace eco {

// Resolves defaults (padded vocab, MLP width) and checks shapes the schema cannot (throws ConfigError).
ModelConfig model_config_from(const Config& cfg);

}  // namespace eco

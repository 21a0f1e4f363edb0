#pragma once
// The eco_train config schema: every key of a training run with its type, default, allowed range
// and meaning, plus the rules across keys. docs/config.md is rendered from it.
#include <string>

#include "core/config.h"

namespace eco {

const Schema& eco_train_schema();

// The full text of docs/config.md (an introduction, then schema_markdown of eco_train_schema).
std::string eco_train_config_markdown();

}  // namespace eco

#pragma once
// llm.c's GPT-2 fp32 model file (version 3): a 256 × int32 header (magic 20240326, version, maxT,
// V, L, NH, C, Vp) followed by every parameter in fp32, in llm.c's order — which is exactly this
// project's gpt2 parameter layout, so the body is the parameter buffer as it is.
#include <filesystem>

#include "model/gpt.h"
#include "model/model_config.h"

namespace eco {

// The shape stored in an llm.c checkpoint (gpt2 arch, tied head, MLP 4·C).
// Throws CheckpointError (with the path) for a missing, truncated or foreign file.
ModelConfig model_config_from_llmc(const std::filesystem::path& path);

// Replaces the model's weights with the checkpoint's. The model must be gpt2 with the file's shape;
// otherwise CheckpointError lists every field that differs.
void load_llmc(GPT& model, const std::filesystem::path& path);

// Writes the model's weights as an llm.c fp32 checkpoint, atomically (temp file, fsync, rename).
// Only the gpt2 architecture has this format (ConfigError otherwise).
void save_llmc(const GPT& model, const std::filesystem::path& path);

}  // namespace eco

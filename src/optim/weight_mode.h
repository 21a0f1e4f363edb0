#pragma once
// How the block linear weights are stored and updated (DESIGN.md §4, the mode table): with or
// without an fp32 master, rounded to nearest or stochastically, with or without ECO's error
// feedback into the first moment.
#include <string>

#include "quant/quant_format.h"

namespace eco {

enum class WeightMode { Fp32, Bf16, Bf16Sr, Master, MasterSr, Naive, Sr, Eco, EcoSr };

struct WeightModeTraits {
  bool quantized;       // the forward reads a low-precision stored copy of the linear weights
  bool master;          // an fp32 master of them is kept and updated; the copy is re-quantized from it
  bool bf16;            // the stored copy is BF16 (else optim.weight_format)
  Rounding rounding;    // rounding of the stored copy
  bool error_feedback;  // ECO: the rounding error is folded into the first moment
};

WeightModeTraits traits_of(WeightMode mode);
WeightMode parse_weight_mode(const std::string& name);  // throws ConfigError
const char* to_string(WeightMode mode);

enum class OptimizerKind { AdamW, Sgdm };
// Storage of Adam's m and v: fp32; bf16 (stochastically rounded); or block-wise low-bit formats of
// 128 elements per block (optim/state_block.h): int8 (m linear INT8, v 8-bit log) and SOLO's
// soloB (m B-bit signed dynamic map, v B-bit log quantizer), all stored with stochastic rounding.
// m8v4: INT8 m with SOLO's 4-bit v, the format for ECO (its error needs an 8-bit m).
enum class StateFormat { Fp32, Bf16, Int8, Solo4, Solo3, Solo2, M8V4 };
const char* to_string(StateFormat f);                  // "fp32", "bf16", "int8", "solo4", ..., "m8v4"
StateFormat parse_state_format(const std::string& name);  // throws ConfigError
inline bool is_block_state(StateFormat f) { return f != StateFormat::Fp32 && f != StateFormat::Bf16; }

}  // namespace eco

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
enum class StateFormat { Fp32, Bf16 };  // bf16 moments are stored with stochastic rounding

}  // namespace eco

#include "optim/weight_mode.h"

#include "core/error.h"

namespace eco {

WeightModeTraits traits_of(WeightMode mode) {
  switch (mode) {
    case WeightMode::Fp32: return {false, false, false, Rounding::RTN, false};
    case WeightMode::Bf16: return {true, true, true, Rounding::RTN, false};
    case WeightMode::Bf16Sr: return {true, false, true, Rounding::SR, false};
    case WeightMode::Master: return {true, true, false, Rounding::RTN, false};
    case WeightMode::MasterSr: return {true, true, false, Rounding::SR, false};
    case WeightMode::Naive: return {true, false, false, Rounding::RTN, false};
    case WeightMode::Sr: return {true, false, false, Rounding::SR, false};
    case WeightMode::Eco: return {true, false, false, Rounding::RTN, true};
    case WeightMode::EcoSr: return {true, false, false, Rounding::SR, true};
  }
  return {};
}

namespace {
constexpr struct {
  WeightMode mode;
  const char* name;
} kModes[] = {{WeightMode::Fp32, "fp32"},     {WeightMode::Bf16, "bf16"},        {WeightMode::Bf16Sr, "bf16_sr"},
              {WeightMode::Master, "master"}, {WeightMode::MasterSr, "master_sr"}, {WeightMode::Naive, "naive"},
              {WeightMode::Sr, "sr"},         {WeightMode::Eco, "eco"},          {WeightMode::EcoSr, "eco_sr"}};
}  // namespace

WeightMode parse_weight_mode(const std::string& name) {
  for (const auto& m : kModes)
    if (name == m.name) return m.mode;
  throw ConfigError("optim.mode: unknown mode \"" + name +
                    "\" (expected fp32, bf16, bf16_sr, master, master_sr, naive, sr, eco or eco_sr)");
}

const char* to_string(WeightMode mode) {
  for (const auto& m : kModes)
    if (mode == m.mode) return m.name;
  return "?";
}

namespace {
constexpr struct {
  StateFormat format;
  const char* name;
} kStateFormats[] = {{StateFormat::Fp32, "fp32"},   {StateFormat::Bf16, "bf16"},   {StateFormat::Int8, "int8"},
                     {StateFormat::Solo4, "solo4"}, {StateFormat::Solo3, "solo3"}, {StateFormat::Solo2, "solo2"},
                     {StateFormat::M8V4, "m8v4"}};
}  // namespace

const char* to_string(StateFormat f) {
  for (const auto& s : kStateFormats)
    if (s.format == f) return s.name;
  return "?";
}

StateFormat parse_state_format(const std::string& name) {
  for (const auto& s : kStateFormats)
    if (name == s.name) return s.format;
  throw ConfigError("optim.state_format: unknown format \"" + name + "\" (expected fp32, bf16, int8, solo4, solo3, solo2 or m8v4)");
}

}  // namespace eco

#include "quant/quant_format.h"

#include "core/error.h"

namespace eco {

const char* to_string(QuantFormat f) {
  switch (f) {
    case QuantFormat::E4M3: return "e4m3";
    case QuantFormat::E5M2: return "e5m2";
    case QuantFormat::BF16: return "bf16";
    case QuantFormat::INT8: return "int8";
    case QuantFormat::INT4: return "int4";
    case QuantFormat::INT2: return "int2";
    case QuantFormat::TERNARY: return "ternary";
  }
  return "?";
}

const char* to_string(Rounding r) { return r == Rounding::SR ? "sr" : "rtn"; }

QuantFormat parse_quant_format(const std::string& name) {
  if (name == "e4m3") return QuantFormat::E4M3;
  if (name == "e5m2") return QuantFormat::E5M2;
  if (name == "bf16") return QuantFormat::BF16;
  if (name == "int8") return QuantFormat::INT8;
  if (name == "int4") return QuantFormat::INT4;
  if (name == "int2") return QuantFormat::INT2;
  if (name == "ternary") return QuantFormat::TERNARY;
  throw ConfigError("unknown number format \"" + name + "\"; use one of e4m3, e5m2, bf16, int8, int4, int2, ternary");
}

Rounding parse_rounding(const std::string& name) {
  if (name == "rtn") return Rounding::RTN;
  if (name == "sr") return Rounding::SR;
  throw ConfigError("unknown rounding \"" + name + "\"; use rtn (round to nearest even) or sr (stochastic)");
}

float format_max(QuantFormat f) {
  return dispatch_format(f, [](auto codec) { return decltype(codec)::kMax; });
}

}  // namespace eco

#pragma once
// The number formats a tensor can be stored in, and a uniform per-element codec interface over
// them (Codec<F>) so tensor loops and kernels are written once and instantiated per format.
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/hd.h"
#include "quant/bf16.h"
#include "quant/fp8.h"
#include "quant/int8.h"

namespace eco {

// INT4, INT2 and TERNARY are the packed sub-byte weight formats of quant/lowbit.h (2 or 4 codes a
// byte, rows byte-aligned, their own scale rules): they have no Codec<F> and go through the
// lowbit_* functions of quant/lowbit_tensor.h instead (docs/lowbit.md).
enum class QuantFormat : uint8_t { E4M3, E5M2, BF16, INT8, INT4, INT2, TERNARY };
enum class Rounding : uint8_t { RTN, SR };

// Config spelling: "e4m3", "e5m2", "bf16", "int8", "int4", "int2", "ternary" / "rtn", "sr".
const char* to_string(QuantFormat f);
const char* to_string(Rounding r);
QuantFormat parse_quant_format(const std::string& name);  // throws ConfigError
Rounding parse_rounding(const std::string& name);         // throws ConfigError

// Codec<F>: Code (storage type), kScaled (whether values are stored relative to a scale),
// kMax (largest finite code value: what the scale maps a block's absmax to), encode_rtn(y),
// encode_sr(y, r32), decode(code). y is the value already divided by its scale.
template <QuantFormat F>
struct Codec;

template <>
struct Codec<QuantFormat::E4M3> {
  using Code = uint8_t;
  static constexpr bool kScaled = true;
  static constexpr float kMax = kE4M3Max;
  ECO_HD static Code encode_rtn(float y) { return e4m3_encode_rtn(y); }
  ECO_HD static Code encode_sr(float y, uint32_t r) { return e4m3_encode_sr(y, r); }
  ECO_HD static float decode(Code c) { return e4m3_decode(c); }
};

template <>
struct Codec<QuantFormat::E5M2> {
  using Code = uint8_t;
  static constexpr bool kScaled = true;
  static constexpr float kMax = kE5M2Max;
  ECO_HD static Code encode_rtn(float y) { return e5m2_encode_rtn(y); }
  ECO_HD static Code encode_sr(float y, uint32_t r) { return e5m2_encode_sr(y, r); }
  ECO_HD static float decode(Code c) { return e5m2_decode(c); }
};

// BF16 has fp32's exponent range, so it is stored without scales.
template <>
struct Codec<QuantFormat::BF16> {
  using Code = uint16_t;
  static constexpr bool kScaled = false;
  static constexpr float kMax = 3.38953139e38f;  // 0x7F7F
  ECO_HD static Code encode_rtn(float y) { return bf16_encode_rne(y); }
  ECO_HD static Code encode_sr(float y, uint32_t r) { return bf16_encode_sr(y, r); }
  ECO_HD static float decode(Code c) { return bf16_decode(c); }
};

template <>
struct Codec<QuantFormat::INT8> {
  using Code = uint8_t;
  static constexpr bool kScaled = true;
  static constexpr float kMax = kInt8Max;
  ECO_HD static Code encode_rtn(float y) { return int8_encode_rtn(y); }
  ECO_HD static Code encode_sr(float y, uint32_t r) { return int8_encode_sr(y, r); }
  ECO_HD static float decode(Code c) { return int8_decode(c); }
};

// Runtime properties, for host code that holds the format as a value.
inline bool is_lowbit(QuantFormat f) {
  return f == QuantFormat::INT4 || f == QuantFormat::INT2 || f == QuantFormat::TERNARY;
}
// Bytes of one code of the byte-addressed formats (a packed low-bit row has its own size:
// LowbitLayout::row_bytes()).
inline size_t code_size_bytes(QuantFormat f) { return f == QuantFormat::BF16 ? 2 : 1; }
inline bool format_is_scaled(QuantFormat f) { return f != QuantFormat::BF16; }
float format_max(QuantFormat f);

// Calls fn(Codec<F>{}) for the runtime format f: one switch per tensor, not per element. The
// packed low-bit formats have no Codec: eco::Error.
template <class Fn>
decltype(auto) dispatch_format(QuantFormat f, Fn&& fn) {
  if (is_lowbit(f))
    throw Error(std::string("dispatch_format: ") + to_string(f) + " is a packed low-bit format (quant/lowbit_tensor.h)");
  switch (f) {
    case QuantFormat::E4M3: return fn(Codec<QuantFormat::E4M3>{});
    case QuantFormat::E5M2: return fn(Codec<QuantFormat::E5M2>{});
    case QuantFormat::BF16: return fn(Codec<QuantFormat::BF16>{});
    case QuantFormat::INT8:
    case QuantFormat::INT4:
    case QuantFormat::INT2:
    case QuantFormat::TERNARY: break;
  }
  return fn(Codec<QuantFormat::INT8>{});
}

}  // namespace eco

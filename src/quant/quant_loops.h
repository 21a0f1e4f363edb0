#pragma once
// Host loops over contiguous spans sharing one scale, instantiated per Codec<F>. The per-element
// math is the shared ECO_HD codec; only the looping (and the decode table) is host-specific.
#include <array>
#include <cstddef>
#include <cstdint>

#include "core/philox.h"
#include "quant/quant_format.h"

namespace eco::quant_loops {

template <class C>
inline float to_grid(float x, float scale) {
  if constexpr (C::kScaled) {
    return x / scale;  // IEEE division (not x·(1/scale)): the GPU kernels do the same
  } else {
    (void)scale;
    return x;
  }
}

// Codes of x[0..n) with RTN.
template <class C>
void encode_span_rtn(const float* x, size_t n, float scale, typename C::Code* out) {
  for (size_t i = 0; i < n; ++i) out[i] = C::encode_rtn(to_grid<C>(x[i], scale));
}

// Codes of x[0..n) with SR; x[0] has flat index flat0 in its tensor. One Philox call serves the
// four elements of a counter group (core/philox.h), whatever the span boundaries.
template <class C>
void encode_span_sr(const float* x, size_t n, float scale, typename C::Code* out, const RandomKey& key,
                    uint64_t flat0) {
  size_t i = 0;
  uint64_t e = flat0;
  while (i < n) {
    const Philox4x32 w = random_words4(key, e >> 2);
    for (unsigned lane = static_cast<unsigned>(e & 3u); lane < 4 && i < n; ++lane, ++i, ++e)
      out[i] = C::encode_sr(to_grid<C>(x[i], scale), w.v[lane]);
  }
}

// decode() of every 8-bit code, built once: dequantizing is then a load and a multiply.
template <class C>
const std::array<float, 256>& decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (unsigned c = 0; c < 256; ++c) t[c] = C::decode(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

template <class C>
void decode_span(const typename C::Code* codes, size_t n, float scale, float* out) {
  if constexpr (sizeof(typename C::Code) == 1) {
    const std::array<float, 256>& t = decode_table<C>();
    for (size_t i = 0; i < n; ++i) out[i] = t[codes[i]] * scale;
  } else {
    (void)scale;  // BF16 is unscaled
    for (size_t i = 0; i < n; ++i) out[i] = C::decode(codes[i]);
  }
}

}  // namespace eco::quant_loops

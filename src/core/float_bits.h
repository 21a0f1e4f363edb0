#pragma once
// Bit-pattern views of a float, for codecs that work on the IEEE encoding (exactly what the GPU
// does), usable on host and device.
#include <cstdint>
#include <cstring>

#include "core/hd.h"

namespace eco {

ECO_HD uint32_t float_to_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

ECO_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// True for finite values (not NaN, not ±Inf), without relying on library calls.
ECO_HD bool is_finite_bits(float x) { return (float_to_bits(x) & 0x7F800000u) != 0x7F800000u; }

}  // namespace eco

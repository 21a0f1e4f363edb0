#pragma once
// Counter-based Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011; the Random123 generator of that name). A counter-based generator has no state:
// the bits for an element are a pure function of (key, counter), so stochastic rounding gives the
// same result on the CPU and the GPU, for any thread count or launch shape, and after a resume.
//
// Keying used by the trainer (docs/numerics.md, "Random bits"):
//   key     = { seed bits 0..31, seed bits 32..63 }
//   counter = { g bits 0..31, g bits 32..63, step, stream id }   with g = element_index / 4
//   element i takes word (i % 4) of philox4x32_10(counter(i / 4), key)
// so one call yields the bits of four consecutive elements, and a GPU thread that owns four
// neighbours makes exactly one call.
#include <cstdint>

#include "core/hd.h"

namespace eco {

struct Philox4x32 {
  uint32_t v[4];
};

namespace philox_detail {
// Multipliers and Weyl key increments of Philox4x32 (Random123's PHILOX_M4x32_*, PHILOX_W32_*).
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

ECO_HD void round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  c0 = hi1 ^ c1 ^ k0;
  c1 = lo1;
  c2 = hi0 ^ c3 ^ k1;
  c3 = lo0;
}
}  // namespace philox_detail

// Ten rounds; the key is bumped by the Weyl constants between rounds (nine bumps).
ECO_HD Philox4x32 philox4x32_10(const uint32_t ctr[4], const uint32_t key[2]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += philox_detail::kWeyl0;
      k1 += philox_detail::kWeyl1;
    }
    philox_detail::round(c0, c1, c2, c3, k0, k1);
  }
  Philox4x32 out;
  out.v[0] = c0;
  out.v[1] = c1;
  out.v[2] = c2;
  out.v[3] = c3;
  return out;
}

// Identity of one random stream: a run's seed, the optimizer step, and which tensor (or other
// consumer) draws. The step is taken modulo 2^32.
struct RandomKey {
  uint64_t seed = 0;
  uint32_t step = 0;
  uint32_t stream_id = 0;  // the tensor id for stochastic rounding
};

// The four words for elements 4·group .. 4·group+3 of the stream.
ECO_HD Philox4x32 random_words4(const RandomKey& k, uint64_t group) {
  const uint32_t ctr[4] = {static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), k.step, k.stream_id};
  const uint32_t key[2] = {static_cast<uint32_t>(k.seed), static_cast<uint32_t>(k.seed >> 32)};
  return philox4x32_10(ctr, key);
}

// 32 random bits for one element; equal to random_words4(k, i / 4).v[i % 4].
ECO_HD uint32_t random_bits(const RandomKey& k, uint64_t element_index) {
  const Philox4x32 w = random_words4(k, element_index >> 2);
  const uint32_t lane = static_cast<uint32_t>(element_index & 3u);
  // Selects instead of w.v[lane]: a dynamic index would put w in GPU local memory.
  return lane == 0 ? w.v[0] : lane == 1 ? w.v[1] : lane == 2 ? w.v[2] : w.v[3];
}

// Uniform float in [0, 1) from the top 24 bits (every value is exactly representable).
ECO_HD float uniform_from_bits(uint32_t r) { return static_cast<float>(r >> 8) * 5.9604644775390625e-08f; }

}  // namespace eco

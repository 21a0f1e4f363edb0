// Philox4x32-10 against the Random123 known-answer vectors, and the trainer's keying on top of it.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <set>

#include "core/philox.h"

using namespace eco;

namespace {
void check_kat(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1, uint32_t e0,
               uint32_t e1, uint32_t e2, uint32_t e3) {
  const uint32_t ctr[4] = {c0, c1, c2, c3};
  const uint32_t key[2] = {k0, k1};
  const Philox4x32 out = philox4x32_10(ctr, key);
  CHECK(out.v[0] == e0);
  CHECK(out.v[1] == e1);
  CHECK(out.v[2] == e2);
  CHECK(out.v[3] == e3);
}
}  // namespace

TEST_CASE("Philox4x32-10 reproduces the Random123 known-answer vectors", "[philox]") {
  check_kat(0, 0, 0, 0, 0, 0, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
  check_kat(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu,
            0xa20bc7c6u, 0x6d5451fdu);
  check_kat(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu,
            0x5001e420u, 0x24126ea1u);
}

TEST_CASE("random_bits: element i is word i%4 of the counter i/4, with the documented layout", "[philox]") {
  const RandomKey k{0x0123456789ABCDEFull, 17, 5};
  for (uint64_t i : {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{3}, uint64_t{4}, uint64_t{1001},
                     (uint64_t{1} << 33) + 6}) {
    const uint64_t g = i / 4;
    const uint32_t ctr[4] = {static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), 17u, 5u};
    const uint32_t key[2] = {0x89ABCDEFu, 0x01234567u};
    CHECK(random_bits(k, i) == philox4x32_10(ctr, key).v[i % 4]);
    CHECK(random_words4(k, g).v[i % 4] == random_bits(k, i));
  }
}

TEST_CASE("random_bits: every key field and both halves of the index change the stream", "[philox]") {
  const RandomKey base{1337, 100, 2};
  auto stream = [](const RandomKey& k, uint64_t offset) {
    std::set<uint32_t> s;
    for (uint64_t i = 0; i < 64; ++i) s.insert(random_bits(k, offset + i));
    return s;
  };
  const auto a = stream(base, 0);
  CHECK(a.size() == 64);  // no repeats within a stream
  RandomKey seed_hi = base, step = base, tensor = base;
  seed_hi.seed += uint64_t{1} << 32;
  step.step += 1;
  tensor.stream_id += 1;
  for (const auto& other : {stream(seed_hi, 0), stream(step, 0), stream(tensor, 0), stream(base, uint64_t{1} << 34)}) {
    size_t shared = 0;
    for (uint32_t w : other) shared += a.count(w);
    CHECK(shared == 0);
  }
}

TEST_CASE("uniform_from_bits covers [0, 1) and averages 1/2", "[philox]") {
  CHECK(uniform_from_bits(0u) == 0.0f);
  CHECK(uniform_from_bits(0xFFFFFFFFu) < 1.0f);
  CHECK(uniform_from_bits(0xFFFFFFFFu) == 1.0f - std::ldexp(1.0f, -24));
  CHECK(uniform_from_bits(0x80000000u) == 0.5f);
  const RandomKey k{99, 0, 0};
  const int N = 1 << 20;
  double sum = 0.0, sum_bit = 0.0;
  for (int i = 0; i < N; ++i) {
    const uint32_t r = random_bits(k, static_cast<uint64_t>(i));
    sum += uniform_from_bits(r);
    sum_bit += (r >> 7) & 1u;
  }
  // Uniform on [0,1): sd 1/sqrt(12); a bit: sd 1/2. Five standard errors.
  CHECK(std::fabs(sum / N - 0.5) < 5.0 / std::sqrt(12.0 * N));
  CHECK(std::fabs(sum_bit / N - 0.5) < 5.0 * 0.5 / std::sqrt(double(N)));
}

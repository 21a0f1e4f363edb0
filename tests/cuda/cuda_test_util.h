#pragma once
// Helpers of the GPU-vs-CPU tests: skip (ctest exit 4) without a GPU, and move host vectors in and
// out of a backend's buffers so a test can run one op on CpuOps and on CudaOps with the same
// inputs and compare the outputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../test_util.h"
#include "cuda/cuda_check.h"
#include "model/ops.h"

namespace eco_cuda_test {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
inline constexpr float kInf = std::numeric_limits<float>::infinity();

inline uint32_t bits_of(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

inline std::string show(float x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g (0x%08x)", static_cast<double>(x), bits_of(x));
  return buf;
}

// Same bits, or both NaN (a NaN's sign and payload are not part of any contract).
inline bool same_value(float a, float b) { return (std::isnan(a) && std::isnan(b)) || bits_of(a) == bits_of(b); }

// Every element of the GPU output equals the CPU twin's (same_value); names the first that does not.
inline void require_same(const std::vector<float>& cpu, const std::vector<float>& gpu, const std::string& what) {
  REQUIRE(cpu.size() == gpu.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < cpu.size(); ++i)
    if (!same_value(cpu[i], gpu[i]) && bad++ == 0) first = i;
  INFO(what << ": " << bad << " of " << cpu.size() << " differ"
            << (bad ? "; first at " + std::to_string(first) + ": cpu " + show(cpu[first]) + ", gpu " + show(gpu[first])
                    : std::string()));
  REQUIRE(bad == 0);
}

inline void require_gpu() {
  std::string why;
  if (eco::cuda::device_count(&why) == 0) eco_test::skip(why);
}

// A backend buffer holding a copy of `host`; freed with the Ops.
template <class T>
T* upload(eco::Ops& ops, const std::vector<T>& host) {
  T* p = static_cast<T*>(ops.alloc(host.size() * sizeof(T) + 1));
  if (!host.empty()) ops.copy_from_host(p, host.data(), host.size() * sizeof(T));
  return p;
}

template <class T>
std::vector<T> download(eco::Ops& ops, const T* p, size_t n) {
  std::vector<T> host(n);
  if (n) ops.copy_to_host(host.data(), p, n * sizeof(T));
  return host;
}

// A buffer of n elements filled with a poison pattern (NaN for floats), so an output the kernel
// forgot to write is caught.
template <class T>
T* poisoned(eco::Ops& ops, size_t n) {
  std::vector<unsigned char> bytes(n * sizeof(T) + 1, 0xFF);
  T* p = static_cast<T*>(ops.alloc(bytes.size()));
  ops.copy_from_host(p, bytes.data(), bytes.size());
  return p;
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Index of the first element whose bits differ, or -1.
template <class T>
long first_bit_difference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<long>(i);
  return -1;
}

// Two GPU runs of the same op: identical bits, NaN payloads included.
template <class T>
void require_deterministic(const std::vector<T>& run1, const std::vector<T>& run2, const std::string& what) {
  INFO(what << ": second GPU run differs at " << first_bit_difference(run1, run2));
  REQUIRE(first_bit_difference(run1, run2) == -1);
}

// Normal values times 2^k, k uniform in [-8, 8]: their sums depend on the order of addition.
inline std::vector<float> wide_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_int_distribution<int> e(-8, 8);
  std::vector<float> v(n);
  for (float& x : v) x = std::ldexp(d(rng), e(rng));
  return v;
}

// The spacing of floats at |x| (a tolerance in units in the last place).
inline float ulp_of(float x) {
  x = std::fabs(x);
  return std::nextafter(x, kInf) - x;
}

}  // namespace eco_cuda_test

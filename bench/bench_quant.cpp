// Quantize (RTN, SR) and dequantize throughput per format on a 16M-element matrix, against a
// memcpy of the fp32 input in the same run (the memory-bandwidth yardstick of this machine).
// Usage: bench_quant [elements=16777216] [repeats=5]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "quant/quant_rows.h"
#include "quant/quant_tensor.h"

using namespace eco;

namespace {
// Best wall time of `repeats` runs after one untimed warm-up run, in seconds.
double best_seconds(int repeats, const std::function<void()>& fn) {
  fn();
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : size_t{1} << 24;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  const size_t cols = 4096, rows = n / cols;
  const size_t numel = rows * cols;

  std::vector<float> x(numel), out(numel), copy(numel);
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 0.02f);
  for (auto& v : x) v = d(rng);

  std::printf("bench_quant: %zu x %zu = %zu elements, %d OpenMP threads, best of %d\n", rows, cols, numel,
              omp_get_max_threads(), repeats);
  const double t_copy = best_seconds(repeats, [&] { std::memcpy(copy.data(), x.data(), numel * sizeof(float)); });
  const double copy_eps = numel / t_copy;
  std::printf("%-26s %8.2f ms %9.1f Melem/s %7.2f GB/s (read+write)\n", "memcpy fp32", t_copy * 1e3, copy_eps / 1e6,
              2.0 * numel * sizeof(float) / t_copy / 1e9);
  std::printf("%-26s %8s    %9s          %7s   %s\n", "", "time", "rate", "", "speed vs memcpy of the fp32 input (memcpy time / time)");

  auto report = [&](const char* what, QuantFormat f, double t) {
    char name[64];
    std::snprintf(name, sizeof name, "%s %s", to_string(f), what);
    std::printf("%-26s %8.2f ms %9.1f Melem/s           %5.2fx\n", name, t * 1e3, numel / t / 1e6, t_copy / t);
  };

  const SrKey key{1234, 1, 7};
  for (auto f : {QuantFormat::E4M3, QuantFormat::E5M2, QuantFormat::BF16, QuantFormat::INT8}) {
    QuantTensor q(rows, cols, f, ScaleGranularity::PerRow);
    size_t bad = 0;
    report("quantize RTN", f, best_seconds(repeats, [&] { bad += q.quantize_from(x.data(), Rounding::RTN); }));
    report("quantize SR", f, best_seconds(repeats, [&] { bad += q.quantize_from(x.data(), Rounding::SR, &key); }));
    report("dequantize", f, best_seconds(repeats, [&] { q.dequantize_to(out.data()); }));
    if (f != QuantFormat::BF16)
      report("fake-quant rows RTN", f,
             best_seconds(repeats, [&] { bad += quantize_dequantize_rows(f, x.data(), out.data(), rows, cols); }));
    if (bad) std::printf("unexpected non-finite count %zu\n", bad);
  }
  return 0;
}

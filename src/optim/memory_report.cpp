#include "optim/memory_report.h"

#include <cstdio>

namespace eco {
namespace {
std::string mib(size_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(b) / 1048576.0);
  return buf;
}
}  // namespace

double MemoryReport::bytes_per_param() const {
  return num_params ? static_cast<double>(static_bytes()) / static_cast<double>(num_params) : 0.0;
}

double MemoryReport::quantized_bytes_per_param() const {
  return quantized_params ? static_cast<double>(quantized_static_bytes) / static_cast<double>(quantized_params) : 0.0;
}

nlohmann::json MemoryReport::to_json() const {
  return {{"num_params", num_params},
          {"quantized_params", quantized_params},
          {"weight_bytes", weight_bytes},
          {"scale_bytes", scale_bytes},
          {"master_bytes", master_bytes},
          {"m_bytes", m_bytes},
          {"v_bytes", v_bytes},
          {"grad_bytes", grad_bytes},
          {"activation_bytes", activation_bytes},
          {"static_bytes", static_bytes()},
          {"bytes_per_param", bytes_per_param()},
          {"quantized_static_bytes", quantized_static_bytes},
          {"quantized_bytes_per_param", quantized_bytes_per_param()}};
}

std::string MemoryReport::to_string() const {
  char ratios[96];
  std::snprintf(ratios, sizeof ratios, " (%.2f B/param; quantized layers %.2f B/param)", bytes_per_param(),
                quantized_bytes_per_param());
  return "weights " + mib(weight_bytes) + " + scales " + mib(scale_bytes) + " + master " + mib(master_bytes) +
         " + m " + mib(m_bytes) + " + v " + mib(v_bytes) + " = " + mib(static_bytes()) + " static" + ratios +
         "; grads " + mib(grad_bytes) + ", activations ~" + mib(activation_bytes);
}

}  // namespace eco

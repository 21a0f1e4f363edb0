#pragma once
// Static memory per rank, counted from the buffers actually allocated (not from formulas), so a
// test can assert that a master-free mode holds no high-precision copy of a quantized weight.
// "Static" follows the paper's accounting: weights + scales + master + optimizer states;
// gradients and activations are reported beside it.
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

namespace eco {

struct MemoryReport {
  size_t num_params = 0;        // all parameters
  size_t quantized_params = 0;  // parameters of the quantized (block linear) tensors
  size_t weight_bytes = 0;      // the values the forward reads: fp32 resident tensors + low-precision codes
  size_t scale_bytes = 0;       // quantization scales
  size_t master_bytes = 0;      // fp32 masters of quantized tensors (master / master_sr / bf16 modes)
  size_t m_bytes = 0, v_bytes = 0;
  size_t grad_bytes = 0;
  size_t activation_bytes = 0;  // estimate for the configured B, T
  // The same five static categories restricted to the quantized tensors (the paper's 12 → 9 B/param).
  size_t quantized_static_bytes = 0;

  size_t static_bytes() const { return weight_bytes + scale_bytes + master_bytes + m_bytes + v_bytes; }
  double bytes_per_param() const;            // static bytes / all parameters
  double quantized_bytes_per_param() const;  // quantized_static_bytes / quantized_params
  nlohmann::json to_json() const;
  std::string to_string() const;  // one line for the console
};

}  // namespace eco

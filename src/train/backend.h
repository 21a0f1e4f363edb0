#pragma once
// The one place that knows the backends: the trainer asks for "cpu" or "cuda" and gets an Ops.
#include <memory>
#include <string>

#include "model/ops.h"

namespace eco {

struct BackendChoice {
  std::string device = "cpu";  // train.device: cpu | cuda
  int threads = 0;             // CPU threads (train.threads): 0 = one per core
  int cuda_device = 0;         // which GPU
};

// ConfigError when `device` is cuda in a build without the CUDA backend; eco::Error when the CUDA
// backend finds no GPU.
std::unique_ptr<Ops> make_backend(const BackendChoice& choice);

// Whether this build has the CUDA backend (nvcc was found at configure time).
bool cuda_backend_built();

}  // namespace eco

#include "train/backend.h"

#include <cstdlib>
#include <string>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "cpu/guarded_ops.h"
#if defined(ECO_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace eco {

bool cuda_backend_built() {
#if defined(ECO_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Ops> make_backend(const BackendChoice& choice) {
  if (choice.device == "cpu") {
    // ECO_BACKEND_GUARD=1: buffers inaccessible outside ops (cpu/guarded_ops.h), so a host
    // dereference of backend memory crashes here as it would misbehave on a GPU.
    const char* guard = std::getenv("ECO_BACKEND_GUARD");
    if (guard && std::string(guard) == "1") return std::make_unique<GuardedOps>(choice.threads);
    return std::make_unique<CpuOps>(choice.threads);
  }
  if (choice.device == "cuda") {
#if defined(ECO_WITH_CUDA)
    return std::make_unique<cuda::CudaOps>(choice.cuda_device);
#else
    throw ConfigError("train.device: cuda, but this build has no CUDA backend (nvcc was not found when it was "
                      "configured); rebuild on a machine with the CUDA toolkit, or use train.device=cpu");
#endif
  }
  throw ConfigError("train.device: unknown backend \"" + choice.device + "\" (cpu or cuda)");
}

}  // namespace eco

#include "cuda/cuda_check.h"

namespace eco::cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  const std::string msg = std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                          "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
  if (err == cudaErrorMemoryAllocation)
    throw SystemError("out of GPU memory: " + msg + "; reduce train.batch_size, train.seq_len or the model size");
  throw Error(msg);
}

void throw_cublas_error(cublasStatus_t st, const char* what, const char* file, int line) {
  throw Error(std::string("cuBLASLt error in ") + what + " (" + file + ":" + std::to_string(line) +
              "): status " + std::to_string(static_cast<int>(st)));
}

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device found";
  return n;
}

}  // namespace eco::cuda

#pragma once
// Every CUDA runtime and cuBLASLt status is checked; a failure throws eco::Error (or SystemError
// for out-of-memory) naming the call, the file:line and the library's own text, so a user sees
// which operation failed at which shape instead of a later, unrelated crash.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "core/error.h"

namespace eco::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* what, const char* file, int line);

// Number of usable CUDA devices (0 without a GPU or driver); `why` gets the reason when 0.
int device_count(std::string* why = nullptr);

}  // namespace eco::cuda

#define ECO_CUDA_CHECK(expr)                                                             \
  do {                                                                                   \
    const cudaError_t eco_err_ = (expr);                                                 \
    if (eco_err_ != cudaSuccess) ::eco::cuda::throw_cuda_error(eco_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define ECO_CUBLAS_CHECK(expr)                                                           \
  do {                                                                                   \
    const cublasStatus_t eco_st_ = (expr);                                               \
    if (eco_st_ != CUBLAS_STATUS_SUCCESS) ::eco::cuda::throw_cublas_error(eco_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, with the kernel's name.
#define ECO_CUDA_CHECK_LAUNCH(name) ECO_CUDA_CHECK(cudaGetLastError())

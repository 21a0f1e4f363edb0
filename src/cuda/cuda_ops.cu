// CudaOps construction and buffers. The kernels live in the other files of src/cuda.
#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"

#include <cstdio>

namespace eco::cuda {
namespace {
constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper
}  // namespace

CudaOps::CudaOps(int device) : device_(device) {
  std::string why;
  const int n = device_count(&why);
  if (device < 0 || device >= n)
    throw SystemError("train.device = cuda: " + (n == 0 ? why : "device " + std::to_string(device) + " does not exist (" +
                                                                    std::to_string(n) + " found)") +
                      "; use train.device=cpu on this machine");
  ECO_CUDA_CHECK(cudaSetDevice(device_));
  ECO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ECO_CUBLAS_CHECK(cublasLtCreate(&lt_));
  ECO_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  workspace_bytes_ = kWorkspaceBytes;
}

CudaOps::~CudaOps() {
  // Destructors must not throw: report nothing, free what exists.
  cudaStreamSynchronize(stream_);
  for (auto& [p, bytes] : allocations_) cudaFree(p);
  if (workspace_) cudaFree(workspace_);
  if (scratch_) cudaFree(scratch_);
  if (partials_) cudaFree(partials_);
  if (lt_) cublasLtDestroy(lt_);
  if (stream_) cudaStreamDestroy(stream_);
}

void* CudaOps::alloc(size_t bytes) {
  void* p = nullptr;
  // cudaMalloc returns 256-byte aligned memory, more than the interface's 64.
  ECO_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
  allocations_[p] = bytes;
  allocated_bytes_ += bytes;
  return p;
}

void CudaOps::free(void* p) {
  if (!p) return;
  auto it = allocations_.find(p);
  if (it != allocations_.end()) {
    allocated_bytes_ -= it->second;
    allocations_.erase(it);
  }
  // Work queued on the stream may still read the buffer.
  ECO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  ECO_CUDA_CHECK(cudaFree(p));
}

void CudaOps::fill_zero(void* p, size_t bytes) { ECO_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_)); }

void CudaOps::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  ECO_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
  // The caller may reuse its buffer as soon as we return. From pageable memory (every caller's
  // std::vector: the step's tokens and targets) the call returns only once the bytes are staged,
  // so no wait is needed and the step keeps its single host sync; a page-locked source is read
  // later by the copy engine, so wait for that one.
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, host_src) == cudaSuccess) {
    if (attr.type == cudaMemoryTypeHost) ECO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } else {
    cudaGetLastError();  // an unknown pointer is pageable memory: clear the error, no wait
  }
}

void CudaOps::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  ECO_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  ECO_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaOps::copy(void* dst, const void* src, size_t bytes) {
  ECO_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

std::string CudaOps::describe() const {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device_) != cudaSuccess) return "cuda:" + std::to_string(device_);
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(prop.totalGlobalMem) / (1u << 30));
  return "cuda:" + std::to_string(device_) + " " + prop.name + " (sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + mem + ")";
}

size_t CudaOps::attention_saved_floats(int B, int T, int NH) const {
  return static_cast<size_t>(B) * NH * T;  // log-sum-exp per query row; the rest is recomputed
}

void CudaOps::synchronize() { ECO_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace eco::cuda

// The ECO_HD headers compiled by nvcc and run element by element on the GPU; the host side of
// tests/cuda/test_cuda_shared_math.cpp compares the results with the CPU build of the same code.
#include <cuda_runtime.h>

#include "shared_math_kernels.h"

namespace eco_cuda_test {
namespace {

__global__ void shared_math_kernel(const float* x, const float* g, const float* m0, const float* v0, size_t n,
                                   AdamArgs a, eco::AdamStepConsts c, SharedMathOut* out) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  out[i] = shared_math_element(x[i], g[i], m0[i], v0[i], i, a, c);
}

std::string check(cudaError_t e) { return e == cudaSuccess ? std::string() : cudaGetErrorString(e); }

}  // namespace

int cuda_device_count(std::string* why) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    return 0;
  }
  if (count == 0 && why) *why = "no CUDA device";
  return count;
}

std::string run_shared_math(const float* x, const float* g, const float* m, const float* v, size_t n,
                            const AdamArgs& a, SharedMathOut* out) {
  const eco::AdamStepConsts c = eco::make_adam_consts(a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.t);
  float* dev[4] = {};
  SharedMathOut* dev_out = nullptr;
  const float* host[4] = {x, g, m, v};
  std::string err;
  for (int k = 0; k < 4 && err.empty(); ++k) {
    err = check(cudaMalloc(&dev[k], n * sizeof(float)));
    if (err.empty()) err = check(cudaMemcpy(dev[k], host[k], n * sizeof(float), cudaMemcpyHostToDevice));
  }
  if (err.empty()) err = check(cudaMalloc(&dev_out, n * sizeof(SharedMathOut)));
  if (err.empty()) {
    const unsigned threads = 256;
    const unsigned blocks = static_cast<unsigned>((n + threads - 1) / threads);
    shared_math_kernel<<<blocks, threads>>>(dev[0], dev[1], dev[2], dev[3], n, a, c, dev_out);
    err = check(cudaGetLastError());
  }
  if (err.empty()) err = check(cudaMemcpy(out, dev_out, n * sizeof(SharedMathOut), cudaMemcpyDeviceToHost));
  for (float* p : dev) cudaFree(p);
  cudaFree(dev_out);
  return err;
}

}  // namespace eco_cuda_test

#pragma once
// ECO_HD marks per-element math shared by the CPU and CUDA backends (quantize, SR, optimizer
// update): compiled as __host__ __device__ under nvcc and as plain inline C++ elsewhere, so both
// backends run the very same source and can be compared bit for bit.
#if defined(__CUDACC__)
#define ECO_HD __host__ __device__ __forceinline__
#else
#define ECO_HD inline
#endif

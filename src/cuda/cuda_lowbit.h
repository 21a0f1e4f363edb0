#pragma once
// Device launchers behind CudaOps for the packed low-bit weights and the block-wise optimizer
// states (docs/lowbit.md). Each has a CPU twin named below; tests/cuda/test_cuda_optim.cpp
// compares them bit for bit.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/philox.h"
#include "model/ops_state.h"

namespace eco::cuda {

// Rows [row_begin, row_end) of the INT4 / INT2 / ternary tensor q from x_rows (row row_begin
// first): scales (unless q keeps them), then codes. Twin: lowbit_quantize_rows. bad_count (device
// int64, may be null) grows by the NaN/±Inf inputs.
void lowbit_quantize_rows_device(const QuantRef& q, size_t row_begin, size_t row_end, const float* x_rows,
                                 Rounding rounding, const RandomKey* key, int64_t* bad_count, cudaStream_t stream);

// The fused optimizer step of a tensor whose moments are block-wise (int8, solo4/3/2, m8v4), over
// tensor elements [base, base + n) (base a multiple of 128; n too unless the range ends the
// tensor). One CUDA block per 128-element state block decodes m and v, updates, and re-encodes v
// with SR. Twin: CpuOps::optimizer_step with MomentBuffer's block views.
//   Tensors with an fp32 value: the value is updated in place and m is re-encoded too.
//   Master-free: w~, Adam's d and the updated m (before ECO's injection) go to wt, d, mt (n floats
//   each, indexed from base); after the caller re-quantizes the weight from wt,
//   block_state_finish_m folds ECO's error into m and re-encodes it.
void block_state_update(const OptimStepArgs& a, size_t base, size_t n, float* wt, float* d, float* mt,
                        cudaStream_t stream);
void block_state_finish_m(const OptimStepArgs& a, size_t base, size_t n, const float* wt, const float* d,
                          const float* mt, cudaStream_t stream);

}  // namespace eco::cuda

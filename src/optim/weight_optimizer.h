#pragma once
// The optimizer over every parameter tensor in every weight mode (DESIGN.md §4): AdamW or SGD with
// momentum; fp32 or bf16 moments; for the quantized tensors, the low-precision stored copy with
// or without an fp32 master, RTN or SR, with or without ECO's error feedback.
//
// Device residency: the stored copies (codes + scales) and the moments are allocated through the
// backend's Ops and updated by its fused optimizer_step, one call per tensor; fp32 values
// (resident tensors, masters) stay in the caller's backend buffers and are updated in place. The
// optimizer never dereferences a backend pointer; checkpoint I/O is the caller's (state_pieces()).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dist/zero1.h"
#include "model/ops.h"
#include "optim/memory_report.h"
#include "optim/moment_buffer.h"
#include "optim/weight_mode.h"
#include "quant/quant_tensor.h"

namespace eco {

struct OptimizerSpec {
  WeightMode mode = WeightMode::Fp32;
  OptimizerKind kind = OptimizerKind::AdamW;
  float beta1 = 0.9f;  // β of SGDM
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  QuantFormat weight_format = QuantFormat::E4M3;  // the stored format of the FP8 modes
  ScaleGranularity granularity = ScaleGranularity::PerRow;  // of the FP8 / INT8 scales
  bool pow2_scales = false;
  // The packed low-bit weight formats (INT4, INT2, TERNARY; docs/lowbit.md).
  size_t group_size = 128;                                       // INT4: scales per group along K
  ScaleGranularity lowbit_granularity = ScaleGranularity::PerRow;  // INT2 / ternary: PerRow or PerTensor
  LowbitScaleDtype scale_dtype = LowbitScaleDtype::F32;
  StateFormat state_format = StateFormat::Fp32;
  uint64_t seed = 0;  // of the stochastic-rounding streams
};

// The stored copy of a rows×cols quantized tensor under `spec` (no buffers): format, scale layout
// and maintenance. The optimizer and the memory planner both build their tensors from it.
QuantRef stored_weight_ref(const OptimizerSpec& spec, size_t rows, size_t cols);
// How the quantized weights are stored, for logs and plans: "e4m3, row scales", "int4, fp32 scales
// per 128 along K (recomputed)", "ternary, fp32 absmean row scales (kept)", "bf16".
std::string describe_stored_weights(const OptimizerSpec& spec);

// Rows a ZeRO-1 cut inside a rows×cols tensor must be a multiple of under `spec`: the stored
// weight's scale rule (shard_align_rows) and, for block-wise moments, whole 128-element blocks of
// the tensor (a tensor smaller than one such unit of rows is not cut). The optimizer and the memory
// planner both cut with it.
size_t zero1_align_rows(const OptimizerSpec& spec, bool quantized, size_t rows, size_t cols);

struct OptimTensor {
  std::string name;
  size_t rows = 0, cols = 0;  // 1-D tensors: rows = 1
  bool quantize = false;      // stored quantized when the mode is quantized (the block linears)
  bool weight_decay = false;
  // fp32 values (backend memory) updated in place: the weight itself, or the master of a
  // quantized tensor. Must be nullptr for quantized tensors in master-free modes (there is no
  // high-precision copy) and non-null otherwise.
  float* value = nullptr;
  const float* grad = nullptr;  // backend memory
  size_t offset = 0;            // in floats, in the flat parameter space (GPT::tensors()); ZeRO-1 cuts it
  // The tensor's id in the whole model (ParamTensor::global_index): keys its stochastic rounding,
  // so a rank holding only some experts draws the bits one process holding all would.
  // kPositionId: its position in this list.
  static constexpr size_t kPositionId = static_cast<size_t>(-1);
  size_t id = kPositionId;
};

// ZeRO-1: this rank of `world` updates, and keeps moments for, only its own contiguous range of
// the flat parameter space (zero1_partition over the tensors' offsets; a world of 1 owns all).
struct OptimizerShard {
  int rank = 0;
  int world = 1;
};

// One piece of optimizer state for a checkpoint: the `bytes` of tensor `index` in the blob named
// `blob`; pieces of one blob are consecutive, in tensor order. `data` (backend memory) holds rows
// [held_begin, held_end) of them, row_bytes each (a whole piece: 0 .. rows). Under ZeRO-1 a
// `sharded` piece is current only in the rows each rank owns (moments, masters): a checkpoint
// gathers them from their owners; the rest (codes, scales, fp32 weights) is the same on every rank.
// Where the bytes one rank holds of a piece sit in the piece's checkpoint blob: `bytes` bytes at
// blob_offset, found at data_offset in that rank's buffer.
struct HeldRun {
  size_t blob_offset = 0, data_offset = 0, bytes = 0;
};

struct StatePiece {
  const char* blob;  // "values.f32", "codes.bin", "scales.f32", "m.bin", "v.bin"
  void* data;
  size_t bytes;
  std::string tensor;
  size_t index = 0;
  size_t row_bytes = 0;
  size_t held_begin = 0, held_end = 0;
  bool sharded = false;
};

class WeightOptimizer {
 public:
  // shard.world > 1 (ZeRO-1): the tensors' offsets must tile the flat parameter space.
  WeightOptimizer(Ops& ops, std::vector<OptimTensor> tensors, const OptimizerSpec& spec, OptimizerShard shard = {});
  ~WeightOptimizer();
  WeightOptimizer(const WeightOptimizer&) = delete;
  WeightOptimizer& operator=(const WeightOptimizer&) = delete;

  const OptimizerSpec& spec() const { return spec_; }
  const std::vector<OptimTensor>& tensors() const { return tensors_; }
  bool is_quantized(size_t i) const { return quant_[i].codes != nullptr; }
  bool has_master(size_t i) const { return is_quantized(i) && traits_.master; }
  // The stored copy of quantized tensor i, in backend memory (what the forward multiplies by).
  const QuantRef& quant_ref(size_t i) const { return quant_[i]; }

  // Makes the stored copies from the initial values: for master modes from the masters
  // (`host_values` ignored), for master-free modes from `host_values` (the tensor's initial fp32
  // values, host memory; RTN as the paper's ŵ0 = q(w0)). Call once per quantized tensor.
  void init_quantized(size_t i, const float* host_values = nullptr);

  // The fp32 values the forward uses for tensor i, copied to host memory (export, tests).
  void weight_values(size_t i, float* host_out) const;

  // One update of every tensor with learning rate lr; t = 1-based update count including this
  // one; the gradients are multiplied by grad_scale (the clip factor) as they are read. The number
  // of updated weights that came out non-finite is added to *bad_count (backend int64) without a
  // host sync; with bad_count == nullptr the optimizer reads its own count and throws
  // NumericsError when it is not 0 (state before the step is lost: resume from a checkpoint).
  void step(float lr, int64_t t, float grad_scale = 1.0f, int64_t* bad_count = nullptr);

  // Counted from the allocated buffers; fp32 values are counted from the OptimTensor pointers.
  MemoryReport memory() const;

  // Every piece of state, in checkpoint order: per blob, per tensor.
  std::vector<StatePiece> state_pieces() const;

  // ---- ZeRO-1 ----
  const OptimizerShard& shard() const { return shard_; }
  // world + 1 offsets: rank r owns [b[r], b[r+1]) of the flat parameter space ({0, all} unsharded).
  const std::vector<size_t>& shard_bounds() const { return bounds_; }
  // The rows [first, second) of tensor i that `rank` owns (empty: first == second).
  std::pair<size_t, size_t> owned_rows(size_t i, int rank) const;
  // The runs of piece p's blob that `rank` holds, in blob order: the whole blob for a piece that is
  // not sharded; the owned rows of a row-addressable one; for a block-wise moment (row_bytes 0)
  // its codes, block scales and (v) block ratios of the owned blocks — three runs, the codes'
  // padding held by no rank.
  std::vector<HeldRun> held_runs(const StatePiece& p, int rank) const;
  // What must be all-gathered after a step for every rank to hold the whole model: the codes
  // arena, the scales arena (both laid out in offset order, so a rank's block is contiguous), and
  // each run of consecutive fp32 tensors that are not quantized (masters are not gathered: only
  // their owner reads them). Empty regions are left out.
  std::vector<GatherRegion> gather_regions() const;

  // Test hooks, valid where backend memory is host memory (the CPU backend): views of the stored
  // moments and copies.
  // Indexed by tensor element; only the rows this rank owns are there.
  MomentBuffer m(size_t i) const { return moment_view(m_[i], i, MomentKind::Signed); }
  MomentBuffer v(size_t i) const { return moment_view(v_[i], i, MomentKind::Log); }
  QuantTensor quantized(size_t i) const;

 private:
  size_t numel(size_t i) const { return tensors_[i].rows * tensors_[i].cols; }
  // Bytes of m (Signed) or v (Log) over n elements in this optimizer's state format.
  size_t moment_bytes(MomentKind kind, size_t n) const {
    return MomentBuffer::storage_bytes(spec_.state_format, kind, n);
  }
  size_t own_numel(size_t i) const { return (own_[i].second - own_[i].first) * tensors_[i].cols; }
  MomentBuffer moment_view(void* p, size_t i, MomentKind kind) const {
    return MomentBuffer::view(p, p ? own_numel(i) : 0, spec_.state_format, own_[i].first * tensors_[i].cols, kind);
  }
  // Arena position in bytes of the flat offset x, a cut of the partition.
  size_t code_position(size_t x) const;
  size_t scale_position(size_t x) const;
  void release();
  RandomKey key(size_t i, uint32_t stream, int64_t t) const;

  Ops& ops_;
  std::vector<OptimTensor> tensors_;
  OptimizerSpec spec_;
  WeightModeTraits traits_;
  std::vector<QuantRef> quant_;    // codes == nullptr for tensors that are not quantized
  std::vector<void*> m_, v_;       // backend buffers of the owned rows (nullptr: none, or v of SGDM)
  OptimizerShard shard_;
  std::vector<size_t> bounds_;
  std::vector<std::pair<size_t, size_t>> own_;  // owned rows per tensor
  // Codes and scales of all quantized tensors, in offset order, each tensor 64-byte aligned.
  void* code_arena_ = nullptr;
  void* scale_arena_ = nullptr;
  size_t code_arena_bytes_ = 0, scale_arena_bytes_ = 0;
  std::vector<size_t> by_offset_;              // quantized tensors in offset order
  std::vector<size_t> code_pos_, scale_pos_;   // per tensor: byte position in its arena
  int64_t* own_bad_count_ = nullptr;  // backend int64 for step() without a caller's counter
};

}  // namespace eco

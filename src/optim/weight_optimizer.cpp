#include "optim/weight_optimizer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "optim/update_rule.h"

namespace eco {
namespace {

// SR streams of tensor i: its weights, then its two moments (bf16 states).
enum Stream : uint32_t { kWeightStream = 0, kMStream = 1, kVStream = 2, kStreamsPerTensor = 4 };

// Backend buffer of `bytes`, zeroed (moments start at 0; bf16 code 0 is +0).
void* zeroed(Ops& ops, size_t bytes) {
  void* p = ops.alloc(bytes);
  ops.fill_zero(p, bytes);
  return p;
}

}  // namespace

namespace {
constexpr size_t kArenaAlign = 64;  // bytes: every tensor's codes and scales start 64-byte aligned
size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
}  // namespace

QuantRef stored_weight_ref(const OptimizerSpec& spec, size_t rows, size_t cols) {
  QuantRef q;
  q.rows = rows;
  q.cols = cols;
  q.format = traits_of(spec.mode).bf16 ? QuantFormat::BF16 : spec.weight_format;
  q.granularity = spec.granularity;
  q.pow2_scales = spec.pow2_scales;
  if (q.lowbit()) {
    // INT4: group scales inside each row, recomputed at every quantization. INT2 / ternary: absmean
    // scales computed once from the initial weights (init_quantized) and kept (DQT-style), in
    // every mode, so master and master-free runs use the same grid.
    q.granularity = q.format == QuantFormat::INT4 ? ScaleGranularity::PerRow : spec.lowbit_granularity;
    q.pow2_scales = false;
    q.group_size = spec.group_size;
    q.scale_dtype = spec.scale_dtype;
    q.scale_update = q.format == QuantFormat::INT4 ? LowbitScaleUpdate::Recompute : LowbitScaleUpdate::Keep;
    q.lowbit_layout().validate();
  }
  return q;
}

std::string describe_stored_weights(const OptimizerSpec& spec) {
  if (traits_of(spec.mode).bf16) return "bf16";
  const QuantRef q = stored_weight_ref(spec, 1, spec.group_size);
  const std::string fmt = to_string(q.format);
  if (q.format == QuantFormat::INT4)
    return fmt + ", " + to_string(q.scale_dtype) + " scales per " + std::to_string(q.group_size) +
           " along K (recomputed)";
  if (q.lowbit())
    return fmt + ", " + to_string(q.scale_dtype) + " absmean " + to_string(q.granularity) + " scales (kept)";
  return fmt + ", " + to_string(q.granularity) + " scales" + (q.pow2_scales ? " (powers of 2)" : "");
}

size_t zero1_align_rows(const OptimizerSpec& spec, bool quantized, size_t rows, size_t cols) {
  const size_t align = shard_align_rows(quantized, stored_weight_ref(spec, rows, cols).granularity, rows);
  if (!is_block_state(spec.state_format)) return align;
  const size_t block_rows = whole_state_blocks(1, cols, static_cast<size_t>(-1));  // 128 / gcd(cols, 128)
  return std::min(std::lcm(align, block_rows), std::max<size_t>(rows, 1));
}

WeightOptimizer::WeightOptimizer(Ops& ops, std::vector<OptimTensor> tensors, const OptimizerSpec& spec,
                                 OptimizerShard shard)
    : ops_(ops), tensors_(std::move(tensors)), spec_(spec), traits_(traits_of(spec.mode)), shard_(shard) {
  const size_t n_tensors = tensors_.size();
  quant_.resize(n_tensors);
  m_.assign(n_tensors, nullptr);
  v_.assign(n_tensors, nullptr);
  code_pos_.assign(n_tensors, 0);
  scale_pos_.assign(n_tensors, 0);
  for (size_t i = 0; i < n_tensors; ++i)
    if (tensors_[i].id == OptimTensor::kPositionId) tensors_[i].id = i;
  if (shard_.world < 1 || shard_.rank < 0 || shard_.rank >= shard_.world)
    throw Error("optimizer: rank " + std::to_string(shard_.rank) + " of world " + std::to_string(shard_.world));
  size_t total = 0;
  for (const OptimTensor& t : tensors_) total += t.rows * t.cols;
  if (shard_.world == 1) {
    bounds_ = {0, total};
  } else {
    std::vector<ShardTensor> units;
    for (const OptimTensor& t : tensors_)
      units.push_back({t.offset, t.rows, t.cols,
                       zero1_align_rows(spec_, traits_.quantized && t.quantize && !traits_.bf16, t.rows, t.cols)});
    bounds_ = zero1_partition(units, shard_.world);
  }
  own_.resize(n_tensors);
  for (size_t i = 0; i < n_tensors; ++i) own_[i] = owned_rows(i, shard_.rank);
  try {
    // The stored copies live in two arenas in offset order, so a rank's rows are one block of each.
    for (size_t i = 0; i < n_tensors; ++i)
      if (traits_.quantized && tensors_[i].quantize) by_offset_.push_back(i);
    std::stable_sort(by_offset_.begin(), by_offset_.end(),
                     [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
    for (size_t i : by_offset_) {
      QuantRef& q = quant_[i];
      q = stored_weight_ref(spec_, tensors_[i].rows, tensors_[i].cols);
      code_pos_[i] = code_arena_bytes_;
      code_arena_bytes_ += round_up(q.code_bytes(), kArenaAlign);
      scale_pos_[i] = scale_arena_bytes_;
      scale_arena_bytes_ += round_up(q.scale_bytes(), kArenaAlign);
    }
    if (!by_offset_.empty()) {
      code_arena_ = zeroed(ops_, std::max<size_t>(code_arena_bytes_, 1));
      if (scale_arena_bytes_) {
        // All-zero codes with scale 1: an exact zero tensor until init_quantized.
        std::vector<uint8_t> ones(scale_arena_bytes_, 0);
        for (size_t i : by_offset_) {
          const QuantRef& q = quant_[i];
          const LowbitScaleDtype dtype = q.lowbit() ? q.scale_dtype : LowbitScaleDtype::F32;  // fp32: LE float
          for (size_t k = 0; k < q.scale_count(); ++k) lowbit_scale_store(ones.data() + scale_pos_[i], k, dtype, 1.0f);
        }
        scale_arena_ = ops_.alloc(ones.size());
        ops_.copy_from_host(scale_arena_, ones.data(), ones.size());
      }
    }
    for (size_t i = 0; i < n_tensors; ++i) {
      const OptimTensor& t = tensors_[i];
      if (!t.grad) throw Error("optimizer: tensor " + t.name + " has no gradient buffer");
      const bool quantized = traits_.quantized && t.quantize;
      const bool needs_value = !quantized || traits_.master;
      if (needs_value != (t.value != nullptr))
        throw Error("optimizer: tensor " + t.name + (needs_value ? " needs" : " must not have") +
                    " an fp32 value buffer in mode " + to_string(spec_.mode));
      if (quantized) {
        QuantRef& q = quant_[i];
        q.codes = static_cast<unsigned char*>(code_arena_) + code_pos_[i];
        // 64-byte aligned: fp32 scales are aligned floats; low-bit ones are read as bytes.
        if (q.scale_count()) q.scales = reinterpret_cast<float*>(static_cast<uint8_t*>(scale_arena_) + scale_pos_[i]);
      }
      // Moments of the owned rows only.
      if (own_numel(i) == 0) continue;
      m_[i] = zeroed(ops_, moment_bytes(MomentKind::Signed, own_numel(i)));
      if (spec_.kind == OptimizerKind::AdamW)
        v_[i] = zeroed(ops_, moment_bytes(MomentKind::Log, own_numel(i)));
    }
    own_bad_count_ = static_cast<int64_t*>(zeroed(ops_, sizeof(int64_t)));
  } catch (...) {
    release();  // a throwing constructor runs no destructor: free what was allocated
    throw;
  }
}

WeightOptimizer::~WeightOptimizer() { release(); }

void WeightOptimizer::release() {
  for (QuantRef& q : quant_) q = QuantRef{};
  if (code_arena_) ops_.free(code_arena_);
  if (scale_arena_) ops_.free(scale_arena_);
  code_arena_ = nullptr;
  scale_arena_ = nullptr;
  for (void*& p : m_) {
    if (p) ops_.free(p);
    p = nullptr;
  }
  for (void*& p : v_) {
    if (p) ops_.free(p);
    p = nullptr;
  }
  if (own_bad_count_) ops_.free(own_bad_count_);
  own_bad_count_ = nullptr;
}

std::pair<size_t, size_t> WeightOptimizer::owned_rows(size_t i, int rank) const {
  const OptimTensor& t = tensors_[i];
  if (shard_.world == 1) return {0, t.rows};
  const size_t lo = std::max(t.offset, bounds_[static_cast<size_t>(rank)]);
  const size_t hi = std::min(t.offset + numel(i), bounds_[static_cast<size_t>(rank) + 1]);
  if (lo >= hi || t.cols == 0) return {0, 0};
  return {(lo - t.offset) / t.cols, (hi - t.offset) / t.cols};
}

size_t WeightOptimizer::code_position(size_t x) const {
  for (size_t i : by_offset_) {
    const OptimTensor& t = tensors_[i];
    if (x < t.offset) return code_pos_[i];  // x lies before this tensor (in one that is not quantized)
    if (x < t.offset + numel(i)) return code_pos_[i] + (x - t.offset) / t.cols * quant_[i].row_code_bytes();
  }
  return code_arena_bytes_;
}

size_t WeightOptimizer::scale_position(size_t x) const {
  for (size_t i : by_offset_) {
    const OptimTensor& t = tensors_[i];
    if (x < t.offset) return scale_pos_[i];
    if (x < t.offset + numel(i)) {
      const size_t row = (x - t.offset) / t.cols;  // a cut: on a scale group's first row
      return scale_pos_[i] + quant_[i].scale_byte_offset(row);
    }
  }
  return scale_arena_bytes_;
}

std::vector<GatherRegion> WeightOptimizer::gather_regions() const {
  std::vector<GatherRegion> out;
  const size_t W = static_cast<size_t>(shard_.world);
  auto add = [&](void* base, const char* what, auto position) {
    GatherRegion g;
    g.base = base;
    g.what = what;
    size_t sum = 0;
    for (size_t r = 0; r < W; ++r) {
      g.bytes.push_back(position(bounds_[r + 1]) - position(bounds_[r]));
      sum += g.bytes.back();
    }
    if (sum > 0) out.push_back(std::move(g));
  };
  if (code_arena_) add(code_arena_, "weight codes", [&](size_t x) { return code_position(x); });
  if (scale_arena_) add(scale_arena_, "weight scales", [&](size_t x) { return scale_position(x); });
  // Runs of fp32 tensors that are not quantized, consecutive in the flat space and in memory.
  std::vector<size_t> plain;
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (!is_quantized(i) && numel(i) > 0) plain.push_back(i);
  std::stable_sort(plain.begin(), plain.end(), [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 0; k < plain.size();) {
    const OptimTensor& first = tensors_[plain[k]];
    size_t end = first.offset + numel(plain[k]), j = k + 1;
    while (j < plain.size() && tensors_[plain[j]].offset == end &&
           tensors_[plain[j]].value == first.value + (end - first.offset)) {
      end += numel(plain[j]);
      ++j;
    }
    const size_t begin = first.offset;
    add(first.value, "fp32 weights", [&](size_t x) { return (std::min(std::max(x, begin), end) - begin) * sizeof(float); });
    k = j;
  }
  return out;
}

RandomKey WeightOptimizer::key(size_t i, uint32_t stream, int64_t t) const {
  RandomKey k;
  k.seed = spec_.seed;
  k.step = static_cast<uint32_t>(t);
  k.stream_id = static_cast<uint32_t>(tensors_[i].id) * kStreamsPerTensor + stream;
  return k;
}

void WeightOptimizer::init_quantized(size_t i, const float* host_values) {
  if (!is_quantized(i)) throw Error("optimizer: tensor " + tensors_[i].name + " is not quantized");
  // The scales come from these initial values in every format (the only time INT2 / ternary
  // compute theirs).
  QuantRef q = quant_[i];
  q.scale_update = LowbitScaleUpdate::Recompute;
  const float* src = tensors_[i].value;
  float* staged = nullptr;
  if (!has_master(i)) {
    if (!host_values) throw Error("optimizer: initial values of " + tensors_[i].name + " are missing");
    staged = ops_.alloc_floats(numel(i));
    ops_.copy_from_host(staged, host_values, numel(i) * sizeof(float));
    src = staged;
  }
  // The initial copy is rounded to nearest in every mode (SR would make the start seed-dependent).
  ops_.fill_zero(own_bad_count_, sizeof(int64_t));
  ops_.quantize_rows(q, 0, q.rows, src, Rounding::RTN, nullptr, own_bad_count_);
  if (staged) ops_.free(staged);
  int64_t bad = 0;
  ops_.copy_to_host(&bad, own_bad_count_, sizeof bad);
  if (bad != 0) throw NumericsError("initial weights of " + tensors_[i].name + " contain NaN or Inf");
}

void WeightOptimizer::weight_values(size_t i, float* host_out) const {
  if (!is_quantized(i)) {
    ops_.copy_to_host(host_out, tensors_[i].value, numel(i) * sizeof(float));
    return;
  }
  float* tmp = ops_.alloc_floats(numel(i));
  ops_.dequantize_rows(tmp, quant_[i], 0, quant_[i].rows);
  ops_.copy_to_host(host_out, tmp, numel(i) * sizeof(float));
  ops_.free(tmp);
}

QuantTensor WeightOptimizer::quantized(size_t i) const {
  const QuantRef& q = quant_[i];
  return QuantTensor::view(q.codes, q.scales, q.rows, q.cols, q.format, q.granularity, q.pow2_scales);
}

void WeightOptimizer::step(float lr, int64_t t, float grad_scale, int64_t* bad_count) {
  int64_t* counter = bad_count ? bad_count : own_bad_count_;
  if (!bad_count) ops_.fill_zero(own_bad_count_, sizeof(int64_t));
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const OptimTensor& ten = tensors_[i];
    if (own_[i].first == own_[i].second) continue;  // ZeRO-1: no rows of this tensor here
    const float wd = ten.weight_decay ? spec_.weight_decay : 0.0f;
    OptimStepArgs a;
    a.value = ten.value;
    a.grad = ten.grad;
    a.m = m_[i];
    a.v = v_[i];
    a.quant = quant_[i];
    a.bad_count = counter;
    a.rows = ten.rows;
    a.cols = ten.cols;
    a.row_begin = own_[i].first;
    a.row_end = own_[i].second;
    a.state_row_offset = own_[i].first;
    a.state_row_end = own_[i].second;
    a.kind = spec_.kind;
    a.state_format = spec_.state_format;
    a.rounding = traits_.rounding;
    a.error_feedback = traits_.error_feedback;
    a.adam = make_adam_consts(lr, spec_.beta1, spec_.beta2, spec_.eps, wd, t);
    a.sgdm = SgdmStepConsts{lr, spec_.beta1, wd};
    a.grad_scale = grad_scale;
    a.keys = StepKeys{key(i, kWeightStream, t), key(i, kMStream, t), key(i, kVStream, t)};
    ops_.optimizer_step(a);
  }
  if (!bad_count) {
    int64_t bad = 0;
    ops_.copy_to_host(&bad, own_bad_count_, sizeof bad);
    if (bad != 0) throw NumericsError("the update made " + std::to_string(bad) + " weights non-finite");
  }
}

MemoryReport WeightOptimizer::memory() const {
  MemoryReport r;
  const auto m_bytes = [&](size_t i) { return moment_bytes(MomentKind::Signed, own_numel(i)); };
  const auto v_bytes = [&](size_t i) { return moment_bytes(MomentKind::Log, own_numel(i)); };
  const bool adam = spec_.kind == OptimizerKind::AdamW;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const size_t n = numel(i);
    const size_t value_bytes = tensors_[i].value ? n * sizeof(float) : 0;
    const size_t mb = m_[i] ? m_bytes(i) : 0, vb = v_[i] ? v_bytes(i) : 0;
    r.num_params += n;
    r.m_bytes += mb;
    r.v_bytes += vb;
    r.grad_bytes += n * sizeof(float);
    if (is_quantized(i)) {
      const QuantRef& q = quant_[i];
      const size_t scale_bytes = q.scale_bytes();
      r.quantized_params += n;
      r.weight_bytes += q.code_bytes();
      r.scale_bytes += scale_bytes;
      r.master_bytes += value_bytes;
      r.quantized_static_bytes += q.code_bytes() + scale_bytes + value_bytes + mb + vb;
    } else {
      r.weight_bytes += value_bytes;
    }
  }
  // Without quantization the "quantized layers" are the block linears in fp32 (the baseline row).
  if (!traits_.quantized) {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (!tensors_[i].quantize) continue;
      const size_t n = numel(i);
      r.quantized_params += n;
      r.quantized_static_bytes += n * sizeof(float) + m_bytes(i) + (adam ? v_bytes(i) : 0);
    }
  }
  return r;
}

std::vector<HeldRun> WeightOptimizer::held_runs(const StatePiece& p, int rank) const {
  if (!p.sharded) return {{0, 0, p.bytes}};
  const auto [r0, r1] = owned_rows(p.index, rank);
  if (r0 == r1) return {};
  if (p.row_bytes) return {{r0 * p.row_bytes, 0, (r1 - r0) * p.row_bytes}};
  // A block-wise moment laid out as BlockMoment: codes padded to whole floats, then one float per
  // block (m: the scale; v: d), then for v one more per block (α). The owned elements start on a
  // block (zero1_align_rows), so their codes start on a byte and their blocks are the tensor's.
  const size_t cols = tensors_[p.index].cols, n = numel(p.index), e0 = r0 * cols, e1 = r1 * cols;
  const bool is_v = std::string(p.blob) == "v.bin";
  const BlockStateSpec bs = block_state_spec(spec_.state_format);
  const int bits = is_v ? bs.v_bits : bs.m_bits;
  const MomentKind kind = is_v ? MomentKind::Log : MomentKind::Signed;
  const size_t params = is_v ? 2 : 1;
  const auto blocks = [](size_t k) { return (k + kStateBlock - 1) / kStateBlock; };
  const auto padded_codes = [&](size_t k) { return moment_bytes(kind, k) - blocks(k) * params * sizeof(float); };
  const size_t whole_codes = padded_codes(n), own_codes = padded_codes(e1 - e0);
  const size_t b0 = e0 / kStateBlock, nb = blocks(e1 - e0);
  std::vector<HeldRun> runs = {{e0 * static_cast<size_t>(bits) / 8, 0, state_code_bytes(e1 - e0, bits)},
                               {whole_codes + b0 * sizeof(float), own_codes, nb * sizeof(float)}};
  if (is_v) runs.push_back({whole_codes + (blocks(n) + b0) * sizeof(float), own_codes + nb * sizeof(float), nb * sizeof(float)});
  return runs;
}

std::vector<StatePiece> WeightOptimizer::state_pieces() const {
  std::vector<StatePiece> pieces;
  const bool zero = shard_.world > 1;
  auto whole = [&](const char* blob, void* data, size_t bytes, size_t i, bool sharded) {
    const size_t rows = tensors_[i].rows;
    pieces.push_back({blob, data, bytes, tensors_[i].name, i, rows ? bytes / rows : 0, 0, rows, sharded});
  };
  // fp32 values: weights are the same everywhere; a master is current only where its rows are owned.
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (tensors_[i].value) whole("values.f32", tensors_[i].value, numel(i) * sizeof(float), i, zero && is_quantized(i));
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (is_quantized(i)) whole("codes.bin", quant_[i].codes, quant_[i].code_bytes(), i, false);
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (is_quantized(i) && quant_[i].scales)
      whole("scales.f32", quant_[i].scales, quant_[i].scale_bytes(), i, false);
  const bool adam = spec_.kind == OptimizerKind::AdamW;
  for (const char* blob : {"m.bin", "v.bin"}) {
    if (std::string(blob) == "v.bin" && !adam) break;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      void* p = std::string(blob) == "m.bin" ? m_[i] : v_[i];
      const MomentKind kind = std::string(blob) == "m.bin" ? MomentKind::Signed : MomentKind::Log;
      // Row-addressable (ZeRO-1 gathers rows) for fp32 and bf16; a block-wise state is one piece.
      const size_t row_bytes = is_block_state(spec_.state_format)
                                   ? 0
                                   : tensors_[i].cols * moment_bytes(kind, 1);
      pieces.push_back({blob, p, moment_bytes(kind, numel(i)), tensors_[i].name, i,
                        row_bytes, own_[i].first, own_[i].second, zero});
    }
  }
  return pieces;
}

}  // namespace eco

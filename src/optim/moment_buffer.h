#pragma once
// An optimizer-state buffer (Adam's m or v) stored in fp32, in bf16, or block-wise in 8 bits or
// fewer (StateFormat, optim/state_block.h). Stores to any low-precision format use stochastic
// rounding keyed like the weights (element i of the tensor draws random_bits(key, i)), so
// low-precision states stay unbiased, ECO's error survives re-quantization in expectation, and a
// resumed run draws the same bits. Block-wise formats are read and written in whole blocks of 128
// tensor elements: view/commit/store/load spans must start on a block and end on one (or at the
// end of the buffer).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/philox.h"
#include "optim/state_block.h"
#include "optim/weight_mode.h"
#include "quant/bf16.h"

namespace eco {

// The widths, v quantile and SOLO β1 of a block-wise state format (eco::Error for fp32 / bf16).
BlockStateSpec block_state_spec(StateFormat f);

class MomentBuffer {
 public:
  MomentBuffer() = default;
  // kind: which moment (a block-wise v uses the log quantizer, m the signed map); fp32/bf16 ignore it.
  MomentBuffer(size_t n, StateFormat format, MomentKind kind = MomentKind::Signed);
  // A view over n elements of storage owned elsewhere (the CPU backend's buffers); copies stay views.
  // `origin`: the tensor element index of data[0] (ZeRO-1 keeps the moments of its own rows only);
  // every index below is the element's index in the whole tensor, which is also what keys the SR.
  static MomentBuffer view(void* data, size_t n, StateFormat format, size_t origin = 0,
                           MomentKind kind = MomentKind::Signed);
  MomentBuffer(const MomentBuffer& o) { *this = o; }
  MomentBuffer& operator=(const MomentBuffer& o);
  MomentBuffer(MomentBuffer&& o) noexcept { *this = std::move(o); }
  MomentBuffer& operator=(MomentBuffer&& o) noexcept;

  // Bytes of a moment of n elements in format f (block parameters and packing included).
  static size_t storage_bytes(StateFormat f, MomentKind kind, size_t n);

  float get(size_t i) const;
  // `key` selects the SR stream (used by bf16 only); i is also the element index of the draw.
  // Not for block-wise formats (a block is stored whole): eco::Error.
  void set(size_t i, float x, const RandomKey& key) {
    if (format_ == StateFormat::Fp32) f32_[i - origin_] = x;
    else if (format_ == StateFormat::Bf16) b16_[i - origin_] = bf16_encode_sr(x, random_bits(key, i));
    else set_block_element_unsupported();
  }

  // The same stores over elements begin .. begin+n−1, from src[0 .. n−1]. For bf16 one Philox call
  // serves four aligned neighbours (random_bits would spend a call per element, 4× the work), so
  // the bits, and the result, equal n calls of set().
  void store(size_t begin, size_t n, const float* src, const RandomKey& key);
  void load(size_t begin, size_t n, float* dst) const;

  // Elements begin .. begin+n−1 as fp32 to update: fp32 states in place, bf16 ones decoded into
  // scratch. commit() stores them back (a no-op in place), so fp32 states pay no copies.
  float* view(size_t begin, size_t n, float* scratch) {
    if (format_ == StateFormat::Fp32) return f32_ + (begin - origin_);
    load(begin, n, scratch);
    return scratch;
  }
  void commit(size_t begin, size_t n, const float* data, const RandomKey& key) {
    if (format_ != StateFormat::Fp32) store(begin, n, data, key);
  }

  size_t size() const { return n_; }
  size_t bytes() const { return storage_bytes(format_, kind_, n_); }
  StateFormat format() const { return format_; }
  // The raw storage (fp32 / bf16 elements, or a block-wise moment's packed layout).
  const void* data() const { return storage(); }
  void* data() { return storage(); }

 private:
  void* storage() const {
    if (format_ == StateFormat::Fp32) return f32_;
    if (format_ == StateFormat::Bf16) return b16_;
    return block_storage_;
  }
  [[noreturn]] static void set_block_element_unsupported();
  // Block-wise spans: [begin, begin+n) as whole blocks of this buffer (eco::Error otherwise).
  void check_block_span(size_t begin, size_t n) const;
  void point_at_block_storage(void* data);
 public:

 private:
  void point_at_own_storage();

  StateFormat format_ = StateFormat::Fp32;
  MomentKind kind_ = MomentKind::Signed;
  size_t n_ = 0;
  size_t origin_ = 0;  // tensor index of the first stored element (views only)
  // Storage: the vectors when this buffer owns it, else empty and the pointers lead elsewhere.
  std::vector<float> own_f32_;
  std::vector<uint16_t> own_b16_;
  std::vector<uint8_t> own_block_;
  bool owning_ = true;
  BlockMoment block_;  // block-wise formats: a view over own_block_ or the external storage
  void* block_storage_ = nullptr;
  float* f32_ = nullptr;
  uint16_t* b16_ = nullptr;
};

}  // namespace eco

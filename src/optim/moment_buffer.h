#pragma once
// An optimizer-state buffer (Adam's m or v) stored in fp32 or in bf16. Stores to bf16 use
// stochastic rounding keyed like the weights, so low-precision states stay unbiased and a resumed
// run draws the same bits.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/philox.h"
#include "optim/weight_mode.h"
#include "quant/bf16.h"

namespace eco {

class MomentBuffer {
 public:
  MomentBuffer() = default;
  MomentBuffer(size_t n, StateFormat format);
  // A view over n elements of storage owned elsewhere (the CPU backend's buffers); copies stay views.
  // `origin`: the tensor element index of data[0] (ZeRO-1 keeps the moments of its own rows only);
  // every index below is the element's index in the whole tensor, which is also what keys the SR.
  static MomentBuffer view(void* data, size_t n, StateFormat format, size_t origin = 0);
  MomentBuffer(const MomentBuffer& o) { *this = o; }
  MomentBuffer& operator=(const MomentBuffer& o);
  MomentBuffer(MomentBuffer&& o) noexcept { *this = std::move(o); }
  MomentBuffer& operator=(MomentBuffer&& o) noexcept;

  static size_t element_bytes(StateFormat f) { return f == StateFormat::Fp32 ? sizeof(float) : sizeof(uint16_t); }

  float get(size_t i) const { return format_ == StateFormat::Fp32 ? f32_[i - origin_] : bf16_decode(b16_[i - origin_]); }
  // `key` selects the SR stream (used by bf16 only); i is also the element index of the draw.
  void set(size_t i, float x, const RandomKey& key) {
    if (format_ == StateFormat::Fp32) f32_[i - origin_] = x;
    else b16_[i - origin_] = bf16_encode_sr(x, random_bits(key, i));
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
  size_t bytes() const { return n_ * element_bytes(format_); }
  StateFormat format() const { return format_; }
  const void* data() const { return format_ == StateFormat::Fp32 ? static_cast<const void*>(f32_) : b16_; }
  void* data() { return format_ == StateFormat::Fp32 ? static_cast<void*>(f32_) : b16_; }

 private:
  void point_at_own_storage();

  StateFormat format_ = StateFormat::Fp32;
  size_t n_ = 0;
  size_t origin_ = 0;  // tensor index of the first stored element (views only)
  // Storage: the vectors when this buffer owns it, else empty and the pointers lead elsewhere.
  std::vector<float> own_f32_;
  std::vector<uint16_t> own_b16_;
  bool owning_ = true;
  float* f32_ = nullptr;
  uint16_t* b16_ = nullptr;
};

}  // namespace eco

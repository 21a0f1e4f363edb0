#include "optim/moment_buffer.h"

#include <algorithm>

namespace eco {

MomentBuffer::MomentBuffer(size_t n, StateFormat format) : format_(format), n_(n) {
  if (format == StateFormat::Fp32) own_f32_.assign(n, 0.0f);
  else own_b16_.assign(n, 0);  // bf16 code 0 is +0
  point_at_own_storage();
}

MomentBuffer MomentBuffer::view(void* data, size_t n, StateFormat format, size_t origin) {
  MomentBuffer b;
  b.format_ = format;
  b.n_ = n;
  b.origin_ = origin;
  b.owning_ = false;
  if (format == StateFormat::Fp32) b.f32_ = static_cast<float*>(data);
  else b.b16_ = static_cast<uint16_t*>(data);
  return b;
}

void MomentBuffer::point_at_own_storage() {
  if (!owning_) return;
  f32_ = own_f32_.data();
  b16_ = own_b16_.data();
}

MomentBuffer& MomentBuffer::operator=(const MomentBuffer& o) {
  if (this == &o) return *this;
  format_ = o.format_;
  n_ = o.n_;
  origin_ = o.origin_;
  own_f32_ = o.own_f32_;
  own_b16_ = o.own_b16_;
  owning_ = o.owning_;
  f32_ = o.f32_;
  b16_ = o.b16_;
  point_at_own_storage();
  return *this;
}

MomentBuffer& MomentBuffer::operator=(MomentBuffer&& o) noexcept {
  format_ = o.format_;
  n_ = o.n_;
  origin_ = o.origin_;
  own_f32_ = std::move(o.own_f32_);
  own_b16_ = std::move(o.own_b16_);
  owning_ = o.owning_;
  f32_ = o.f32_;
  b16_ = o.b16_;
  point_at_own_storage();
  return *this;
}

void MomentBuffer::store(size_t begin, size_t n, const float* src, const RandomKey& key) {
  if (format_ == StateFormat::Fp32) {
    std::copy_n(src, n, f32_ + (begin - origin_));
    return;
  }
  // i is the element's index in the tensor (the SR draw's); it is stored at i − origin_.
  uint16_t* dst = b16_;
  const size_t o = origin_;
  size_t i = begin;
  const size_t end = begin + n;
  for (; i < end && (i & 3u) != 0; ++i) dst[i - o] = bf16_encode_sr(src[i - begin], random_bits(key, i));
  for (; i + 4 <= end; i += 4) {
    const Philox4x32 r = random_words4(key, i >> 2);
    for (int lane = 0; lane < 4; ++lane) dst[i + lane - o] = bf16_encode_sr(src[i + lane - begin], r.v[lane]);
  }
  for (; i < end; ++i) dst[i - o] = bf16_encode_sr(src[i - begin], random_bits(key, i));
}

void MomentBuffer::load(size_t begin, size_t n, float* dst) const {
  if (format_ == StateFormat::Fp32) {
    std::copy_n(f32_ + (begin - origin_), n, dst);
    return;
  }
  // Through a local pointer: a store to dst could otherwise alias the member b16_ itself, which
  // would make the compiler reload it every element and keep the loop from vectorizing.
  const uint16_t* __restrict src = b16_ + (begin - origin_);
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_decode(src[i]);
}

}  // namespace eco

#include "optim/moment_buffer.h"

#include <algorithm>

namespace eco {

MomentBuffer::MomentBuffer(size_t n, StateFormat format) : format_(format) {
  if (format == StateFormat::Fp32) f32_.assign(n, 0.0f);
  else b16_.assign(n, 0);  // bf16 code 0 is +0
}

void MomentBuffer::store(size_t begin, size_t n, const float* src, const RandomKey& key) {
  if (format_ == StateFormat::Fp32) {
    std::copy_n(src, n, f32_.data() + begin);
    return;
  }
  uint16_t* dst = b16_.data();
  size_t i = begin;
  const size_t end = begin + n;
  for (; i < end && (i & 3u) != 0; ++i) dst[i] = bf16_encode_sr(src[i - begin], random_bits(key, i));
  for (; i + 4 <= end; i += 4) {
    const Philox4x32 r = random_words4(key, i >> 2);
    for (int lane = 0; lane < 4; ++lane) dst[i + lane] = bf16_encode_sr(src[i + lane - begin], r.v[lane]);
  }
  for (; i < end; ++i) dst[i] = bf16_encode_sr(src[i - begin], random_bits(key, i));
}

void MomentBuffer::load(size_t begin, size_t n, float* dst) const {
  if (format_ == StateFormat::Fp32) std::copy_n(f32_.data() + begin, n, dst);
  else
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_decode(b16_[begin + i]);
}

}  // namespace eco

#include "optim/moment_buffer.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace eco {
BlockStateSpec block_state_spec(StateFormat f) {
  switch (f) {
    case StateFormat::Int8: return block_state_spec(BlockStateFormat::Int8);
    case StateFormat::Solo4: return block_state_spec(BlockStateFormat::Solo4);
    case StateFormat::Solo3: return block_state_spec(BlockStateFormat::Solo3);
    case StateFormat::Solo2: return block_state_spec(BlockStateFormat::Solo2);
    case StateFormat::M8V4: return block_state_spec(BlockStateFormat::M8V4);
    case StateFormat::Fp32:
    case StateFormat::Bf16: break;
  }
  throw Error("block_state_spec: " + std::string(to_string(f)) + " is not a block-wise format");
}

namespace {

int bits_of(StateFormat f, MomentKind kind) {
  const BlockStateSpec s = block_state_spec(f);
  return kind == MomentKind::Signed ? s.m_bits : s.v_bits;
}

}  // namespace

size_t MomentBuffer::storage_bytes(StateFormat f, MomentKind kind, size_t n) {
  switch (f) {
    case StateFormat::Fp32: return n * sizeof(float);
    case StateFormat::Bf16: return n * sizeof(uint16_t);
    default: break;
  }
  const int bits = bits_of(f, kind);
  return kind == MomentKind::Signed ? m_state_bytes(bits, n) : v_state_bytes(bits, n);
}

MomentBuffer::MomentBuffer(size_t n, StateFormat format, MomentKind kind) : format_(format), kind_(kind), n_(n) {
  if (format == StateFormat::Fp32) own_f32_.assign(n, 0.0f);
  else if (format == StateFormat::Bf16) own_b16_.assign(n, 0);  // bf16 code 0 is +0
  else own_block_.assign(storage_bytes(format, kind, n), 0);    // zero bytes decode to zeros
  point_at_own_storage();
}

MomentBuffer MomentBuffer::view(void* data, size_t n, StateFormat format, size_t origin, MomentKind kind) {
  MomentBuffer b;
  b.format_ = format;
  b.kind_ = kind;
  b.n_ = n;
  b.origin_ = origin;
  b.owning_ = false;
  if (format == StateFormat::Fp32) b.f32_ = static_cast<float*>(data);
  else if (format == StateFormat::Bf16) b.b16_ = static_cast<uint16_t*>(data);
  else b.point_at_block_storage(data);
  return b;
}

void MomentBuffer::point_at_block_storage(void* data) {
  const BlockStateSpec s = block_state_spec(format_);
  block_storage_ = data;
  block_ = BlockMoment::view(data, kind_, bits_of(format_, kind_), n_, origin_, s.v_quantile);
}

void MomentBuffer::point_at_own_storage() {
  if (!owning_) return;
  f32_ = own_f32_.data();
  b16_ = own_b16_.data();
  if (is_block_state(format_)) point_at_block_storage(own_block_.data());
}

MomentBuffer& MomentBuffer::operator=(const MomentBuffer& o) {
  if (this == &o) return *this;
  format_ = o.format_;
  kind_ = o.kind_;
  n_ = o.n_;
  origin_ = o.origin_;
  own_f32_ = o.own_f32_;
  own_b16_ = o.own_b16_;
  own_block_ = o.own_block_;
  owning_ = o.owning_;
  f32_ = o.f32_;
  b16_ = o.b16_;
  block_ = o.block_;  // a view: of the other's storage until repointed below
  point_at_own_storage();
  return *this;
}

MomentBuffer& MomentBuffer::operator=(MomentBuffer&& o) noexcept {
  format_ = o.format_;
  kind_ = o.kind_;
  n_ = o.n_;
  origin_ = o.origin_;
  own_f32_ = std::move(o.own_f32_);
  own_b16_ = std::move(o.own_b16_);
  own_block_ = std::move(o.own_block_);
  owning_ = o.owning_;
  f32_ = o.f32_;
  b16_ = o.b16_;
  block_ = o.block_;
  point_at_own_storage();
  return *this;
}

void MomentBuffer::set_block_element_unsupported() {
  throw Error("MomentBuffer::set: a block-wise state is stored a block at a time (use store)");
}

void MomentBuffer::check_block_span(size_t begin, size_t n) const {
  const size_t local = begin - origin_;
  if (local % kStateBlock != 0 || (n % kStateBlock != 0 && local + n != n_))
    throw Error("MomentBuffer: elements [" + std::to_string(begin) + ", " + std::to_string(begin + n) +
                ") are not whole blocks of " + std::to_string(kStateBlock) + " (block-wise " + to_string(format_) +
                " state)");
}

float MomentBuffer::get(size_t i) const {
  if (format_ == StateFormat::Fp32) return f32_[i - origin_];
  if (format_ == StateFormat::Bf16) return bf16_decode(b16_[i - origin_]);
  float block[kStateBlock];
  const size_t b = (i - origin_) / kStateBlock;
  block_.decode_block(b, block);
  return block[(i - origin_) % kStateBlock];
}

void MomentBuffer::store(size_t begin, size_t n, const float* src, const RandomKey& key) {
  if (format_ == StateFormat::Fp32) {
    std::copy_n(src, n, f32_ + (begin - origin_));
    return;
  }
  if (is_block_state(format_)) {
    check_block_span(begin, n);
    const size_t first = (begin - origin_) / kStateBlock;
    for (size_t done = 0; done < n; done += kStateBlock)
      (void)block_.encode_block(first + done / kStateBlock, src + done, key, Rounding::SR);
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
  if (is_block_state(format_)) {
    check_block_span(begin, n);
    const size_t first = (begin - origin_) / kStateBlock;
    for (size_t done = 0; done < n; done += kStateBlock) block_.decode_block(first + done / kStateBlock, dst + done);
    return;
  }
  // Through a local pointer: a store to dst could otherwise alias the member b16_ itself, which
  // would make the compiler reload it every element and keep the loop from vectorizing.
  const uint16_t* __restrict src = b16_ + (begin - origin_);
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_decode(src[i]);
}

}  // namespace eco

#include "optim/state_block.h"

#include <algorithm>

#include "core/error.h"

namespace eco {

const char* to_string(BlockStateFormat f) {
  switch (f) {
    case BlockStateFormat::Int8: return "int8";
    case BlockStateFormat::Solo4: return "solo4";
    case BlockStateFormat::Solo3: return "solo3";
    case BlockStateFormat::Solo2: return "solo2";
    case BlockStateFormat::M8V4: return "m8v4";
  }
  return "?";
}

BlockStateFormat parse_block_state_format(const std::string& name) {
  for (BlockStateFormat f : {BlockStateFormat::Int8, BlockStateFormat::Solo4, BlockStateFormat::Solo3,
                             BlockStateFormat::Solo2, BlockStateFormat::M8V4})
    if (name == to_string(f)) return f;
  throw ConfigError("unknown block-wise state format \"" + name + "\"; use one of int8, solo4, solo3, solo2, m8v4");
}

BlockStateSpec block_state_spec(BlockStateFormat f) {
  switch (f) {
    case BlockStateFormat::Int8: return {8, 8, 0.0f, solo_default_beta1(8)};
    case BlockStateFormat::Solo4: return {4, 4, 0.1f, solo_default_beta1(4)};
    case BlockStateFormat::Solo3: return {3, 3, 0.1f, solo_default_beta1(3)};
    case BlockStateFormat::M8V4: return {8, 4, 0.1f, solo_default_beta1(8)};
    case BlockStateFormat::Solo2: break;
  }
  return {2, 2, 0.1f, solo_default_beta1(2)};
}

namespace {
size_t blocks_of(size_t n) { return (n + kStateBlock - 1) / kStateBlock; }

void check_bits(MomentKind kind, int bits) {
  const bool ok = bits == 2 || bits == 3 || bits == 4 || bits == 8;
  if (!ok) throw Error(std::string("block-wise ") + (kind == MomentKind::Signed ? "m" : "v") +
                       " supports 2, 3, 4 or 8 bits, not " + std::to_string(bits));
}

// The codes are padded to whole floats so the block parameters after them are aligned; a tensor of
// a multiple of 32 elements has no padding.
size_t padded_code_bytes(size_t n, int bits) { return (state_code_bytes(n, bits) + 3) / 4 * 4; }
}  // namespace

size_t m_state_bytes(int bits, size_t n) { return padded_code_bytes(n, bits) + blocks_of(n) * sizeof(float); }
size_t v_state_bytes(int bits, size_t n) { return padded_code_bytes(n, bits) + blocks_of(n) * 2 * sizeof(float); }

size_t block_state_bytes(BlockStateFormat f, size_t n) {
  const BlockStateSpec s = block_state_spec(f);
  return m_state_bytes(s.m_bits, n) + v_state_bytes(s.v_bits, n);
}

double block_state_bytes_per_param(BlockStateFormat f) {
  return static_cast<double>(block_state_bytes(f, kStateBlock)) / kStateBlock;
}

float m_block_scale_of(const float* x, int count, int bits) {
  float a = 0.0f;
  for (int i = 0; i < count; ++i) a = signed_absmax_combine(a, x[i]);
  return m_block_scale(a, bits);
}

LogBlock v_block_params_of(const float* x, int count, int bits, float quantile) {
  float pos[kStateBlock];
  int np = 0;
  float max = 0.0f;
  for (int i = 0; i < count; ++i) {
    const float v = x[i];
    if (v > 0.0f && is_finite_bits(v)) {
      pos[np++] = v;
      max = std::max(max, v);
    }
  }
  if (np == 0) return LogBlock{};
  // Only the order statistics around p·(np−1) matter: partial selection instead of a full sort.
  const int lo = quantile_low_index(np, quantile);
  std::nth_element(pos, pos + lo, pos + np);
  if (lo + 1 < np) std::nth_element(pos + lo + 1, pos + lo + 1, pos + np);  // the next one up
  return v_block_params(max, quantile_sorted(pos, np, quantile), bits);
}

BlockMoment::BlockMoment(MomentKind kind, int bits, size_t n, size_t origin, float v_quantile)
    : kind_(kind), bits_(bits), n_(n), origin_(origin), quantile_(v_quantile) {
  check_bits(kind, bits);
  if (origin % kStateBlock != 0)
    throw Error("block-wise optimizer states: a part must start on a block boundary (element " +
                std::to_string(origin) + " is not a multiple of " + std::to_string(kStateBlock) +
                "); align the shard to 128 elements");
  if (!(v_quantile >= 0.0f && v_quantile <= 1.0f))
    throw Error("block-wise v: the quantile must lie in [0, 1]");
  // All bytes 0 decode to 0 for either kind: codes 0 with block parameters 0 (m's zero code is 0
  // only for INT8, but the dynamic map times a zero scale is 0 as well; v with d = 0 is 0).
  own_.assign(bytes(), 0);
  point_at(own_.data());
}

BlockMoment BlockMoment::view(void* storage, MomentKind kind, int bits, size_t n, size_t origin, float v_quantile) {
  BlockMoment b(kind, bits, 0, origin, v_quantile);
  b.n_ = n;
  b.own_.clear();
  b.point_at(static_cast<uint8_t*>(storage));
  return b;
}

void BlockMoment::point_at(uint8_t* storage) {
  codes_ = storage;
  scale_ = reinterpret_cast<float*>(storage + padded_code_bytes(n_, bits_));
  alpha_ = kind_ == MomentKind::Log ? scale_ + blocks_of(n_) : nullptr;
}

BlockMoment::BlockMoment(const BlockMoment& o) { *this = o; }

BlockMoment& BlockMoment::operator=(const BlockMoment& o) {
  if (this == &o) return *this;
  kind_ = o.kind_;
  bits_ = o.bits_;
  n_ = o.n_;
  origin_ = o.origin_;
  quantile_ = o.quantile_;
  own_ = o.own_;
  point_at(own_.empty() ? o.codes_ : own_.data());
  return *this;
}

size_t BlockMoment::blocks() const { return blocks_of(n_); }

std::vector<uint8_t> BlockMoment::codes() const { return std::vector<uint8_t>(codes_, codes_ + padded_code_bytes(n_, bits_)); }

size_t BlockMoment::block_size(size_t b) const { return std::min<size_t>(kStateBlock, n_ - b * kStateBlock); }

size_t BlockMoment::bytes() const {
  return kind_ == MomentKind::Signed ? m_state_bytes(bits_, n_) : v_state_bytes(bits_, n_);
}

size_t BlockMoment::encode_block(size_t b, const float* x, const RandomKey& key, Rounding rounding) {
  const int count = static_cast<int>(block_size(b));
  const size_t first = b * kStateBlock;            // index in this buffer
  const uint64_t tensor_first = origin_ + first;   // index in the tensor: keys the random bits
  uint8_t* codes = codes_ + first * bits_ / 8;  // a block starts on a byte boundary
  size_t nonfinite = 0;
  for (int i = 0; i < count; ++i) nonfinite += is_finite_bits(x[i]) ? 0 : 1;

  // The random words of the block, one Philox call per four elements (the block start is a
  // multiple of 4, so these equal random_bits(key, tensor_first + i)).
  uint32_t r[kStateBlock];
  if (rounding == Rounding::SR) {
    for (int i = 0; i < count; i += 4) {
      const Philox4x32 w = random_words4(key, (tensor_first + static_cast<uint64_t>(i)) >> 2);
      for (int lane = 0; lane < 4 && i + lane < count; ++lane) r[i + lane] = w.v[lane];
    }
  }

  if (kind_ == MomentKind::Signed) {
    const float scale = m_block_scale_of(x, count, bits_);
    scale_[b] = scale;
    for (int i = 0; i < count; ++i) {
      const uint32_t c = rounding == Rounding::SR ? m_encode_sr(x[i], scale, bits_, r[i])
                                                  : m_encode_rtn(x[i], scale, bits_);
      state_code_set(codes, static_cast<uint64_t>(i), bits_, c);
    }
  } else {
    const LogBlock lb = v_block_params_of(x, count, bits_, quantile_);
    scale_[b] = lb.d;
    alpha_[b] = lb.alpha;
    for (int i = 0; i < count; ++i) {
      const uint32_t c = rounding == Rounding::SR ? v_encode_sr(x[i], lb, bits_, r[i])
                                                  : v_encode_rtn(x[i], lb, bits_);
      state_code_set(codes, static_cast<uint64_t>(i), bits_, c);
    }
  }
  return nonfinite;
}

void BlockMoment::decode_block(size_t b, float* out) const {
  const int count = static_cast<int>(block_size(b));
  const size_t first = b * kStateBlock;
  const uint8_t* codes = codes_ + first * bits_ / 8;
  if (kind_ == MomentKind::Signed) {
    const float scale = scale_[b];
    for (int i = 0; i < count; ++i) out[i] = m_decode(state_code_get(codes, static_cast<uint64_t>(i), bits_), scale, bits_);
  } else {
    const LogBlock lb{scale_[b], alpha_[b]};
    for (int i = 0; i < count; ++i) out[i] = v_decode(state_code_get(codes, static_cast<uint64_t>(i), bits_), lb);
  }
}

size_t BlockMoment::encode(const float* x, const RandomKey& key, Rounding rounding) {
  size_t nonfinite = 0;
  const size_t nb = blocks();
#pragma omp parallel for schedule(static) reduction(+ : nonfinite)
  for (size_t b = 0; b < nb; ++b) nonfinite += encode_block(b, x + b * kStateBlock, key, rounding);
  return nonfinite;
}

void BlockMoment::decode(float* out) const {
  const size_t nb = blocks();
#pragma omp parallel for schedule(static)
  for (size_t b = 0; b < nb; ++b) decode_block(b, out + b * kStateBlock);
}

}  // namespace eco

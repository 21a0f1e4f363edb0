#pragma once
// Block-wise low-bit optimizer states on the host: a whole block or a whole tensor's m or v encoded
// from / decoded to fp32 with the per-element codecs of optim/state_codec.h, and the exact memory of
// every format (for the memory report and planner).
//
// Formats (config optim.state_format):
//   int8    m: linear INT8, absmax scale per block;  v: 8-bit log quantizer, quantile p = 0 (the
//           block's smallest positive value, floored at max·2^-64: 255 levels are enough to span it)
//   soloB   m: B-bit signed dynamic map, signed absmax scale;  v: B-bit SOLO log quantizer, p = 0.1
//           (B = 4, 3, 2; the names give both widths, SOLO's "4/2" is the spec {4, 2})
// A block is kStateBlock = 128 consecutive elements of the tensor (the last one may be shorter).
// Per block m keeps one fp32 scale, v two fp32 (max d and base α).
//
// Random bits: element i of the tensor (its flat index in the WHOLE tensor, whatever part this
// buffer holds) draws random_bits(key, i), exactly as MomentBuffer's bf16 SR stores do; the caller
// gives m and v different keys (different stream ids, as the weight optimizer's kMStream/kVStream).
// So the codes do not depend on how the work is split into blocks, threads or shards.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/philox.h"
#include "optim/state_codec.h"
#include "quant/quant_format.h"

namespace eco {

// M8V4: an 8-bit (INT8) m with SOLO's 4-bit v: what ECO needs (its error survives in an 8-bit m,
// docs/lowbit.md) at about 1.6 B/param of states.
enum class BlockStateFormat : uint8_t { Int8, Solo4, Solo3, Solo2, M8V4 };

const char* to_string(BlockStateFormat f);                       // "int8", "solo4", "solo3", "solo2", "m8v4"
BlockStateFormat parse_block_state_format(const std::string& name);  // throws ConfigError

struct BlockStateSpec {
  int m_bits;          // 8 (linear INT8) or 4, 3, 2 (signed dynamic map)
  int v_bits;          // 8, 4, 3 or 2 (log quantizer)
  float v_quantile;    // p of the log quantizer's base
  float default_beta1; // solo_default_beta1(m_bits)
};
BlockStateSpec block_state_spec(BlockStateFormat f);

// Exact bytes of one moment of n elements: packed codes (padded to whole floats) + fp32 block
// parameters (m: 1 per block, v: 2 per block). Blocks of the tensor are counted as ceil(n/128).
size_t m_state_bytes(int bits, size_t n);
size_t v_state_bytes(int bits, size_t n);
size_t block_state_bytes(BlockStateFormat f, size_t n);  // m + v
// Bytes per parameter for a tensor whose size is a multiple of 128 (the planner's per-param rate):
// int8 2.09375, solo4 1.09375, solo3 0.84375, solo2 0.59375.
double block_state_bytes_per_param(BlockStateFormat f);

enum class MomentKind : uint8_t { Signed, Log };  // m (signed map / INT8), v (log quantizer)

// Block parameters of one block (count ≤ kStateBlock values), over its finite values.
float m_block_scale_of(const float* x, int count, int bits);
LogBlock v_block_params_of(const float* x, int count, int bits, float quantile);

// One moment (m or v) of one tensor, or of the part of it starting at element `origin` (a ZeRO
// shard), stored block-wise. origin must be a multiple of kStateBlock so the blocks are the tensor's.
class BlockMoment {
 public:
  BlockMoment() = default;
  BlockMoment(MomentKind kind, int bits, size_t n, size_t origin = 0, float v_quantile = 0.1f);
  // A view over bytes() bytes of storage owned elsewhere (the CPU backend's optimizer buffers),
  // laid out as the owning form: packed codes (padded to whole floats), then the block scales (m)
  // or d and α per block (v). Zeroed storage decodes to zeros. Copies of a view stay views.
  static BlockMoment view(void* storage, MomentKind kind, int bits, size_t n, size_t origin = 0,
                          float v_quantile = 0.1f);
  BlockMoment(const BlockMoment& o);
  BlockMoment& operator=(const BlockMoment& o);

  // Encodes x[0 .. n−1] (tensor elements origin .. origin+n−1). Rounding::SR draws random_bits(key,
  // tensor index); RTN ignores the key (v: nearest log index). Returns how many inputs were not
  // finite (state_codec.h says what they become).
  size_t encode(const float* x, const RandomKey& key, Rounding rounding);
  void decode(float* out) const;
  // Block b alone (elements b·128 .. of this buffer): x / out hold block_size(b) values.
  size_t encode_block(size_t b, const float* x, const RandomKey& key, Rounding rounding);
  void decode_block(size_t b, float* out) const;

  size_t size() const { return n_; }
  size_t origin() const { return origin_; }
  int bits() const { return bits_; }
  MomentKind kind() const { return kind_; }
  size_t blocks() const;
  size_t block_size(size_t b) const;
  size_t bytes() const;  // codes + block parameters, = m_state_bytes / v_state_bytes

  uint32_t code(size_t i) const { return state_code_get(codes_, i, bits_); }
  float scale(size_t b) const { return scale_[b]; }  // m: the block scale; v: d
  LogBlock log_block(size_t b) const { return LogBlock{scale_[b], alpha_[b]}; }
  std::vector<uint8_t> codes() const;  // the packed codes (with their padding)

 private:
  MomentKind kind_ = MomentKind::Signed;
  int bits_ = 8;
  size_t n_ = 0;
  size_t origin_ = 0;
  float quantile_ = 0.1f;
  void point_at(uint8_t* storage);
  std::vector<uint8_t> own_;  // the storage of an owning moment (empty for a view)
  uint8_t* codes_ = nullptr;
  float* scale_ = nullptr;  // per block
  float* alpha_ = nullptr;  // per block, v only
};

}  // namespace eco

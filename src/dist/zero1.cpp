#include "dist/zero1.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace eco {

size_t shard_align_rows(bool quantized, ScaleGranularity g, size_t rows) {
  if (!quantized) return 1;
  switch (g) {
    case ScaleGranularity::PerRow: return 1;
    case ScaleGranularity::Block128: return kScaleBlock;
    case ScaleGranularity::PerTensor: return rows > 0 ? rows : 1;
  }
  return rows;
}

std::vector<size_t> zero1_partition(const std::vector<ShardTensor>& tensors, int world) {
  if (world < 1) throw std::invalid_argument("zero1_partition: world " + std::to_string(world));
  std::vector<ShardTensor> t;
  for (const ShardTensor& s : tensors)
    if (s.rows * s.cols > 0) t.push_back(s);
  std::sort(t.begin(), t.end(), [](const ShardTensor& a, const ShardTensor& b) { return a.offset < b.offset; });
  size_t total = 0;
  for (const ShardTensor& s : t) {
    if (s.offset != total)
      throw std::invalid_argument("zero1_partition: the tensors do not tile the parameter space (a tensor at " +
                                  std::to_string(s.offset) + ", expected " + std::to_string(total) + ")");
    if (s.align_rows == 0) throw std::invalid_argument("zero1_partition: align_rows 0");
    total += s.rows * s.cols;
  }
  std::vector<size_t> b(static_cast<size_t>(world) + 1, 0);
  b[static_cast<size_t>(world)] = total;
  for (int k = 1; k < world; ++k) {
    const size_t target = static_cast<size_t>(
        (static_cast<unsigned __int128>(total) * static_cast<unsigned>(k) + static_cast<unsigned>(world) / 2) /
        static_cast<unsigned>(world));
    size_t cut = total;
    if (target < total) {
      // The tensor holding `target`, then the allowed cuts on either side of it.
      const auto it = std::upper_bound(t.begin(), t.end(), target,
                                       [](size_t x, const ShardTensor& s) { return x < s.offset; }) - 1;
      const size_t unit = std::min(it->align_rows, it->rows) * it->cols, end = it->offset + it->rows * it->cols;
      const size_t lo = it->offset + (target - it->offset) / unit * unit, hi = std::min(lo + unit, end);
      cut = target - lo <= hi - target ? lo : hi;
    }
    b[static_cast<size_t>(k)] = std::max(b[static_cast<size_t>(k) - 1], cut);
  }
  return b;
}

Zero1::Zero1(Communicator& comm, Ops& ops, bool host_buffers, std::vector<size_t> bounds, size_t stage_bytes)
    : comm_(comm), ops_(ops), host_buffers_(host_buffers), bounds_(std::move(bounds)), stage_bytes_(stage_bytes) {
  if (bounds_.size() != static_cast<size_t>(comm_.world()) + 1)
    throw std::invalid_argument("Zero1: " + std::to_string(bounds_.size()) + " bounds for world " +
                                std::to_string(comm_.world()));
  if (stage_bytes_ < sizeof(float)) throw std::invalid_argument("Zero1: stage_bytes must hold a float");
}

void Zero1::reduce_scatter(float* grads) {
  const int W = comm_.world();
  if (W == 1) return;
  std::vector<size_t> counts(static_cast<size_t>(W));
  for (int r = 0; r < W; ++r) counts[r] = bounds_[r + 1] - bounds_[r];
  if (host_buffers_) {
    comm_.reduce_scatter_sum_v(grads, grads + own_begin(), counts);
    return;
  }
  // Staged: round k moves floats [k·C, (k+1)·C) of every rank's slice (every rank runs as many rounds).
  const size_t C = stage_bytes_ / sizeof(float);
  const size_t longest = *std::max_element(counts.begin(), counts.end());
  for (size_t k0 = 0; k0 < longest; k0 += C) {
    std::vector<size_t> cnt(static_cast<size_t>(W));
    size_t sum = 0;
    for (int r = 0; r < W; ++r) {
      cnt[r] = counts[r] > k0 ? std::min(C, counts[r] - k0) : 0;
      sum += cnt[r];
    }
    stage_.resize(sum * sizeof(float));
    stage_out_.resize(std::max<size_t>(cnt[comm_.rank()], 1) * sizeof(float));
    auto* in = reinterpret_cast<float*>(stage_.data());
    auto* out = reinterpret_cast<float*>(stage_out_.data());
    size_t at = 0;
    for (int r = 0; r < W; ++r) {
      if (cnt[r]) ops_.copy_to_host(in + at, grads + bounds_[r] + k0, cnt[r] * sizeof(float));
      at += cnt[r];
    }
    comm_.reduce_scatter_sum_v(in, out, cnt);
    if (cnt[comm_.rank()]) ops_.copy_from_host(grads + own_begin() + k0, out, cnt[comm_.rank()] * sizeof(float));
  }
}

void Zero1::all_gather(const std::vector<GatherRegion>& regions) {
  if (comm_.world() == 1) return;
  for (const GatherRegion& g : regions) gather_region(g);
}

void Zero1::gather_region(const GatherRegion& g) {
  const int W = comm_.world(), me = comm_.rank();
  if (g.bytes.size() != static_cast<size_t>(W))
    throw std::invalid_argument(std::string("Zero1: region ") + g.what + " has a wrong number of blocks");
  auto* base = static_cast<unsigned char*>(g.base);
  std::vector<size_t> at(static_cast<size_t>(W) + 1, 0);
  for (int r = 0; r < W; ++r) at[r + 1] = at[r] + g.bytes[r];
  if (at[W] == 0) return;
  if (host_buffers_) {
    comm_.all_gather_v(base + at[me], base, g.bytes);
    return;
  }
  const size_t C = stage_bytes_;
  const size_t longest = *std::max_element(g.bytes.begin(), g.bytes.end());
  for (size_t k0 = 0; k0 < longest; k0 += C) {
    std::vector<size_t> cnt(static_cast<size_t>(W)), pos(static_cast<size_t>(W));
    size_t sum = 0;
    for (int r = 0; r < W; ++r) {
      cnt[r] = g.bytes[r] > k0 ? std::min(C, g.bytes[r] - k0) : 0;
      pos[r] = sum;
      sum += cnt[r];
    }
    stage_.resize(std::max<size_t>(sum, 1));
    if (cnt[me]) ops_.copy_to_host(stage_.data() + pos[me], base + at[me] + k0, cnt[me]);
    comm_.all_gather_v(stage_.data() + pos[me], stage_.data(), cnt);
    for (int r = 0; r < W; ++r)
      if (r != me && cnt[r]) ops_.copy_from_host(base + at[r] + k0, stage_.data() + pos[r], cnt[r]);
  }
}

}  // namespace eco

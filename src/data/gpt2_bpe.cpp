#include "data/gpt2_bpe.h"

#include <functional>
#include <limits>
#include <queue>
#include <tuple>

#include "core/error.h"

namespace eco {
namespace {

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();

uint32_t rank_of(const TokenRanks& ranks, std::string_view bytes) {
  const auto it = ranks.find(bytes);
  return it == ranks.end() ? kNoRank : it->second;
}

// A candidate merge of the part starting at `start` with its right neighbour, which together span
// [start, end). Ordered by (rank, start): the lowest rank first, the leftmost among equal ranks,
// which is exactly the pair a left-to-right scan for the minimum would pick.
struct Candidate {
  uint32_t rank;
  uint32_t start;
  uint32_t end;
  bool operator>(const Candidate& o) const { return std::tie(rank, start) > std::tie(o.rank, o.start); }
};

}  // namespace

void gpt2_bpe_merge(std::string_view piece, const TokenRanks& ranks, std::vector<uint32_t>& out) {
  const auto n = static_cast<uint32_t>(piece.size());
  if (n == 0) return;
  // Parts as a linked list over their start offsets: next[i] is where the part starting at i ends.
  // A part's start never moves and parts only grow, so (start, end) identifies a pair for good: a
  // heap entry is current exactly when its part is alive and still ends where the entry's right
  // neighbour began, and that neighbour still ends at `end`.
  std::vector<uint32_t> next(n), prev(n);
  std::vector<bool> alive(n, true);
  for (uint32_t i = 0; i < n; ++i) {
    next[i] = i + 1;
    prev[i] = i == 0 ? 0 : i - 1;
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push_pair = [&](uint32_t start) {
    if (next[start] >= n) return;
    const uint32_t end = next[next[start]];
    const uint32_t r = rank_of(ranks, piece.substr(start, end - start));
    if (r != kNoRank) heap.push({r, start, end});
  };
  for (uint32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (!alive[c.start] || next[c.start] >= n || next[next[c.start]] != c.end) continue;  // stale
    const uint32_t right = next[c.start];
    alive[right] = false;
    next[c.start] = c.end;
    if (c.end < n) prev[c.end] = c.start;
    push_pair(c.start);
    if (c.start > 0) push_pair(prev[c.start]);
  }
  for (uint32_t i = 0; i < n; i = next[i]) {
    const uint32_t id = rank_of(ranks, piece.substr(i, next[i] - i));
    if (id == kNoRank) throw DataError("GPT-2 vocabulary lacks a single byte; the tokenizer files are damaged");
    out.push_back(id);
  }
}

}  // namespace eco

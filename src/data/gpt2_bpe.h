#pragma once
// The BPE step of GPT-2 tokenization, with tiktoken's rule: a piece starts as single bytes;
// repeatedly the adjacent pair whose concatenated bytes form the token of lowest rank is merged
// (the leftmost such pair on ties) until no adjacent pair forms a token.
#include <cstdint>
#include <string_view>
#include <vector>

#include "data/gpt2_vocab.h"

namespace eco {

// Appends the ids of `piece` to `out`. O(n log n) in the piece length (a heap of candidate pairs),
// so long runs without spaces (letters, digits) do not stall; same result as the quadratic scan.
// DataError if a byte of the piece is not in `ranks` (damaged vocabulary).
void gpt2_bpe_merge(std::string_view piece, const TokenRanks& ranks, std::vector<uint32_t>& out);

}  // namespace eco

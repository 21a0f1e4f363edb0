#pragma once
// Agreement between ranks on what happened locally. Work that can fail on some ranks only (rank 0
// writing the run directory, a file one node cannot read) must not leave the other ranks waiting in
// the next collective until the timeout: it runs through run_collectively, and the whole job ends
// with one exit code and a message that names the rank that failed.
#include <cstdint>
#include <functional>
#include <string>

#include "core/error.h"
#include "dist/communicator.h"

namespace eco {

// What a rank throws when another rank failed: the failed rank's exit code, a message naming it.
class PeerRankError : public Error {
 public:
  PeerRankError(const std::string& msg, int exit_code) : Error(msg, exit_code) {}
};

// Runs fn, then every rank learns (one all-reduce of world doubles) on which ranks it threw. When it
// threw anywhere, every rank throws: a rank where it failed rethrows its own exception (printed with
// that rank's tag); the others throw PeerRankError carrying the exit code of the lowest failed rank
// and naming it and `what` ("writing checkpoint 200"). fn must not itself use the communicator.
void run_collectively(Communicator& comm, const std::string& what, const std::function<void()>& fn);

// The first non-zero `value` in rank order, or 0: a stop signal that reached one rank becomes every
// rank's, so all stop at the same step and exit with the same code.
int first_nonzero_over_ranks(Communicator& comm, int value);

// SystemError on every rank when `value` (|value| < 2^53) is not the same on all ranks; the message
// names `what` and each rank's value, then `hint`.
void require_same_on_all_ranks(Communicator& comm, int64_t value, const std::string& what, const std::string& hint);

}  // namespace eco

#include "dist/rank_agreement.h"

#include <exception>
#include <filesystem>
#include <new>
#include <vector>

namespace eco {
namespace {

// One value per rank, seen by every rank: each rank fills its own slot, the sum fills the rest.
// Doubles hold every int64 below 2^53 exactly, and a sum with zeros is exact.
std::vector<double> gather_values(Communicator& comm, double mine) {
  std::vector<double> slots(static_cast<size_t>(comm.world()), 0.0);
  slots[static_cast<size_t>(comm.rank())] = mine;
  comm.all_reduce_sum(slots.data(), slots.size());
  return slots;
}

// The exit code eco_train_main gives an exception.
int exit_code_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return err.exit_code() != 0 ? err.exit_code() : 1;
  } catch (const std::filesystem::filesystem_error&) {
    return 6;
  } catch (const std::bad_alloc&) {
    return 6;
  } catch (...) {
    return 1;
  }
}

}  // namespace

void run_collectively(Communicator& comm, const std::string& what, const std::function<void()>& fn) {
  std::exception_ptr failure;
  try {
    fn();
  } catch (...) {
    failure = std::current_exception();
  }
  if (comm.world() == 1) {
    if (failure) std::rethrow_exception(failure);
    return;
  }
  const std::vector<double> codes = gather_values(comm, failure ? exit_code_of(failure) : 0);
  if (failure) std::rethrow_exception(failure);
  for (size_t r = 0; r < codes.size(); ++r)
    if (codes[r] != 0)
      throw PeerRankError("rank " + std::to_string(r) + " of " + std::to_string(comm.world()) + " failed while " + what +
                              " (see that rank's error message); this rank stops too",
                          static_cast<int>(codes[r]));
}

int first_nonzero_over_ranks(Communicator& comm, int value) {
  if (comm.world() == 1) return value;
  for (double v : gather_values(comm, value))
    if (v != 0) return static_cast<int>(v);
  return 0;
}

void require_same_on_all_ranks(Communicator& comm, int64_t value, const std::string& what, const std::string& hint) {
  if (comm.world() == 1) return;
  const std::vector<double> values = gather_values(comm, static_cast<double>(value));
  bool same = true;
  for (double v : values) same = same && v == values[0];
  if (same) return;
  std::string list;
  for (size_t r = 0; r < values.size(); ++r)
    list += (r ? ", rank " : "rank ") + std::to_string(r) + ": " + std::to_string(static_cast<int64_t>(values[r]));
  throw SystemError(what + " differs between ranks (" + list + "); " + hint);
}

}  // namespace eco

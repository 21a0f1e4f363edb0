#pragma once
// Helpers of the tests that feed bad input: the message of the DataError a call throws, substring
// checks, and a guard that turns a hang into a prompt failure.
#include <unistd.h>

#include <functional>
#include <string>

#include "core/error.h"

namespace eco_test {

// The DataError's message, or "" when the call does not throw DataError.
inline std::string data_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const eco::DataError& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// SIGALRM's default action ends the test program: a hang fails at once instead of at ctest's timeout.
struct HangGuard {
  explicit HangGuard(unsigned seconds) { ::alarm(seconds); }
  ~HangGuard() { ::alarm(0); }
};

}  // namespace eco_test

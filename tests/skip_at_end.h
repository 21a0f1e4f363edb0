#pragma once
// For test programs whose cases partly need an optional tool (mpirun, a GPU): a case that cannot run
// sets g_skip_reason and returns, and the program reports "skipped" (ctest exit 4) only once every
// case has run, and only if none failed — an early skip() would hide the results of the cases that
// can run everywhere. The including file defines CATCH_CONFIG_EXTERNAL_INTERFACES before its first
// Catch include.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "test_util.h"

namespace eco_test {

inline std::string g_skip_reason;

struct SkipAtEnd : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunEnded(const Catch::TestRunStats& stats) override {
    if (!g_skip_reason.empty() && stats.totals.assertions.failed == 0) skip(g_skip_reason);
  }
};
CATCH_REGISTER_LISTENER(SkipAtEnd)

// Whether `exe` is an executable name found in one of PATH's directories.
inline bool on_path(const std::string& exe) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  const std::string p = path;
  for (size_t start = 0; start <= p.size();) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    if (end > start && std::filesystem::exists(std::filesystem::path(p.substr(start, end - start)) / exe)) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace eco_test

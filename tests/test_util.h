#pragma once
// Helpers shared by tests: paths to the source tree and a ctest "skipped" exit.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace eco_test {
// ctest treats exit code 4 as "skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt).
[[noreturn]] inline void skip(const std::string& reason) {
  std::printf("SKIPPED: %s\n", reason.c_str());
  std::fflush(stdout);
  std::_Exit(4);
}
inline std::filesystem::path source_dir() { return ECO_SOURCE_DIR; }
// A fresh empty scratch directory under the build tree.
inline std::filesystem::path scratch_dir(const std::string& name) {
  auto p = std::filesystem::path(ECO_BINARY_DIR) / "test_scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}
}  // namespace eco_test

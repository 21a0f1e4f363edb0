#pragma once
// Typed errors. Each carries a message that tells the user what to change; the CLI catches them,
// prints the message once and exits with the error's exit code.
#include <stdexcept>
#include <string>

namespace eco {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, int exit_code = 1)
      : std::runtime_error(msg), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Bad config key, type or value, or a bad command-line flag. Exit code 2, before any work.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& msg) : Error(msg, 2) {}
};

// Missing, short or corrupt token shard or text input.
class DataError : public Error {
 public:
  explicit DataError(const std::string& msg) : Error(msg, 3) {}
};

// Truncated, corrupt or incompatible checkpoint / model file.
class CheckpointError : public Error {
 public:
  explicit CheckpointError(const std::string& msg) : Error(msg, 4) {}
};

// Training went numerically wrong in a way the run cannot survive (e.g. repeated NaN steps).
class NumericsError : public Error {
 public:
  explicit NumericsError(const std::string& msg) : Error(msg, 5) {}
};

// Failure of the operating system: files that cannot be written, out of memory.
class SystemError : public Error {
 public:
  explicit SystemError(const std::string& msg) : Error(msg, 6) {}
};

}  // namespace eco

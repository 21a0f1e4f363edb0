#include "core/json_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace eco {
namespace {

struct TooDeep {};

}  // namespace

std::string json_error_text(const std::exception& e) {
  std::string what = e.what();
  if (what.rfind("[json.exception.", 0) == 0)
    if (const size_t tag = what.find("] "); tag != std::string::npos) what = what.substr(tag + 2);
  return what;
}

JsonParse parse_json(std::string_view text, bool allow_comments, int max_depth) {
  JsonParse r;
  // The parser itself is iterative; the callback sees each container's depth before its contents
  // are built, so a hostile document stops at max_depth instead of growing a tree too deep to copy.
  const nlohmann::json::parser_callback_t limit = [max_depth](int depth, nlohmann::json::parse_event_t event,
                                                              nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw TooDeep{};
    return true;
  };
  try {
    r.value = nlohmann::json::parse(text.begin(), text.end(), limit, /*allow_exceptions=*/true, allow_comments);
  } catch (const TooDeep&) {
    r.error = "nested more than " + std::to_string(max_depth) + " levels deep";
  } catch (const nlohmann::json::exception& e) {
    r.error = json_error_text(e);
  }
  if (!r.ok()) r.value = nlohmann::json();
  return r;
}

bool read_small_file(const std::filesystem::path& path, std::string& out, std::string& error, size_t max_bytes) {
  out.clear();
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  int fd;
  do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    error = errno == ENOENT ? "no such file" : std::strerror(errno);
    return false;
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    error = std::strerror(errno);
    return false;
  }
  if (S_ISDIR(st.st_mode)) {
    error = "it is a directory";
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = "not a regular file";
    return false;
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    error = "larger than " + std::to_string(max_bytes) + " bytes";
    return false;
  }
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = std::strerror(errno);
      return false;
    }
    if (n == 0) break;  // shrank while reading: keep what is there, the parser judges it
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return true;
}

}  // namespace eco

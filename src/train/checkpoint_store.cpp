#include "train/checkpoint_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "core/json_read.h"
#include "core/log.h"

namespace eco {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifestName = "manifest.json";
// CRC-32C of manifest.json's bytes: the manifest guards every blob, this guards the manifest.
constexpr const char* kManifestCrcName = "manifest.crc32c";
constexpr const char* kFormat = "eco_train-checkpoint-store";
constexpr int kVersion = 2;        // 2 = manifest checksummed; 1 (earlier builds) is still read
constexpr int kOldestVersion = 1;
constexpr size_t kMaxManifestBytes = size_t{64} << 20;
constexpr const char* kTmpPrefix = ".tmp_ckpt_";
constexpr size_t kChunk = size_t{4} << 20;  // streaming unit: big enough for full disk speed, small enough for cache

// Temp directories of writers alive in this process: prune must not delete them under a writer.
std::mutex g_active_mutex;
std::set<std::string> g_active_tmp_dirs;

// One spelling per directory, whatever form of RUN_DIR the caller passed ("runs/x", "./runs/x/").
std::string dir_key(const fs::path& dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(dir, ec);
  return ec ? fs::absolute(dir).lexically_normal().string() : p.string();
}

void set_active(const fs::path& dir, bool active) {
  const std::string key = dir_key(dir);
  std::lock_guard<std::mutex> lock(g_active_mutex);
  if (active) g_active_tmp_dirs.insert(key);
  else g_active_tmp_dirs.erase(key);
}

bool is_active(const fs::path& dir) {
  const std::string key = dir_key(dir);
  std::lock_guard<std::mutex> lock(g_active_mutex);
  return g_active_tmp_dirs.count(key) > 0;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// The step of a directory named ckpt_<digits>, or nullopt for any other name.
std::optional<int64_t> step_of_dir_name(const std::string& name) {
  const std::string prefix = "ckpt_";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  int64_t step = 0;
  const char* b = name.data() + prefix.size();
  const char* e = name.data() + name.size();
  if (!std::all_of(b, e, [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  auto [ptr, ec] = std::from_chars(b, e, step);
  if (ec != std::errc() || ptr != e) return std::nullopt;
  return step;
}

struct FoundCheckpoint {
  int64_t step;
  fs::path dir;
};

// Checkpoint directories of RUN_DIR, newest (highest step) first.
std::vector<FoundCheckpoint> list_checkpoints(const fs::path& run_dir) {
  std::vector<FoundCheckpoint> found;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return found;
  for (const fs::directory_entry& d : fs::directory_iterator(run_dir, ec)) {
    if (!d.is_directory(ec)) continue;
    if (auto step = step_of_dir_name(d.path().filename().string())) found.push_back({*step, d.path()});
  }
  if (ec) throw SystemError("cannot list " + run_dir.string() + ": " + ec.message());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  return found;
}

[[noreturn]] void corrupt(const fs::path& file, const std::string& problem) {
  throw CheckpointError(file.string() + ": " + problem);
}

// Reads `f` from `dir` (into dst when given, else into a scratch buffer), checking size and CRC.
void read_verified(const fs::path& dir, const CheckpointFile& f, void* dst) {
  const fs::path path = dir / f.name;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) corrupt(path, errno == ENOENT ? "missing" : std::string("cannot open: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) corrupt(path, std::string("cannot stat: ") + std::strerror(errno));
  const uint64_t on_disk = static_cast<uint64_t>(st.st_size);
  if (on_disk != f.bytes)
    corrupt(path, (on_disk < f.bytes ? "truncated: " : "wrong size: ") + std::to_string(on_disk) +
                      " bytes on disk, the manifest says " + std::to_string(f.bytes));
  std::vector<uint8_t> scratch;
  if (!dst) scratch.resize(static_cast<size_t>(std::min<uint64_t>(f.bytes, kChunk)));
  uint8_t* out = static_cast<uint8_t*>(dst);
  uint32_t crc = 0;
  uint64_t done = 0;
  while (done < f.bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(f.bytes - done, kChunk));
    uint8_t* buf = out ? out + done : scratch.data();
    size_t got = 0;
    while (got < want) {
      const ssize_t n = ::read(fd, buf + got, want - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) corrupt(path, std::string("read error: ") + std::strerror(errno));
      if (n == 0) corrupt(path, "truncated while reading at byte " + std::to_string(done + got));
      got += static_cast<size_t>(n);
    }
    crc = crc32c(buf, want, crc);
    done += want;
  }
  if (crc != f.crc32c)
    corrupt(path, "checksum mismatch (crc32c " + hex32(crc) + " on disk, " + hex32(f.crc32c) +
                      " in the manifest): the file is corrupt");
}

std::optional<uint32_t> parse_hex32(const std::string& text) {
  if (text.size() != 8 || !std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
    return std::nullopt;
  return static_cast<uint32_t>(std::strtoul(text.c_str(), nullptr, 16));
}

// The manifest's own checksum, when the checkpoint has one (version >= 2).
std::optional<uint32_t> read_manifest_crc(const fs::path& ckpt_dir) {
  const fs::path path = ckpt_dir / kManifestCrcName;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) return std::nullopt;
  std::string text, error;
  if (!read_small_file(path, text, error, 64)) corrupt(path, "cannot read: " + error);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  const std::optional<uint32_t> crc = parse_hex32(text);
  if (!crc) corrupt(path, "not an 8-digit hex checksum");
  return crc;
}

// Checks one manifest field's JSON type; the message names the field.
const nlohmann::json& field(const nlohmann::json& obj, const char* key, bool (nlohmann::json::*is_type)() const noexcept,
                            const char* type, const fs::path& path) {
  const auto it = obj.find(key);
  if (it == obj.end()) corrupt(path, std::string("malformed manifest: no \"") + key + "\"");
  if (!((*it).*is_type)()) corrupt(path, std::string("malformed manifest: \"") + key + "\" is not " + type);
  return *it;
}

// Parses and checks manifest.json (and its checksum); the blobs themselves are not read. Every way
// the manifest can be damaged is a CheckpointError, so a caller can fall back to an older checkpoint.
LoadedCheckpoint read_manifest(const fs::path& ckpt_dir) {
  const fs::path path = ckpt_dir / kManifestName;
  std::string text, error;
  if (!read_small_file(path, text, error, kMaxManifestBytes)) corrupt(path, error == "no such file" ? "missing" : "cannot read: " + error);
  const std::optional<uint32_t> want_crc = read_manifest_crc(ckpt_dir);
  if (want_crc && crc32c(text.data(), text.size()) != *want_crc)
    corrupt(path, "checksum mismatch (crc32c " + hex32(crc32c(text.data(), text.size())) + ", " + kManifestCrcName +
                      " says " + hex32(*want_crc) + "): the manifest is corrupt");
  const JsonParse parsed = parse_json(text);
  if (!parsed.ok()) corrupt(path, "not valid JSON (truncated or corrupt): " + parsed.error);
  const nlohmann::json& m = parsed.value;
  if (!m.is_object()) corrupt(path, "not valid JSON (truncated or corrupt): not an object");
  const auto str = &nlohmann::json::is_string;
  const auto integer = &nlohmann::json::is_number_integer;
  if (field(m, "format", str, "a string", path) != kFormat) corrupt(path, "not an eco_train checkpoint manifest");
  const nlohmann::json& version = field(m, "version", integer, "an integer", path);
  if (version < kOldestVersion || version > kVersion)
    corrupt(path, "manifest version " + version.dump() + ", this build reads versions " + std::to_string(kOldestVersion) +
                      " to " + std::to_string(kVersion));
  if (version >= 2 && !want_crc) corrupt(path, std::string(kManifestCrcName) + " is missing");
  LoadedCheckpoint ck;
  ck.dir = ckpt_dir;
  const nlohmann::json& step = field(m, "step", integer, "an integer", path);
  if (step < 0) corrupt(path, "malformed manifest: negative step " + step.dump());
  ck.step = step.get<int64_t>();
  for (const nlohmann::json& f : field(m, "files", &nlohmann::json::is_array, "an array", path)) {
    if (!f.is_object()) corrupt(path, "malformed manifest: a \"files\" entry is not an object");
    CheckpointFile cf;
    cf.name = field(f, "name", str, "a string", path).get<std::string>();
    if (cf.name.empty() || cf.name.find('/') != std::string::npos || cf.name[0] == '.' || cf.name == kManifestName ||
        cf.name == kManifestCrcName)
      corrupt(path, "bad file name \"" + cf.name + "\"");
    cf.bytes = field(f, "bytes", &nlohmann::json::is_number_unsigned, "a non-negative integer", path).get<uint64_t>();
    const std::string crc = field(f, "crc32c", str, "a string", path).get<std::string>();
    const std::optional<uint32_t> value = parse_hex32(crc);
    if (!value) corrupt(path, "bad crc32c \"" + crc + "\" for " + cf.name);
    cf.crc32c = *value;
    for (const CheckpointFile& other : ck.files)
      if (other.name == cf.name) corrupt(path, "file " + cf.name + " is listed twice");
    ck.files.push_back(cf);
  }
  ck.meta = field(m, "meta", &nlohmann::json::is_object, "an object", path);
  if (auto dir_step = step_of_dir_name(ckpt_dir.filename().string()); dir_step && *dir_step != ck.step)
    corrupt(path, "records step " + std::to_string(ck.step) + " but the directory is named for step " + std::to_string(*dir_step));
  return ck;
}

// Manifest readable and every blob present with its recorded size: what pruning counts as intact
// without reading every byte (loading still verifies every checksum).
bool looks_intact(const fs::path& ckpt_dir, nlohmann::json* meta) {
  try {
    LoadedCheckpoint ck = read_manifest(ckpt_dir);
    for (const CheckpointFile& f : ck.files) {
      std::error_code ec;
      const uintmax_t size = fs::file_size(ckpt_dir / f.name, ec);
      if (ec || size != f.bytes) return false;
    }
    if (meta) *meta = std::move(ck.meta);
    return true;
  } catch (const CheckpointError&) {
    return false;
  }
}

void remove_tree(const fs::path& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) spdlog::warn("could not delete {}: {}", dir.string(), ec.message());
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "ckpt_%08lld", static_cast<long long>(step));
  return buf;
}

// ---- writing ---------------------------------------------------------------------------------

CheckpointWriter::CheckpointWriter(fs::path run_dir, int64_t step) : run_dir_(std::move(run_dir)), step_(step) {
  if (step < 0) throw std::invalid_argument("CheckpointWriter: negative step " + std::to_string(step));
  std::error_code ec;
  fs::create_directories(run_dir_, ec);
  if (ec) throw SystemError("cannot create run directory " + run_dir_.string() + ": " + ec.message());
  char suffix[48];
  std::snprintf(suffix, sizeof suffix, "%08lld_%ld", static_cast<long long>(step), static_cast<long>(::getpid()));
  tmp_dir_ = run_dir_ / (std::string(kTmpPrefix) + suffix);
  fs::remove_all(tmp_dir_, ec);  // left by an earlier crashed process that had our pid
  fs::create_directory(tmp_dir_, ec);
  if (ec) throw SystemError("cannot create " + tmp_dir_.string() + ": " + ec.message());
  set_active(tmp_dir_, true);
}

CheckpointWriter::~CheckpointWriter() {
  if (committed_) return;
  set_active(tmp_dir_, false);
  std::error_code ec;
  fs::remove_all(tmp_dir_, ec);
}

void CheckpointWriter::add_blob(const std::string& name, const void* data, size_t bytes) {
  begin_blob(name);
  append(data, bytes);
  end_blob();
}

void CheckpointWriter::begin_blob(const std::string& name) {
  if (committed_) throw std::logic_error("CheckpointWriter::begin_blob after commit");
  if (open_) throw std::logic_error("CheckpointWriter::begin_blob while blob " + open_entry_.name + " is open");
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.' || name == kManifestName ||
      name == kManifestCrcName)
    throw std::invalid_argument("checkpoint blob name \"" + name + "\" must be a plain file name, not " + kManifestName +
                                " or " + kManifestCrcName);
  for (const CheckpointFile& f : files_)
    if (f.name == name) throw std::invalid_argument("checkpoint blob \"" + name + "\" added twice");
  open_ = std::make_unique<DurableFile>(tmp_dir_ / name);
  open_entry_ = {name, 0, 0};
}

void CheckpointWriter::append(const void* data, size_t bytes) {
  if (!open_) throw std::logic_error("CheckpointWriter::append without begin_blob");
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(bytes - done, kChunk);
    open_entry_.crc32c = crc32c(p + done, n, open_entry_.crc32c);
    open_->write(p + done, n);
    done += n;
  }
  open_entry_.bytes += bytes;
}

void CheckpointWriter::end_blob() {
  if (!open_) throw std::logic_error("CheckpointWriter::end_blob without begin_blob");
  open_->sync_and_close();
  open_.reset();
  files_.push_back(open_entry_);
}

void CheckpointWriter::set_meta(const nlohmann::json& meta) { meta_ = meta; }

fs::path CheckpointWriter::commit() {
  if (committed_) throw std::logic_error("CheckpointWriter::commit called twice");
  if (open_) throw std::logic_error("CheckpointWriter::commit while blob " + open_entry_.name + " is open");
  nlohmann::json files = nlohmann::json::array();
  for (const CheckpointFile& f : files_) files.push_back({{"name", f.name}, {"bytes", f.bytes}, {"crc32c", hex32(f.crc32c)}});
  const nlohmann::json manifest = {{"format", kFormat}, {"version", kVersion}, {"step", step_}, {"files", files}, {"meta", meta_}};
  const std::string text = manifest.dump(1) + "\n";
  DurableFile out(tmp_dir_ / kManifestName);
  out.write(text.data(), text.size());
  out.sync_and_close();
  const std::string crc = hex32(crc32c(text.data(), text.size())) + "\n";
  DurableFile crc_out(tmp_dir_ / kManifestCrcName);
  crc_out.write(crc.data(), crc.size());
  crc_out.sync_and_close();
  fsync_directory(tmp_dir_);

  const fs::path final_dir = run_dir_ / checkpoint_dir_name(step_);
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) {
    if (std::rename(tmp_dir_.c_str(), final_dir.c_str()) != 0)
      throw SystemError("cannot rename " + tmp_dir_.string() + " to " + final_dir.string() + ": " + std::strerror(errno));
  } else if (::renameat2(AT_FDCWD, tmp_dir_.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    // Swapped in one step: the complete new checkpoint is in place, the old one now sits in the temp
    // name, where a crash before the delete leaves it to be pruned.
    remove_tree(tmp_dir_);
  } else {
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
      throw SystemError("cannot replace " + final_dir.string() + ": " + std::strerror(errno));
    // No atomic exchange on this filesystem: move the old one aside first. A crash in between
    // loses this step's checkpoint (both copies are in temp names) but never yields a torn one.
    const fs::path aside = tmp_dir_.string() + "_old";
    if (std::rename(final_dir.c_str(), aside.c_str()) != 0)
      throw SystemError("cannot move " + final_dir.string() + " aside: " + std::strerror(errno));
    if (std::rename(tmp_dir_.c_str(), final_dir.c_str()) != 0)
      throw SystemError("cannot rename " + tmp_dir_.string() + " to " + final_dir.string() + ": " + std::strerror(errno));
    remove_tree(aside);
  }
  fsync_directory(run_dir_);
  set_active(tmp_dir_, false);
  committed_ = true;
  return final_dir;
}

// ---- reading ---------------------------------------------------------------------------------

const CheckpointFile& LoadedCheckpoint::entry(const std::string& name) const {
  for (const CheckpointFile& f : files)
    if (f.name == name) return f;
  std::string have;
  for (const CheckpointFile& f : files) have += (have.empty() ? "" : ", ") + f.name;
  throw CheckpointError((dir / name).string() + ": not in this checkpoint (it holds: " + have + ")");
}

bool LoadedCheckpoint::has_blob(const std::string& name) const {
  return std::any_of(files.begin(), files.end(), [&](const CheckpointFile& f) { return f.name == name; });
}

std::vector<uint8_t> LoadedCheckpoint::blob(const std::string& name) const {
  const CheckpointFile& f = entry(name);
  std::vector<uint8_t> out(static_cast<size_t>(f.bytes));
  read_verified(dir, f, out.data());
  return out;
}

void LoadedCheckpoint::read_blob(const std::string& name, void* dst, size_t expected_bytes) const {
  const CheckpointFile& f = entry(name);
  if (f.bytes != expected_bytes)
    throw CheckpointError((dir / name).string() + ": holds " + std::to_string(f.bytes) + " bytes, this run expects " +
                          std::to_string(expected_bytes) + " (was it written with a different model or optimizer config?)");
  read_verified(dir, f, dst);
}

LoadedCheckpoint::BlobReader::BlobReader(const fs::path& path, const CheckpointFile& entry) : path_(path), entry_(entry) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) corrupt(path_, errno == ENOENT ? "missing" : std::string("cannot open: ") + std::strerror(errno));
}

LoadedCheckpoint::BlobReader::~BlobReader() {
  if (fd_ >= 0) ::close(fd_);
}

void LoadedCheckpoint::BlobReader::read(void* dst, size_t bytes) {
  if (bytes > remaining())
    corrupt(path_, "holds " + std::to_string(entry_.bytes) + " bytes, fewer than this model and mode need");
  uint8_t* out = static_cast<uint8_t*>(dst);
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = ::read(fd_, out + got, bytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) corrupt(path_, std::string("read error: ") + std::strerror(errno));
    if (n == 0) corrupt(path_, "truncated while reading at byte " + std::to_string(done_ + got));
    got += static_cast<size_t>(n);
  }
  crc_ = crc32c(out, bytes, crc_);
  done_ += bytes;
}

void LoadedCheckpoint::BlobReader::finish() {
  if (done_ != entry_.bytes)
    corrupt(path_, "holds " + std::to_string(entry_.bytes) + " bytes, more than this model and mode need (" +
                       std::to_string(done_) + "); was it written with another optim.mode or model?");
  if (crc_ != entry_.crc32c)
    corrupt(path_, "checksum mismatch (crc32c " + hex32(crc_) + " read, " + hex32(entry_.crc32c) +
                       " in the manifest): the file changed or is corrupt");
}

std::unique_ptr<LoadedCheckpoint::BlobReader> LoadedCheckpoint::open_blob(const std::string& name) const {
  return std::make_unique<BlobReader>(dir / name, entry(name));
}

LoadedCheckpoint load_checkpoint(const fs::path& ckpt_dir) {
  std::error_code ec;
  if (!fs::is_directory(ckpt_dir, ec)) throw CheckpointError(ckpt_dir.string() + ": not a checkpoint directory");
  LoadedCheckpoint ck = read_manifest(ckpt_dir);
  for (const CheckpointFile& f : ck.files) read_verified(ckpt_dir, f, nullptr);
  return ck;
}

std::optional<LoadedCheckpoint> load_latest_checkpoint(const fs::path& run_dir, const CheckpointCheck& accept) {
  const std::vector<FoundCheckpoint> found = list_checkpoints(run_dir);
  if (found.empty()) return std::nullopt;
  std::string problems;
  for (const FoundCheckpoint& c : found) {
    try {
      LoadedCheckpoint ck = load_checkpoint(c.dir);
      if (accept) accept(ck);
      return ck;
    } catch (const CheckpointError& e) {
      spdlog::warn("skipping damaged checkpoint: {}", e.what());
      problems += (problems.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  throw CheckpointError("no valid checkpoint in " + run_dir.string() + " (" + std::to_string(found.size()) +
                        " damaged: " + problems + "); delete them or start without --resume");
}

std::vector<int64_t> checkpoint_steps(const fs::path& run_dir) {
  std::vector<int64_t> steps;
  for (const FoundCheckpoint& c : list_checkpoints(run_dir)) steps.push_back(c.step);
  return steps;
}

std::string delete_checkpoint(const fs::path& ckpt_dir) {
  // Rename first so a crash mid-delete never leaves a half-deleted ckpt_ directory to be tried; a
  // crash after the rename leaves a temp directory the next prune removes.
  const fs::path doomed = ckpt_dir.parent_path() / (std::string(kTmpPrefix) + "deleting_" + ckpt_dir.filename().string() +
                                                    "_" + std::to_string(::getpid()));
  if (std::rename(ckpt_dir.c_str(), doomed.c_str()) != 0) return std::strerror(errno);
  remove_tree(doomed);
  return "";
}

void prune_checkpoints(const fs::path& run_dir, int keep_last, const std::function<bool(const nlohmann::json&)>& also_keep) {
  if (keep_last < 1) throw std::invalid_argument("prune_checkpoints: keep_last must be >= 1, got " + std::to_string(keep_last));
  std::error_code exists_ec;
  if (!fs::is_directory(run_dir, exists_ec)) return;
  const std::vector<FoundCheckpoint> found = list_checkpoints(run_dir);
  // Newest first: the first keep_last intact ones are kept, and the newest intact one that
  // `also_keep` selects; damaged ones neither count nor are kept once older than the oldest kept.
  int intact_seen = 0;
  bool extra_found = !also_keep;
  std::vector<fs::path> doomed_dirs;
  for (const FoundCheckpoint& c : found) {
    nlohmann::json meta;
    const bool intact = looks_intact(c.dir, &meta);
    const bool wanted_extra = intact && !extra_found && also_keep(meta);
    if (wanted_extra) extra_found = true;
    if (intact && intact_seen < keep_last) {
      ++intact_seen;
      continue;
    }
    if (wanted_extra) continue;
    if (!intact && intact_seen < keep_last) continue;  // newer than what is kept: leave it for inspection
    doomed_dirs.push_back(c.dir);
  }
  for (const fs::path& dir : doomed_dirs)
    if (const std::string error = delete_checkpoint(dir); !error.empty())
      spdlog::warn("could not delete old checkpoint {}: {}", dir.string(), error);
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const fs::directory_entry& d : fs::directory_iterator(run_dir, ec)) {
    const std::string name = d.path().filename().string();
    if (name.rfind(kTmpPrefix, 0) == 0 && !is_active(d.path())) stale.push_back(d.path());
  }
  for (const fs::path& p : stale) remove_tree(p);
  fsync_directory(run_dir);
}

}  // namespace eco

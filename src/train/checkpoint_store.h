#pragma once
// Checkpoints on disk. A checkpoint is a directory RUN_DIR/ckpt_<step, 8+ digits>/ holding named
// binary blobs (one file each), manifest.json (format version, step, every file's name, size and
// CRC-32C, and the caller's JSON: trainer state, resolved config) and manifest.crc32c, the
// manifest's own checksum, so no bit of a checkpoint goes unchecked. It is written under
// RUN_DIR/.tmp_ckpt_<step>_<pid>/, every file and the directory fsynced, then renamed into place,
// so a crash at any moment leaves either no new checkpoint or a complete one. Loading verifies
// sizes and checksums; a damaged newest checkpoint is skipped in favour of the previous one.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace eco {

class DurableFile;

// "ckpt_00000200": the directory name of the checkpoint of `step`.
std::string checkpoint_dir_name(int64_t step);

struct CheckpointFile {
  std::string name;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

class CheckpointWriter {
 public:
  // Creates RUN_DIR (if needed) and the temp directory. Errors: SystemError.
  CheckpointWriter(std::filesystem::path run_dir, int64_t step);
  ~CheckpointWriter();  // without commit(), the temp directory is removed: no checkpoint appears
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Writes one blob, checksumming it as it streams; fsynced before returning. `name` is a plain
  // file name (no '/', not starting with '.', not "manifest.json"), unique in the checkpoint.
  void add_blob(const std::string& name, const void* data, size_t bytes);
  // The same, streamed: begin_blob, any number of append calls, end_blob. Lets a caller write state
  // that lives in another memory (a GPU) piece by piece through a small host buffer.
  void begin_blob(const std::string& name);
  void append(const void* data, size_t bytes);
  void end_blob();
  void set_meta(const nlohmann::json& meta);
  // Writes the manifest and renames the directory into place (atomically replacing a checkpoint of
  // the same step, if any); returns RUN_DIR/ckpt_<step>.
  std::filesystem::path commit();

 private:
  std::filesystem::path run_dir_, tmp_dir_;
  int64_t step_;
  std::vector<CheckpointFile> files_;
  std::unique_ptr<DurableFile> open_;  // the blob being streamed
  CheckpointFile open_entry_;
  nlohmann::json meta_ = nlohmann::json::object();
  bool committed_ = false;
};

struct LoadedCheckpoint {
  std::filesystem::path dir;
  int64_t step = 0;
  nlohmann::json meta;               // what the writer passed to set_meta
  std::vector<CheckpointFile> files;  // from the manifest, in the order written

  bool has_blob(const std::string& name) const;
  // Read a blob, checking its size and checksum again as it is read; CheckpointError naming the file
  // on any mismatch, including `expected_bytes` differing from the stored size.
  std::vector<uint8_t> blob(const std::string& name) const;
  void read_blob(const std::string& name, void* dst, size_t expected_bytes) const;

  // Sequential reading of one blob in pieces (state that goes to another memory piece by piece);
  // finish() checks that every byte was read and the checksum matches, CheckpointError otherwise.
  class BlobReader {
   public:
    BlobReader(const std::filesystem::path& path, const CheckpointFile& entry);
    ~BlobReader();
    BlobReader(const BlobReader&) = delete;
    BlobReader& operator=(const BlobReader&) = delete;
    size_t remaining() const { return static_cast<size_t>(entry_.bytes - done_); }
    void read(void* dst, size_t bytes);  // CheckpointError past the end or on a short file
    void finish();

   private:
    std::filesystem::path path_;
    CheckpointFile entry_;
    int fd_ = -1;
    uint64_t done_ = 0;
    uint32_t crc_ = 0;
  };
  std::unique_ptr<BlobReader> open_blob(const std::string& name) const;

 private:
  const CheckpointFile& entry(const std::string& name) const;
};

// Strict: the manifest must parse and match its checksum (manifest.crc32c), and every file must
// have its recorded size and checksum; otherwise CheckpointError naming the file and the problem.
LoadedCheckpoint load_checkpoint(const std::filesystem::path& ckpt_dir);

// A caller's check of a loaded checkpoint's meta: throws CheckpointError to reject it as damaged
// (the next older one is tried); any other exception stops the search.
using CheckpointCheck = std::function<void(const LoadedCheckpoint&)>;

// The newest valid checkpoint in RUN_DIR. Damaged newer ones (or ones `accept` rejects) are skipped
// with a warning naming the problem. nullopt when RUN_DIR holds no checkpoint (or does not exist);
// CheckpointError listing each checkpoint and why it is invalid when some exist but none is valid.
std::optional<LoadedCheckpoint> load_latest_checkpoint(const std::filesystem::path& run_dir,
                                                       const CheckpointCheck& accept = {});

// Steps of the ckpt_ directories in RUN_DIR (intact or not), newest first.
std::vector<int64_t> checkpoint_steps(const std::filesystem::path& run_dir);

// Deletes one checkpoint directory, renamed away first so a crash never leaves half of it under a
// ckpt_ name; returns "" or the OS's reason.
std::string delete_checkpoint(const std::filesystem::path& ckpt_dir);

// Keeps the `keep_last` (>= 1) newest intact checkpoints (manifest verified, every blob of its
// recorded size) plus the newest intact one whose meta `also_keep` accepts; deletes older ones.
// Damaged checkpoints do not count toward keep_last; those newer than the oldest kept one are left
// for inspection. Also removes temp directories left by crashed writers (not those of writers
// alive in this process).
void prune_checkpoints(const std::filesystem::path& run_dir, int keep_last,
                       const std::function<bool(const nlohmann::json& meta)>& also_keep = {});

}  // namespace eco

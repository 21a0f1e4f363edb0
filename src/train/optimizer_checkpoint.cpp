// Optimizer state <-> checkpoint blobs, streamed piece by piece through one host buffer.
#include "train/optimizer_checkpoint.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace eco {

namespace {
constexpr size_t kStreamBytes = size_t{16} << 20;  // host staging buffer of checkpoint I/O

// A scale read back from a checkpoint must be usable: finite and positive.
void check_scales(const float* s, size_t n, const LoadedCheckpoint& ckpt, const std::string& tensor) {
  for (size_t i = 0; i < n; ++i)
    if (!(std::isfinite(s[i]) && s[i] > 0.0f))
      throw CheckpointError(ckpt.dir.string() + ": scale " + std::to_string(i) + " of " + tensor + " is " +
                            std::to_string(s[i]) + "; scales must be finite and positive (corrupt checkpoint?)");
}
}  // namespace

void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter& w) {
  std::vector<uint8_t> buf;
  const char* open_blob = nullptr;
  const std::vector<StatePiece> pieces = opt.state_pieces();
  for (const char* blob : {"values.f32", "codes.bin", "scales.f32", "m.bin", "v.bin"}) {
    w.begin_blob(blob);
    open_blob = blob;
    for (const StatePiece& p : pieces) {
      if (std::string(p.blob) != open_blob) continue;
      for (size_t done = 0; done < p.bytes;) {
        const size_t n = std::min(kStreamBytes, p.bytes - done);
        buf.resize(n);
        ops.copy_to_host(buf.data(), static_cast<const uint8_t*>(p.data) + done, n);
        w.append(buf.data(), n);
        done += n;
      }
    }
    w.end_blob();
  }
}

void load_optimizer_state(WeightOptimizer& opt, Ops& ops, const LoadedCheckpoint& ckpt) {
  std::vector<uint8_t> buf;
  const std::vector<StatePiece> pieces = opt.state_pieces();
  for (const char* blob : {"values.f32", "codes.bin", "scales.f32", "m.bin", "v.bin"}) {
    std::unique_ptr<LoadedCheckpoint::BlobReader> in = ckpt.open_blob(blob);
    for (const StatePiece& p : pieces) {
      if (std::string(p.blob) != blob) continue;
      for (size_t done = 0; done < p.bytes;) {
        // Whole floats per chunk, so scales can be checked as they pass.
        const size_t n = std::min(kStreamBytes, p.bytes - done);
        buf.resize(n);
        in->read(buf.data(), n);
        if (std::string(blob) == "scales.f32")
          check_scales(reinterpret_cast<const float*>(buf.data()), n / sizeof(float), ckpt, p.tensor);
        ops.copy_from_host(static_cast<uint8_t*>(p.data) + done, buf.data(), n);
        done += n;
      }
    }
    in->finish();
  }
}

}  // namespace eco

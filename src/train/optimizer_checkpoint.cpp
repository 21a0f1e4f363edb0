// Optimizer state <-> checkpoint blobs, streamed piece by piece through one host buffer.
#include "train/optimizer_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace eco {

namespace {
constexpr size_t kStreamBytes = size_t{16} << 20;  // host staging buffer of checkpoint I/O
constexpr const char* kBlobs[] = {"values.f32", "codes.bin", "scales.f32", "m.bin", "v.bin"};

// A scale read back from a checkpoint must be usable: finite and positive.
void check_scales(const float* s, size_t n, const LoadedCheckpoint& ckpt, const std::string& tensor) {
  for (size_t i = 0; i < n; ++i)
    if (!(std::isfinite(s[i]) && s[i] > 0.0f))
      throw CheckpointError(ckpt.dir.string() + ": scale " + std::to_string(i) + " of " + tensor + " is " +
                            std::to_string(s[i]) + "; scales must be finite and positive (corrupt checkpoint?)");
}

// Rank 0's writer, which stops writing at its first failure and keeps it for later.
struct GuardedWriter {
  CheckpointWriter* w;
  std::exception_ptr failed;
  template <class Fn>
  void operator()(Fn&& fn) {
    if (!w || failed) return;
    try {
      fn(*w);
    } catch (...) {
      failed = std::current_exception();
    }
  }
};

// table[b][i]: the piece of blob kBlobs[b] of the optimizer's tensor i, or nullptr (none).
std::vector<std::vector<const StatePiece*>> index_pieces(const WeightOptimizer& opt, const std::vector<StatePiece>& pieces) {
  std::vector<std::vector<const StatePiece*>> table(std::size(kBlobs),
                                                    std::vector<const StatePiece*>(opt.tensors().size(), nullptr));
  for (const StatePiece& p : pieces)
    for (size_t b = 0; b < std::size(kBlobs); ++b)
      if (std::string(p.blob) == kBlobs[b]) table[b][p.index] = &p;
  return table;
}

// Rank 0 appends bytes [0, p.bytes) of its own piece p.
void write_own_piece(const StatePiece& p, Ops& ops, std::vector<uint8_t>& buf, GuardedWriter& out) {
  for (size_t done = 0; done < p.bytes;) {
    const size_t n = std::min(kStreamBytes, p.bytes - done);
    buf.resize(n);
    ops.copy_to_host(buf.data(), static_cast<const uint8_t*>(p.data) + done, n);
    out([&](CheckpointWriter& cw) { cw.append(buf.data(), n); });
    done += n;
  }
}

// `bytes` bytes at src on rank `owner` (src is read there only) to rank 0's writer, a window at a time.
void send_bytes_to_root(const uint8_t* src, size_t bytes, int owner, Ops& ops, Communicator& comm,
                        std::vector<uint8_t>& buf, std::vector<uint8_t>& recv, GuardedWriter& out) {
  const int rank = comm.rank();
  const size_t world = static_cast<size_t>(comm.world());
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(kStreamBytes, bytes - done);
    std::vector<size_t> send_bytes(world, 0), recv_bytes(world, 0);
    buf.resize(std::max<size_t>(n, 1));
    if (rank == owner) {
      send_bytes[0] = n;
      ops.copy_to_host(buf.data(), src + done, n);
    }
    if (rank == 0) recv_bytes[static_cast<size_t>(owner)] = n;
    recv.resize(std::max<size_t>(n, 1));
    comm.all_to_all_v(buf.data(), send_bytes, recv.data(), recv_bytes);
    if (rank == 0) out([&](CheckpointWriter& cw) { cw.append(recv.data(), n); });
    done += n;
  }
}

// A ZeRO-1 sharded piece: a window of rows at a time, each rank sends rank 0 the rows of it that it
// owns (ranks own contiguous rows in rank order, so the blocks arrive in row order).
void gather_sharded_piece(const WeightOptimizer& opt, const StatePiece& p, Ops& ops, Communicator& comm,
                          std::vector<uint8_t>& buf, std::vector<uint8_t>& recv, GuardedWriter& out) {
  const int rank = comm.rank(), world = comm.world();
  const size_t rows = opt.tensors()[p.index].rows, rb = p.row_bytes;
  const size_t window = std::max<size_t>(1, kStreamBytes / std::max<size_t>(rb, 1));
  for (size_t w0 = 0; w0 < rows; w0 += window) {
    const size_t w1 = std::min(rows, w0 + window);
    std::vector<size_t> send_bytes(static_cast<size_t>(world), 0), recv_bytes(static_cast<size_t>(world), 0);
    size_t total = 0;
    for (int q = 0; q < world; ++q) {
      const auto [a, b] = opt.owned_rows(p.index, q);
      const size_t lo = std::max(a, w0), hi = std::min(b, w1);
      const size_t bytes = hi > lo ? (hi - lo) * rb : 0;
      if (rank == 0) recv_bytes[static_cast<size_t>(q)] = bytes;
      if (q == rank) {
        send_bytes[0] = bytes;
        buf.resize(std::max<size_t>(bytes, 1));
        if (bytes) ops.copy_to_host(buf.data(), static_cast<const uint8_t*>(p.data) + (lo - p.held_begin) * rb, bytes);
      }
      total += bytes;
    }
    if (rank == 0) recv.resize(std::max<size_t>(total, 1));
    comm.all_to_all_v(buf.data(), send_bytes, recv.data(), recv_bytes);
    if (rank == 0) out([&](CheckpointWriter& cw) { cw.append(recv.data(), total); });
  }
}

// A sharded piece that is not row-addressable (block-wise moments): every rank's runs in blob
// order, each streamed from its holder; bytes no rank holds (the codes' padding) are written as
// zeros, as a single process's zeroed buffer has them.
void gather_sharded_runs(const WeightOptimizer& opt, const StatePiece& p, Ops& ops, Communicator& comm,
                         std::vector<uint8_t>& buf, std::vector<uint8_t>& recv, GuardedWriter& out) {
  struct Source {
    HeldRun run;
    int owner;
  };
  std::vector<Source> sources;
  for (int q = 0; q < comm.world(); ++q)
    for (const HeldRun& r : opt.held_runs(p, q)) sources.push_back({r, q});
  std::sort(sources.begin(), sources.end(),
            [](const Source& a, const Source& b) { return a.run.blob_offset < b.run.blob_offset; });
  const auto zeros = [&](size_t n) {
    if (comm.rank() != 0 || n == 0) return;
    const std::vector<uint8_t> z(n, 0);
    out([&](CheckpointWriter& cw) { cw.append(z.data(), n); });
  };
  size_t at = 0;
  for (const Source& s : sources) {
    if (s.run.blob_offset < at)
      throw Error("checkpoint: the held runs of " + p.tensor + " overlap at byte " + std::to_string(s.run.blob_offset));
    zeros(s.run.blob_offset - at);
    send_bytes_to_root(static_cast<const uint8_t*>(p.data) + s.run.data_offset, s.run.bytes, s.owner, ops, comm, buf,
                       recv, out);
    at = s.run.blob_offset + s.run.bytes;
  }
  if (at > p.bytes) throw Error("checkpoint: the held runs of " + p.tensor + " pass the end of its blob");
  zeros(p.bytes - at);
}

void save_pieces(const WeightOptimizer& opt, Ops& ops, CheckpointWriter* w, Communicator* comm,
                 const std::vector<CheckpointTensor>& layout) {
  GuardedWriter out{w, nullptr};
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world() : 1;
  std::vector<uint8_t> buf, recv;
  const std::vector<StatePiece> pieces = opt.state_pieces();
  const auto table = index_pieces(opt, pieces);
  for (size_t b = 0; b < std::size(kBlobs); ++b) {
    out([&](CheckpointWriter& cw) { cw.begin_blob(kBlobs[b]); });
    for (const CheckpointTensor& t : layout) {
      const StatePiece* p = t.local != CheckpointTensor::npos ? table[b][t.local] : table[b][t.twin];
      if (!p) continue;  // this tensor has no piece in this blob
      if (t.owner != 0) {
        send_bytes_to_root(static_cast<const uint8_t*>(p->data), p->bytes, t.owner, ops, *comm, buf, recv, out);
      } else if (p->sharded && world > 1 && p->row_bytes) {
        gather_sharded_piece(opt, *p, ops, *comm, buf, recv, out);
      } else if (p->sharded && world > 1) {
        gather_sharded_runs(opt, *p, ops, *comm, buf, recv, out);
      } else if (rank == 0) {  // the same on every rank that has it: rank 0 writes its own
        write_own_piece(*p, ops, buf, out);
      }
    }
    out([&](CheckpointWriter& cw) { cw.end_blob(); });
  }
  if (out.failed) std::rethrow_exception(out.failed);
}

}  // namespace

std::vector<CheckpointTensor> whole_model_layout(const WeightOptimizer& opt) {
  std::vector<CheckpointTensor> layout(opt.tensors().size());
  for (size_t i = 0; i < layout.size(); ++i) layout[i].local = layout[i].twin = i;
  return layout;
}

void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter& w) {
  if (opt.shard().world != 1)
    throw Error("save_optimizer_state: a ZeRO-1 optimizer is saved with its communicator");
  save_pieces(opt, ops, &w, nullptr, whole_model_layout(opt));
}

void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter* w, Communicator& comm) {
  if (opt.shard().world != comm.world())
    throw Error("save_optimizer_state: the optimizer is sharded over " + std::to_string(opt.shard().world) +
                " ranks, the communicator has " + std::to_string(comm.world()));
  save_pieces(opt, ops, comm.rank() == 0 ? w : nullptr, &comm, whole_model_layout(opt));
}

void save_optimizer_state(const WeightOptimizer& opt, Ops& ops, CheckpointWriter* w, Communicator& comm,
                          const std::vector<CheckpointTensor>& layout) {
  if (opt.shard().world != 1)
    throw Error("save_optimizer_state: ZeRO-1 together with expert parallelism is not supported");
  save_pieces(opt, ops, comm.rank() == 0 ? w : nullptr, &comm, layout);
}

void load_optimizer_state(WeightOptimizer& opt, Ops& ops, const LoadedCheckpoint& ckpt) {
  load_optimizer_state(opt, ops, ckpt, whole_model_layout(opt));
}

void load_optimizer_state(WeightOptimizer& opt, Ops& ops, const LoadedCheckpoint& ckpt,
                          const std::vector<CheckpointTensor>& layout) {
  std::vector<uint8_t> buf;
  const std::vector<StatePiece> pieces = opt.state_pieces();
  const auto table = index_pieces(opt, pieces);
  for (size_t b = 0; b < std::size(kBlobs); ++b) {
    const std::string blob = kBlobs[b];
    std::unique_ptr<LoadedCheckpoint::BlobReader> in = ckpt.open_blob(blob);
    for (const CheckpointTensor& t : layout) {
      const bool held = t.local != CheckpointTensor::npos;
      const StatePiece* p = held ? table[b][t.local] : table[b][t.twin];
      if (!p) continue;
      // Only the bytes this rank holds (under ZeRO-1 its own rows or blocks of the moments; none of
      // the experts other ranks hold, which are read past).
      const std::vector<HeldRun> runs = held ? opt.held_runs(*p, opt.shard().rank) : std::vector<HeldRun>{};
      for (size_t done = 0; done < p->bytes;) {
        // Whole floats per chunk, so scales can be checked as they pass.
        const size_t n = std::min(kStreamBytes, p->bytes - done);
        buf.resize(n);
        in->read(buf.data(), n);
        if (blob == "scales.f32")
          check_scales(reinterpret_cast<const float*>(buf.data()), n / sizeof(float), ckpt, p->tensor);
        for (const HeldRun& r : runs) {
          const size_t lo = std::max(done, r.blob_offset), hi = std::min(done + n, r.blob_offset + r.bytes);
          if (hi > lo)
            ops.copy_from_host(static_cast<uint8_t*>(p->data) + r.data_offset + (lo - r.blob_offset),
                               buf.data() + (lo - done), hi - lo);
        }
        done += n;
      }
    }
    in->finish();
  }
}

}  // namespace eco

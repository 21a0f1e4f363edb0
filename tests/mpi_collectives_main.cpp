// Run under mpirun by tests/test_communicator.cpp. Modes:
//   collectives   every collective against an independent reference (default)
//   stall         the last rank never joins; the others must get a SystemError within the timeout
//   exit_early    the last rank exits before the first collective; the job must end, not hang
// Prints "rank R ok" per rank on success; a failed check prints "FAIL ..." and exits 1.
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "dist/mpi_communicator.h"

namespace {

int g_fail = 0;
#define CHECK_OR_COUNT(cond, ...)                          \
  do {                                                     \
    if (!(cond)) {                                         \
      std::printf("FAIL rank %d: ", g_rank);               \
      std::printf(__VA_ARGS__);                            \
      std::printf("  [%s:%d]\n", __FILE__, __LINE__);      \
      ++g_fail;                                            \
    }                                                      \
  } while (0)
int g_rank = -1;

// Rank r's input element i: mixed magnitudes and signs so that the summation order changes the
// rounded result (checked below), reproducible on every rank.
template <typename T>
T input(int r, size_t i) {
  uint64_t x = (uint64_t(r) + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t(i) * 0xBF58476D1CE4E5B9ull);
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  double mant = double(x >> 11) / double(1ull << 53) - 0.5;
  int e = int((x >> 3) % 24) - 12;
  return T(std::ldexp(mant, e));
}

uint64_t fnv(const void* p, size_t bytes) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  return h;
}

// The hash must be the same on every rank: checked with plain MPI, not with the class under test.
bool same_everywhere(uint64_t h) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  std::vector<uint64_t> all(world);
  MPI_Allgather(&h, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (uint64_t a : all)
    if (a != h) return false;
  return true;
}

template <typename T>
void check_all_reduce(eco::Communicator& c, size_t n, size_t* order_sensitive) {
  const int W = c.world();
  std::vector<T> buf(n), ref(n);
  for (size_t i = 0; i < n; ++i) buf[i] = input<T>(c.rank(), i);
  for (size_t i = 0; i < n; ++i) {
    T acc = input<T>(0, i), rev = input<T>(W - 1, i);
    for (int r = 1; r < W; ++r) acc += input<T>(r, i);
    for (int r = W - 2; r >= 0; --r) rev += input<T>(r, i);
    ref[i] = acc;
    if (std::memcmp(&acc, &rev, sizeof(T)) != 0) ++*order_sensitive;
  }
  c.all_reduce_sum(buf.data(), n);
  CHECK_OR_COUNT(std::memcmp(buf.data(), ref.data(), n * sizeof(T)) == 0, "all_reduce_sum(%s) n=%zu != rank-order sum",
                 sizeof(T) == 4 ? "float" : "double", n);
  CHECK_OR_COUNT(same_everywhere(fnv(buf.data(), n * sizeof(T))), "all_reduce n=%zu differs between ranks", n);
}

void check_collectives(eco::MpiCommunicator& c) {
  const int W = c.world(), R = c.rank();
  size_t order_sensitive = 0;
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{5}, size_t{1000}, size_t{100003}}) {
    check_all_reduce<float>(c, n, &order_sensitive);
    check_all_reduce<double>(c, n, &order_sensitive);
  }
  // Meaningful only if the order matters for these inputs (3+ ranks; 2 ranks commute exactly).
  if (W >= 3) CHECK_OR_COUNT(order_sensitive > 0, "inputs never expose the summation order");

  for (int root = 0; root < W; ++root)
    for (size_t bytes : {size_t{0}, size_t{13}, size_t{1000}}) {
      std::vector<unsigned char> b(bytes);
      for (size_t i = 0; i < bytes; ++i) b[i] = static_cast<unsigned char>(R == root ? i * 7 + root : 0xEE);
      c.broadcast(b.data(), bytes, root);
      bool ok = true;
      for (size_t i = 0; i < bytes; ++i) ok = ok && b[i] == static_cast<unsigned char>(i * 7 + root);
      CHECK_OR_COUNT(ok, "broadcast root=%d bytes=%zu", root, bytes);
    }

  for (size_t per : {size_t{0}, size_t{1}, size_t{13}, size_t{100}})
    for (bool in_place : {false, true}) {
      std::vector<unsigned char> mine(per), out(per * W, 0xEE);
      for (size_t i = 0; i < per; ++i) mine[i] = static_cast<unsigned char>(R * 31 + i);
      const void* in = mine.data();
      if (in_place) {
        std::memcpy(out.data() + R * per, mine.data(), per);
        in = out.data() + R * per;
      }
      c.all_gather(in, out.data(), per);
      bool ok = true;
      for (int r = 0; r < W; ++r)
        for (size_t i = 0; i < per; ++i) ok = ok && out[r * per + i] == static_cast<unsigned char>(r * 31 + i);
      CHECK_OR_COUNT(ok, "all_gather per=%zu in_place=%d", per, int(in_place));
    }

  // Uneven slices, one of them empty, some longer than the chunk limit.
  std::vector<size_t> counts(W);
  for (int r = 0; r < W; ++r) counts[r] = r == 1 ? 0 : size_t(3 * r + 5 + 11 * (r % 2 == 0));
  size_t total = 0, my_off = 0;
  for (int r = 0; r < W; ++r) {
    if (r == R) my_off = total;
    total += counts[r];
  }
  std::vector<float> in(total), out(counts[R] + 1, -1.0f);
  for (size_t i = 0; i < total; ++i) in[i] = input<float>(R, i);
  c.reduce_scatter_sum_v(in.data(), out.data(), counts);
  bool ok = out[counts[R]] == -1.0f;  // nothing written past the slice
  for (size_t i = 0; i < counts[R]; ++i) {
    float acc = input<float>(0, my_off + i);
    for (int r = 1; r < W; ++r) acc += input<float>(r, my_off + i);
    ok = ok && std::memcmp(&acc, &out[i], sizeof(float)) == 0;
  }
  CHECK_OR_COUNT(ok, "reduce_scatter_sum_v uneven");
  std::vector<float> even(9 * W), slice(9);
  for (size_t i = 0; i < even.size(); ++i) even[i] = float(R + 1) * float(i);
  c.reduce_scatter_sum(even.data(), slice.data(), 9);
  ok = true;
  for (size_t i = 0; i < 9; ++i) ok = ok && slice[i] == float(W * (W + 1) / 2) * float(R * 9 + i);
  CHECK_OR_COUNT(ok, "reduce_scatter_sum even");

  // all_gather_v: uneven blocks (one empty), in place and not.
  for (bool in_place : {false, true}) {
    std::vector<size_t> bytes(W);
    size_t all = 0, at = 0;
    for (int r = 0; r < W; ++r) {
      bytes[r] = r == 1 ? 0 : size_t(10 * r + 3);
      if (r == R) at = all;
      all += bytes[r];
    }
    std::vector<unsigned char> mine(bytes[R]), gathered(all + 1, 0xEE);
    for (size_t i = 0; i < bytes[R]; ++i) mine[i] = static_cast<unsigned char>(R * 17 + i);
    const void* src = mine.data();
    if (in_place) {
      std::memcpy(gathered.data() + at, mine.data(), bytes[R]);
      src = gathered.data() + at;
    }
    c.all_gather_v(src, gathered.data(), bytes);
    bool good = gathered[all] == 0xEE;
    size_t off = 0;
    for (int r = 0; r < W; ++r)
      for (size_t i = 0; i < bytes[r]; ++i) good = good && gathered[off++] == static_cast<unsigned char>(r * 17 + i);
    CHECK_OR_COUNT(good, "all_gather_v in_place=%d", int(in_place));
  }

  // all_to_all_v: rank R sends (R + 2p) % 5 * 3 bytes to rank p, each byte naming (R, p, i).
  {
    auto size = [](int from, int to) { return size_t((from + 2 * to) % 5 * 3); };
    auto byte = [](int from, int to, size_t i) { return static_cast<unsigned char>(from * 64 + to * 8 + i); };
    std::vector<size_t> sb(W), rb(W);
    std::vector<unsigned char> send, recv;
    for (int p = 0; p < W; ++p) {
      sb[p] = size(R, p);
      rb[p] = size(p, R);
      for (size_t i = 0; i < sb[p]; ++i) send.push_back(byte(R, p, i));
    }
    size_t rtotal = 0;
    for (size_t b : rb) rtotal += b;
    recv.assign(rtotal + 1, 0xEE);
    c.all_to_all_v(send.data(), sb, recv.data(), rb);
    bool good = recv[rtotal] == 0xEE;
    size_t off = 0;
    for (int p = 0; p < W; ++p)
      for (size_t i = 0; i < rb[p]; ++i) good = good && recv[off++] == byte(p, R, i);
    CHECK_OR_COUNT(good, "all_to_all_v");
  }

  // split: even and odd ranks, ordered by descending rank; a sum inside each group.
  {
    std::unique_ptr<eco::Communicator> sub = c.split(R % 2, -R);
    int expect_world = 0;
    for (int r = 0; r < W; ++r) expect_world += r % 2 == R % 2 ? 1 : 0;
    int expect_rank = 0;
    for (int r = R + 1; r < W; ++r) expect_rank += r % 2 == R % 2 ? 1 : 0;
    CHECK_OR_COUNT(sub->world() == expect_world && sub->rank() == expect_rank, "split rank %d/%d", sub->rank(),
                   sub->world());
    double v = R;
    sub->all_reduce_sum(&v, 1);
    double want = 0;
    for (int r = 0; r < W; ++r) want += r % 2 == R % 2 ? r : 0;
    CHECK_OR_COUNT(v == want, "sum within split group: %g != %g", v, want);
  }
  c.barrier();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "collectives";
  int provided = 0;
  // Initialised here so two communicators can live one after the other (neither owns MPI).
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  try {
    if (mode == "collectives") {
      // Once with a 7-element message limit (every collective chunked), once with the default.
      for (size_t max_count : {size_t{7}, eco::MpiCommunicator::kDefaultMaxCount}) {
        eco::MpiCommunicator c(60.0, max_count);
        g_rank = c.rank();
        check_collectives(c);
      }
      if (g_fail != 0) return 1;
      std::printf("rank %d ok\n", g_rank);
      MPI_Finalize();
      return 0;
    } else if (mode == "stall" || mode == "exit_early") {
      eco::MpiCommunicator c(mode == "stall" ? 2.0 : 20.0);
      g_rank = c.rank();
      if (c.rank() == c.world() - 1) {
        if (mode == "exit_early") std::_Exit(3);
        std::this_thread::sleep_for(std::chrono::seconds(60));
        return 0;
      }
      std::vector<float> v(1000, 1.0f);
      for (int i = 0; i < 1000; ++i) c.all_reduce_sum(v.data(), v.size());
      std::printf("FAIL rank %d: collectives completed without the last rank\n", c.rank());
      return 1;
    }
    std::printf("unknown mode %s\n", mode.c_str());
    return 2;
  } catch (const eco::Error& e) {
    std::printf("caught: %s\n", e.what());
    std::fflush(stdout);
    return e.exit_code();
  }
}

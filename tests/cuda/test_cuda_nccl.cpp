// NcclCommunicator on a GPU, world 1 (NCCL 2.28 refuses two ranks on one GPU, "Duplicate GPU
// detected", and the test machine has one): every collective on device buffers against the same
// collective of SingleCommunicator on host copies, bit for bit, in one NCCL call per operation and
// chunked into pieces of 7 elements (the grouped ncclBroadcast / ncclReduce / ncclSend+ncclRecv
// paths); split; the ordering after a compute stream; and the timeout: a stream kept busy past
// the deadline aborts the communicator with a SystemError instead of waiting. In a world of one a
// sum adds nothing and the asynchronous-error path cannot be provoked (no peer to lose); the
// multi-rank sums are the MPI path's tests. Exit 4 (skipped) without a GPU or without NCCL.
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cuda_test_util.h"
#include "dist/nccl_communicator.h"
#include "dist/single_communicator.h"

#ifdef ECO_WITH_NCCL
namespace {

#define CUDA_OK(expr) REQUIRE((expr) == cudaSuccess)

// Device memory holding `host` (plus one poisoned spare byte pattern when n is 0).
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    CUDA_OK(cudaMalloc(&p, n + 16));
    CUDA_OK(cudaMemset(p, 0xFF, n + 16));
  }
  template <class T>
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
    if (bytes) CUDA_OK(cudaMemcpy(p, host.data(), bytes, cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
  template <class T>
  std::vector<T> get(size_t n) const {
    std::vector<T> h(n);
    if (n) CUDA_OK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

std::vector<unsigned char> random_bytes(size_t n, uint32_t seed) {
  std::vector<unsigned char> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<unsigned char>(x >> 24);
  }
  return v;
}

// Every collective on `nccl` (device buffers) against `ref` (host buffers), bit for bit.
void check_collectives(eco::Communicator& nccl, eco::Communicator& ref) {
  using eco_cuda_test::first_bit_difference;
  const size_t n = 1000;
  SECTION("all_reduce_sum float and double") {
    auto f = eco_cuda_test::random_floats(n, 11);
    f[3] = -0.0f;
    DeviceBuffer df(f);
    nccl.all_reduce_sum(df.as<float>(), n);
    ref.all_reduce_sum(f.data(), n);
    CHECK(first_bit_difference(df.get<float>(n), f) == -1);
    std::vector<double> d(n);
    for (size_t i = 0; i < n; ++i) d[i] = f[i] * 1.000000001;
    DeviceBuffer dd(d);
    nccl.all_reduce_sum(dd.as<double>(), n);
    ref.all_reduce_sum(d.data(), n);
    CHECK(first_bit_difference(dd.get<double>(n), d) == -1);
    nccl.all_reduce_sum(dd.as<double>(), 0);  // nothing, no error
  }
  SECTION("broadcast") {
    auto b = random_bytes(n + 3, 12);
    DeviceBuffer db(b);
    nccl.broadcast(db.p, b.size(), 0);
    ref.broadcast(b.data(), b.size(), 0);
    CHECK(db.get<unsigned char>(b.size()) == b);
    CHECK_THROWS_AS(nccl.broadcast(db.p, b.size(), 1), std::invalid_argument);
  }
  SECTION("all_gather, out of place and in place") {
    auto b = random_bytes(n, 13);
    DeviceBuffer in(b), out(n);
    nccl.all_gather(in.p, out.p, n);
    std::vector<unsigned char> expect(n);
    ref.all_gather(b.data(), expect.data(), n);
    CHECK(out.get<unsigned char>(n) == expect);
    nccl.all_gather(in.p, in.p, n);
    CHECK(in.get<unsigned char>(n) == expect);
  }
  SECTION("reduce_scatter_sum_v") {
    auto f = eco_cuda_test::random_floats(n, 14);
    DeviceBuffer in(f), out(n * sizeof(float));
    nccl.reduce_scatter_sum_v(in.as<float>(), out.as<float>(), {n});
    std::vector<float> expect(n);
    ref.reduce_scatter_sum_v(f.data(), expect.data(), {n});
    CHECK(first_bit_difference(out.get<float>(n), expect) == -1);
    nccl.reduce_scatter_sum(in.as<float>(), in.as<float>(), n);  // in place
    CHECK(first_bit_difference(in.get<float>(n), expect) == -1);
    CHECK_THROWS_AS(nccl.reduce_scatter_sum_v(in.as<float>(), out.as<float>(), {1, 2}), std::invalid_argument);
  }
  SECTION("all_gather_v, out of place and in place") {
    auto b = random_bytes(n + 5, 15);
    DeviceBuffer in(b), out(b.size());
    nccl.all_gather_v(in.p, out.p, {b.size()});
    std::vector<unsigned char> expect(b.size());
    ref.all_gather_v(b.data(), expect.data(), {b.size()});
    CHECK(out.get<unsigned char>(b.size()) == expect);
    nccl.all_gather_v(in.p, in.p, {b.size()});
    CHECK(in.get<unsigned char>(b.size()) == expect);
  }
  SECTION("all_to_all_v (this rank's block through ncclSend/ncclRecv to itself)") {
    auto b = random_bytes(n + 1, 16);
    DeviceBuffer send(b), recv(b.size());
    nccl.all_to_all_v(send.p, {b.size()}, recv.p, {b.size()});
    std::vector<unsigned char> expect(b.size());
    ref.all_to_all_v(b.data(), {b.size()}, expect.data(), {b.size()});
    CHECK(recv.get<unsigned char>(b.size()) == expect);
    CHECK_THROWS_AS(nccl.all_to_all_v(send.p, {b.size()}, recv.p, {b.size() - 1}), std::invalid_argument);
  }
  SECTION("split, then a collective on the part; barrier") {
    auto sub = nccl.split(0, 5);
    REQUIRE(sub != nullptr);
    CHECK(sub->rank() == 0);
    CHECK(sub->world() == 1);
    auto f = eco_cuda_test::random_floats(n, 17);
    DeviceBuffer df(f);
    sub->all_reduce_sum(df.as<float>(), n);
    CHECK(first_bit_difference(df.get<float>(n), f) == -1);
    sub->barrier();
    CHECK_THROWS_AS(nccl.split(-1, 0), std::invalid_argument);
    nccl.barrier();
  }
  CHECK(nccl.bytes_sent() == 0);  // a world of one puts nothing on the wire
}

}  // namespace
#endif

TEST_CASE("NcclCommunicator, world 1: every collective matches SingleCommunicator bit for bit", "[cuda][nccl]") {
  eco_cuda_test::require_gpu();
#ifndef ECO_WITH_NCCL
  eco_test::skip("this build has no NCCL (CMake found no nccl.h / libnccl next to CUDA)");
#else
  eco::SingleCommunicator host;
  const int device = eco::local_gpu(host);
  SECTION("one NCCL call per operation") {
    eco::NcclCommunicator nccl(host, device, nullptr, 60.0);
    INFO(nccl.describe());
    CHECK(nccl.rank() == 0);
    CHECK(nccl.world() == 1);
    eco::SingleCommunicator ref;
    check_collectives(nccl, ref);
  }
  SECTION("chunked: at most 7 elements per call, grouped calls") {
    eco::NcclCommunicator nccl(host, device, nullptr, 60.0, /*max_count=*/7);
    eco::SingleCommunicator ref;
    check_collectives(nccl, ref);
  }
  SECTION("the factory's NCCL communicator") {
    auto c = eco::make_device_communicator(host, device, nullptr, "nccl");
    REQUIRE(c != nullptr);
    eco::SingleCommunicator ref;
    check_collectives(*c, ref);
  }
#endif
}

#ifdef ECO_WITH_NCCL
namespace {
void CUDART_CB sleep_ms(void* ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(*static_cast<int*>(ms)));
}
}  // namespace
#endif

TEST_CASE("NcclCommunicator waits for the compute stream, and times out instead of hanging", "[cuda][nccl]") {
  eco_cuda_test::require_gpu();
#ifndef ECO_WITH_NCCL
  eco_test::skip("this build has no NCCL");
#else
  eco::SingleCommunicator host;
  const int device = eco::local_gpu(host);
  CUDA_OK(cudaSetDevice(device));
  cudaStream_t compute = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  static int delay_ms = 300;

  SECTION("a collective reads what the compute stream wrote before it") {
    eco::NcclCommunicator nccl(host, device, compute, 60.0);
    const size_t n = 4096;
    auto fresh = eco_cuda_test::random_floats(n, 21);
    DeviceBuffer src(fresh), buf(std::vector<float>(n, 0.0f)), out(n * sizeof(float));
    // The compute stream is still sleeping when the collective is issued; it must wait for the copy.
    CUDA_OK(cudaLaunchHostFunc(compute, sleep_ms, &delay_ms));
    CUDA_OK(cudaMemcpyAsync(buf.p, src.p, n * sizeof(float), cudaMemcpyDeviceToDevice, compute));
    nccl.all_gather(buf.p, out.p, n * sizeof(float));
    CHECK(eco_cuda_test::first_bit_difference(out.get<float>(n), fresh) == -1);
  }
  SECTION("a stream busy past ECO_DIST_TIMEOUT_S: SystemError naming the op and the rank, then unusable") {
    eco::NcclCommunicator nccl(host, device, compute, /*timeout_s=*/0.2);
    DeviceBuffer buf(std::vector<float>(64, 1.0f));
    static int stall_ms = 3000;
    // Stands in for a peer that never arrives: the communicator's own stream cannot progress.
    CUDA_OK(cudaLaunchHostFunc(nccl.stream(), sleep_ms, &stall_ms));
    const auto t0 = std::chrono::steady_clock::now();
    try {
      nccl.all_reduce_sum(buf.as<float>(), 64);
      FAIL("expected a SystemError");
    } catch (const eco::SystemError& e) {
      const std::string what = e.what();
      INFO(what);
      CHECK(what.find("NCCL all_reduce_sum(float) on rank 0 of 1") != std::string::npos);
      CHECK(what.find("no progress for 0.2 s (ECO_DIST_TIMEOUT_S)") != std::string::npos);
      CHECK(e.exit_code() == 6);
    }
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(waited < 2.5);  // gave up at the deadline, not when the stream finished (3 s)
    CHECK_THROWS_WITH(nccl.barrier(), Catch::Contains("failed earlier"));
    CUDA_OK(cudaDeviceSynchronize());  // let the sleeping callback finish before its stream goes
  }
  cudaStreamDestroy(compute);
#endif
}

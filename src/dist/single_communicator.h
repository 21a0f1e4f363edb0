#pragma once
// World of one process: every collective is a copy or nothing.
#include "dist/communicator.h"

namespace eco {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  std::string describe() const override { return "single process"; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void broadcast(void* buf, size_t bytes, int root) override;
  void all_gather(const void* in, void* out, size_t bytes_per_rank) override;
  void reduce_scatter_sum_v(const float* in, float* out, const std::vector<size_t>& counts) override;
  void all_gather_v(const void* in, void* out, const std::vector<size_t>& bytes) override;
  void all_to_all_v(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                    const std::vector<size_t>& recv_bytes) override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  void barrier() override {}
};

}  // namespace eco

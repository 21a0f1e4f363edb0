#pragma once
// Expert parallelism (DESIGN.md §6, docs/distributed.md): the world is a grid of dp × ep ranks.
// Expert-parallel group g is the ranks [g·ep, (g+1)·ep): together they hold every expert of each
// MoE layer once (group rank q holds experts [q·E/ep, (q+1)·E/ep)), and the tokens of each of them
// travel to the rank holding their experts and back (all_to_all_v). The replicas of an expert are
// the ranks with the same rank % ep, one per group: their expert gradients are summed, the way all
// ranks sum the gradients of the tensors every rank holds. Group 0 is world ranks 0 .. ep-1, so
// rank 0's group holds every expert once (the checkpoint is gathered there).
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "model/expert_exchange.h"
#include "model/ops.h"

namespace eco {

struct ExpertParallelGroups {
  int ep = 1;
  int group_rank = 0;                       // this rank's place in its expert-parallel group
  std::unique_ptr<Communicator> experts;    // its expert-parallel group (ep ranks)
  std::unique_ptr<Communicator> replicas;   // the ranks holding the same experts (world / ep ranks)
};

// Collective over `world`. ConfigError unless ep divides the world size.
ExpertParallelGroups split_expert_parallel(Communicator& world, int ep);

// The model's ExpertExchange over an expert-parallel group: counts over `host` (host memory), rows
// over `rows` (the backend's buffers: in place when rows_in_place, e.g. the CPU backend or NCCL on
// the device; otherwise staged through host memory). Both communicators are the same group.
class CommunicatorExpertExchange final : public ExpertExchange {
 public:
  CommunicatorExpertExchange(Communicator& host, Communicator& rows, Ops& ops, bool rows_in_place);
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.world(); }
  void exchange_host(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                     const std::vector<size_t>& recv_bytes) override;
  void exchange(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                const std::vector<size_t>& recv_bytes) override;
  // Payload bytes sent for the rows (not the counts), for the traffic report.
  uint64_t row_bytes_sent() const { return row_bytes_sent_; }

 private:
  Communicator& host_;
  Communicator& rows_;
  Ops& ops_;
  bool in_place_;
  std::vector<unsigned char> send_stage_, recv_stage_;
  uint64_t row_bytes_sent_ = 0;
};

}  // namespace eco

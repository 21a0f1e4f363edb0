#include "dist/expert_parallel.h"

#include <numeric>
#include <string>

#include "core/error.h"

namespace eco {

ExpertParallelGroups split_expert_parallel(Communicator& world, int ep) {
  if (ep < 1 || world.world() % ep != 0)
    throw ConfigError("dist.ep " + std::to_string(ep) + " does not divide the world size " +
                      std::to_string(world.world()) + "; launch a multiple of dist.ep ranks");
  ExpertParallelGroups g;
  g.ep = ep;
  g.group_rank = world.rank() % ep;
  g.experts = world.split(world.rank() / ep, world.rank());
  g.replicas = world.split(world.rank() % ep, world.rank());
  return g;
}

CommunicatorExpertExchange::CommunicatorExpertExchange(Communicator& host, Communicator& rows, Ops& ops,
                                                       bool rows_in_place)
    : host_(host), rows_(rows), ops_(ops), in_place_(rows_in_place) {
  if (host.world() != rows.world() || host.rank() != rows.rank())
    throw Error("CommunicatorExpertExchange: the host and row communicators are different groups");
}

void CommunicatorExpertExchange::exchange_host(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                                               const std::vector<size_t>& recv_bytes) {
  host_.all_to_all_v(send, send_bytes, recv, recv_bytes);
}

void CommunicatorExpertExchange::exchange(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                                          const std::vector<size_t>& recv_bytes) {
  const size_t out = std::accumulate(send_bytes.begin(), send_bytes.end(), size_t{0});
  const size_t in = std::accumulate(recv_bytes.begin(), recv_bytes.end(), size_t{0});
  row_bytes_sent_ += out - send_bytes[static_cast<size_t>(rank())];
  if (in_place_) {
    rows_.all_to_all_v(send, send_bytes, recv, recv_bytes);
    return;
  }
  send_stage_.resize(std::max<size_t>(out, 1));
  recv_stage_.resize(std::max<size_t>(in, 1));
  if (out) ops_.copy_to_host(send_stage_.data(), send, out);
  rows_.all_to_all_v(send_stage_.data(), send_bytes, recv_stage_.data(), recv_bytes);
  if (in) ops_.copy_from_host(recv, recv_stage_.data(), in);
}

}  // namespace eco

#include "agent/host_list.h"

#include <algorithm>

namespace pgfleet::agent {

std::optional<size_t> ChooseHost(config::LoadBalanceHosts mode, const std::vector<bool>& usable,
                                 size_t& cursor) {
  const size_t count = usable.size();
  for (size_t step = 0; step < count; ++step) {
    const size_t index = (cursor + step) % count;
    if (!usable[index]) continue;
    cursor = mode == config::LoadBalanceHosts::kRoundRobin ? index + 1 : index;
    return index;
  }
  return std::nullopt;
}

bool SatisfiesTargetSessionAttrs(config::TargetSessionAttrs wanted,
                                 const std::vector<std::pair<std::string, std::string>>& params) {
  if (wanted == config::TargetSessionAttrs::kAny) return true;
  const std::string* hot_standby = nullptr;
  const std::string* read_only = nullptr;
  for (const auto& [name, value] : params) {
    if (name == "in_hot_standby") hot_standby = &value;
    if (name == "default_transaction_read_only") read_only = &value;
  }
  if (hot_standby == nullptr) return false;
  const bool standby = *hot_standby == "on";
  switch (wanted) {
    case config::TargetSessionAttrs::kPrimary:
      return !standby;
    case config::TargetSessionAttrs::kStandby:
      return standby;
    // A standby is read-only whatever default_transaction_read_only says.
    case config::TargetSessionAttrs::kReadWrite:
      return !standby && read_only != nullptr && *read_only == "off";
    case config::TargetSessionAttrs::kReadOnly:
      return standby || (read_only != nullptr && *read_only == "on");
    case config::TargetSessionAttrs::kAny:
      break;
  }
  return true;
}

absl::Duration HostBackoff(int failures, absl::Duration retry) {
  const int doublings = std::clamp(failures - 1, 0, 2);
  return retry * (1 << doublings);
}

bool HostHealth::Usable(const std::string& address, uint64_t now_us) const {
  auto it = down_.find(address);
  if (it == down_.end()) return true;
  return it->second.probe_server == 0 && now_us >= it->second.retry_at_us;
}

const HostHealth::Down* HostHealth::Find(const std::string& address) const {
  auto it = down_.find(address);
  return it == down_.end() ? nullptr : &it->second;
}

void HostHealth::BeginProbe(const std::string& address, uint64_t server_id) {
  auto it = down_.find(address);
  if (it != down_.end()) it->second.probe_server = server_id;
}

absl::Duration HostHealth::MarkFailed(const std::string& address, uint64_t server_id,
                                      uint64_t now_us, absl::Duration retry) {
  auto [it, was_up] = down_.try_emplace(address);
  Down& down = it->second;
  const bool was_probe = down.probe_server != 0 && down.probe_server == server_id;
  if (was_up || was_probe || now_us >= down.retry_at_us) {
    ++down.failures;
    down.retry_at_us = now_us + static_cast<uint64_t>(
                                    absl::ToInt64Microseconds(HostBackoff(down.failures, retry)));
  }
  if (was_probe) down.probe_server = 0;
  return down.retry_at_us > now_us ? absl::Microseconds(down.retry_at_us - now_us)
                                   : absl::ZeroDuration();
}

bool HostHealth::MarkUp(const std::string& address) { return down_.erase(address) > 0; }

void HostHealth::EndProbe(const std::string& address, uint64_t server_id) {
  auto it = down_.find(address);
  if (it != down_.end() && it->second.probe_server == server_id) it->second.probe_server = 0;
}

HostPick PickHost(const std::vector<config::ServerEndpoint>& endpoints,
                  config::LoadBalanceHosts mode, size_t& cursor, HostHealth& health,
                  uint64_t server_id, uint64_t now_us, const HostHealth* mismatched) {
  HostPick pick;
  if (endpoints.size() == 1) {
    pick.endpoint = endpoints.front();
    pick.address = config::EndpointAddress(pick.endpoint);
    return pick;
  }
  std::vector<std::string> addresses;
  std::vector<bool> usable;
  addresses.reserve(endpoints.size());
  usable.reserve(endpoints.size());
  for (const config::ServerEndpoint& endpoint : endpoints) {
    addresses.push_back(config::EndpointAddress(endpoint));
    usable.push_back(health.Usable(addresses.back(), now_us) &&
                     (mismatched == nullptr || mismatched->Usable(addresses.back(), now_us)));
  }
  std::optional<size_t> index = ChooseHost(mode, usable, cursor);
  if (!index.has_value()) {
    // Every host is out: go on rotating over all of them rather than refuse; the pool's
    // server_login_retry paces these attempts as it paces a single host's.
    index = ChooseHost(mode, std::vector<bool>(endpoints.size(), true), cursor);
  }
  pick.endpoint = endpoints[*index];
  pick.address = addresses[*index];
  if (const HostHealth::Down* down = health.Find(pick.address);
      down != nullptr && down->probe_server == 0) {
    pick.probe = true;
    health.BeginProbe(pick.address, server_id);
  }
  return pick;
}

}  // namespace pgfleet::agent

#include "controller/config/overlay_proto.h"

namespace pgfleet::controller {

pgfleet::v1::ConfigOverlay OverlayToProto(const config::ConfigOverlay& in) {
  pgfleet::v1::ConfigOverlay out;
  out.set_name(in.name);
  if (in.by_agent) {
    out.set_agent_id(in.agent_id);
  } else {
    out.set_selector(in.selector);
  }
  for (const config::OverlaySetting& s : in.set) {
    pgfleet::v1::OverlaySetting* setting = out.add_set();
    setting->set_section(s.section);
    setting->set_key(s.key);
    setting->set_value(s.value);
  }
  for (const config::OverlayKey& r : in.remove) {
    pgfleet::v1::OverlayKey* key = out.add_remove();
    key->set_section(r.section);
    key->set_key(r.key);
  }
  return out;
}

config::ConfigOverlay OverlayFromProto(const pgfleet::v1::ConfigOverlay& in) {
  config::ConfigOverlay out;
  out.name = in.name();
  out.by_agent = in.target_case() == pgfleet::v1::ConfigOverlay::kAgentId;
  out.agent_id = in.agent_id();
  out.selector = in.selector();
  for (const auto& s : in.set()) out.set.push_back({s.section(), s.key(), s.value()});
  for (const auto& r : in.remove()) out.remove.push_back({r.section(), r.key()});
  return out;
}

}  // namespace pgfleet::controller

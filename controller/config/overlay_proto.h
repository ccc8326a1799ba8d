// Overlays between their model (common/config/overlay.h) and the API's messages: one mapping,
// used by the controller's API and by fleetctl (which compiles this file in, as it does the
// label selector parser).
#pragma once

#include "common/config/overlay.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

pgfleet::v1::ConfigOverlay OverlayToProto(const config::ConfigOverlay& in);
config::ConfigOverlay OverlayFromProto(const pgfleet::v1::ConfigOverlay& in);

}  // namespace pgfleet::controller

// Which maintenance windows may pause the same agent: both stores refuse to schedule two such
// windows at overlapping times.
#include "controller/maintenance/maintenance_store.h"
#include "controller/registry/label_selector.h"

namespace pgfleet::controller {

bool WindowsMayShareAgents(const WindowRow& a, const WindowRow& b) {
  absl::StatusOr<LabelSelector> first = LabelSelector::Parse(a.selector);
  absl::StatusOr<LabelSelector> second = LabelSelector::Parse(b.selector);
  // A stored selector that no longer parses: assume the worst.
  if (!first.ok() || !second.ok()) return true;
  return first->MayOverlap(*second);
}

}  // namespace pgfleet::controller

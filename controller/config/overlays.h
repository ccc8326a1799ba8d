// Which overlays of a config version apply to an agent, in what order, and what it then runs.
//
// Precedence (lowest first): the base ini < label-selector overlays < agent-id overlays. Two
// overlays of equal rank never disagree on a key for one agent: CheckOverlayConflicts refuses
// such a version at push time. So within a rank the listed order decides nothing about values;
// it only orders where new keys are appended. An agent-id overlay may override what a label
// overlay set (that is what it is for).
//
// Equal-rank conflict rule (sound and simple): two label overlays that set or remove the same
// section/key differently conflict unless their selectors are provably disjoint, i.e. some
// label key has requirements in both that no value satisfies at once (`zone=a` vs `zone=b`,
// `zone in (a,b)` vs `zone notin (a,b)`, `zone` vs `!zone`). Two agent overlays conflict when
// they name the same agent.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/overlay.h"
#include "controller/registry/label_selector.h"
#include "controller/store/rows.h"

namespace pgfleet::controller {

struct RenderedConfig {
  uint64_t version = 0;
  std::string ini_text;
  std::string sha256;                         // Lowercase hex sha256 of ini_text.
  std::vector<std::string> applied_overlays;  // As ConfigOverlay::Describe names them, in order.
};

// Checks each overlay's target and edits and rewrites selectors to LabelSelector's canonical
// spelling; then refuses equal-rank conflicts, naming both overlays and the key.
// InvalidArgument on any problem.
absl::Status CanonicalizeAndCheckOverlays(std::vector<config::ConfigOverlay>& overlays);

// True when no set of labels can match both selectors (see the rule above). False means
// "maybe both", never "surely both".
bool ProvablyDisjoint(const LabelSelector& a, const LabelSelector& b);

// The overlays of `version` that apply to an agent with this id and labels, in the order they
// are applied (label overlays in listed order, then agent overlays in listed order), with
// their 1-based positions in the version's list.
absl::StatusOr<std::vector<std::pair<int, const config::ConfigOverlay*>>> SelectOverlays(
    const ConfigVersionRow& version, const std::string& agent_id,
    const std::map<std::string, std::string>& labels);

// The ini the agent runs: the base with the selected overlays applied. A version without
// overlays renders to its base text, byte for byte.
absl::StatusOr<RenderedConfig> RenderForAgent(const ConfigVersionRow& version,
                                              const std::string& agent_id,
                                              const std::map<std::string, std::string>& labels);

}  // namespace pgfleet::controller

#include "controller/config/overlays.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "controller/store/store.h"

namespace pgfleet::controller {
namespace {

using Operator = LabelSelector::Operator;

bool RequiresPresence(const LabelSelector::Requirement& r) {
  return r.op == Operator::kEquals || r.op == Operator::kIn || r.op == Operator::kExists;
}

bool HasAllowedValues(const LabelSelector::Requirement& r) {
  return r.op == Operator::kEquals || r.op == Operator::kIn;
}

bool HasExcludedValues(const LabelSelector::Requirement& r) {
  return r.op == Operator::kNotEquals || r.op == Operator::kNotIn;
}

bool Contains(const std::vector<std::string>& values, const std::string& value) {
  return std::find(values.begin(), values.end(), value) != values.end();
}

// No value of the one label key satisfies both requirements.
bool Contradict(const LabelSelector::Requirement& a, const LabelSelector::Requirement& b) {
  if (RequiresPresence(a) && b.op == Operator::kNotExists) return true;
  if (RequiresPresence(b) && a.op == Operator::kNotExists) return true;
  if (HasAllowedValues(a) && HasAllowedValues(b)) {
    return std::none_of(a.values.begin(), a.values.end(),
                        [&](const std::string& v) { return Contains(b.values, v); });
  }
  if (HasAllowedValues(a) && HasExcludedValues(b)) {
    return std::all_of(a.values.begin(), a.values.end(),
                       [&](const std::string& v) { return Contains(b.values, v); });
  }
  if (HasAllowedValues(b) && HasExcludedValues(a)) return Contradict(b, a);
  return false;
}

enum class EditKind { kSet, kRemove };
struct Edit {
  EditKind kind;
  std::string section;
  std::string key;
  std::string value;
};

std::vector<Edit> EditsOf(const config::ConfigOverlay& overlay) {
  std::vector<Edit> edits;
  for (const config::OverlaySetting& s : overlay.set) {
    edits.push_back({EditKind::kSet, s.section, s.key, s.value});
  }
  for (const config::OverlayKey& r : overlay.remove) {
    edits.push_back({EditKind::kRemove, r.section, r.key, ""});
  }
  return edits;
}

std::string DescribeEdit(const Edit& edit) {
  return edit.kind == EditKind::kSet ? absl::StrCat("sets it to '", edit.value, "'") : "removes it";
}

}  // namespace

bool ProvablyDisjoint(const LabelSelector& a, const LabelSelector& b) {
  for (const LabelSelector::Requirement& ra : a.requirements()) {
    for (const LabelSelector::Requirement& rb : b.requirements()) {
      if (ra.key == rb.key && Contradict(ra, rb)) return true;
    }
  }
  return false;
}

absl::Status CanonicalizeAndCheckOverlays(std::vector<config::ConfigOverlay>& overlays) {
  std::vector<LabelSelector> selectors(overlays.size());
  for (size_t i = 0; i < overlays.size(); ++i) {
    config::ConfigOverlay& overlay = overlays[i];
    const std::string name = overlay.Describe(static_cast<int>(i) + 1);
    if (overlay.by_agent) {
      if (overlay.agent_id.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": agent id is empty"));
      }
    } else {
      absl::StatusOr<LabelSelector> selector = LabelSelector::Parse(overlay.selector);
      if (!selector.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": ", selector.status().message()));
      }
      selectors[i] = *selector;
      overlay.selector = selector->ToString();
    }
    if (overlay.set.empty() && overlay.remove.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(name, " changes nothing"));
    }
    std::vector<Edit> edits = EditsOf(overlay);
    for (size_t e = 0; e < edits.size(); ++e) {
      const Edit& edit = edits[e];
      if (edit.section.empty() || edit.key.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": an edit needs a section and a key"));
      }
      if (edit.section.find_first_of("[]\n\r") != std::string::npos ||
          edit.key.find_first_of("\n\r") != std::string::npos ||
          edit.value.find_first_of("\n\r") != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": [", edit.section, "] ", edit.key,
                                                       ": names and values are single lines"));
      }
      if (config::SameSection(edit.section, config::kOverlaySection) ||
          absl::StartsWithIgnoreCase(edit.section, "pgfleet.")) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": [", edit.section, "] is not a pgbouncer.ini section"));
      }
      for (size_t f = e + 1; f < edits.size(); ++f) {
        if (config::SameSection(edit.section, edits[f].section) &&
            config::SameKey(edit.section, edit.key, edits[f].key)) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, " edits [", edit.section, "] ", edit.key, " twice"));
        }
      }
    }
  }
  // Equal-rank conflicts.
  for (size_t i = 0; i < overlays.size(); ++i) {
    for (size_t j = i + 1; j < overlays.size(); ++j) {
      const config::ConfigOverlay& a = overlays[i];
      const config::ConfigOverlay& b = overlays[j];
      if (a.by_agent != b.by_agent) continue;  // Different ranks: agent-id overlays win.
      std::string why;
      if (a.by_agent) {
        if (a.agent_id != b.agent_id) continue;
        why = absl::StrCat("both target agent ", a.agent_id);
      } else {
        if (ProvablyDisjoint(selectors[i], selectors[j])) continue;
        why = absl::StrCat("selectors \"", a.selector, "\" and \"", b.selector,
                           "\" can match the same agent");
      }
      for (const Edit& ea : EditsOf(a)) {
        for (const Edit& eb : EditsOf(b)) {
          if (!config::SameSection(ea.section, eb.section) ||
              !config::SameKey(ea.section, ea.key, eb.key)) {
            continue;
          }
          if (ea.kind == eb.kind && ea.value == eb.value) continue;  // They agree.
          return absl::InvalidArgumentError(absl::StrCat(
              "conflicting overlays: ", a.Describe(static_cast<int>(i) + 1), " ", DescribeEdit(ea),
              " and ", b.Describe(static_cast<int>(j) + 1), " ", DescribeEdit(eb), " for [",
              ea.section, "] ", ea.key, ", and ", why,
              " (overlays of equal rank must agree; make the selectors exclusive, or use an "
              "agent overlay, which takes precedence over label overlays)"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<int, const config::ConfigOverlay*>>> SelectOverlays(
    const ConfigVersionRow& version, const std::string& agent_id,
    const std::map<std::string, std::string>& labels) {
  std::vector<std::pair<int, const config::ConfigOverlay*>> selected;
  for (bool agent_rank : {false, true}) {
    for (size_t i = 0; i < version.overlays.size(); ++i) {
      const config::ConfigOverlay& overlay = version.overlays[i];
      if (overlay.by_agent != agent_rank) continue;
      bool applies = false;
      if (overlay.by_agent) {
        applies = overlay.agent_id == agent_id;
      } else {
        PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(overlay.selector));
        applies = selector.Matches(labels);
      }
      if (applies) selected.emplace_back(static_cast<int>(i) + 1, &overlay);
    }
  }
  return selected;
}

absl::StatusOr<RenderedConfig> RenderForAgent(const ConfigVersionRow& version,
                                              const std::string& agent_id,
                                              const std::map<std::string, std::string>& labels) {
  PGF_ASSIGN_OR_RETURN(auto selected, SelectOverlays(version, agent_id, labels));
  RenderedConfig rendered;
  rendered.version = version.version;
  std::vector<const config::ConfigOverlay*> in_order;
  for (const auto& [position, overlay] : selected) {
    in_order.push_back(overlay);
    rendered.applied_overlays.push_back(overlay->Describe(position));
  }
  rendered.ini_text = config::ApplyOverlays(version.ini_text, in_order);
  rendered.sha256 = Sha256Hex(rendered.ini_text);
  return rendered;
}

}  // namespace pgfleet::controller

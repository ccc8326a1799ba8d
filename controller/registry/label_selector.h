// Label selectors with kubectl's syntax, used wherever an operator picks agents by label
// (`fleetctl agents list -l zone=a`, rollouts, pauses, maintenance windows, config overlays).
//
//   zone=a            zone==a         the label is present and equal
//   zone!=a                           absent, or present with another value
//   size in (large,xlarge)            present with one of the values
//   size notin (small)                absent, or present with none of the values
//   canary            !canary         present / absent
//
// Requirements are separated by commas and must all hold; the empty selector matches every
// agent. Keys and values use Kubernetes' label charset ([prefix/]name of letters, digits,
// '-', '_', '.'), so a selector written for a Kubernetes fleet means the same thing here.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pgfleet::controller {

class LabelSelector {
 public:
  enum class Operator { kEquals, kNotEquals, kIn, kNotIn, kExists, kNotExists };
  struct Requirement {
    std::string key;
    Operator op = Operator::kExists;
    std::vector<std::string> values;  // One for (not) equals, sorted for (not) in, none else.
  };

  // Matches everything.
  LabelSelector() = default;
  // InvalidArgument naming the offending position and what was expected, e.g.
  // `selector "size in (large": expected ',' or ')' at column 15 (end of selector)`.
  static absl::StatusOr<LabelSelector> Parse(absl::string_view text);

  bool Matches(const std::map<std::string, std::string>& labels) const;
  bool empty() const { return requirements_.empty(); }
  const std::vector<Requirement>& requirements() const { return requirements_; }
  // Whether some set of labels could match both selectors. False only when that is impossible
  // (e.g. a=x vs a=y, a in (x) vs a notin (x), a vs !a); the requirements on each key are
  // intersected, so the answer is exact, and anything in doubt answers true ("may overlap").
  bool MayOverlap(const LabelSelector& other) const;
  // A canonical spelling ("size in (large,xlarge),zone=a"): requirements sorted by key, so two
  // selectors that select the same way print the same.
  std::string ToString() const;

 private:
  std::vector<Requirement> requirements_;
};

// A label key or value is valid (the same rules Parse applies), for `fleetctl agents label`
// and agents' --labels: InvalidArgument saying which rule is broken.
absl::Status ValidateLabelKey(absl::string_view key);
absl::Status ValidateLabelValue(absl::string_view value);

}  // namespace pgfleet::controller

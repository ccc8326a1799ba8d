// "Did you mean": the declared name nearest to a misspelt one, for the command lines of
// fleetctl and the daemons (CLI11 2.1 has no suggestions of its own).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgfleet::common {

// Levenshtein distance: insertions, deletions and substitutions each cost 1.
size_t EditDistance(std::string_view a, std::string_view b);

// The candidate nearest to `typed`, or "" when none is close enough to be a plausible typo
// (distance at most a third of the longer name, and at least 2 allowed).
std::string NearestName(std::string_view typed, const std::vector<std::string>& candidates);

}  // namespace pgfleet::common

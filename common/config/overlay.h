// Config overlays: per-host edits on top of a config version's base pgbouncer.ini, and the
// overlay file format operators write them in (`fleetctl config push --overlay FILE`).
//
//   [pgfleet.overlay]                  ; starts an overlay (a file may hold several)
//   name = large hosts                 ; optional, names it in errors and renders
//   selector = size in (large,xlarge)  ; a label selector (kubectl syntax)...
//   ; agent = host-3                   ; ...or exactly one agent id
//   remove = databases.legacy, pgbouncer.stats_period   ; SECTION.KEY, may repeat
//   [pgbouncer]                        ; then ordinary sections: the keys to set
//   default_pool_size = 40
//   [databases]
//   zonedb = host=10.0.0.5 dbname=zonedb
//
// Which overlays apply to which agent, their precedence and their conflicts are the
// controller's (controller/config/overlays.h); this part only edits text, so the agent, the
// controller and fleetctl share one spelling of the format.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pgfleet::config {

struct OverlaySetting {
  std::string section;
  std::string key;
  std::string value;
};

struct OverlayKey {
  std::string section;
  std::string key;
};

struct ConfigOverlay {
  std::string name;  // Optional.
  // Exactly one target: a label selector (possibly empty: every agent) or one agent id.
  bool by_agent = false;
  std::string selector;
  std::string agent_id;
  std::vector<OverlaySetting> set;  // In file order.
  std::vector<OverlayKey> remove;

  // How errors and renders name it: `overlay "large hosts"`, or `overlay #2 (agent host-3)`
  // for an unnamed one (`position` is its 1-based place in the version's list).
  std::string Describe(int position) const;
};

// The section name that starts an overlay in an overlay file.
inline constexpr char kOverlaySection[] = "pgfleet.overlay";

// Parses an overlay file (one or more overlays). InvalidArgument "PATH:LINE: ..." for syntax,
// a key outside any overlay, an overlay with no or two targets, a key both set and removed or
// set twice, or an edit of a `pgfleet.*` section.
absl::StatusOr<std::vector<ConfigOverlay>> ParseOverlayFile(const std::string& text,
                                                            const std::string& path);

// The canonical overlay file text of `overlays` (ParseOverlayFile reads it back to the same
// overlays). Empty for no overlays. Stored with config versions and part of their sha256.
std::string FormatOverlays(const std::vector<ConfigOverlay>& overlays);

// pgbouncer.ini's own matching: section names ignore case, and so do [pgbouncer] settings;
// database and user names in the other sections are exact.
bool SameSection(const std::string& a, const std::string& b);
bool SameKey(const std::string& section, const std::string& a, const std::string& b);

// `base` with the overlays' edits applied in the given order, editing the text in place so
// comments and layout survive: a set key replaces the value on each line that has that key in
// that section; a new key goes after the last key of the section's last occurrence; a missing
// section is appended at the end; a removed key's lines are deleted. No overlays: `base`
// unchanged, byte for byte.
std::string ApplyOverlays(const std::string& base,
                          const std::vector<const ConfigOverlay*>& overlays);

// One line of an ini text, as the overlay edits see it.
struct IniTextLine {
  std::string text;
  std::optional<std::string> section;  // A `[name]` header line.
  std::optional<std::string> key;      // A `key = value` line.
  std::string in_section;              // The section a key line is in ("" before any).
  // Where a key line's value sits in `text` (surrounding whitespace excluded); both npos when
  // the line has no '='.
  size_t value_begin = std::string::npos;
  size_t value_end = std::string::npos;
};

// Classifies each line of a text split on '\n'.
std::vector<IniTextLine> ScanIniLines(std::vector<std::string> texts);

// The same, one line at a time, for readers that need not hold every line of a large text.
void VisitIniLines(absl::string_view text, absl::FunctionRef<void(const IniTextLine&)> visit);

}  // namespace pgfleet::config

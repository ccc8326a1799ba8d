#include "common/config/overlay.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/config/ini_parser.h"
#include "common/status_macros.h"

namespace pgfleet::config {
namespace {

absl::Status LineError(const std::string& path, int line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

bool IsOverlaySection(const std::string& name) { return SameSection(name, kOverlaySection); }

// A key as the ini syntax spells it: bare when it can be, else double-quoted with "" for ".
std::string FormatKey(const std::string& key) {
  bool bare = !key.empty();
  for (char c : key) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == '=' || c == '"') bare = false;
  }
  if (bare && (key[0] == ';' || key[0] == '#' || key[0] == '[' || key[0] == '%')) bare = false;
  if (bare) return key;
  std::string quoted = "\"";
  for (char c : key) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

// The key of a `key = value` line (the ini parser's rules), or nullopt for other lines.
// `key_end` gets the offset in `stripped` just past the key (its closing quote included).
std::optional<std::string> KeyOfLine(absl::string_view stripped, size_t* key_end) {
  if (stripped.empty() || stripped.front() == ';' || stripped.front() == '#' ||
      stripped.front() == '[' || stripped.front() == '%') {
    return std::nullopt;
  }
  std::string key;
  size_t i = 0;
  if (stripped[0] == '"') {
    for (i = 1; i < stripped.size(); ++i) {
      if (stripped[i] == '"') {
        if (i + 1 < stripped.size() && stripped[i + 1] == '"') {
          key += '"';
          ++i;
          continue;
        }
        *key_end = i + 1;
        return key;
      }
      key += stripped[i];
    }
    return std::nullopt;
  }
  while (i < stripped.size() && stripped[i] != '=' &&
         !absl::ascii_isspace(static_cast<unsigned char>(stripped[i]))) {
    key += stripped[i++];
  }
  if (key.empty()) return std::nullopt;
  *key_end = i;
  return key;
}

// The section name of a `[name]` line, or nullopt.
std::optional<std::string> SectionOfLine(absl::string_view stripped) {
  if (stripped.empty() || stripped.front() != '[') return std::nullopt;
  size_t close = stripped.find(']');
  if (close == absl::string_view::npos) return std::nullopt;
  return std::string(absl::StripAsciiWhitespace(stripped.substr(1, close - 1)));
}

using Line = IniTextLine;

std::vector<Line> Scan(const std::vector<std::string>& texts) { return ScanIniLines(texts); }

bool Matches(const Line& line, const std::string& section, const std::string& key) {
  return line.key && SameSection(line.in_section, section) && SameKey(section, *line.key, key);
}

void Remove(std::vector<std::string>& texts, const OverlayKey& edit) {
  std::vector<Line> lines = Scan(texts);
  std::vector<std::string> kept;
  for (const Line& line : lines) {
    if (!Matches(line, edit.section, edit.key)) kept.push_back(line.text);
  }
  texts = std::move(kept);
}

void Set(std::vector<std::string>& texts, const OverlaySetting& edit) {
  std::vector<Line> lines = Scan(texts);
  bool found = false;
  std::optional<size_t> insert_after;  // After the last key (or header) of the last occurrence.
  for (size_t i = 0; i < lines.size(); ++i) {
    if (Matches(lines[i], edit.section, edit.key)) {
      // Keep the line's indentation and its own spelling of the key.
      size_t indent = lines[i].text.find_first_not_of(" \t");
      texts[i] = absl::StrCat(lines[i].text.substr(0, indent), FormatKey(*lines[i].key), " = ",
                              edit.value);
      found = true;
    }
    if (lines[i].section) {
      if (SameSection(*lines[i].section, edit.section)) {
        insert_after = i;
      }
    } else if (lines[i].key && insert_after && SameSection(lines[i].in_section, edit.section)) {
      insert_after = i;
    }
  }
  if (found) return;
  std::string line = absl::StrCat(FormatKey(edit.key), " = ", edit.value);
  if (insert_after) {
    texts.insert(texts.begin() + static_cast<std::ptrdiff_t>(*insert_after) + 1, line);
    return;
  }
  // A new section at the end, after a blank line. The file keeps its final newline, if it
  // had one (StrSplit leaves "" as the last element then); an empty file gets one.
  const bool final_newline = texts.empty() || texts.back().empty();
  if (texts.empty()) texts.push_back("");
  if (final_newline) texts.pop_back();
  if (!texts.empty() && !absl::StripAsciiWhitespace(texts.back()).empty()) texts.push_back("");
  texts.push_back(absl::StrCat("[", edit.section, "]"));
  texts.push_back(line);
  if (final_newline) texts.push_back("");
}

// Fills in what `line.text` is; `current` is the section the lines before it are in, updated
// when the line is a section header.
void ClassifyLine(IniTextLine& line, std::string& current) {
  const std::string& text = line.text;
  line.section.reset();
  line.key.reset();
  line.in_section.clear();
  line.value_begin = std::string::npos;
  line.value_end = std::string::npos;
  const size_t indent = std::min(text.size(), text.find_first_not_of(" \t\r\n\f\v"));
  absl::string_view stripped = absl::StripAsciiWhitespace(text);
  size_t key_end = 0;
  if ((line.section = SectionOfLine(stripped))) {
    current = *line.section;
  } else if ((line.key = KeyOfLine(stripped, &key_end))) {
    line.in_section = current;
    size_t i = indent + key_end;
    while (i < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i < text.size() && text[i] == '=') {
      ++i;
      while (i < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[i]))) ++i;
      line.value_begin = i;
      size_t end = text.size();
      while (end > i && absl::ascii_isspace(static_cast<unsigned char>(text[end - 1]))) --end;
      line.value_end = end;
    }
  }
}

}  // namespace

void VisitIniLines(absl::string_view text, absl::FunctionRef<void(const IniTextLine&)> visit) {
  std::string current;
  IniTextLine line;
  for (absl::string_view piece : absl::StrSplit(text, '\n')) {
    line.text.assign(piece.data(), piece.size());
    ClassifyLine(line, current);
    visit(line);
  }
}

std::vector<IniTextLine> ScanIniLines(std::vector<std::string> texts) {
  std::vector<IniTextLine> lines;
  lines.reserve(texts.size());
  std::string current;
  for (std::string& text : texts) {
    IniTextLine line;
    line.text = std::move(text);
    ClassifyLine(line, current);
    lines.push_back(std::move(line));
  }
  return lines;
}

std::string ConfigOverlay::Describe(int position) const {
  if (!name.empty()) return absl::StrCat("overlay \"", name, "\"");
  return absl::StrCat(
      "overlay #", position, " (",
      by_agent ? absl::StrCat("agent ", agent_id) : absl::StrCat("selector \"", selector, "\""),
      ")");
}

bool SameSection(const std::string& a, const std::string& b) {
  return absl::EqualsIgnoreCase(a, b);
}

bool SameKey(const std::string& section, const std::string& a, const std::string& b) {
  return SameSection(section, "pgbouncer") ? absl::EqualsIgnoreCase(a, b) : a == b;
}

absl::StatusOr<std::vector<ConfigOverlay>> ParseOverlayFile(const std::string& text,
                                                            const std::string& path) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(line), "%include")) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": %include is not allowed in an overlay file"));
    }
  }
  PGF_ASSIGN_OR_RETURN(std::vector<IniEntry> entries, ParseIni(text, path));
  std::vector<ConfigOverlay> overlays;
  std::vector<bool> has_target;
  std::string section;
  for (const IniEntry& entry : entries) {
    if (entry.kind == IniEntry::Kind::kSection) {
      section = entry.key;
      if (IsOverlaySection(section)) {
        if (!overlays.empty() && !has_target.back()) {
          return LineError(path, entry.line,
                           "the previous overlay has no target (selector = ... or agent = ...)");
        }
        overlays.emplace_back();
        has_target.push_back(false);
      } else if (absl::StartsWithIgnoreCase(section, "pgfleet.")) {
        return LineError(path, entry.line,
                         absl::StrCat("unknown section [", section, "] (only [", kOverlaySection,
                                      "] is pgfleet's own)"));
      } else if (overlays.empty()) {
        return LineError(path, entry.line,
                         absl::StrCat("an overlay file starts with [", kOverlaySection, "]"));
      }
      continue;
    }
    if (overlays.empty()) {
      return LineError(path, entry.line,
                       absl::StrCat("an overlay file starts with [", kOverlaySection, "]"));
    }
    ConfigOverlay& overlay = overlays.back();
    if (IsOverlaySection(section)) {
      const std::string key = absl::AsciiStrToLower(entry.key);
      if (key == "name") {
        overlay.name = entry.value;
      } else if (key == "selector" || key == "agent") {
        if (has_target.back()) {
          return LineError(path, entry.line,
                           "an overlay has one target: a selector or an agent, not both or two");
        }
        has_target.back() = true;
        overlay.by_agent = key == "agent";
        if (overlay.by_agent) {
          if (entry.value.empty()) return LineError(path, entry.line, "agent = needs an agent id");
          overlay.agent_id = entry.value;
        } else {
          overlay.selector = entry.value;
        }
      } else if (key == "remove") {
        for (absl::string_view item : absl::StrSplit(entry.value, ',', absl::SkipWhitespace())) {
          item = absl::StripAsciiWhitespace(item);
          size_t dot = item.find('.');
          if (dot == absl::string_view::npos || dot == 0 || dot + 1 == item.size()) {
            return LineError(path, entry.line,
                             absl::StrCat("remove wants SECTION.KEY items, not '", item, "'"));
          }
          overlay.remove.push_back(
              {std::string(item.substr(0, dot)), std::string(item.substr(dot + 1))});
        }
      } else {
        return LineError(path, entry.line,
                         absl::StrCat("unknown key '", entry.key, "' in [", kOverlaySection,
                                      "] (name, selector, agent, remove)"));
      }
      continue;
    }
    overlay.set.push_back({section, entry.key, entry.value});
  }
  if (overlays.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no overlay (an overlay starts with [", kOverlaySection, "])"));
  }
  if (!has_target.back()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the last overlay has no target (selector = ... or agent = ...)"));
  }
  // One edit per key within an overlay: two would leave the meaning to the reader.
  for (size_t i = 0; i < overlays.size(); ++i) {
    const ConfigOverlay& overlay = overlays[i];
    std::vector<OverlayKey> touched;
    for (const OverlaySetting& s : overlay.set) touched.push_back({s.section, s.key});
    for (const OverlayKey& r : overlay.remove) touched.push_back(r);
    for (size_t a = 0; a < touched.size(); ++a) {
      for (size_t b = a + 1; b < touched.size(); ++b) {
        if (SameSection(touched[a].section, touched[b].section) &&
            SameKey(touched[a].section, touched[a].key, touched[b].key)) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ": ", overlay.Describe(static_cast<int>(i) + 1), " edits [", touched[a].section,
              "] ", touched[a].key, " twice (set twice, or set and removed)"));
        }
      }
    }
  }
  return overlays;
}

std::string FormatOverlays(const std::vector<ConfigOverlay>& overlays) {
  std::string out;
  for (const ConfigOverlay& overlay : overlays) {
    absl::StrAppend(&out, "[", kOverlaySection, "]\n");
    if (!overlay.name.empty()) absl::StrAppend(&out, "name = ", overlay.name, "\n");
    if (overlay.by_agent) {
      absl::StrAppend(&out, "agent = ", overlay.agent_id, "\n");
    } else {
      absl::StrAppend(&out, "selector = ", overlay.selector, "\n");
    }
    for (const OverlayKey& r : overlay.remove) {
      absl::StrAppend(&out, "remove = ", r.section, ".", r.key, "\n");
    }
    std::string section;
    for (const OverlaySetting& s : overlay.set) {
      if (section.empty() || s.section != section) {
        section = s.section;
        absl::StrAppend(&out, "[", section, "]\n");
      }
      absl::StrAppend(&out, FormatKey(s.key), " = ", s.value, "\n");
    }
  }
  return out;
}

std::string ApplyOverlays(const std::string& base,
                          const std::vector<const ConfigOverlay*>& overlays) {
  if (overlays.empty()) return base;
  std::vector<std::string> texts = absl::StrSplit(base, '\n');
  for (const ConfigOverlay* overlay : overlays) {
    for (const OverlayKey& edit : overlay->remove) Remove(texts, edit);
    for (const OverlaySetting& edit : overlay->set) Set(texts, edit);
  }
  return absl::StrJoin(texts, "\n");
}

}  // namespace pgfleet::config

#include "controller/registry/label_selector.h"

#include <algorithm>
#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pgfleet::controller {
namespace {

bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

// A name segment: up to 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric.
absl::Status ValidateName(absl::string_view name, absl::string_view what) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (name.size() > 63) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", name, "\" is longer than 63 characters"));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", name, "\" may hold only letters, digits, '-', '_' and '.'"));
    }
  }
  if (!std::isalnum(static_cast<unsigned char>(name.front())) ||
      !std::isalnum(static_cast<unsigned char>(name.back()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", name, "\" must start and end with a letter or digit"));
  }
  return absl::OkStatus();
}

// Splits the selector into tokens: names, operators (= == != !), commas and parentheses.
// "in" and "notin" are names here; the parser tells them apart by position.
struct Token {
  enum Kind { kName, kEquals, kNotEquals, kBang, kComma, kOpen, kClose, kEnd } kind;
  std::string text;
  size_t column;  // 1-based, for error messages.
};

bool IsKeyChar(char c) { return IsNameChar(c) || c == '/'; }

absl::StatusOr<std::vector<Token>> Tokenize(absl::string_view text) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    const size_t column = i + 1;
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == ',') {
      tokens.push_back({Token::kComma, ",", column});
      ++i;
    } else if (c == '(') {
      tokens.push_back({Token::kOpen, "(", column});
      ++i;
    } else if (c == ')') {
      tokens.push_back({Token::kClose, ")", column});
      ++i;
    } else if (c == '=') {
      const bool doubled = i + 1 < text.size() && text[i + 1] == '=';
      tokens.push_back({Token::kEquals, doubled ? "==" : "=", column});
      i += doubled ? 2 : 1;
    } else if (c == '!') {
      if (i + 1 < text.size() && text[i + 1] == '=') {
        tokens.push_back({Token::kNotEquals, "!=", column});
        i += 2;
      } else {
        tokens.push_back({Token::kBang, "!", column});
        ++i;
      }
    } else if (IsKeyChar(c)) {
      size_t end = i;
      while (end < text.size() && IsKeyChar(text[end])) ++end;
      tokens.push_back({Token::kName, std::string(text.substr(i, end - i)), column});
      i = end;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("selector \"", text, "\": unexpected '",
                                                     std::string(1, c), "' at column ", column));
    }
  }
  tokens.push_back({Token::kEnd, "", text.size() + 1});
  return tokens;
}

class Parser {
 public:
  Parser(absl::string_view text, std::vector<Token> tokens)
      : text_(text), tokens_(std::move(tokens)) {}

  absl::StatusOr<std::vector<LabelSelector::Requirement>> Run() {
    std::vector<LabelSelector::Requirement> requirements;
    if (Peek().kind == Token::kEnd) return requirements;
    while (true) {
      auto requirement = ParseRequirement();
      if (!requirement.ok()) return requirement.status();
      requirements.push_back(*std::move(requirement));
      if (Peek().kind == Token::kEnd) return requirements;
      if (Peek().kind != Token::kComma) return Expected("',' or the end");
      Next();
    }
  }

 private:
  const Token& Peek() const { return tokens_[position_]; }
  const Token& Next() { return tokens_[position_++]; }

  absl::Status Expected(absl::string_view what) const {
    const Token& token = Peek();
    return absl::InvalidArgumentError(
        absl::StrCat("selector \"", text_, "\": expected ", what, " at column ", token.column,
                     token.kind == Token::kEnd ? " (end of selector)"
                                               : absl::StrCat(", found \"", token.text, "\"")));
  }

  absl::StatusOr<std::string> ParseKey() {
    if (Peek().kind != Token::kName) return Expected("a label key");
    std::string key = Next().text;
    absl::Status valid = ValidateLabelKey(key);
    if (!valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("selector \"", text_, "\": ", valid.message()));
    }
    return key;
  }

  absl::StatusOr<std::string> ParseValue() {
    // An empty value is allowed after = and != ("zone=" selects agents whose zone is empty).
    if (Peek().kind != Token::kName) return std::string();
    std::string value = Next().text;
    absl::Status valid = ValidateLabelValue(value);
    if (!valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("selector \"", text_, "\": ", valid.message()));
    }
    return value;
  }

  absl::StatusOr<LabelSelector::Requirement> ParseRequirement() {
    LabelSelector::Requirement requirement;
    if (Peek().kind == Token::kBang) {
      Next();
      auto key = ParseKey();
      if (!key.ok()) return key.status();
      requirement.key = *key;
      requirement.op = LabelSelector::Operator::kNotExists;
      return requirement;
    }
    auto key = ParseKey();
    if (!key.ok()) return key.status();
    requirement.key = *key;
    const Token& op = Peek();
    if (op.kind == Token::kComma || op.kind == Token::kEnd) {
      requirement.op = LabelSelector::Operator::kExists;
      return requirement;
    }
    if (op.kind == Token::kEquals || op.kind == Token::kNotEquals) {
      requirement.op = op.kind == Token::kEquals ? LabelSelector::Operator::kEquals
                                                 : LabelSelector::Operator::kNotEquals;
      Next();
      auto value = ParseValue();
      if (!value.ok()) return value.status();
      requirement.values.push_back(*value);
      return requirement;
    }
    if (op.kind == Token::kName && (op.text == "in" || op.text == "notin")) {
      requirement.op =
          op.text == "in" ? LabelSelector::Operator::kIn : LabelSelector::Operator::kNotIn;
      Next();
      if (Peek().kind != Token::kOpen) return Expected("\"(\"");
      Next();
      while (true) {
        if (Peek().kind != Token::kName) return Expected("a value");
        auto value = ParseValue();
        if (!value.ok()) return value.status();
        requirement.values.push_back(*value);
        if (Peek().kind == Token::kClose) {
          Next();
          break;
        }
        if (Peek().kind != Token::kComma) return Expected("',' or ')'");
        Next();
      }
      std::sort(requirement.values.begin(), requirement.values.end());
      requirement.values.erase(std::unique(requirement.values.begin(), requirement.values.end()),
                               requirement.values.end());
      return requirement;
    }
    return Expected("=, ==, !=, in, notin, ',' or the end");
  }

  absl::string_view text_;
  std::vector<Token> tokens_;
  size_t position_ = 0;
};

}  // namespace

absl::Status ValidateLabelKey(absl::string_view key) {
  // [prefix/]name, where the prefix is a DNS subdomain (dot-separated names, at most 253).
  const size_t slash = key.find('/');
  absl::string_view name = key;
  if (slash != absl::string_view::npos) {
    const absl::string_view prefix = key.substr(0, slash);
    name = key.substr(slash + 1);
    if (prefix.empty() || prefix.size() > 253) {
      return absl::InvalidArgumentError(
          absl::StrCat("label key \"", key, "\": the prefix before '/' must be 1-253 characters"));
    }
    absl::Status prefix_ok = ValidateName(prefix, absl::StrCat("label key prefix"));
    if (!prefix_ok.ok()) return prefix_ok;
  }
  if (name.find('/') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("label key \"", key, "\" has more than one '/'"));
  }
  return ValidateName(name, "label key");
}

absl::Status ValidateLabelValue(absl::string_view value) {
  if (value.empty()) return absl::OkStatus();
  return ValidateName(value, "label value");
}

absl::StatusOr<LabelSelector> LabelSelector::Parse(absl::string_view text) {
  auto tokens = Tokenize(text);
  if (!tokens.ok()) return tokens.status();
  Parser parser(text, *std::move(tokens));
  auto requirements = parser.Run();
  if (!requirements.ok()) return requirements.status();
  LabelSelector selector;
  selector.requirements_ = *std::move(requirements);
  std::stable_sort(selector.requirements_.begin(), selector.requirements_.end(),
                   [](const Requirement& a, const Requirement& b) { return a.key < b.key; });
  return selector;
}

bool LabelSelector::Matches(const std::map<std::string, std::string>& labels) const {
  for (const Requirement& requirement : requirements_) {
    const auto found = labels.find(requirement.key);
    const bool present = found != labels.end();
    const auto listed = [&] {
      return present && std::binary_search(requirement.values.begin(), requirement.values.end(),
                                           found->second);
    };
    bool holds = false;
    switch (requirement.op) {
      case Operator::kEquals:
        holds = present && found->second == requirement.values.front();
        break;
      case Operator::kNotEquals:
        holds = !present || found->second != requirement.values.front();
        break;
      case Operator::kIn:
        holds = listed();
        break;
      case Operator::kNotIn:
        holds = !listed();
        break;
      case Operator::kExists:
        holds = present;
        break;
      case Operator::kNotExists:
        holds = !present;
        break;
    }
    if (!holds) return false;
  }
  return true;
}

namespace {

// What the requirements on one key leave possible: the key absent, and which values. Values
// are a finite set (`allowed`) or everything but a finite set (`excluded`); the latter is never
// empty, since there are infinitely many valid label values.
struct KeyDomain {
  bool absent_ok = true;
  bool cofinite = true;
  std::set<std::string> allowed;   // When !cofinite.
  std::set<std::string> excluded;  // When cofinite.

  void KeepOnly(const std::vector<std::string>& values) {
    std::set<std::string> kept;
    for (const std::string& value : values) {
      if (cofinite ? excluded.count(value) == 0 : allowed.count(value) != 0) kept.insert(value);
    }
    cofinite = false;
    allowed = std::move(kept);
    excluded.clear();
  }
  void Remove(const std::vector<std::string>& values) {
    for (const std::string& value : values) {
      if (cofinite) {
        excluded.insert(value);
      } else {
        allowed.erase(value);
      }
    }
  }
  void Apply(const LabelSelector::Requirement& requirement) {
    using Operator = LabelSelector::Operator;
    switch (requirement.op) {
      case Operator::kEquals:
      case Operator::kIn:
        absent_ok = false;
        KeepOnly(requirement.values);
        break;
      case Operator::kNotEquals:
      case Operator::kNotIn:
        Remove(requirement.values);
        break;
      case Operator::kExists:
        absent_ok = false;
        break;
      case Operator::kNotExists:
        KeepOnly({});
        break;
    }
  }
  bool empty() const { return !absent_ok && !cofinite && allowed.empty(); }
};

}  // namespace

bool LabelSelector::MayOverlap(const LabelSelector& other) const {
  // Requirements on different keys never conflict: the selectors share a match unless the
  // requirements on some one key, from both, leave nothing possible.
  std::map<std::string, KeyDomain> domains;
  for (const LabelSelector* selector : {this, &other}) {
    for (const Requirement& requirement : selector->requirements_) {
      domains[requirement.key].Apply(requirement);
    }
  }
  for (const auto& [key, domain] : domains) {
    if (domain.empty()) return false;
  }
  return true;
}

std::string LabelSelector::ToString() const {
  std::vector<std::string> parts;
  for (const Requirement& requirement : requirements_) {
    switch (requirement.op) {
      case Operator::kEquals:
        parts.push_back(absl::StrCat(requirement.key, "=", requirement.values.front()));
        break;
      case Operator::kNotEquals:
        parts.push_back(absl::StrCat(requirement.key, "!=", requirement.values.front()));
        break;
      case Operator::kIn:
        parts.push_back(
            absl::StrCat(requirement.key, " in (", absl::StrJoin(requirement.values, ","), ")"));
        break;
      case Operator::kNotIn:
        parts.push_back(
            absl::StrCat(requirement.key, " notin (", absl::StrJoin(requirement.values, ","), ")"));
        break;
      case Operator::kExists:
        parts.push_back(requirement.key);
        break;
      case Operator::kNotExists:
        parts.push_back(absl::StrCat("!", requirement.key));
        break;
    }
  }
  return absl::StrJoin(parts, ",");
}

}  // namespace pgfleet::controller

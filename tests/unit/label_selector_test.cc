#include "controller/registry/label_selector.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace pgfleet::controller {
namespace {

using Labels = std::map<std::string, std::string>;

bool Selects(const std::string& selector, const Labels& labels) {
  auto parsed = LabelSelector::Parse(selector);
  EXPECT_TRUE(parsed.ok()) << selector << ": " << parsed.status();
  return parsed.ok() && parsed->Matches(labels);
}

std::string ParseError(const std::string& selector) {
  auto parsed = LabelSelector::Parse(selector);
  EXPECT_FALSE(parsed.ok()) << selector << " parsed as " << parsed->ToString();
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

TEST(LabelSelectorTest, EmptySelectorMatchesEverything) {
  EXPECT_TRUE(Selects("", {}));
  EXPECT_TRUE(Selects("  ", {{"zone", "a"}}));
}

TEST(LabelSelectorTest, EqualityAndInequality) {
  const Labels zone_a = {{"zone", "a"}, {"size", "large"}};
  EXPECT_TRUE(Selects("zone=a", zone_a));
  EXPECT_TRUE(Selects("zone==a", zone_a));
  EXPECT_FALSE(Selects("zone=b", zone_a));
  EXPECT_FALSE(Selects("zone!=a", zone_a));
  EXPECT_TRUE(Selects("zone!=b", zone_a));
  // As in Kubernetes, != also selects agents that lack the label.
  EXPECT_TRUE(Selects("rack!=r1", zone_a));
  EXPECT_FALSE(Selects("rack=r1", zone_a));
}

TEST(LabelSelectorTest, SetOperators) {
  const Labels large = {{"size", "large"}};
  EXPECT_TRUE(Selects("size in (large,xlarge)", large));
  EXPECT_TRUE(Selects("size in ( xlarge , large )", large));
  EXPECT_FALSE(Selects("size in (small)", large));
  EXPECT_FALSE(Selects("size notin (large,xlarge)", large));
  EXPECT_TRUE(Selects("size notin (small)", large));
  EXPECT_TRUE(Selects("zone notin (a)", large));  // Absent label: notin holds.
  EXPECT_FALSE(Selects("zone in (a)", large));
}

TEST(LabelSelectorTest, ExistenceAndConjunction) {
  const Labels canary = {{"canary", ""}, {"zone", "b"}};
  EXPECT_TRUE(Selects("canary", canary));
  EXPECT_FALSE(Selects("!canary", canary));
  EXPECT_TRUE(Selects("!gpu", canary));
  EXPECT_TRUE(Selects("canary,zone=b", canary));
  EXPECT_FALSE(Selects("canary,zone=a", canary));
  EXPECT_TRUE(Selects("canary=", canary));  // Present with an empty value.
  EXPECT_TRUE(
      Selects("example.com/team=db,zone in (a,b)", {{"example.com/team", "db"}, {"zone", "b"}}));
}

TEST(LabelSelectorTest, CanonicalSpellingSortsKeysAndValues) {
  auto parsed = LabelSelector::Parse("zone=a, size in (xlarge,large,large), !gpu");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->ToString(), "!gpu,size in (large,xlarge),zone=a");
  // The canonical form parses back to itself.
  auto again = LabelSelector::Parse(parsed->ToString());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ToString(), parsed->ToString());
}

TEST(LabelSelectorTest, ErrorsNameThePlaceAndWhatWasExpected) {
  EXPECT_NE(ParseError("size in (large").find("expected ',' or ')' at column 15"),
            std::string::npos);
  EXPECT_NE(ParseError("size in large").find("expected \"(\" at column 9"), std::string::npos);
  EXPECT_NE(ParseError("zone=a,").find("expected a label key"), std::string::npos);
  EXPECT_NE(ParseError("zone=a zone=b").find("expected ',' or the end at column 8"),
            std::string::npos);
  EXPECT_NE(ParseError("zone>a").find("unexpected '>' at column 5"), std::string::npos);
  EXPECT_NE(ParseError("-zone=a").find("must start and end with a letter or digit"),
            std::string::npos);
  EXPECT_NE(ParseError("zone=" + std::string(64, 'x')).find("longer than 63"), std::string::npos);
  EXPECT_NE(ParseError("a/b/c=d").find("more than one '/'"), std::string::npos);
  EXPECT_NE(ParseError("size in ()").find("expected a value"), std::string::npos);
}

TEST(LabelSelectorTest, KeyAndValueValidation) {
  EXPECT_TRUE(ValidateLabelKey("zone").ok());
  EXPECT_TRUE(ValidateLabelKey("pgfleet.io/size").ok());
  EXPECT_FALSE(ValidateLabelKey("").ok());
  EXPECT_FALSE(ValidateLabelKey("bad key").ok());
  EXPECT_TRUE(ValidateLabelValue("").ok());
  EXPECT_TRUE(ValidateLabelValue("eu-west-1a").ok());
  EXPECT_FALSE(ValidateLabelValue("a,b").ok());
}

}  // namespace
}  // namespace pgfleet::controller

// StopMatcher against the plain definition (read byte by byte, cut where a stop string is first
// complete), whatever the pieces the text arrives in, and no byte of a stop string ever sent.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "server/stop_matcher.h"

namespace bl::server {
namespace {

struct Sent {
  std::string text;
  bool stopped = false;
};

Sent run(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  StopMatcher m(stops);
  Sent out;
  for (const std::string& p : pieces) {
    out.text += m.push(p);
    if (m.stopped()) break;
  }
  out.stopped = m.stopped();
  if (!out.stopped) out.text += m.flush();
  return out;
}

// Read byte by byte: at the first byte where some stop string ends, the text before the longest
// one ending there (all of the text when none ends anywhere).
Sent expected(const std::vector<std::string>& stops, const std::string& text) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t start = std::string::npos;
    for (const std::string& s : stops) {
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0)
        start = std::min(start, end - s.size());
    }
    if (start != std::string::npos) return {text.substr(0, start), true};
  }
  return {text, false};
}

TEST(StopMatcher, CutsWithinOnePiece) {
  const Sent s = run({"END"}, {"one two END three"});
  EXPECT_EQ(s.text, "one two ");
  EXPECT_TRUE(s.stopped);
}

TEST(StopMatcher, CutsAcrossPiecesAndSendsNoPartOfTheStopString) {
  StopMatcher m({"\nUser:"});
  EXPECT_EQ(m.push("Sure."), "Sure.");
  EXPECT_EQ(m.push("\n"), "");  // could start "\nUser:"
  EXPECT_EQ(m.push("Us"), "");
  EXPECT_EQ(m.push("er: more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.push("after"), "");
}

TEST(StopMatcher, ReleasesHeldTextThatTurnsOutNotToBeAStop) {
  StopMatcher m({"abc"});
  EXPECT_EQ(m.push("xab"), "x");
  EXPECT_EQ(m.push("d"), "abd");
  EXPECT_EQ(m.push("a"), "");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.flush(), "a");
}

TEST(StopMatcher, CutsAtTheStopCompletedFirst) {
  EXPECT_EQ(run({"world", "lo w"}, {"hello world"}).text, "hel");
  EXPECT_EQ(run({"b", "abc"}, {"xabc"}).text, "xa");  // "b" is complete before "abc" is
  EXPECT_EQ(run({"b", "abc"}, {"xa", "bc"}).text, "xa");
  EXPECT_EQ(run({"bc", "abc"}, {"xabc"}).text, "x");  // both end on "c": the longer
}

TEST(StopMatcher, KeepsMultiByteCharactersWhole) {
  // "é" is two bytes; the stop "éa" must not cut between them.
  const Sent s = run({"\xC3\xA9"
                      "a"},
                     {"caf\xC3\xA9", "!", "\xC3\xA9", "a!"});
  EXPECT_EQ(s.text, "caf\xC3\xA9!");
  EXPECT_TRUE(s.stopped);
}

TEST(StopMatcher, NoStopsPassesEverythingAtOnce) {
  StopMatcher m({});
  EXPECT_EQ(m.push("abc"), "abc");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, AgreesWithTheDefinitionOnRandomTexts) {
  std::mt19937 rng(11);
  const std::string alphabet = "ab\n";
  auto random_string = [&](int lo, int hi) {
    std::string s(std::uniform_int_distribution<int>(lo, hi)(rng), ' ');
    for (char& c : s) c = alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    return s;
  };
  for (int trial = 0; trial < 5000; ++trial) {
    std::vector<std::string> stops;
    for (int i = std::uniform_int_distribution<int>(1, 3)(rng); i > 0; --i)
      stops.push_back(random_string(1, 4));
    const std::string text = random_string(0, 24);
    std::vector<std::string> pieces;
    for (size_t at = 0; at < text.size();) {
      const size_t n =
          std::min(text.size() - at, static_cast<size_t>(std::uniform_int_distribution<int>(0, 4)(rng)));
      pieces.push_back(text.substr(at, n));
      at += n;
    }
    const Sent got = run(stops, pieces), want = expected(stops, text);
    std::string described = "trial " + std::to_string(trial) + ", stops";
    for (const std::string& stop : stops) described += " '" + stop + "'";
    described += ", pieces";
    for (const std::string& piece : pieces) described += " '" + piece + "'";
    ASSERT_EQ(got.text, want.text) << described;
    ASSERT_EQ(got.stopped, want.stopped) << described;
  }
}

}  // namespace
}  // namespace bl::server

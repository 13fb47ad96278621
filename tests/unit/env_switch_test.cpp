// env_choice: a switch's value when it is one of its choices; unset or anything else gives
// nullopt, and anything else also a warning on stderr naming the switch and its choices.
#include "core/env_switch.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace bl {
namespace {

constexpr const char* kName = "BITLIGHT_TEST_ENV_SWITCH";

TEST(EnvSwitch, UnsetGivesNothingAndNoWarning) {
  unsetenv(kName);
  testing::internal::CaptureStderr();
  EXPECT_FALSE(env_choice(kName, {"0", "1"}).has_value());
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(EnvSwitch, AChoiceIsReturned) {
  for (const char* v : {"0", "all"}) {
    setenv(kName, v, 1);
    testing::internal::CaptureStderr();
    const auto got = env_choice(kName, {"0", "1", "all"});
    EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, v);
  }
  unsetenv(kName);
}

TEST(EnvSwitch, AnythingElseIsIgnoredWithAWarning) {
  for (const char* v : {"2", "", "ALL", "0 "}) {
    setenv(kName, v, 1);
    testing::internal::CaptureStderr();
    EXPECT_FALSE(env_choice(kName, {"0", "1", "all"}).has_value()) << '"' << v << '"';
    EXPECT_EQ(testing::internal::GetCapturedStderr(),
              std::string("bitlight: ignoring BITLIGHT_TEST_ENV_SWITCH=") + v + " (want 0|1|all)\n");
  }
  unsetenv(kName);
}

}  // namespace
}  // namespace bl

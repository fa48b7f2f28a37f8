#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

#include "herdguard/repository.h"

namespace herdguard {
namespace {

using ::testing::HasSubstr;

Deadline soon() { return Deadline::after(std::chrono::seconds(5)); }

TEST(CallbackRepository, ReturnsTheFunctionsValueForTheGivenKeyAndDeadline) {
  const Deadline deadline = soon();
  std::string seen_key;
  Deadline::SteadyTime seen_deadline;
  CallbackRepository repo(
      [&](std::string_view key, Deadline d) -> Result<std::optional<std::string>> {
        seen_key = std::string(key);
        seen_deadline = d.when();
        return std::optional<std::string>("value of " + std::string(key));
      });

  auto r = repo.load("k1", deadline);

  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, std::optional<std::string>("value of k1"));
  EXPECT_EQ(seen_key, "k1");
  EXPECT_EQ(seen_deadline, deadline.when());
}

TEST(CallbackRepository, ReturnsNulloptWhenTheFunctionFindsNoValue) {
  CallbackRepository repo([](std::string_view, Deadline) -> Result<std::optional<std::string>> {
    return std::optional<std::string>();
  });

  auto r = repo.load("missing", soon());

  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_FALSE(r->has_value());
}

TEST(CallbackRepository, PassesTheFunctionsErrorThroughUnchanged) {
  CallbackRepository repo([](std::string_view, Deadline) -> Result<std::optional<std::string>> {
    return make_error(ErrorKind::kTimeout, "db took too long");
  });

  auto r = repo.load("k", soon());

  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(r.error().message, "db took too long");
}

TEST(CallbackRepository, StdExceptionBecomesBackendErrorWithItsMessage) {
  CallbackRepository repo([](std::string_view, Deadline) -> Result<std::optional<std::string>> {
    throw std::runtime_error("connection reset");
  });

  auto r = repo.load("k", soon());

  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(r.error().message, HasSubstr("loader threw"));
  EXPECT_THAT(r.error().message, HasSubstr("connection reset"));
}

TEST(CallbackRepository, NonStdExceptionBecomesBackendErrorNamedUnknown) {
  CallbackRepository repo(
      [](std::string_view, Deadline) -> Result<std::optional<std::string>> { throw 42; });

  auto r = repo.load("k", soon());

  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(r.error().message, HasSubstr("loader threw"));
  EXPECT_THAT(r.error().message, HasSubstr("unknown exception"));
}

TEST(CallbackRepository, EmptyFunctionIsInvalidArgumentNotACrash) {
  CallbackRepository repo(CallbackRepository::LoadFunction{});

  auto r = repo.load("k", soon());

  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
}

TEST(CallbackRepository, UsableThroughTheRepositoryInterface) {
  std::unique_ptr<Repository> repo = std::make_unique<CallbackRepository>(
      [](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
        return std::optional<std::string>(std::string(key));
      });

  auto r = repo->load("echo", soon());

  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, std::optional<std::string>("echo"));
}

}  // namespace
}  // namespace herdguard

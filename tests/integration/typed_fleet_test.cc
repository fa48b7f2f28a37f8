// Two releases of one service share a Redis during a rolling deploy: pods of
// schema 1 and of schema 2 (whose encodings cannot read each other's). The
// newer release repairs the older values once; the older release leaves the
// newer values alone and loads its own copies; nobody overwrites the other in
// a loop (typed_protector.h).
#include <gtest/gtest.h>

#include <atomic>

#include "herdguard/herdguard.h"
#include "redis_server.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;

// Release N writes "1:<value>", release N+1 writes "2:<value>"; each reads
// only its own (the same codec name: the schema version tells them apart).
template <char kRelease>
struct VersionedCodec {
  static std::string_view name() { return "versioned"; }
  static Result<std::string> encode(const std::string& v) {
    return std::string(1, kRelease) + ":" + v;
  }
  static Result<std::string> decode(std::string_view bytes) {
    if (bytes.size() < 2 || bytes[0] != kRelease || bytes[1] != ':')
      return make_error(ErrorKind::kCorrupt, "another release's encoding");
    return std::string(bytes.substr(2));
  }
};

template <char kRelease>
struct Pod {
  RedisFleet fleet;
  std::unique_ptr<TypedProtector<std::string, VersionedCodec<kRelease>>> typed;
};

template <char kRelease>
Pod<kRelease> make_pod(const RedisServer& server, std::atomic<int>& loads) {
  auto fleet = RedisFleet::connect({.redis = {.url = server.url()}, .prefix = "typed:"});
  EXPECT_TRUE(fleet.has_value()) << fleet.error().to_string();
  TypedProtectorOptions options{.schema_version = static_cast<std::uint32_t>(kRelease - '0')};
  options.protector.ttl = 60s;
  options.protector.l1_enabled = false;  // every read sees what the fleet shares
  fleet->apply_to(options.protector);
  auto typed = TypedProtector<std::string, VersionedCodec<kRelease>>::create(
      std::move(options), [&loads](std::string_view key, Deadline) {
        loads.fetch_add(1);
        return Result<std::optional<std::string>>(
            std::optional<std::string>("value-of-" + std::string(key)));
      });
  EXPECT_TRUE(typed.has_value()) << typed.error().to_string();
  return Pod<kRelease>{std::move(*fleet), std::move(*typed)};
}

TEST(TypedFleet, TwoReleasesDoNotRepairEachOthersValuesInALoop) {
  auto server = RedisServer::start();
  std::atomic<int> old_loads{0}, new_loads{0};
  auto old_pod = make_pod<'1'>(*server, old_loads);
  auto new_pod = make_pod<'2'>(*server, new_loads);
  EXPECT_EQ(*old_pod.typed->get("k"), "value-of-k");  // cached as schema 1
  EXPECT_EQ(old_loads.load(), 1);
  for (int round = 0; round < 10; ++round) {
    EXPECT_EQ(*new_pod.typed->get("k"), "value-of-k") << round;
    EXPECT_EQ(*old_pod.typed->get("k"), "value-of-k") << round;
  }
  // The newer release repaired the old value once, then read its own.
  EXPECT_EQ(new_loads.load(), 1);
  EXPECT_EQ(new_pod.typed->stats().repairs, 1u);
  // The older release never overwrote it: it loads its own copy each time.
  EXPECT_EQ(old_pod.typed->stats().decode_failures, 0u);
  EXPECT_EQ(old_pod.typed->stats().foreign_loads, 10u);
  EXPECT_EQ(old_loads.load(), 11);
  auto stored = new_pod.typed->untyped().get("k");
  ASSERT_TRUE(stored);
  EXPECT_EQ(decode_typed_frame(*stored)->schema_version, 2u);
}

}  // namespace
}  // namespace herdguard

// The backplane's invalidation bytes (src/lock/invalidation_message.h): what
// Protector::set()/invalidate() publish and every other process parses, and
// what it makes of bytes others publish on the channel.
#include "lock/invalidation_message.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace herdguard::internal {
namespace {

using namespace std::string_literals;

TEST(InvalidationMessage, OriginAndKeyRoundTrip) {
  const std::string message = encode_invalidation(0x0102030405060708ULL, "sku-1");
  const auto decoded = decode_invalidation(message);  // views into `message`
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->origin, 0x0102030405060708ULL);
  EXPECT_EQ(decoded->key, "sku-1");
}

TEST(InvalidationMessage, BinaryKeysSurvive) {
  const std::string key = "a\0b\xff}{"s;
  const std::string message = encode_invalidation(UINT64_MAX, key);
  const auto decoded = decode_invalidation(message);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->origin, UINT64_MAX);
  EXPECT_EQ(decoded->key, key);
}

TEST(InvalidationMessage, OthersBytesAreRefused) {
  EXPECT_FALSE(decode_invalidation(""));
  EXPECT_FALSE(decode_invalidation("sku-1"));           // a bare key
  EXPECT_FALSE(decode_invalidation("\0hgI"s));          // magic alone
  EXPECT_FALSE(decode_invalidation("\0hgI1234567"s));   // truncated origin
  EXPECT_FALSE(decode_invalidation("\0hgI12345678"s));  // no key
  EXPECT_FALSE(
      decode_invalidation("\0hg\x02"
                          "12345678k"s));                           // a ready announcement
  EXPECT_TRUE(decode_invalidation("\0hgI12345678k"s).has_value());  // the smallest valid one
}

TEST(InvalidationMessage, TagInvalidationsRoundTripAndAreNotKeyInvalidations) {
  const std::string message = encode_tag_invalidation(42, 1'700'000'000'000'000, "users");
  auto back = decode_tag_invalidation(message);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->origin, 42u);
  EXPECT_EQ(back->version, 1'700'000'000'000'000u);
  EXPECT_EQ(back->tag, "users");
  EXPECT_FALSE(decode_invalidation(message));
  auto clear = decode_tag_invalidation(encode_tag_invalidation(1, 2, ""));
  ASSERT_TRUE(clear) << "clear() is the empty tag";
  EXPECT_EQ(clear->tag, "");
  EXPECT_FALSE(decode_tag_invalidation(encode_tag_invalidation(1, 0, "t"))) << "version 0";
  EXPECT_FALSE(decode_tag_invalidation(encode_tag_invalidation(1, 2, std::string(257, 't'))));
  EXPECT_FALSE(decode_tag_invalidation("\0hgG1234567812345"s)) << "truncated";
  EXPECT_FALSE(decode_tag_invalidation(encode_invalidation(1, "k")));
}

TEST(InvalidationMessage, RandomAndMutatedTagMessagesNeverCrashOrOverrun) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 300);
  const std::string good = encode_tag_invalidation(7, 1'800'000'000'000'000, "users");
  for (int i = 0; i < 20'000; ++i) {
    std::string bytes;
    if (i % 2 == 0) {
      bytes.assign(static_cast<std::size_t>(length(rng)), '\0');
      for (char& c : bytes) c = static_cast<char>(byte(rng));
      if (bytes.size() >= 4) bytes.replace(0, 4, std::string("\0hgG", 4));
    } else {
      bytes = good;
      bytes[static_cast<std::size_t>(byte(rng)) % bytes.size()] = static_cast<char>(byte(rng));
    }
    if (auto tag = decode_tag_invalidation(bytes)) {
      EXPECT_GT(tag->version, 0u);
      EXPECT_LE(tag->tag.size(), 256u);
      EXPECT_EQ(encode_tag_invalidation(tag->origin, tag->version, tag->tag), bytes);
    }
    (void)decode_invalidation(bytes);  // the key form never reads past the message either
  }
}

}  // namespace
}  // namespace herdguard::internal

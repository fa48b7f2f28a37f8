// The ready announcement's bytes (src/lock/announcement.h): what a holder
// publishes and a notifier parses, including messages of format 1 (a key
// alone, from publish() and earlier releases) and bytes others publish.
#include "lock/announcement.h"

#include <gtest/gtest.h>

namespace herdguard::internal {
namespace {

using namespace std::string_literals;

TEST(Announcement, AValueRoundTrips) {
  const std::string message = announcement_head("sku-1", 0x0102030405060708ULL) + "\1" + "bytes";
  const DecodedAnnouncement d = decode_announcement(message);
  EXPECT_EQ(d.key, "sku-1");
  EXPECT_EQ(d.version, 0x0102030405060708ULL);
  ASSERT_TRUE(d.value.has_value());
  EXPECT_EQ(*d.value, "bytes");
}

TEST(Announcement, WithoutAValue) {
  const std::string message = announcement_head("k", 7) + '\0';
  const DecodedAnnouncement d = decode_announcement(message);
  EXPECT_EQ(d.key, "k");
  EXPECT_EQ(d.version, 7u);
  EXPECT_FALSE(d.value.has_value());
}

TEST(Announcement, BinaryKeysAndEmptyValuesSurvive) {
  const std::string key = "a\0b\xff}{"s;
  const std::string message = announcement_head(key, 1) + '\1';
  const DecodedAnnouncement d = decode_announcement(message);
  EXPECT_EQ(d.key, key);
  ASSERT_TRUE(d.value.has_value());
  EXPECT_EQ(*d.value, "");
}

TEST(Announcement, AKeyAloneIsFormatOne) {
  const DecodedAnnouncement d = decode_announcement("sku-1");
  EXPECT_EQ(d.key, "sku-1");
  EXPECT_EQ(d.version, 0u);
  EXPECT_FALSE(d.value.has_value());
}

TEST(Announcement, WhatDoesNotParseIsTakenAsAKey) {
  const std::string full = announcement_head("key", 9) + '\1' + "value";
  // Every truncation of the head, a bad flag, bytes after "no value".
  for (std::size_t n = 0; n < 4 + 4 + 3 + 8 + 1; ++n) {
    const std::string cut = full.substr(0, n);
    const DecodedAnnouncement d = decode_announcement(cut);
    EXPECT_EQ(d.key, cut) << n;
    EXPECT_EQ(d.version, 0u) << n;
    EXPECT_FALSE(d.value.has_value()) << n;
  }
  const std::string bad_flag = announcement_head("key", 9) + '\2';
  EXPECT_EQ(decode_announcement(bad_flag).version, 0u);
  const std::string trailing = announcement_head("key", 9) + '\0' + "x";
  EXPECT_EQ(decode_announcement(trailing).version, 0u);
  // A key length past the end. (Views point into the message: keep it.)
  std::string long_len = announcement_head("key", 9) + '\0';
  long_len[4] = '\x7f';
  EXPECT_EQ(decode_announcement(long_len).key, long_len);
}

}  // namespace
}  // namespace herdguard::internal

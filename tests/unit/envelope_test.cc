// The envelope codec: round trips, the pinned wire format, and a decoder that
// survives any bytes (the seeded random inputs below are a small, repeatable
// fuzz run).
#include "herdguard/envelope.h"

#include <gtest/gtest.h>

#include <random>

namespace herdguard {
namespace {

using namespace std::chrono_literals;

Envelope sample() {
  Envelope e;
  e.entry.value = std::string("v\0\xff", 3);
  e.entry.fresh_until = TimePoint(Duration(1'000'000'000'000'000'000));
  e.entry.stale_until = TimePoint(Duration(1'000'000'060'000'000'000));
  e.entry.load_duration = 42ms;
  e.version = 7;
  return e;
}

void expect_same(const Envelope& a, const Envelope& b) {
  EXPECT_EQ(a.entry.value, b.entry.value);
  EXPECT_EQ(a.entry.fresh_until, b.entry.fresh_until);
  EXPECT_EQ(a.entry.stale_until, b.entry.stale_until);
  EXPECT_EQ(a.entry.negative, b.entry.negative);
  EXPECT_EQ(a.entry.load_duration, b.entry.load_duration);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.entry.tags, b.entry.tags);
  EXPECT_EQ(a.entry.tag_stamp, b.entry.tag_stamp);
}

std::string hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

TEST(Envelope, RoundTripsBinaryValues) {
  const Envelope e = sample();
  auto back = decode_envelope(encode_envelope(e));
  ASSERT_TRUE(back) << back.error().to_string();
  expect_same(*back, e);
}

TEST(Envelope, RoundTripsEmptyLargeNegativeAndExtremeEntries) {
  Envelope empty;
  Envelope large = sample();
  large.entry.value = std::string(1 << 20, 'x');
  Envelope negative;
  negative.entry.negative = true;
  negative.entry.stale_until = TimePoint(Duration(5));
  Envelope extreme;
  extreme.entry.fresh_until = TimePoint(Duration(std::numeric_limits<Duration::rep>::min()));
  extreme.entry.stale_until = TimePoint(Duration(std::numeric_limits<Duration::rep>::max()));
  extreme.version = std::numeric_limits<std::uint64_t>::max();
  for (const Envelope& e : {empty, large, negative, extreme}) {
    auto back = decode_envelope(encode_envelope(e));
    ASSERT_TRUE(back) << back.error().to_string();
    expect_same(*back, e);
  }
}

TEST(Envelope, WireFormatIsPinned) {
  // Changing these bytes breaks every fleet that mixes versions: bump
  // kEnvelopeVersion instead.
  EXPECT_EQ(hex(encode_envelope(sample())),
            "484745"            // magic
            "02"                // format version
            "00"                // flags
            "2b00"              // header length (43)
            "000064a7b3b6e00d"  // fresh_until
            "0058ab9fc1b6e00d"  // stale_until
            "0700000000000000"  // version
            "80de800200000000"  // load_duration (42 ms)
            "03000000"          // value length
            "7600ff");          // value
}

TEST(Envelope, EachCorruptionIsNamed) {
  const std::string good = encode_envelope(sample());
  auto expect_corrupt = [](std::string bytes, std::string_view words) {
    auto r = decode_envelope(bytes);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  expect_corrupt("", "shorter");
  expect_corrupt("not an envelope at all, just some text written by another program", "magic");
  std::string bad = good;
  bad[3] = 3;
  expect_corrupt(bad, "version 3");
  bad = good;
  bad[3] = 1;  // the previous release's format: not read (its keys differ too)
  expect_corrupt(bad, "version 1");
  bad = good;
  bad[4] = 0x02;
  expect_corrupt(bad, "required flags");
  bad = good;
  bad[5] = 42;  // header shorter than this format's fields
  expect_corrupt(bad, "header length");
  bad = good;
  bad[5] = static_cast<char>(0xff);  // header longer than the bytes
  expect_corrupt(bad, "header length");
  expect_corrupt(good + "x", "length");
  expect_corrupt(good.substr(0, good.size() - 1), "length");
  Envelope inverted = sample();
  std::swap(inverted.entry.fresh_until, inverted.entry.stale_until);
  expect_corrupt(encode_envelope(inverted), "stale_until before fresh_until");
  Envelope negative_load = sample();
  negative_load.entry.load_duration = -1ms;
  expect_corrupt(encode_envelope(negative_load), "negative load");
  Envelope negative_with_value = sample();
  negative_with_value.entry.negative = true;
  expect_corrupt(encode_envelope(negative_with_value), "negative entry carries a value");
}

TEST(Envelope, ALaterReleasesLongerHeaderAndHintFlagsAreRead) {
  // A later release may append header fields and set hint flags; this
  // release must still read the value and the fields it knows (rolling
  // deploys, docs/upgrade.md).
  const Envelope e = sample();
  std::string bytes = encode_envelope(e);
  const std::string extra = "\x01\x02\x03\x04\x05";
  bytes.insert(kEnvelopeHeaderBytes, extra);
  bytes[5] = static_cast<char>(kEnvelopeHeaderBytes + extra.size());
  bytes[4] = static_cast<char>(bytes[4] | 0x30);
  auto back = decode_envelope(bytes);
  ASSERT_TRUE(back) << back.error().to_string();
  expect_same(*back, e);
}

TEST(Envelope, TagsAndTheirStampRoundTripInPinnedFields) {
  Envelope e = sample();
  e.entry.tags = {"users", std::string("b\0in", 4)};
  e.entry.tag_stamp = 0x0102030405060708;
  const std::string bytes = encode_envelope(e);
  const std::size_t header = 53 + 2 + 5 + 2 + 4;
  EXPECT_EQ(static_cast<unsigned char>(bytes[5]) | (static_cast<unsigned char>(bytes[6]) << 8),
            static_cast<int>(header));
  EXPECT_EQ(hex(bytes.substr(43, 10)),
            "0807060504030201"
            "0200");
  EXPECT_EQ(bytes.substr(53, 7), std::string("\x05\x00users", 7));
  EXPECT_EQ(bytes.substr(header), e.entry.value);
  auto back = decode_envelope(bytes);
  ASSERT_TRUE(back) << back.error().to_string();
  expect_same(*back, e);
  // A stamp alone (an untagged entry stored after a clear()) has the fields too.
  Envelope stamped = sample();
  stamped.entry.tag_stamp = 9;
  auto stamped_back = decode_envelope(encode_envelope(stamped));
  ASSERT_TRUE(stamped_back);
  expect_same(*stamped_back, stamped);
  // Neither: the 43-byte header of before, byte for byte.
  EXPECT_EQ(encode_envelope(sample()).size(), kEnvelopeHeaderBytes + 3);
}

TEST(Envelope, BadTagFieldsAreCorrupt) {
  auto expect_corrupt = [](std::string bytes, std::string_view words) {
    auto r = decode_envelope(bytes);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  Envelope e = sample();
  e.entry.tags = {"ab"};
  e.entry.tag_stamp = 1;
  const std::string good = encode_envelope(e);  // header 57: stamp, count 1, len 2, "ab"
  std::string too_many = good;
  too_many[51] = static_cast<char>(kMaxEntryTags + 1);
  expect_corrupt(too_many, "tags, more than");
  std::string past_header = good;
  past_header[53] = 3;  // "ab" claims 3 bytes: runs into the value
  expect_corrupt(past_header, "within the header");
  std::string empty_tag = good;
  empty_tag[53] = 0;
  expect_corrupt(empty_tag, "within the header");
  std::string count_past = good;
  count_past[51] = 2;  // a second tag that is not there
  expect_corrupt(count_past, "runs past the header");
  // A later release's fields after the tags are skipped.
  std::string later = good;
  later.insert(57, "\x07\x07");
  later[5] = 59;
  auto back = decode_envelope(later);
  ASSERT_TRUE(back) << back.error().to_string();
  expect_same(*back, e);
}

TEST(Envelope, EveryTruncationFails) {
  const std::string good = encode_envelope(sample());
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(decode_envelope(good.substr(0, n))) << "prefix of " << n << " bytes decoded";
  }
  EXPECT_TRUE(decode_envelope(good));
}

TEST(Envelope, RandomBytesNeverCrashAndNeverDecodeWrongly) {
  std::mt19937 rng(20261123);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 80);
  int decoded = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::string bytes(static_cast<std::size_t>(length(rng)), '\0');
    for (char& c : bytes) c = static_cast<char>(byte(rng));
    if (i % 2 == 0 && bytes.size() >= 4) bytes.replace(0, 4, std::string("HGE\x02", 4));
    auto r = decode_envelope(bytes);
    if (r) {
      ++decoded;
      // Decoding loses nothing it understands: what it read encodes back to
      // an envelope that decodes to the same fields.
      auto again = decode_envelope(encode_envelope(*r));
      ASSERT_TRUE(again);
      EXPECT_EQ(again->entry.value, r->entry.value);
      EXPECT_EQ(again->version, r->version);
    }
  }
  // Random bytes almost never form a valid envelope; the check above matters
  // for the mutations below.
  EXPECT_LT(decoded, 100);
}

TEST(Envelope, MutatedEnvelopesDecodeExactlyOrFail) {
  std::mt19937 rng(7);
  const std::string good = encode_envelope(sample());
  std::uniform_int_distribution<std::size_t> position(0, good.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int still_valid = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::string bytes = good;
    bytes[position(rng)] = static_cast<char>(byte(rng));
    auto r = decode_envelope(bytes);
    if (r) {
      ++still_valid;
      // Exact inverse, except the hint flags (bits 4-7), which a reader ignores.
      std::string normalized = bytes;
      normalized[4] = static_cast<char>(normalized[4] & 0x0f);
      EXPECT_EQ(encode_envelope(*r), normalized);
    } else {
      EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
    }
  }
  // Changing a timestamp, version or value byte keeps it valid: the decoder is
  // exercised on both sides.
  EXPECT_GT(still_valid, 0);
}

// The tag fields (after byte 43) under the same treatment: every mutation
// and truncation of a tagged envelope either fails as kCorrupt or decodes
// to fields that encode and decode back to themselves.
TEST(Envelope, MutatedTaggedEnvelopesDecodeToConsistentFieldsOrFail) {
  Envelope tagged = sample();
  tagged.entry.tags = {"users", "u:1", std::string(40, 't')};
  tagged.entry.tag_stamp = 1'800'000'000'000'000;
  const std::string good = encode_envelope(tagged);
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(decode_envelope(good.substr(0, n))) << "prefix of " << n << " bytes decoded";
  }
  std::mt19937 rng(12);
  std::uniform_int_distribution<std::size_t> position(0, good.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> how_many(1, 3);
  int still_valid = 0;
  for (int i = 0; i < 50'000; ++i) {
    std::string bytes = good;
    for (int m = how_many(rng); m > 0; --m) bytes[position(rng)] = static_cast<char>(byte(rng));
    auto r = decode_envelope(bytes);
    if (!r) {
      EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
      continue;
    }
    ++still_valid;
    ASSERT_LE(r->entry.tags.size(), kMaxEntryTags);
    for (const std::string& tag : r->entry.tags) {
      ASSERT_FALSE(tag.empty());
      ASSERT_LE(tag.size(), kMaxTagBytes);
    }
    auto again = decode_envelope(encode_envelope(*r));
    ASSERT_TRUE(again) << again.error().to_string();
    expect_same(*again, *r);
  }
  EXPECT_GT(still_valid, 0);
}

}  // namespace
}  // namespace herdguard

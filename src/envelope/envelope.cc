// Envelope encoding: explicit little-endian bytes, so the format does not
// depend on the host, and a decoder that checks every field before use.
#include "herdguard/envelope.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>

namespace herdguard {
namespace {

constexpr char kMagic[3] = {'H', 'G', 'E'};
constexpr std::uint8_t kFlagNegative = 0x01;
// Flags a reader must understand (low nibble); the high nibble is for hints.
constexpr std::uint8_t kRequiredFlagMask = 0x0f;
constexpr std::uint8_t kKnownRequiredFlags = kFlagNegative;

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
std::uint64_t get_u64(std::string_view in, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return v;
}
std::uint32_t get_u32(std::string_view in, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return v;
}
std::uint16_t get_u16(std::string_view in, std::size_t at) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(in[at]) |
                                    (static_cast<unsigned char>(in[at + 1]) << 8));
}
// Two's complement round trip, without implementation-defined conversions.
std::uint64_t to_u64(std::int64_t v) { return static_cast<std::uint64_t>(v); }
std::int64_t to_i64(std::uint64_t v) {
  std::int64_t out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}

std::unexpected<Error> corrupt(std::string_view what) {
  return make_error(ErrorKind::kCorrupt, fmt::format("envelope: {}", what));
}

}  // namespace

std::string encode_envelope(const Envelope& envelope) {
  const CacheEntry& e = envelope.entry;
  const bool tagged = e.tag_stamp != 0 || !e.tags.empty();
  std::size_t header = kEnvelopeHeaderBytes;
  if (tagged) {
    header = kEnvelopeTagsAt + 10;
    for (const std::string& tag : e.tags) header += 2 + tag.size();
  }
  std::string out;
  out.reserve(header + e.value.size());
  out.append(kMagic, sizeof kMagic);
  out.push_back(static_cast<char>(kEnvelopeVersion));
  out.push_back(static_cast<char>(e.negative ? kFlagNegative : 0));
  put_u16(out, static_cast<std::uint16_t>(header));
  put_u64(out, to_u64(e.fresh_until.time_since_epoch().count()));
  put_u64(out, to_u64(e.stale_until.time_since_epoch().count()));
  put_u64(out, envelope.version);
  put_u64(out, to_u64(e.load_duration.count()));
  put_u32(out, static_cast<std::uint32_t>(e.value.size()));
  if (tagged) {
    put_u64(out, e.tag_stamp);
    put_u16(out, static_cast<std::uint16_t>(e.tags.size()));
    for (const std::string& tag : e.tags) {
      put_u16(out, static_cast<std::uint16_t>(tag.size()));
      out.append(tag);
    }
  }
  out.append(e.value);
  return out;
}

Result<Envelope> decode_envelope(std::string_view bytes) {
  if (bytes.size() < kEnvelopeHeaderBytes) {
    return corrupt(fmt::format("{} bytes, shorter than the {}-byte header", bytes.size(),
                               kEnvelopeHeaderBytes));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return corrupt("bad magic (not HGE)");
  const auto version = static_cast<std::uint8_t>(bytes[3]);
  if (version != kEnvelopeVersion) {
    return corrupt(
        fmt::format("format version {}, this build reads version {}", version, kEnvelopeVersion));
  }
  const auto flags = static_cast<std::uint8_t>(bytes[4]);
  if ((flags & kRequiredFlagMask & ~kKnownRequiredFlags) != 0)
    return corrupt(fmt::format("unknown required flags 0x{:02x}", flags & kRequiredFlagMask));
  const std::size_t header = get_u16(bytes, 5);
  if (header < kEnvelopeHeaderBytes || header > bytes.size()) {
    return corrupt(
        fmt::format("header length {} outside {}..{}", header, kEnvelopeHeaderBytes, bytes.size()));
  }
  const std::int64_t fresh_ns = to_i64(get_u64(bytes, 7));
  const std::int64_t stale_ns = to_i64(get_u64(bytes, 15));
  const std::uint64_t key_version = get_u64(bytes, 23);
  const std::int64_t load_ns = to_i64(get_u64(bytes, 31));
  const std::uint32_t length = get_u32(bytes, 39);
  if (bytes.size() - header != length) {
    return corrupt(
        fmt::format("value length field says {} bytes, {} follow", length, bytes.size() - header));
  }
  if (stale_ns < fresh_ns) return corrupt("stale_until before fresh_until");
  if (load_ns < 0) return corrupt("negative load duration");
  const bool negative = (flags & kFlagNegative) != 0;
  if (negative && length != 0) return corrupt("a negative entry carries a value");

  Envelope out;
  if (header >= kEnvelopeTagsAt + 10) {
    out.entry.tag_stamp = get_u64(bytes, kEnvelopeTagsAt);
    const std::size_t count = get_u16(bytes, kEnvelopeTagsAt + 8);
    if (count > kMaxEntryTags)
      return corrupt(fmt::format("{} tags, more than {}", count, kMaxEntryTags));
    std::size_t at = kEnvelopeTagsAt + 10;
    out.entry.tags.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      if (header - at < 2) return corrupt("a tag runs past the header");
      const std::size_t size = get_u16(bytes, at);
      at += 2;
      if (size == 0 || size > kMaxTagBytes || header - at < size)
        return corrupt(
            fmt::format("tag {} of {} bytes (1..{}, within the header)", i, size, kMaxTagBytes));
      out.entry.tags.emplace_back(bytes.substr(at, size));
      at += size;
    }
  }
  out.entry.value.assign(bytes.substr(header));
  out.entry.fresh_until = TimePoint(Duration(fresh_ns));
  out.entry.stale_until = TimePoint(Duration(stale_ns));
  out.entry.negative = negative;
  out.entry.load_duration = Duration(load_ns);
  out.version = key_version;
  return out;
}

}  // namespace herdguard

// herdguard/envelope.h — the bytes a cached entry is stored as in Redis.
//
// A Redis value under herdguard's prefix is an envelope: a fixed header
// (magic "HGE", format version, flags, fresh-until, stale-until, the fence of
// the write, how long the load took) followed by the value. One GET returns
// value and metadata together.
//
// decode_envelope() is a pure function over untrusted bytes (another program
// may write under the prefix, a value may be truncated, a newer herdguard may
// write a newer version): anything that is not a well-formed envelope of a
// version this build reads is a kCorrupt error, never a crash and never a
// wrong value. It is written to be fuzzed.
//
// Layout (all integers little-endian):
//   0  3  magic "HGE"
//   3  1  format version (kEnvelopeVersion)
//   4  1  flags (bit 0: negative entry; other bits must be 0)
//   5  8  fresh_until, int64 ns since the Unix epoch
//  13  8  stale_until, int64 ns since the Unix epoch (>= fresh_until)
//  21  8  fence, uint64 (0 = written without a lock)
//  29  8  load_duration, int64 ns (>= 0)
//  37  4  value length, uint32 (must equal the bytes that follow)
//  41  …  value
//
// Thread safety: pure functions.
//
// Example:
//   std::string bytes = herdguard::encode_envelope({.entry = e, .fence = 7});
//   auto back = herdguard::decode_envelope(bytes);   // back->entry == e, back->fence == 7
//   if (!back) counters.corrupt++;                   // kCorrupt: treat as a miss
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "herdguard/cache.h"
#include "herdguard/result.h"

namespace herdguard {

inline constexpr std::uint8_t kEnvelopeVersion = 1;
inline constexpr std::size_t kEnvelopeHeaderBytes = 41;

struct Envelope {
  CacheEntry entry{};
  // The fencing number of the lock holder that wrote it (0: no lock).
  std::uint64_t fence = 0;
};

// Encodes `envelope`. REQUIRES: entry.value.size() <= UINT32_MAX.
std::string encode_envelope(const Envelope& envelope);

// Decodes bytes written by encode_envelope. Errors: kCorrupt naming the
// problem (too short, bad magic, unknown version, unknown flags, length
// mismatch, stale_until before fresh_until, negative load duration, a
// negative entry with a value).
Result<Envelope> decode_envelope(std::string_view bytes);

}  // namespace herdguard

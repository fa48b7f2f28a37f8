// herdguard/envelope.h — the bytes a cached entry is stored as in Redis.
//
// A Redis value under herdguard's prefix is an envelope: a header (magic
// "HGE", format version, flags, header length, fresh-until, stale-until, the
// version of the key the write was made under, how long the load took)
// followed by the value. One GET returns value and metadata together.
//
// decode_envelope() is a pure function over untrusted bytes (another program
// may write under the prefix, a value may be truncated, a newer herdguard may
// write a newer format): anything that is not a well-formed envelope of a
// format this build reads is a kCorrupt error, never a crash and never a
// wrong value. It is written to be fuzzed.
//
// Format 2 (all integers little-endian):
//   0  3  magic "HGE"
//   3  1  format version: 2. A reader refuses formats it does not know.
//   4  1  flags. Bits 0-3 must be understood (bit 0: negative entry; an
//         unknown one of them makes the envelope unreadable); bits 4-7 are
//         hints a reader may ignore.
//   5  2  header length, uint16: where the value starts (>= 43). A later
//         release appends fields after byte 43 and raises this; a format-2
//         reader skips what it does not know. This is what lets two
//         releases share a cache during a rolling deploy (docs/upgrade.md).
//   7  8  fresh_until, int64 ns since the Unix epoch
//  15  8  stale_until, int64 ns since the Unix epoch (>= fresh_until)
//  23  8  version of the key when the value was written, uint64 (0: by set())
//  31  8  load_duration, int64 ns (>= 0)
//  39  4  value length, uint32 (must equal the bytes after the header)
//  43  …  (later fields) then the value
//
// Tag fields (this release writes them when the entry has tags or a tag
// stamp, cache.h; header length then >= 53; a reader that does not know
// them skips them, which a fleet using invalidate_tag must not mix in:
// docs/upgrade.md):
//  43  8  tag_stamp, uint64
//  51  2  tag count, uint16 (<= kMaxEntryTags)
//  53  …  each tag: uint16 length (1..kMaxTagBytes), then its bytes
//
// Thread safety: pure functions.
//
// Example:
//   std::string bytes = herdguard::encode_envelope({.entry = e, .version = 7});
//   auto back = herdguard::decode_envelope(bytes);   // back->entry == e, back->version == 7
//   if (!back) counters.corrupt++;                   // kCorrupt: treat as a miss
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "herdguard/cache_entry.h"
#include "herdguard/result.h"

namespace herdguard {

inline constexpr std::uint8_t kEnvelopeVersion = 2;
// The header this build writes; readers accept longer ones (later fields).
inline constexpr std::size_t kEnvelopeHeaderBytes = 43;
// Where the tag fields start, and their bounds (EntryOptions::tags).
inline constexpr std::size_t kEnvelopeTagsAt = 43;
inline constexpr std::size_t kMaxEntryTags = 32;
inline constexpr std::size_t kMaxTagBytes = 256;
// The largest value an envelope holds (its length field is 32 bits; Redis
// refuses strings over 512 MiB anyway).
inline constexpr std::size_t kMaxEnvelopeHeaderBytes =
    kEnvelopeTagsAt + 10 + kMaxEntryTags * (2 + kMaxTagBytes);
inline constexpr std::size_t kMaxEnvelopeValueBytes = (512u << 20) - kMaxEnvelopeHeaderBytes;

struct Envelope {
  CacheEntry entry{};
  // The key's version (redis_cache.h) the write was made under (set() and
  // loads alike); 0 when written without one (by a format-1 writer).
  std::uint64_t version = 0;
};

// Encodes `envelope`. REQUIRES: entry.value.size() <= kMaxEnvelopeValueBytes,
// at most kMaxEntryTags tags of 1..kMaxTagBytes bytes
// (callers check; a larger value is an error before it gets here).
std::string encode_envelope(const Envelope& envelope);

// Decodes bytes written by encode_envelope (or by a later release that only
// appended header fields). Errors: kCorrupt naming the problem (too short,
// bad magic, unknown format version, unknown required flags, header length
// out of range, length mismatch, stale_until before fresh_until, negative
// load duration, a negative entry with a value, tag fields out of bounds).
Result<Envelope> decode_envelope(std::string_view bytes);

}  // namespace herdguard

// Internal: which Redis Cluster slot a key lives in, and where a redirect
// sends a command.
//
// Redis Cluster hashes a key to one of 16,384 slots: CRC16/XMODEM of the
// key, modulo 16,384 — or of its hash tag, the bytes between the first '{'
// and the next '}' when there is at least one byte between them. herdguard
// writes every key of one cache key under one hash tag (key_layout.h), so
// a script that touches them runs on one node.
//
// The CRC is Boost.CRC's (crc_optimal<16, 0x1021, 0, 0, false, false>), not
// a hand-written table.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace herdguard::internal {

inline constexpr int kClusterSlots = 16384;

// The part of `key` Redis Cluster hashes: its hash tag, or all of it.
std::string_view cluster_hash_tag(std::string_view key) noexcept;

// The slot of `key`, in [0, kClusterSlots).
std::uint16_t cluster_slot(std::string_view key) noexcept;

// A redirect's target: "MOVED 3999 127.0.0.1:6381" / "ASK 3999 [::1]:6381".
struct Redirect {
  bool moved = false;
  std::uint16_t slot = 0;
  std::string host;  // empty: the node that answered
  int port = 0;
};

// Parses a MOVED or ASK error reply (an IPv6 host may be bracketed);
// nullopt for any other text or a malformed one (a "?" endpoint included).
std::optional<Redirect> parse_redirect(std::string_view text);

}  // namespace herdguard::internal

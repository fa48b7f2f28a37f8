// Internal: unsigned integers as little-endian bytes, for the wire formats
// herdguard defines (backplane messages, announcements, script arguments),
// independent of the host's byte order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace herdguard::internal {

// Appends the low `bytes` bytes of `v` (1..8), least significant first.
inline void append_le(std::string& out, std::uint64_t v, std::size_t bytes = 8) {
  for (std::size_t i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Reads `bytes` bytes (1..8) at `at`. REQUIRES: at + bytes <= in.size().
inline std::uint64_t read_le(std::string_view in, std::size_t at, std::size_t bytes = 8) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

}  // namespace herdguard::internal

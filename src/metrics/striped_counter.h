// Internal: a counter that many threads can bump without fighting over one
// cache line. Each thread adds to one of kStripes padded cells (picked once
// per thread); readers sum the cells. Hand-written because no Debian library
// offers a sharded counter as a small standalone type.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace herdguard::internal {

class StripedCounter {
 public:
  static constexpr std::size_t kStripes = 16;

  void add(std::uint64_t n = 1) noexcept {
    cells_[stripe_index()].value.fetch_add(n, std::memory_order_relaxed);
  }
  // The sum of all cells. Exact once writers are quiet; otherwise a value
  // the counter had at some point during the call.
  std::uint64_t value() const noexcept;

 private:
  struct alignas(64) Cell {
    std::atomic<std::uint64_t> value{0};
  };
  static std::size_t stripe_index() noexcept;

  std::array<Cell, kStripes> cells_;
};

}  // namespace herdguard::internal

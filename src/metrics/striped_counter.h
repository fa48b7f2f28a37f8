// Internal: a counter that many threads can bump without fighting over one
// cache line, and mostly without an atomic read-modify-write. The first
// kOwnedCells live threads (by thread_ordinal(), core/thread_ordinal.h) each
// own a padded cell and add to it with a plain load and store; further
// threads share kSharedCells cells with fetch_add. Readers sum the cells.
// Hand-written because no Debian library offers a sharded counter as a small
// standalone type.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/thread_ordinal.h"

namespace herdguard::internal {

class StripedCounter {
 public:
  static constexpr std::size_t kOwnedCells = 16;
  static constexpr std::size_t kSharedCells = 4;

  // Returns the cell's count after the add: a per-thread count for owners
  // (the Protector samples one read in N by it, at no extra cost).
  std::uint64_t add(std::uint64_t n = 1) noexcept {
    const std::size_t ordinal = thread_ordinal();
    if (ordinal < kOwnedCells) [[likely]] {
      // Only this thread writes its cell: no lock prefix needed, and a
      // concurrent value() reads the old or the new count.
      std::atomic<std::uint64_t>& cell = cells_[ordinal].value;
      const std::uint64_t now = cell.load(std::memory_order_relaxed) + n;
      cell.store(now, std::memory_order_relaxed);
      return now;
    }
    return cells_[kOwnedCells + ordinal % kSharedCells].value.fetch_add(n,
                                                                        std::memory_order_relaxed) +
           n;
  }
  // The sum of all cells. Exact once writers are quiet; otherwise a value
  // the counter had at some point during the call.
  std::uint64_t value() const noexcept;

 private:
  struct alignas(64) Cell {
    std::atomic<std::uint64_t> value{0};
  };
  // Cells [0, kOwnedCells): one per owning thread; the rest shared.
  std::array<Cell, kOwnedCells + kSharedCells> cells_;
};

}  // namespace herdguard::internal

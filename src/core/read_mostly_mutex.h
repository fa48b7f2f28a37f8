// Internal: a reader-writer lock whose readers do not share a cache line,
// and whose first kOwnedStripes live threads read-lock with one atomic
// exchange and unlock with a plain store.
//
// A std::shared_mutex keeps its reader count in one word: every reader
// writes it, so one hot key read on several cores bounces that cache line
// between them; and a read costs two compare-and-swap loops in
// pthread_rwlock. Here each reader announces itself in a stripe of its own
// (by thread_ordinal(), core/thread_ordinal.h: live threads never share an
// owned stripe), then checks that no writer is active; a writer raises its
// flag, then waits until every stripe is empty. Both sides are sequentially
// consistent, so either the reader sees the flag (and backs off until the
// writer is done) or the writer sees the reader (and waits for it): the
// store-buffer (Dekker) pattern. Threads beyond the owned stripes count
// themselves in kSharedStripes shared stripes with fetch_add.
//
// Hand-written because no Debian library has a distributed reader lock
// (folly's SharedMutex is not packaged); the L1 hit path pays for its lock
// on every read, misses (writers) are comparatively rare.
//
// Waiting: readers wait for a writer with std::atomic::wait (a futex), since
// a write may take a while (an insert that rehashes a shard's map). A writer
// waits for readers by spinning, then yielding: readers hold the lock for a
// lookup and a value copy, so they are gone within a microsecond unless
// preempted, and this keeps the reader's unlock a plain store (no wake-up).
//
// Meets the SharedMutex requirements, so std::shared_lock and
// std::unique_lock work with it. REQUIRES: not recursive on either side;
// unlock_shared() on the thread that called lock_shared(). Reader (below)
// holds the shared side at the cost of one thread_ordinal() read.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "core/thread_ordinal.h"

namespace herdguard::internal {

class ReadMostlyMutex {
 public:
  static constexpr std::size_t kOwnedStripes = 8;
  static constexpr std::size_t kSharedStripes = 4;

  void lock();
  void unlock();
  void lock_shared() noexcept { lock_shared(thread_ordinal()); }
  void unlock_shared() noexcept { unlock_shared(thread_ordinal()); }

  // std::shared_lock that reads the thread's ordinal once.
  class Reader {
   public:
    explicit Reader(ReadMostlyMutex& m) noexcept : mutex_(m), ordinal_(thread_ordinal()) {
      mutex_.lock_shared(ordinal_);
    }
    ~Reader() { mutex_.unlock_shared(ordinal_); }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

   private:
    ReadMostlyMutex& mutex_;
    const std::size_t ordinal_;
  };

 private:
  void lock_shared(std::size_t ordinal) noexcept {
    for (;;) {
      if (ordinal < kOwnedStripes) [[likely]] {
        stripes_[ordinal].readers.exchange(1, std::memory_order_seq_cst);
      } else {
        shared_stripe(ordinal).readers.fetch_add(1, std::memory_order_seq_cst);
      }
      if (writing_.load(std::memory_order_seq_cst) == 0) [[likely]]
        return;
      unlock_shared(ordinal);
      wait_for_writer();
    }
  }
  void unlock_shared(std::size_t ordinal) noexcept {
    if (ordinal < kOwnedStripes) [[likely]] {
      stripes_[ordinal].readers.store(0, std::memory_order_release);
    } else {
      shared_stripe(ordinal).readers.fetch_sub(1, std::memory_order_release);
    }
  }
  void wait_for_writer() noexcept;

  struct alignas(64) Stripe {
    // Readers in this stripe: 0 or 1 for an owned stripe (written by its
    // owner only), a count for a shared one.
    std::atomic<std::uint32_t> readers{0};
  };
  Stripe& shared_stripe(std::size_t ordinal) noexcept {
    return stripes_[kOwnedStripes + ordinal % kSharedStripes];
  }

  std::array<Stripe, kOwnedStripes + kSharedStripes> stripes_;
  // 1 while a writer holds or is taking the lock. On its own line: readers
  // only read it, so it is shared by all cores until a writer comes.
  alignas(64) std::atomic<std::uint32_t> writing_{0};
  // Serialises writers; held from lock() to unlock().
  std::mutex writer_mutex_;
};

}  // namespace herdguard::internal

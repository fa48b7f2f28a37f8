// Internal: a reader-writer lock whose readers do not share a cache line.
//
// A std::shared_mutex keeps its reader count in one word: every reader
// writes it, so one hot key read on several cores bounces that cache line
// between them, and the read gets slower the more cores read it. Here each
// reader thread takes the shared side of one of kStripes locks (by its
// thread_ordinal(), so up to kStripes threads never share one), and a writer takes all of them.
// Readers on different stripes write no common memory; a writer pays kStripes lock operations — the
// right trade for the L1 cache, read on every hit and written on misses only.
//
// Meets the SharedMutex requirements, so std::shared_lock and
// std::unique_lock work with it. REQUIRES: unlock_shared() on the thread
// that called lock_shared() (the stripe is the thread's).
#pragma once

#include <array>
#include <cstddef>
#include <shared_mutex>

#include "core/thread_ordinal.h"

namespace herdguard::internal {

class ReadMostlyMutex {
 public:
  static constexpr std::size_t kStripes = 8;

  void lock() {
    for (Stripe& s : stripes_) s.mutex.lock();
  }
  void unlock() {
    for (auto it = stripes_.rbegin(); it != stripes_.rend(); ++it) it->mutex.unlock();
  }
  void lock_shared() { stripes_[thread_ordinal() % kStripes].mutex.lock_shared(); }
  void unlock_shared() { stripes_[thread_ordinal() % kStripes].mutex.unlock_shared(); }

 private:
  struct alignas(64) Stripe {
    std::shared_mutex mutex;
  };
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace herdguard::internal

#include "core/read_mostly_mutex.h"

#include <thread>

namespace herdguard::internal {
namespace {

// A hint to the core that this is a spin-wait loop.
void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

void ReadMostlyMutex::lock() {
  writer_mutex_.lock();
  writing_.store(1, std::memory_order_seq_cst);
  for (Stripe& s : stripes_) {
    // Spin briefly, then yield: a reader holds the lock for a lookup and a
    // copy, so it is gone soon unless it was preempted (then yielding lets
    // it run on a busy machine).
    for (int spins = 0; s.readers.load(std::memory_order_seq_cst) != 0; ++spins) {
      if (spins < 128) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }
}

void ReadMostlyMutex::unlock() {
  writing_.store(0, std::memory_order_release);
  writing_.notify_all();
  writer_mutex_.unlock();
}

void ReadMostlyMutex::wait_for_writer() noexcept { writing_.wait(1, std::memory_order_acquire); }

}  // namespace herdguard::internal

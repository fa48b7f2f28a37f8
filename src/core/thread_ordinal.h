// Internal: a small number per live thread, for giving threads stripes of
// their own.
//
// A thread gets the lowest number no other live thread holds, and gives it
// back when it exits, so the numbers of the live threads stay dense: in a
// process with N live threads they are below N (plus the threads that are
// exiting). Two live threads never hold the same number, so a thread whose
// number is below K may own stripe number K of a K-striped structure
// outright and write it without atomic read-modify-writes: the striped
// counters (metrics/striped_counter.h) and the L1's reader lock
// (core/read_mostly_mutex.h) do.
//
// A thread that already gave its number back (it runs the destructors of its
// thread_local objects) gets kRetiredThreadOrdinal from then on, which is
// above every owned range: it only uses shared stripes.
#pragma once

#include <cstddef>

namespace herdguard::internal {

inline constexpr std::size_t kRetiredThreadOrdinal = std::size_t{1} << 20;

// Internal to thread_ordinal(): takes the lowest free number and arranges for
// its return at thread exit. Thread-safe.
std::size_t acquire_thread_ordinal() noexcept;

// Where this thread's number is kept (kUnassigned until its first call).
inline constexpr std::size_t kUnassignedThreadOrdinal = ~std::size_t{0};
inline thread_local std::size_t this_thread_ordinal = kUnassignedThreadOrdinal;

// This thread's number (see above). Thread-safe; the same for a thread from
// its first call until it begins to exit. Inline because the L1 hit path asks
// for it twice: after a thread's first call it is one thread-local read.
inline std::size_t thread_ordinal() noexcept {
  std::size_t ordinal = this_thread_ordinal;
  if (ordinal == kUnassignedThreadOrdinal) [[unlikely]]
    ordinal = acquire_thread_ordinal();
  return ordinal;
}

}  // namespace herdguard::internal

// Internal: a small number per thread, for spreading threads over stripes.
//
// Threads get consecutive numbers in the order they first ask, so N threads
// taking `thread_ordinal() % N` stripes never share one. Used by the striped
// counters (metrics/striped_counter.h) and the L1's striped reader lock
// (core/read_mostly_mutex.h).
#pragma once

#include <cstddef>

namespace herdguard::internal {

// This thread's number: 0 for the first thread that asked, then 1, 2...
// Thread-safe; the number never changes for a thread.
std::size_t thread_ordinal() noexcept;

}  // namespace herdguard::internal

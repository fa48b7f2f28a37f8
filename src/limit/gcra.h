// Internal: GCRA (the generic cell rate algorithm), the rate limiter's
// decision (rate_limiter.h), as a pure function and as the in-process table
// the limiter falls back on when Redis fails. The Lua script in
// rate_limiter.cc is the same arithmetic in microseconds on Redis's clock.
//
// A client's state is its theoretical arrival time (TAT): when its next
// request would be due if it sent at exactly `rate`. A request at `now` is
// admitted when TAT − tolerance <= now, and then moves TAT to
// max(TAT, now) + interval. interval = 1/rate; tolerance = (burst − 1) ×
// interval, so an idle client may send `burst` requests at once.
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>

#include "core/string_hash.h"
#include "herdguard/clock.h"

namespace herdguard::internal {

struct GcraDecision {
  bool allowed = false;
  TimePoint tat{};         // the client's TAT after this request
  Duration retry_after{};  // not allowed: until TAT − tolerance
};

// `tat`: the client's TAT before the request (TimePoint::min() or anything
// before `now` for an idle or new client). Pure.
GcraDecision gcra_decide(TimePoint tat, TimePoint now, Duration interval, Duration tolerance);

// The process's own table of TATs, bounded. Thread safety: decide() is safe
// from any number of threads (one mutex: it is the fallback path).
class LocalGcra {
 public:
  LocalGcra(Duration interval, Duration tolerance, std::size_t max_clients)
      : interval_(interval), tolerance_(tolerance), max_clients_(max_clients) {}
  GcraDecision decide(std::string_view client, TimePoint now);
  std::size_t size() const;

 private:
  // Makes room for one more client: forgets the idle ones (TAT <= now: a
  // new client's state), and if none is idle, an arbitrary one (it can then
  // burst once more). REQUIRES: mutex_ held.
  void make_room(TimePoint now);

  const Duration interval_;
  const Duration tolerance_;
  const std::size_t max_clients_;
  mutable std::mutex mutex_;
  // Guarded by mutex_; size <= max_clients_.
  boost::unordered_flat_map<std::string, TimePoint, StringHash, StringEqual> tats_;
};

}  // namespace herdguard::internal

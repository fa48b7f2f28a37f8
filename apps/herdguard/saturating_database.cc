#include "saturating_database.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <thread>

namespace herdguard::cli {

// A lock-based atomic would keep its lock in one process's memory, outside
// the shared mapping: the processes would not exclude each other.
static_assert(std::atomic<std::int64_t>::is_always_lock_free,
              "the shared database counters need lock-free 64-bit atomics");

struct SharedDbLoad::Counters {
  std::atomic<std::int64_t> in_flight{0};
  std::atomic<std::int64_t> peak{0};
};

Result<std::shared_ptr<SharedDbLoad>> SharedDbLoad::create(const std::string& path) {
  const auto failed = [&](const char* call) {
    return make_error(ErrorKind::kBackend, fmt::format("database load counters {}: {}: {}", path,
                                                       call, std::strerror(errno)));
  };
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return failed("open");
  if (::ftruncate(fd, sizeof(Counters)) != 0) {
    auto error = failed("ftruncate");
    ::close(fd);
    return error;
  }
  void* memory = ::mmap(nullptr, sizeof(Counters), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (memory == MAP_FAILED) {
    auto error = failed("mmap");
    ::close(fd);
    return error;
  }
  ::close(fd);  // the mapping keeps the file
  return std::shared_ptr<SharedDbLoad>(new SharedDbLoad(new (memory) Counters{}));
}

SharedDbLoad::~SharedDbLoad() {
  counters_->~Counters();
  ::munmap(counters_, sizeof(Counters));
}

std::int64_t SharedDbLoad::enter() noexcept {
  // Relaxed: each counter stands alone, and the parent reads the peak after
  // waitpid() on every worker.
  const std::int64_t now = counters_->in_flight.fetch_add(1, std::memory_order_relaxed) + 1;
  std::int64_t peak = counters_->peak.load(std::memory_order_relaxed);
  while (now > peak &&
         !counters_->peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return now;
}

void SharedDbLoad::leave() noexcept {
  counters_->in_flight.fetch_sub(1, std::memory_order_relaxed);
}

std::int64_t SharedDbLoad::peak() const noexcept {
  return counters_->peak.load(std::memory_order_relaxed);
}

SaturatingDatabase::SaturatingDatabase(std::shared_ptr<Repository> inner,
                                       std::shared_ptr<SharedDbLoad> load, int capacity,
                                       std::chrono::milliseconds latency, int connections)
    : inner_(std::move(inner)),
      load_(std::move(load)),
      capacity_(capacity),
      latency_(latency),
      connections_(connections),
      free_connections_(connections) {}

Result<std::optional<std::string>> SaturatingDatabase::load(std::string_view key,
                                                            Deadline deadline) {
  {
    std::unique_lock lock(mutex_);
    if (!connection_freed_.wait_until(lock, deadline.when(),
                                      [this] { return free_connections_ > 0; })) {
      return make_error(ErrorKind::kTimeout,
                        fmt::format("no free database connection before the deadline (all {} "
                                    "in use)",
                                    connections_));
    }
    --free_connections_;
  }
  struct Held {
    SaturatingDatabase* db;
    ~Held() {
      db->load_->leave();
      {
        std::lock_guard lock(db->mutex_);
        ++db->free_connections_;
      }
      db->connection_freed_.notify_one();
    }
  };
  const std::int64_t in_flight = load_->enter();
  const Held held{this};
  const auto latency = in_flight > capacity_ ? latency_ * in_flight / capacity_ : latency_;
  const auto done = std::chrono::steady_clock::now() + latency;
  if (done > deadline.when()) {
    std::this_thread::sleep_until(deadline.when());
    return make_error(
        ErrorKind::kTimeout,
        fmt::format("database query timed out: {} queries in flight at a capacity "
                    "of {} (each takes {} ms)",
                    in_flight, capacity_,
                    std::chrono::duration_cast<std::chrono::milliseconds>(latency).count()));
  }
  std::this_thread::sleep_until(done);
  return inner_->load(key, deadline);
}

}  // namespace herdguard::cli

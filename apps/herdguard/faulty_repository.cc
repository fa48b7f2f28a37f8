#include "faulty_repository.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace herdguard::cli {

FaultyRepository::FaultyRepository(std::shared_ptr<Repository> inner, std::vector<Fault> faults,
                                   std::string refusing_socket)
    : inner_(std::move(inner)),
      faults_(std::move(faults)),
      refusing_socket_(std::move(refusing_socket)) {
  start();
}

void FaultyRepository::start() {
  start_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
               std::memory_order_relaxed);
}

double FaultyRepository::elapsed_s() const {
  const auto start = std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(start_.load(std::memory_order_relaxed)));
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Result<void> FaultyRepository::refused_connection() const {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(ErrorKind::kBackend, "database unreachable: socket() failed");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, refusing_socket_.c_str(), sizeof(addr.sun_path) - 1);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::close(fd);
  if (rc == 0) return ok();  // cannot happen: nobody listens there
  return make_error(
      ErrorKind::kBackend,
      fmt::format("database unreachable (db-down fault): connect: {}", std::strerror(err)));
}

Result<void> FaultyRepository::play_faults(Deadline deadline) const {
  const double t = elapsed_s();
  for (const Fault& f : faults_) {
    if (!f.active(t)) continue;
    if (f.kind == Fault::Kind::kDbDown) {
      if (auto refused = refused_connection(); !refused) return std::unexpected(refused.error());
    } else if (f.kind == Fault::Kind::kDbSlow) {
      const auto extra = std::chrono::milliseconds(f.extra_ms);
      if (extra >= deadline.remaining()) {
        std::this_thread::sleep_until(deadline.when());
        return make_error(ErrorKind::kTimeout, "database query timed out (db-slow fault)");
      }
      std::this_thread::sleep_for(extra);
    }
  }
  return ok();
}

void FaultyRepository::log_load(std::string_view key, std::uint64_t refreshed_version) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(log_mutex_);
  log_.push_back({.key = std::string(key), .at = now, .refreshed_version = refreshed_version});
}

std::vector<FaultyRepository::LoadRecord> FaultyRepository::load_log() const {
  std::lock_guard lock(log_mutex_);
  return log_;
}

Result<std::optional<std::string>> FaultyRepository::logged_load(std::string_view key,
                                                                 Deadline deadline,
                                                                 std::uint64_t refreshed_version) {
  calls_.fetch_add(1, std::memory_order_relaxed);
  log_load(key, refreshed_version);
  if (auto played = play_faults(deadline); !played) return std::unexpected(played.error());
  return inner_->load(key, deadline);
}

Result<std::optional<std::string>> FaultyRepository::load(std::string_view key, Deadline deadline) {
  return logged_load(key, deadline, 0);
}

Result<LoadedEntry> FaultyRepository::reload_entry(std::string_view key, Deadline deadline,
                                                   const PreviousValue& previous) {
  // The simulator's protectors run on the system clock (TimePoint's).
  const bool ahead = previous.fresh_until > std::chrono::system_clock::now();
  auto loaded =
      logged_load(key, deadline, ahead ? std::max<std::uint64_t>(previous.version, 1) : 0);
  if (!loaded) return std::unexpected(std::move(loaded.error()));
  return LoadedEntry{.value = std::move(*loaded)};
}

std::vector<Result<std::optional<std::string>>> FaultyRepository::load_many(
    std::span<const std::string> keys, Deadline deadline) {
  calls_.fetch_add(keys.size(), std::memory_order_relaxed);
  batches_.fetch_add(1, std::memory_order_relaxed);
  for (const auto& key : keys) log_load(key, 0);
  // One query: the fault hits it once, and every key with it.
  if (auto played = play_faults(deadline); !played) {
    return std::vector<Result<std::optional<std::string>>>(keys.size(),
                                                           std::unexpected(played.error()));
  }
  return inner_->load_many(keys, deadline);
}

}  // namespace herdguard::cli

// The L3 over memcached (include/herdguard/memcached_cache.h), through
// libmemcached handles: a memcached_st is not safe across threads, so each
// operation takes one from a small pool (below).
#include "herdguard/memcached_cache.h"

#include <fmt/format.h>
#include <libmemcached/memcached.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <vector>

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr std::string_view kMagic{"\0hg3", 4};
constexpr std::uint8_t kRecordFormat = 1;
constexpr std::size_t kRecordHeaderBytes = kMagic.size() + 1 + 8 + 4;
constexpr std::size_t kMaxMemcachedKey = 250;  // memcached's own limit
constexpr std::size_t kMaxPrefix = 64;

void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_le(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= std::uint64_t(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

bool printable_without_space(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// FNV-1a, 64 bits, from a given offset basis. Written here because the key
// hash must be the same in every process and release of a fleet (std::hash
// is not), and a collision costs nothing but a miss (the record holds the
// full key), so a small stable hash does; libmemcached's own hashes are 32 bits.
std::uint64_t fnv1a(std::string_view s, std::uint64_t basis) {
  std::uint64_t h = basis;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

Result<MemcachedAddress> parse_memcached_url(std::string_view url) {
  constexpr std::string_view kScheme = "memcached://";
  auto bad = [&](std::string_view why) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("memcached url '{}': {} (want memcached://HOST:PORT or "
                                  "memcached:///path/to/socket)",
                                  url, why));
  };
  if (!url.starts_with(kScheme)) return bad("unknown scheme");
  std::string_view rest = url.substr(kScheme.size());
  MemcachedAddress out;
  if (rest.starts_with('/')) {
    if (rest.size() < 2 || rest.find('\0') != std::string_view::npos || rest.size() > 107)
      return bad("bad socket path");
    out.unix_socket = true;
    out.socket_path = std::string(rest);
    return out;
  }
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad("missing host or port");
  out.host = std::string(rest.substr(0, colon));
  if (!printable_without_space(out.host) || out.host.find('/') != std::string::npos)
    return bad("bad host");
  std::string_view port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return bad("bad port");
  out.port = std::stoi(std::string(port));
  if (out.port < 1 || out.port > 65535) return bad("port out of range");
  return out;
}

namespace {

std::int64_t whole_ms(Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

Result<void> MemcachedCacheOptions::validate() const {
  auto bad = [](std::string_view why) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("memcached cache: {}", why));
  };
  if (auto parsed = parse_memcached_url(url); !parsed) return std::unexpected(parsed.error());
  if (prefix.size() > kMaxPrefix || !printable_without_space(prefix))
    return bad("prefix must be printable ASCII without spaces, at most 64 bytes");
  if (timeout <= Duration::zero() || timeout > std::chrono::seconds(10))
    return bad("timeout must be in (0, 10 s]");
  if (retry_interval < std::chrono::seconds(1) || retry_interval > std::chrono::hours(1))
    return bad("retry_interval must be in [1 s, 1 h]");
  if (max_lifetime < std::chrono::seconds(1) || max_lifetime > std::chrono::days(30))
    return bad("max_lifetime must be in [1 s, 30 days]");
  if (pool_size < 1 || pool_size > 1024) return bad("pool_size must be in [1, 1024]");
  return ok();
}

std::string encode_l3_record(std::string_view key, const L3Record& record) {
  const std::string envelope = encode_envelope(record.envelope);
  std::string out;
  out.reserve(kRecordHeaderBytes + key.size() + envelope.size());
  out.append(kMagic);
  out.push_back(static_cast<char>(kRecordFormat));
  put_le(out, record.epoch, 8);
  put_le(out, key.size(), 4);
  out.append(key);
  out.append(envelope);
  return out;
}

Result<L3Record> decode_l3_record(std::string_view key, std::string_view bytes) {
  auto corrupt = [](std::string_view why) {
    return make_error(ErrorKind::kCorrupt, fmt::format("l3 record: {}", why));
  };
  if (bytes.size() < kRecordHeaderBytes) return corrupt("too short");
  if (bytes.substr(0, kMagic.size()) != kMagic) return corrupt("bad magic");
  if (static_cast<std::uint8_t>(bytes[kMagic.size()]) != kRecordFormat)
    return corrupt("unknown format");
  L3Record record;
  record.epoch = get_le(bytes, kMagic.size() + 1, 8);
  const std::uint64_t key_size = get_le(bytes, kMagic.size() + 9, 4);
  if (key_size > bytes.size() - kRecordHeaderBytes) return corrupt("key length out of range");
  if (bytes.substr(kRecordHeaderBytes, key_size) != key) return corrupt("another key's record");
  auto envelope = decode_envelope(bytes.substr(kRecordHeaderBytes + key_size));
  if (!envelope) return std::unexpected(envelope.error());
  record.envelope = std::move(*envelope);
  record.envelope.entry.version = record.envelope.version;
  return record;
}

struct MemcachedCache::Impl {
  MemcachedCacheOptions options;
  std::shared_ptr<Clock> clock;
  memcached_st* master = nullptr;  // the handles' template; owned, only cloned
  std::atomic<std::uint64_t> hits{0}, misses{0}, corrupt{0}, errors{0}, writes{0};
  // After a failure memcached is left alone until this instant (steady
  // clock, ns): every call fails at once meanwhile. libmemcached marks a
  // server dead only for refused connections, per handle; a server that
  // accepts and never answers would cost every call its full timeout.
  std::atomic<std::int64_t> down_until_ns{0};

  // The handle pool, written here rather than libmemcachedutil's: its
  // memcached_pool_fetch turns a relative wait into an absolute one in whole
  // seconds of time(NULL), so a wait under a second fails at once on a busy
  // pool (measured: 20 of 20 fetches with a 50 ms budget).
  std::mutex pool_mutex;
  std::condition_variable handle_freed;
  std::vector<memcached_st*> idle;  // guarded by pool_mutex
  std::size_t handles = 0;          // guarded by pool_mutex: created, idle or not

  ~Impl() {
    // Every Handle has been released (they live within one call).
    for (memcached_st* st : idle) memcached_free(st);
    if (master) memcached_free(master);
  }

  static std::int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  // A handle within `until`, or null (the pool stayed full, or a clone failed).
  memcached_st* acquire(std::chrono::steady_clock::time_point until) {
    std::unique_lock lock(pool_mutex);
    if (!handle_freed.wait_until(lock, until,
                                 [&] { return !idle.empty() || handles < options.pool_size; }))
      return nullptr;
    if (!idle.empty()) {
      memcached_st* st = idle.back();
      idle.pop_back();
      return st;
    }
    memcached_st* st = memcached_clone(nullptr, master);
    if (st) ++handles;
    return st;
  }

  void release(memcached_st* st) {
    {
      std::lock_guard lock(pool_mutex);
      idle.push_back(st);
    }
    handle_freed.notify_one();
  }

  // A pooled handle for one operation, with its poll and connect timeouts
  // cut to what `deadline` leaves; released on destruction. rc() tells why
  // there is none: kTimeout (no time or no free handle), or memcached down.
  class Handle {
   public:
    Handle(Impl& impl, Deadline deadline) : impl_(impl) {
      const Duration budget = std::min(impl.options.timeout, deadline.remaining());
      if (budget <= Duration::zero()) {
        rc_ = MEMCACHED_TIMEOUT;
        return;
      }
      if (steady_ns() < impl.down_until_ns.load(std::memory_order_relaxed)) {
        rc_ = MEMCACHED_SERVER_TEMPORARILY_DISABLED;
        return;
      }
      st_ = impl.acquire(std::chrono::steady_clock::now() + budget);
      if (!st_) {
        rc_ = MEMCACHED_TIMEOUT;
        return;
      }
      const std::uint64_t ms =
          static_cast<std::uint64_t>(std::max<std::int64_t>(1, whole_ms(budget)));
      memcached_behavior_set(st_, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);
      memcached_behavior_set(st_, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms);
    }
    ~Handle() {
      if (st_) impl_.release(st_);
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    memcached_st* get() const noexcept { return st_; }
    memcached_return_t rc() const noexcept { return rc_; }

   private:
    Impl& impl_;
    memcached_st* st_ = nullptr;
    memcached_return_t rc_ = MEMCACHED_SUCCESS;
  };

  // A failed operation: counted; when memcached itself failed (not a wait
  // for a handle, not a marked-down skip), it is left alone for retry_interval.
  Error failure(std::string_view what, memcached_return_t rc, memcached_st* st) {
    errors.fetch_add(1, kRelaxed);
    if (st) {
      down_until_ns.store(
          steady_ns() +
              std::chrono::duration_cast<std::chrono::nanoseconds>(options.retry_interval).count(),
          std::memory_order_relaxed);
    }
    const ErrorKind kind = rc == MEMCACHED_TIMEOUT ? ErrorKind::kTimeout : ErrorKind::kBackend;
    if (rc == MEMCACHED_SERVER_TEMPORARILY_DISABLED && !st) {
      return Error{kind, fmt::format("memcached {} at {}: left alone after a failure until "
                                     "retry_interval passes",
                                     what, options.url)};
    }
    const char* text = st ? memcached_last_error_message(st) : memcached_strerror(nullptr, rc);
    return Error{kind, fmt::format("memcached {} at {}: {}", what, options.url,
                                   text ? text : memcached_strerror(nullptr, rc))};
  }
};

Result<std::unique_ptr<MemcachedCache>> MemcachedCache::create(MemcachedCacheOptions options,
                                                               std::shared_ptr<Clock> clock) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!clock) return make_error(ErrorKind::kInvalidArgument, "memcached cache: clock is null");
  const MemcachedAddress url = *parse_memcached_url(options.url);
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->clock = std::move(clock);
  impl->master = memcached_create(nullptr);
  if (!impl->master) return make_error(ErrorKind::kBackend, "memcached: out of memory");
  const memcached_return_t added =
      url.unix_socket
          ? memcached_server_add_unix_socket(impl->master, url.socket_path.c_str())
          : memcached_server_add(impl->master, url.host.c_str(), static_cast<in_port_t>(url.port));
  if (added != MEMCACHED_SUCCESS)
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("memcached url '{}': {}", impl->options.url,
                                  memcached_strerror(impl->master, added)));
  const auto timeout_ms = static_cast<std::uint64_t>(whole_ms(impl->options.timeout));
  const auto retry_s = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(impl->options.retry_interval).count());
  // Non-blocking sockets, so that the connect and poll timeouts apply; a
  // server that failed once is left alone for retry_interval (calls fail at
  // once meanwhile), and is never removed from the list.
  memcached_behavior_set(impl->master, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
  memcached_behavior_set(impl->master, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
  memcached_behavior_set(impl->master, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, timeout_ms);
  memcached_behavior_set(impl->master, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, timeout_ms);
  memcached_behavior_set(impl->master, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, retry_s);
  memcached_behavior_set(impl->master, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1);
  memcached_behavior_set(impl->master, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 0);
  return std::unique_ptr<MemcachedCache>(new MemcachedCache(std::move(impl)));
}

MemcachedCache::MemcachedCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MemcachedCache::~MemcachedCache() = default;

const MemcachedCacheOptions& MemcachedCache::options() const noexcept { return impl_->options; }

std::string MemcachedCache::memcached_key(std::string_view key) const {
  const std::string& prefix = impl_->options.prefix;
  // Verbatim keys never hold '#', so no key's verbatim form is another's hashed one.
  if (prefix.size() + key.size() <= kMaxMemcachedKey && !key.empty() &&
      printable_without_space(key) && key.find('#') == std::string_view::npos) {
    return prefix + std::string(key);
  }
  return fmt::format("{}#{:016x}{:016x}", prefix, fnv1a(key, 0xcbf29ce484222325ULL),
                     fnv1a(key, 0x84222325cbf29ce4ULL));
}

Result<std::optional<L3Record>> MemcachedCache::get(std::string_view key, Deadline deadline) {
  Impl::Handle handle(*impl_, deadline);
  if (!handle.get()) return std::unexpected(impl_->failure("get", handle.rc(), nullptr));
  const std::string mkey = memcached_key(key);
  std::size_t length = 0;
  std::uint32_t flags = 0;
  memcached_return_t rc = MEMCACHED_SUCCESS;
  char* bytes = memcached_get(handle.get(), mkey.data(), mkey.size(), &length, &flags, &rc);
  // libmemcached hands the value over in malloc'd memory.
  std::unique_ptr<char, decltype(&std::free)> owned(bytes, &std::free);
  if (rc == MEMCACHED_NOTFOUND) {
    impl_->misses.fetch_add(1, kRelaxed);
    return std::optional<L3Record>();
  }
  if (rc != MEMCACHED_SUCCESS) return std::unexpected(impl_->failure("get", rc, handle.get()));
  auto record = decode_l3_record(key, std::string_view(bytes ? bytes : "", bytes ? length : 0));
  if (!record) {
    impl_->corrupt.fetch_add(1, kRelaxed);
    impl_->misses.fetch_add(1, kRelaxed);
    return std::optional<L3Record>();
  }
  impl_->hits.fetch_add(1, kRelaxed);
  return std::optional<L3Record>(std::move(*record));
}

Result<void> MemcachedCache::put(std::string_view key, const L3Record& record, Deadline deadline) {
  const TimePoint now = impl_->clock->now();
  const CacheEntry& entry = record.envelope.entry;
  if (!entry.is_usable(now)) return ok();
  const Duration left = std::min<Duration>(entry.stale_until - now, impl_->options.max_lifetime);
  // An absolute expiry (Unix seconds, rounded up), not a relative one: a
  // write that a stalled memcached runs late still expires when it would
  // have (the tombstones that guard it are sized for that), and a record
  // never expires before its stale_until. The wall clock here, whatever
  // clock the entry's instants come from.
  const TimePoint wall_now =
      std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  const auto expire_at =
      std::chrono::ceil<std::chrono::seconds>(add_saturating(wall_now, left).time_since_epoch())
          .count();
  const std::string bytes = encode_l3_record(key, record);
  Impl::Handle handle(*impl_, deadline);
  if (!handle.get()) return std::unexpected(impl_->failure("set", handle.rc(), nullptr));
  const std::string mkey = memcached_key(key);
  const memcached_return_t rc = memcached_set(handle.get(), mkey.data(), mkey.size(), bytes.data(),
                                              bytes.size(), static_cast<time_t>(expire_at), 0);
  if (rc == MEMCACHED_E2BIG) {
    impl_->errors.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("memcached set: a record of {} bytes is larger than the server "
                                  "takes",
                                  bytes.size()));
  }
  if (rc != MEMCACHED_SUCCESS) return std::unexpected(impl_->failure("set", rc, handle.get()));
  impl_->writes.fetch_add(1, kRelaxed);
  return ok();
}

Result<void> MemcachedCache::erase(std::string_view key, Deadline deadline) {
  Impl::Handle handle(*impl_, deadline);
  if (!handle.get()) return std::unexpected(impl_->failure("delete", handle.rc(), nullptr));
  const std::string mkey = memcached_key(key);
  const memcached_return_t rc = memcached_delete(handle.get(), mkey.data(), mkey.size(), 0);
  if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND)
    return std::unexpected(impl_->failure("delete", rc, handle.get()));
  return ok();
}

MemcachedCacheStats MemcachedCache::stats() const {
  return {.hits = impl_->hits.load(kRelaxed),
          .misses = impl_->misses.load(kRelaxed),
          .corrupt = impl_->corrupt.load(kRelaxed),
          .errors = impl_->errors.load(kRelaxed),
          .writes = impl_->writes.load(kRelaxed)};
}

}  // namespace herdguard

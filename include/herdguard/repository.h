// herdguard/repository.h — where values come from when the cache misses.
//
// A `Repository` is the database (or any source of truth) behind the cache.
// `load` distinguishes three outcomes, because they call for different
// handling: a value; "no such key" (std::nullopt: cached negatively, never
// counted as a failure by the circuit breaker); and an error (counted by the
// breaker, answered by the fallback chain).
//
// Implementations: `SqliteRepository` (sqlite_repository.h, the embedded
// default) and `CallbackRepository` (below) for user code.
//
// Thread safety: implementations must be safe to call from many threads at
// once; herdguard calls `load` from its bounded pool of load threads.
//
// Example:
//   auto repo = std::make_shared<herdguard::CallbackRepository>(
//       [&db](std::string_view key, herdguard::Deadline deadline)
//           -> herdguard::Result<std::optional<std::string>> {
//         return db.find_product(key, deadline.remaining());
//       });
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

// An entry's own lifetime, when whoever produces the value knows it better
// than the Protector's options (Caffeine's Expiry, FusionCache's adaptive
// caching): from a repository (LoadedEntry) or given to Protector::set.
struct EntryOptions {
  // How long the value is fresh (jittered by ttl_jitter, as options.ttl
  // is; adaptive TTL does not apply). For "no such key": how long that is
  // remembered. nullopt: the Protector's ttl (negative_ttl). Zero: answered
  // to the callers of this load, then stale (fresh for one nanosecond: a TTL
  // is never shorter, jittered_ttl).
  // REQUIRES: >= 0.
  std::optional<Duration> ttl{};
  // How long past its freshness the entry is kept, usable as a stale value.
  // nullopt: the Protector's max(stale_while_revalidate,
  // fail_safe_max_staleness). Stale answers still need the Protector's
  // windows: a shorter stale_for ends them sooner for this entry, a longer
  // one only keeps it longer. REQUIRES: >= 0.
  std::optional<Duration> stale_for{};
  // Tags for Protector::invalidate_tag: invalidating any of them
  // invalidates the entry. Empty: a repository's entry takes the call's
  // (GetOptions::entry). REQUIRES: at most kMaxEntryTags (envelope.h), each
  // 1..kMaxTagBytes bytes.
  std::vector<std::string> tags{};
};

// What Repository::load_entry found: the value (nullopt: no such key) and,
// optionally, its own lifetime.
struct LoadedEntry {
  std::optional<std::string> value{};
  EntryOptions options{};
  // Only in answer to reload_entry: the previous value is still the
  // current one (`value` is ignored). Its entry is kept with a new
  // lifetime (`options`; empty tags keep the previous entry's), and in L2
  // it is extended in place — its value is not written again.
  bool not_modified = false;
};

// What a reload knows of the entry it would replace (Repository::reload_entry):
// compare it with the row (a version column, an ETag, the bytes themselves)
// and answer LoadedEntry::not_modified when it is unchanged.
struct PreviousValue {
  std::string_view value;     // the cached bytes (empty for a negative entry)
  bool negative = false;      // the previous entry remembers "no such key"
  std::uint64_t version = 0;  // herdguard's version of the key it was written under (0: unknown)
  TimePoint fresh_until{};    // when it stopped (or stops) being fresh
};

class Repository {
 public:
  virtual ~Repository() = default;

  // Loads the value stored under `key`. Returns the value, std::nullopt when
  // the key does not exist, or an error: kTimeout when `deadline` passed,
  // kBackend when the database failed. Should give up by `deadline`.
  virtual Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) = 0;
  // load(), with the entry's own lifetime: what the Protector calls for a
  // single key. The default is load() with the Protector's lifetimes;
  // override it to decide per entry (e.g. a TTL from the row's
  // "valid until" column). Errors: as load().
  virtual Result<LoadedEntry> load_entry(std::string_view key, Deadline deadline);
  // load_entry() when the Protector holds a previous entry for `key` (a
  // refresh, a reload of a stale value): the repository may answer
  // not_modified instead of the value. The default is load_entry().
  // Errors: as load(). `previous` is valid during the call only.
  virtual Result<LoadedEntry> reload_entry(std::string_view key, Deadline deadline,
                                           const PreviousValue& previous);

  // Loads several keys in one call where the database can (one statement:
  // Protector::get_many batches its misses into it). Returns one result per
  // key, in the order of `keys`: a value, std::nullopt, or that key's error
  // (a failed call is every key's error). The default calls load() for
  // each key in turn, stopping at `deadline` (the rest: kTimeout).
  virtual std::vector<Result<std::optional<std::string>>> load_many(
      std::span<const std::string> keys, Deadline deadline);
  // Whether load_many is one call (a batch) rather than the default key by
  // key. Protector::get_many batches only when it is; otherwise its keys
  // load in parallel, one load() each.
  virtual bool loads_in_batches() const noexcept { return false; }
};

// Adapts a user function to `Repository`.
// An exception thrown by the function is caught and returned as kBackend
// naming the exception, so it never unwinds into herdguard's threads.
class CallbackRepository final : public Repository {
 public:
  using LoadFunction =
      std::function<Result<std::optional<std::string>>(std::string_view key, Deadline deadline)>;
  // The batch form (Repository::load_many); must return one result per key.
  using LoadManyFunction = std::function<std::vector<Result<std::optional<std::string>>>(
      std::span<const std::string> keys, Deadline deadline)>;
  // The per-entry form (Repository::load_entry).
  using LoadEntryFunction =
      std::function<Result<LoadedEntry>(std::string_view key, Deadline deadline)>;
  // The reloading form (Repository::reload_entry): `previous` is null for a
  // plain load.
  using ReloadFunction = std::function<Result<LoadedEntry>(std::string_view key, Deadline deadline,
                                                           const PreviousValue* previous)>;

  // REQUIRES: `load` (and `load_many`, when given) are callable and safe to
  // call from many threads at once. Without `load_many`, batches load key
  // by key.
  explicit CallbackRepository(LoadFunction load, LoadManyFunction load_many = {});
  // A repository that decides each entry's lifetime: `load_entry` answers
  // load_entry() and (its value alone) load(). REQUIRES: callable and safe
  // from many threads at once.
  static std::shared_ptr<CallbackRepository> with_entries(LoadEntryFunction load_entry);
  // A repository that may answer "not modified": `reload` answers
  // reload_entry() (with the previous value) and load_entry() (with null).
  // REQUIRES: callable and safe from many threads at once.
  static std::shared_ptr<CallbackRepository> with_reloads(ReloadFunction reload);

  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) override;
  // `load_many`'s answer; kBackend for every key when it throws or returns
  // a list of the wrong length.
  std::vector<Result<std::optional<std::string>>> load_many(std::span<const std::string> keys,
                                                            Deadline deadline) override;
  bool loads_in_batches() const noexcept override { return static_cast<bool>(load_many_); }
  // `load_entry`'s answer (with_entries), else load()'s value; kBackend
  // when it throws.
  Result<LoadedEntry> load_entry(std::string_view key, Deadline deadline) override;
  // `reload`'s answer (with_reloads), else load_entry()'s; kBackend when it throws.
  Result<LoadedEntry> reload_entry(std::string_view key, Deadline deadline,
                                   const PreviousValue& previous) override;

 private:
  LoadFunction load_;
  LoadManyFunction load_many_;
  LoadEntryFunction load_entry_;
  ReloadFunction reload_;
};

}  // namespace herdguard

// The bounded L1: a fixed number of shards, each a boost::unordered_flat_map
// behind a reader-writer lock whose readers do not share a cache line
// (core/read_mostly_mutex.h: one hot key read on many cores does not bounce
// the lock between them), with a CLOCK (second-chance) ring through its
// entries. The flat map (open addressing, SIMD-probed groups, power-of-two
// capacity) finds a key in about half the time of std::unordered_map, whose
// prime-modulo bucket and chained nodes cost a division and two cache lines
// on the hit path. Entries live in their own heap nodes, so the ring's
// pointers survive the map's rehashes; the map's keys are views of the
// nodes' own key strings.
//
// Bounds are split evenly: a shard holds at most max_entries / shards entries
// and max_bytes / shards bytes (rounded down), so the cache as a whole never
// exceeds either bound, at the price that a shard full of hot keys evicts
// while another shard still has room.
//
// Invariants (per shard, under its mutex):
//  * Every node of `map` is on the ring exactly once and nothing else is;
//    `hand` points into the ring, and is null exactly when the map is empty.
//    Each map key is a view of its own node's `key` (the node owns the bytes
//    and is destroyed only by erasing its map element).
//  * `bytes` is the sum of the entries' `charge`s (key + value +
//    kEntryOverheadBytes); between calls map.size() <= shard_max_entries_ and
//    bytes <= shard_max_bytes_.
//  * Under the shared lock the only write is a reader setting `accessed`
//    (relaxed: it is a hint, and stored only when clear, so a hot entry's
//    cache line is not written on every hit). Everything else, including
//    clearing `accessed`, happens under the exclusive lock.
//  * New entries join the ring just behind the hand, so a sweep reaches them
//    last. The hand clears the accessed bit of each entry it passes and evicts
//    the first entry whose bit is clear, so a sweep ends within two laps, and
//    an entry read since the hand last passed it survives that sweep.
//  * An entry past its stale_until is never returned. It is dropped by the
//    next get that finds it or by the hand, and counted as an expiration,
//    never as an eviction. Both counters only grow.
#include "herdguard/memory_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <boost/unordered/unordered_flat_map.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>

#include "core/read_mostly_mutex.h"

namespace herdguard {
namespace {

constexpr std::size_t kMaxShards = 1024;
// Generation counters per shard. The shard is picked by the hash's low bits,
// the stripe by its high bits, so the two choices are independent.
constexpr std::size_t kGenerationStripes = 64;
std::size_t stripe_of(std::size_t hash) { return hash >> (64 - 6); }
static_assert(kGenerationStripes == 64 && sizeof(std::size_t) == 8);

// A key with its hash computed once: the same hash picks the shard and, via
// the map's transparent lookup, probes the shard's map.
struct HashedKey {
  explicit HashedKey(std::string_view k) noexcept
      : key(k), hash(std::hash<std::string_view>{}(k)) {}
  std::string_view key;
  std::size_t hash;
};

struct KeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view key) const noexcept {
    return std::hash<std::string_view>{}(key);
  }
  std::size_t operator()(const HashedKey& key) const noexcept { return key.hash; }
};

struct KeyEqual {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
  bool operator()(const HashedKey& a, std::string_view b) const noexcept { return a.key == b; }
  bool operator()(std::string_view a, const HashedKey& b) const noexcept { return a == b.key; }
};

std::size_t charge_of(std::size_t key_bytes, std::size_t value_bytes) {
  return key_bytes + value_bytes + MemoryCache::kEntryOverheadBytes;
}

std::unexpected<Error> bad_option(std::string what) {
  return make_error(ErrorKind::kInvalidArgument, fmt::format("memory cache: {}", what));
}

}  // namespace
struct MemoryCache::Shard {
  struct Node {
    explicit Node(std::string_view k) : key(k) {}
    const std::string key;  // the bytes the map's key views
    // CLOCK reference bit: set by readers under the shared lock, cleared by
    // the hand under the exclusive lock.
    std::atomic<bool> accessed{false};
    // The key is pinned (Shard::pinned has it); the eviction hand passes it by.
    bool pinned = false;
    // min(fresh_until, recheck_at, refresh_from) of `entry`: before it, a
    // read is a plain fresh hit (one comparison on the hot path). Set with
    // every entry (set_entry).
    TimePoint plain_hit_until{};
    // The EntryValidity epoch at which `entry` was last found standing (0:
    // not yet). Written under the shared lock too (relaxed: a reader that
    // sees an old value only asks validity again).
    std::atomic<std::uint64_t> valid_at{0};
    CacheEntry entry;
    // The ticket sequence the entry was stored under (orders fills of
    // entries whose version is unknown).
    std::uint64_t sequence = 0;
    Node* prev = nullptr;  // ring neighbours
    Node* next = nullptr;

    // What the entry counts against the byte bound. Computed, not stored:
    // the node stays within one malloc size class (176 bytes) with
    // plain_hit_until added.
    std::size_t charge() const { return charge_of(key.size(), entry.value.size()); }

    // Whether `entry` stands by `validity` (null: always). Asks validity only
    // when its epoch moved since the entry last stood; a refused entry stays
    // refused (EntryValidity's contract), so it is asked again each time,
    // until it is replaced or dropped.
    bool stands(const EntryValidity* validity) {
      if (validity == nullptr) return true;
      const std::uint64_t epoch = validity->epoch();
      if (valid_at.load(std::memory_order_relaxed) == epoch) [[likely]]
        return true;
      if (!validity->valid(entry)) return false;
      valid_at.store(epoch, std::memory_order_relaxed);
      return true;
    }

    // `refresh_lead`: a pinned key's (pin()); Duration::max() when unpinned.
    void set_entry(CacheEntry e, Duration refresh_lead) {
      valid_at.store(0, std::memory_order_relaxed);
      entry = std::move(e);
      if (refresh_lead != Duration::max() && !entry.negative) {
        const Duration lead = pinned_lead(refresh_lead, entry.load_duration);
        entry.refresh_from = std::min(entry.refresh_from, add_saturating(entry.fresh_until, -lead));
      }
      plain_hit_until = std::min({entry.fresh_until, entry.recheck_at, entry.refresh_from});
    }
  };
  using Map = boost::unordered_flat_map<std::string_view, std::unique_ptr<Node>, KeyHash, KeyEqual>;

  // Its stripes are cache-line aligned: two shards' locks, and two reader
  // stripes, never share a line.
  internal::ReadMostlyMutex mutex;
  // State below is protected by mutex (see the invariants at the top).
  Map map;
  Node* hand = nullptr;
  std::size_t bytes = 0;
  std::uint64_t evictions = 0;
  std::uint64_t expirations = 0;
  std::uint64_t refused = 0;  // entries dropped because the validity refused them
  // Per-stripe generations: bumped under the exclusive lock (put, erase,
  // clear), read without it by ticket(); put_if_unchanged compares under the
  // exclusive lock, so a bump and a conditional store never interleave.
  std::array<std::atomic<std::uint64_t>, kGenerationStripes> generations{};
  // Pinned keys of this shard and their refresh leads (pin()); protected by
  // mutex. Small (the hot keys), so a std::map is plenty.
  std::map<std::string, Duration, std::less<>> pinned;

  // The refresh lead of `key` if pinned, else Duration::max(). REQUIRES: a lock.
  Duration pin_lead(std::string_view key) const {
    if (pinned.empty()) return Duration::max();
    auto it = pinned.find(key);
    return it == pinned.end() ? Duration::max() : it->second;
  }

  void bump(std::size_t hash) {
    generations[stripe_of(hash)].fetch_add(1, std::memory_order_release);
  }

  // Puts `node` on the ring just behind the hand. REQUIRES: exclusive lock.
  void link(Node* node) {
    if (hand == nullptr) {
      node->prev = node->next = node;
      hand = node;
      return;
    }
    node->next = hand;
    node->prev = hand->prev;
    node->prev->next = node;
    hand->prev = node;
  }

  // Unlinks and destroys the node. REQUIRES: exclusive lock.
  void remove(Map::iterator it) {
    Node* node = it->second.get();
    if (node->next == node) {
      hand = nullptr;
    } else {
      if (hand == node) hand = node->next;
      node->prev->next = node->next;
      node->next->prev = node->prev;
    }
    bytes -= node->charge();
    map.erase(it);
  }

  // Sweeps the hand to the next entry to drop, never `keep`, and drops it.
  // REQUIRES: exclusive lock; the ring holds an entry other than `keep`.
  // Pinned entries are passed by until the hand has gone twice round the
  // ring without a victim (every other entry pinned or `keep`).
  void evict_one(TimePoint now, const Node* keep) {
    for (std::size_t steps = 0;; ++steps) {
      Node* victim = hand;
      hand = victim->next;
      if (victim == keep) continue;
      Node& node = *victim;
      if (!node.entry.is_usable(now)) {
        ++expirations;
      } else if (node.pinned && steps < 2 * map.size()) {
        continue;
      } else if (node.accessed.load(std::memory_order_relaxed)) {
        node.accessed.store(false, std::memory_order_relaxed);
        continue;
      } else {
        ++evictions;
      }
      // Eviction is on the put path: finding the element again is cheap
      // next to the put's own copy of the key and value.
      remove(map.find(HashedKey(node.key)));
      return;
    }
  }

  // Evicts until `adding` more entries charging `charge` bytes fit both
  // bounds. `keep` (an entry being replaced, whose old charge the caller has
  // already taken off `bytes`) is never evicted. REQUIRES: exclusive lock.
  // Stops at the latest when only `keep` is left, and the bounds then hold
  // because put() checked charge <= max_bytes and validate() max_entries >= 1.
  void make_room(std::size_t charge, std::size_t adding, std::size_t max_entries,
                 std::size_t max_bytes, TimePoint now, const Node* keep) {
    const std::size_t pinned = keep != nullptr ? 1 : 0;
    while ((bytes + charge > max_bytes || map.size() + adding > max_entries) &&
           map.size() > pinned) {
      evict_one(now, keep);
    }
  }
};

Result<void> MemoryCacheOptions::validate() const {
  // shards first: the bound on max_entries is stated in shards.
  if (shards < 1 || shards > kMaxShards)
    return bad_option(fmt::format("shards must be in 1..{}, got {}", kMaxShards, shards));
  const std::size_t rounded = std::bit_ceil(shards);
  if (max_entries < rounded) {
    const std::string shown =
        rounded == shards ? fmt::format("{}", rounded)
                          : fmt::format("{}, {} rounded up to a power of two", rounded, shards);
    return bad_option(
        fmt::format("max_entries must be >= shards ({}), got {}", shown, max_entries));
  }
  if (max_bytes == 0) return bad_option("max_bytes must be > 0, got 0");
  return ok();
}

Result<std::unique_ptr<MemoryCache>> MemoryCache::create(
    MemoryCacheOptions options, std::shared_ptr<Clock> clock,
    std::shared_ptr<const EntryValidity> validity) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!clock) return bad_option("clock must not be null");
  options.shards = std::bit_ceil(options.shards);
  return std::unique_ptr<MemoryCache>(
      new MemoryCache(options, std::move(clock), std::move(validity)));
}

MemoryCache::MemoryCache(MemoryCacheOptions options, std::shared_ptr<Clock> clock,
                         std::shared_ptr<const EntryValidity> validity)
    : options_(options),
      clock_(std::move(clock)),
      validity_owner_(std::move(validity)),
      validity_(validity_owner_.get()),
      shard_max_entries_(options.max_entries / options.shards),
      shard_max_bytes_(options.max_bytes / options.shards),
      shard_mask_(options.shards - 1),
      shards_(std::make_unique<Shard[]>(options.shards)) {}

MemoryCache::~MemoryCache() = default;

// Inline (this file is its only user): it is on the L1 hit path.
inline MemoryCache::Shard& MemoryCache::shard_for(std::size_t key_hash) const {
  // The low bits pick the shard. The flat maps mix the hash before they use
  // it (std::hash is not marked avalanching), so keys of one shard, which
  // share their low bits, still spread over a map's groups.
  return shards_[key_hash & shard_mask_];
}

Result<std::optional<CacheEntry>> MemoryCache::get(std::string_view key) {
  return get(key, clock_->now());  // outside the lock: it is a virtual call
}

Result<std::optional<CacheEntry>> MemoryCache::get(std::string_view key, TimePoint now) {
  const HashedKey hashed(key);
  Shard& shard = shard_for(hashed.hash);
  {
    internal::ReadMostlyMutex::Reader lock(shard.mutex);
    auto it = shard.map.find(hashed);
    if (it == shard.map.end()) return std::optional<CacheEntry>();
    Shard::Node& node = *it->second;
    if (node.entry.is_usable(now) && node.stands(validity_)) {
      if (!node.accessed.load(std::memory_order_relaxed)) {
        node.accessed.store(true, std::memory_order_relaxed);
      }
      // Copies the entry straight into the returned value, under the lock.
      return Result<std::optional<CacheEntry>>(std::in_place, std::in_place, node.entry);
    }
  }
  // Expired or refused by validity: drop it now rather than wait for the
  // hand. Another thread may have dropped or replaced it between the two
  // locks, hence the re-check. Dropping bumps no generation: nothing that
  // was valid changed.
  std::unique_lock lock(shard.mutex);
  if (auto it = shard.map.find(hashed); it != shard.map.end()) {
    if (!it->second->entry.is_usable(now)) {
      shard.remove(it);
      ++shard.expirations;
    } else if (!it->second->stands(validity_)) {
      shard.remove(it);
      ++shard.refused;
    }
  }
  return std::optional<CacheEntry>();
}

MemoryCache::Freshness MemoryCache::get_fresh_value(std::string_view key, TimePoint fresh_at,
                                                    std::string& value, bool& negative) const {
  const HashedKey hashed(key);
  Shard& shard = shard_for(hashed.hash);
  internal::ReadMostlyMutex::Reader lock(shard.mutex);
  auto it = shard.map.find(hashed);
  if (it == shard.map.end()) return Freshness::kAbsent;
  Shard::Node& node = *it->second;
  const CacheEntry& entry = node.entry;
  if (!node.stands(validity_)) [[unlikely]]
    return Freshness::kAbsent;
  if (fresh_at >= node.plain_hit_until) [[unlikely]] {
    return entry.is_fresh_in_l1(fresh_at) ? Freshness::kRefreshDue : Freshness::kNotFresh;
  }
  if (!node.accessed.load(std::memory_order_relaxed)) {
    node.accessed.store(true, std::memory_order_relaxed);
  }
  value = entry.value;
  negative = entry.negative;
  return Freshness::kFresh;
}

Result<void> MemoryCache::put(std::string_view key, CacheEntry entry) {
  auto stored = store(key, std::move(entry), std::nullopt);
  if (!stored) return std::unexpected(stored.error());
  return ok();
}

Result<bool> MemoryCache::put_if_unchanged(std::string_view key, CacheEntry entry, Ticket ticket) {
  return store(key, std::move(entry), ticket);
}

MemoryCache::Ticket MemoryCache::ticket(std::string_view key) const noexcept {
  const HashedKey hashed(key);
  const Shard& shard = shard_for(hashed.hash);
  return Ticket{shard.generations[stripe_of(hashed.hash)].load(std::memory_order_acquire),
                ticket_sequence_.fetch_add(1, std::memory_order_relaxed)};
}

Result<bool> MemoryCache::store(std::string_view key, CacheEntry entry,
                                std::optional<Ticket> ticket) {
  const std::size_t charge = charge_of(key.size(), entry.value.size());
  const HashedKey hashed(key);
  Shard& shard = shard_for(hashed.hash);
  if (charge > shard_max_bytes_) {
    if (!ticket) {
      std::unique_lock lock(shard.mutex);
      shard.bump(hashed.hash);
    }
    return make_error(
        ErrorKind::kInvalidArgument,
        fmt::format("memory cache: entry of {} bytes (key {} + value {} + overhead "
                    "{}) exceeds a shard's budget of {} bytes (max_bytes / shards)",
                    charge, key.size(), entry.value.size(), kEntryOverheadBytes, shard_max_bytes_));
  }
  const TimePoint now = clock_->now();
  // A put takes a sequence of its own: it is newer than every ticket so far.
  const std::uint64_t sequence =
      ticket ? ticket->sequence : ticket_sequence_.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lock(shard.mutex);
  if (ticket) {
    if (shard.generations[stripe_of(hashed.hash)].load(std::memory_order_relaxed) !=
        ticket->generation) {
      return false;  // a put or erase came in since the ticket
    }
  } else {
    shard.bump(hashed.hash);
  }

  if (auto it = shard.map.find(hashed); it != shard.map.end()) {
    // Replace in place: the entry keeps its place on the ring and its bit.
    Shard::Node& node = *it->second;
    // An entry validity refuses is as good as absent: it keeps no fill out.
    const bool present = node.entry.is_usable(now) && node.stands(validity_);
    if (ticket && node.entry.version != 0 && present) {
      // A fill read from an older state of L2 than what is here loses; so
      // does a fill of unknown version (a load made while Redis failed)
      // against a fresh entry that L2 vouches for.
      if (entry.version != 0 && node.entry.version > entry.version) return false;
      if (entry.version == 0 && node.entry.is_fresh(now) && now < node.entry.recheck_at)
        return false;
    }
    if (ticket && entry.version == 0 && node.entry.version == 0 &&
        node.sequence > ticket->sequence && present) {
      return false;  // both unversioned: the present one read its source later
    }
    shard.bytes -= node.charge();
    shard.make_room(charge, 0, shard_max_entries_, shard_max_bytes_, now, &node);
    node.set_entry(std::move(entry), node.pinned ? shard.pin_lead(key) : Duration::max());
    node.sequence = sequence;
    shard.bytes += charge;
    return true;
  }

  shard.make_room(charge, 1, shard_max_entries_, shard_max_bytes_, now, nullptr);
  auto owned = std::make_unique<Shard::Node>(key);
  Shard::Node& node = *owned;
  const Duration lead = shard.pin_lead(key);
  node.pinned = lead != Duration::max();
  node.set_entry(std::move(entry), lead);
  node.sequence = sequence;
  // The map's key views the node's own copy, which lives as long as the element.
  shard.map.emplace(std::string_view(node.key), std::move(owned));
  shard.bytes += charge;
  shard.link(&node);
  return true;
}

Result<void> MemoryCache::erase(std::string_view key) {
  const HashedKey hashed(key);
  Shard& shard = shard_for(hashed.hash);
  std::unique_lock lock(shard.mutex);
  shard.bump(hashed.hash);
  if (auto it = shard.map.find(hashed); it != shard.map.end()) shard.remove(it);
  return ok();
}

Duration MemoryCache::pinned_lead(Duration refresh_lead, Duration load_duration) noexcept {
  return std::min(std::max(refresh_lead, scale_saturating(load_duration, 2.0)),
                  scale_saturating(refresh_lead, 2.0));
}

void MemoryCache::pin(std::string_view key, Duration refresh_lead) {
  // Duration::max() marks "unpinned" inside; a lead that long is "always due".
  refresh_lead = std::clamp(refresh_lead, Duration::zero(), Duration::max() - Duration(1));
  const HashedKey hashed(key);
  Shard& shard = shard_for(hashed.hash);
  std::unique_lock lock(shard.mutex);
  shard.pinned.insert_or_assign(std::string(key), refresh_lead);
  if (auto it = shard.map.find(hashed); it != shard.map.end()) {
    Shard::Node& node = *it->second;
    node.pinned = true;
    node.set_entry(std::move(node.entry), refresh_lead);
  }
}

void MemoryCache::unpin(std::string_view key) {
  const HashedKey hashed(key);
  Shard& shard = shard_for(hashed.hash);
  std::unique_lock lock(shard.mutex);
  if (auto it = shard.pinned.find(key); it != shard.pinned.end()) shard.pinned.erase(it);
  if (auto it = shard.map.find(hashed); it != shard.map.end()) it->second->pinned = false;
}

bool MemoryCache::is_pinned(std::string_view key) const {
  const HashedKey hashed(key);
  Shard& shard = shard_for(hashed.hash);
  internal::ReadMostlyMutex::Reader lock(shard.mutex);
  return shard.pin_lead(key) != Duration::max();
}

void MemoryCache::clear() {
  for (std::size_t i = 0; i < options_.shards; ++i) {
    Shard& shard = shards_[i];
    std::unique_lock lock(shard.mutex);
    for (auto& generation : shard.generations) generation.fetch_add(1, std::memory_order_release);
    shard.map.clear();
    shard.hand = nullptr;
    shard.bytes = 0;
  }
}

void MemoryCache::recheck_all(TimePoint now) {
  for (std::size_t i = 0; i < options_.shards; ++i) {
    Shard& shard = shards_[i];
    std::unique_lock lock(shard.mutex);
    for (auto& generation : shard.generations) generation.fetch_add(1, std::memory_order_release);
    for (auto& [key, node] : shard.map) {
      node->entry.recheck_at = std::min(node->entry.recheck_at, now);
      node->plain_hit_until = std::min(node->plain_hit_until, now);
    }
  }
}

MemoryCacheStats MemoryCache::stats() const {
  MemoryCacheStats stats;
  for (std::size_t i = 0; i < options_.shards; ++i) {
    Shard& shard = shards_[i];
    internal::ReadMostlyMutex::Reader lock(shard.mutex);
    stats.entries += shard.map.size();
    stats.bytes += shard.bytes;
    stats.evictions += shard.evictions;
    stats.expirations += shard.expirations;
    stats.refused += shard.refused;
  }
  return stats;
}

}  // namespace herdguard

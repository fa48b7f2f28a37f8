#include "protector/load_batch.h"

#include <fmt/format.h>

#include <algorithm>

namespace herdguard::internal {
namespace {

thread_local BatchMember* t_member = nullptr;

}  // namespace

void LoadBatch::seal(std::size_t members) {
  {
    std::lock_guard lock(mutex_);
    sealed_ = true;
    members_ = members;
  }
  changed_.notify_all();
}

void LoadBatch::leave() {
  {
    std::lock_guard lock(mutex_);
    ++accounted_;
  }
  changed_.notify_all();
}

Result<std::optional<std::string>> LoadBatch::arrive(const std::string& key, Deadline deadline,
                                                     const LoadMany& load_many,
                                                     bool first_arrival) {
  std::unique_lock lock(mutex_);
  if (first_arrival) ++accounted_;
  pending_.push_back(key);
  changed_.notify_all();
  if (!round_open_) {
    // This round's leader: gather the others, then load them all.
    round_open_ = true;
    // Waits while members keep coming: the round closes when all are
    // accounted for, or after kBatchLinger without one arriving or leaving
    // (the rest are held elsewhere), or at the deadline.
    for (;;) {
      const std::size_t seen = accounted_ + pending_.size();
      const auto quiet_until =
          std::min(deadline.when(), std::chrono::steady_clock::now() + kBatchLinger);
      if (changed_.wait_until(lock, quiet_until, [this] { return all_accounted(); })) break;
      if (accounted_ + pending_.size() == seen || deadline.expired()) break;
    }
    std::vector<std::string> keys = std::move(pending_);
    pending_.clear();
    round_open_ = false;
    lock.unlock();
    // Keys arrive once per flight, and a key has one flight at a time in a
    // process; a key that arrives twice (a flight that loads again) is
    // answered twice from one row.
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::vector<Result<std::optional<std::string>>> loaded;
    if (deadline.expired()) {
      loaded.assign(keys.size(), make_error(ErrorKind::kTimeout,
                                            "batch load: the deadline passed while gathering"));
    } else {
      try {
        loaded = load_many(keys, deadline);
      } catch (...) {
        // The other members wait for their results: never leave without.
        loaded.assign(keys.size(), make_error(ErrorKind::kInternal, "batch load threw"));
      }
    }
    lock.lock();
    for (std::size_t i = 0; i < keys.size(); ++i) {
      results_.insert_or_assign(keys[i], i < loaded.size()
                                             ? std::move(loaded[i])
                                             : Result<std::optional<std::string>>(make_error(
                                                   ErrorKind::kInternal, "batch result missing")));
    }
    changed_.notify_all();
  } else {
    changed_.wait_until(lock, deadline.when(), [&] { return results_.contains(key); });
  }
  auto it = results_.find(key);
  if (it == results_.end()) {
    return make_error(ErrorKind::kTimeout,
                      fmt::format("load of key '{}': deadline passed waiting for its batch", key));
  }
  Result<std::optional<std::string>> result = std::move(it->second);
  results_.erase(it);
  return result;
}

BatchMember::~BatchMember() {
  if (!accounted_) batch_->leave();
}

Result<std::optional<std::string>> BatchMember::arrive(const std::string& key, Deadline deadline,
                                                       const LoadMany& load_many) {
  bool first = false;
  {
    std::lock_guard lock(mutex_);
    first = !accounted_;
    accounted_ = true;
  }
  return batch_->arrive(key, deadline, load_many, first);
}

void BatchMember::step_aside() {
  {
    std::lock_guard lock(mutex_);
    if (accounted_) return;
    accounted_ = true;
  }
  batch_->leave();
}

BatchMember* current_batch_member() noexcept { return t_member; }

BatchScope::BatchScope(BatchMember* member) noexcept : previous_(t_member) { t_member = member; }

BatchScope::~BatchScope() { t_member = previous_; }

}  // namespace herdguard::internal

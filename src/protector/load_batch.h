// Internal: the database loads of one Protector::get_many call, made in one
// Repository::load_many call.
//
// get_many starts one single-flight flight per missing key, as get would,
// each with a BatchMember in its loader. A flight runs the whole load path
// of its key (L2, the fleet lock, another process's value...) on its own
// thread; only if it reaches the database does it *arrive* at the batch. The
// first arrival of a round waits until every member has arrived or left (a
// flight that ended without the database: another process loaded the key,
// L2 had it, it was refused, or it is waiting for another process that
// holds the key's fleet lock: it *steps aside*) — or until kBatchLinger
// passed with no member arriving or leaving (a stall) — then
// makes one load_many call for every key that arrived, and each member
// takes its own key's result. A member arriving while a round is loading
// opens the next round.
//
// The member reaches the repository call through a thread-local scope
// (BatchScope) rather than a parameter threaded through every layer of the
// load path: a flight's load runs synchronously on the thread that opened
// the scope, so the member is in scope exactly for that load.
//
// Thread safety: LoadBatch is safe from any number of threads; a
// BatchMember belongs to one flight (copies of its loader share it).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard::internal {

// How long the first arrival of a round waits for the next member to arrive
// or leave before it loads without the rest. The members it waits for are
// progressing on this process's threads (a member waiting on another
// process steps aside), so this only cuts a stall short.
inline constexpr Duration kBatchLinger = std::chrono::milliseconds(100);

using LoadMany = std::function<std::vector<Result<std::optional<std::string>>>(
    std::span<const std::string> keys, Deadline deadline)>;

class LoadBatch {
 public:
  // Every member has been created: `members` of them will each arrive or
  // leave. Until then an arrival waits (at most kBatchLinger).
  void seal(std::size_t members);
  // A member at the repository step (see above). Returns its key's result;
  // kTimeout when `deadline` passes first.
  Result<std::optional<std::string>> arrive(const std::string& key, Deadline deadline,
                                            const LoadMany& load_many, bool first_arrival);
  // A member whose flight ended without arriving.
  void leave();

 private:
  bool all_accounted() const { return sealed_ && accounted_ >= members_; }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  // Guarded by mutex_.
  bool sealed_ = false;
  std::size_t members_ = 0;
  std::size_t accounted_ = 0;  // members that arrived (once each) or left
  bool round_open_ = false;    // a first arrival is gathering `pending`
  std::vector<std::string> pending_;
  std::map<std::string, Result<std::optional<std::string>>> results_;
};

// One flight's share of a batch: counted once when it first arrives, or
// when it is destroyed without having arrived (it left).
class BatchMember {
 public:
  explicit BatchMember(std::shared_ptr<LoadBatch> batch) : batch_(std::move(batch)) {}
  ~BatchMember();
  BatchMember(const BatchMember&) = delete;
  BatchMember& operator=(const BatchMember&) = delete;

  Result<std::optional<std::string>> arrive(const std::string& key, Deadline deadline,
                                            const LoadMany& load_many);
  // The flight waits for another process's load of its key: the batch does
  // not wait for it (if it must load after all, it arrives on its own).
  void step_aside();

 private:
  const std::shared_ptr<LoadBatch> batch_;
  std::mutex mutex_;
  bool accounted_ = false;  // arrived or stepped aside; guarded by mutex_
};

// The member of the load running on this thread, or null.
BatchMember* current_batch_member() noexcept;

// Puts `member` in scope on this thread for the lifetime of the scope.
class BatchScope {
 public:
  explicit BatchScope(BatchMember* member) noexcept;
  ~BatchScope();
  BatchScope(const BatchScope&) = delete;
  BatchScope& operator=(const BatchScope&) = delete;

 private:
  BatchMember* const previous_;
};

}  // namespace herdguard::internal

#include <fmt/format.h>

#include <exception>
#include <utility>

#include "herdguard/repository.h"

namespace herdguard {

std::vector<Result<std::optional<std::string>>> Repository::load_many(
    std::span<const std::string> keys, Deadline deadline) {
  std::vector<Result<std::optional<std::string>>> results;
  results.reserve(keys.size());
  for (const std::string& key : keys) {
    if (deadline.expired()) {
      results.emplace_back(make_error(
          ErrorKind::kTimeout, fmt::format("load of key '{}': the batch's deadline passed", key)));
    } else {
      results.push_back(load(key, deadline));
    }
  }
  return results;
}

CallbackRepository::CallbackRepository(LoadFunction load, LoadManyFunction load_many)
    : load_(std::move(load)), load_many_(std::move(load_many)) {}

std::vector<Result<std::optional<std::string>>> CallbackRepository::load_many(
    std::span<const std::string> keys, Deadline deadline) {
  if (!load_many_) return Repository::load_many(keys, deadline);
  auto every_key = [&](const Error& error) {
    return std::vector<Result<std::optional<std::string>>>(keys.size(), std::unexpected(error));
  };
  try {
    auto results = load_many_(keys, deadline);
    if (results.size() != keys.size()) {
      return every_key(
          {ErrorKind::kBackend, fmt::format("batch loader returned {} results for {} keys",
                                            results.size(), keys.size())});
    }
    return results;
  } catch (const std::exception& e) {
    return every_key({ErrorKind::kBackend, fmt::format("batch loader threw: {}", e.what())});
  } catch (...) {
    return every_key({ErrorKind::kBackend, "batch loader threw: unknown exception"});
  }
}

Result<std::optional<std::string>> CallbackRepository::load(std::string_view key,
                                                            Deadline deadline) {
  // Checked here rather than in the constructor, which has no way to report
  // an error; calling an empty std::function would throw bad_function_call.
  if (!load_) {
    return make_error(ErrorKind::kInvalidArgument,
                      "callback repository: the load function is empty");
  }
  // The boundary between user code and herdguard's load threads: nothing may
  // unwind past it, or it would take down a thread that other callers wait on.
  try {
    return load_(key, deadline);
  } catch (const std::exception& e) {
    return make_error(ErrorKind::kBackend, fmt::format("loader threw: {}", e.what()));
  } catch (...) {
    return make_error(ErrorKind::kBackend, "loader threw: unknown exception");
  }
}

}  // namespace herdguard

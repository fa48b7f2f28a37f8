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

Result<LoadedEntry> Repository::load_entry(std::string_view key, Deadline deadline) {
  auto loaded = load(key, deadline);
  if (!loaded) return std::unexpected(std::move(loaded.error()));
  return LoadedEntry{.value = std::move(*loaded)};
}

Result<LoadedEntry> Repository::reload_entry(std::string_view key, Deadline deadline,
                                             const PreviousValue&) {
  return load_entry(key, deadline);
}

CallbackRepository::CallbackRepository(LoadFunction load, LoadManyFunction load_many)
    : load_(std::move(load)), load_many_(std::move(load_many)) {}

std::shared_ptr<CallbackRepository> CallbackRepository::with_entries(LoadEntryFunction load_entry) {
  auto repository = std::make_shared<CallbackRepository>(LoadFunction{});
  repository->load_entry_ = std::move(load_entry);
  // load() answers the value alone (get_many's batches key by key).
  repository->load_ = [raw = repository.get()](
                          std::string_view key,
                          Deadline deadline) -> Result<std::optional<std::string>> {
    auto loaded = raw->load_entry_(key, deadline);
    if (!loaded) return std::unexpected(std::move(loaded.error()));
    return std::move(loaded->value);
  };
  return repository;
}

std::shared_ptr<CallbackRepository> CallbackRepository::with_reloads(ReloadFunction reload) {
  auto repository = with_entries(
      [f = reload](std::string_view key, Deadline deadline) { return f(key, deadline, nullptr); });
  repository->reload_ = std::move(reload);
  return repository;
}

Result<LoadedEntry> CallbackRepository::reload_entry(std::string_view key, Deadline deadline,
                                                     const PreviousValue& previous) {
  if (!reload_) return load_entry(key, deadline);
  try {
    return reload_(key, deadline, &previous);
  } catch (const std::exception& e) {
    return make_error(ErrorKind::kBackend, fmt::format("loader threw: {}", e.what()));
  } catch (...) {
    return make_error(ErrorKind::kBackend, "loader threw: unknown exception");
  }
}

Result<LoadedEntry> CallbackRepository::load_entry(std::string_view key, Deadline deadline) {
  if (!load_entry_) return Repository::load_entry(key, deadline);
  try {
    return load_entry_(key, deadline);
  } catch (const std::exception& e) {
    return make_error(ErrorKind::kBackend, fmt::format("loader threw: {}", e.what()));
  } catch (...) {
    return make_error(ErrorKind::kBackend, "loader threw: unknown exception");
  }
}

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

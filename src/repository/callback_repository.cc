#include <fmt/format.h>

#include <exception>
#include <utility>

#include "herdguard/repository.h"

namespace herdguard {

CallbackRepository::CallbackRepository(LoadFunction load) : load_(std::move(load)) {}

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

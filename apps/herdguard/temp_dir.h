// A temporary folder, removed with everything in it on every exit path.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace herdguard::cli {

class TempDir {
 public:
  // Creates <tmp>/<name>-XXXXXX; path() is empty when that failed.
  explicit TempDir(const std::string& name) {
    std::string pattern = (std::filesystem::temp_directory_path() / (name + "-XXXXXX")).string();
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace herdguard::cli

// Warm-up (include/herdguard/warm_up.h): the key file, and the Protector
// loading a key list at start at a bounded rate, stopping when destroyed.
#include "herdguard/warm_up.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "herdguard/protector.h"
#include "test_support.h"

namespace herdguard {
namespace {

using testing::wait_until;

// A file in a fresh temporary folder, removed with it.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "herdguard-warm-XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) dir_ = pattern;
    path_ = dir_ + "/keys.txt";
    std::ofstream(path_, std::ios::binary) << text;
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

TEST(WarmUpFile, ReadsOneKeyPerLineTrimmedSkippingBlanksAndComments) {
  TempFile file("# hot keys\nproduct:1\n  product:2\t\r\n\n   \n#product:3\nuser:7");
  auto keys = read_warm_up_file(file.path());
  ASSERT_TRUE(keys) << keys.error().to_string();
  EXPECT_EQ(*keys, (std::vector<std::string>{"product:1", "product:2", "user:7"}));
}

TEST(WarmUpFile, AMissingFileAndAnOversizedKeyAreClearErrors) {
  auto missing = read_warm_up_file("/nonexistent/herdguard/keys.txt");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().kind, ErrorKind::kBackend);
  EXPECT_NE(missing.error().message.find("keys.txt"), std::string::npos);
  TempFile file("ok\n" + std::string(20, 'k') + "\n");
  auto oversized = read_warm_up_file(file.path(), 10);
  ASSERT_FALSE(oversized);
  EXPECT_EQ(oversized.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(oversized.error().message.find("line 2"), std::string::npos)
      << oversized.error().message;
}

struct Loads {
  std::atomic<int> calls{0};
  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
          calls.fetch_add(1);
          if (key.starts_with("missing")) return std::optional<std::string>();
          if (key.starts_with("broken")) return make_error(ErrorKind::kBackend, "down");
          return std::optional<std::string>("v");
        });
  }
};

TEST(WarmUp, TheProtectorLoadsTheListOnceEachAtStartAndCountsWhatFailed) {
  Loads loads;
  ProtectorOptions options;
  options.warm_up = {
      .keys = [] { return std::vector<std::string>{"a", "b", "missing:1", "broken:1", "", "c"}; },
      .keys_per_second = 1000};
  auto p = Protector::create(options, loads.repository());
  ASSERT_TRUE(p) << p.error().to_string();
  Protector& protector = **p;
  wait_until([&] {
    const ProtectionMetrics m = protector.metrics();
    return m.warmed_keys + m.warm_up_failures == 6;
  });
  const ProtectionMetrics m = protector.metrics();
  EXPECT_EQ(m.warmed_keys, 4u);       // a, b, c, and missing:1 (absent is an answer)
  EXPECT_EQ(m.warm_up_failures, 2u);  // broken:1, and the empty key
  EXPECT_EQ(loads.calls.load(), 5);   // the empty key never reaches the database
  for (const char* key : {"a", "b", "c"}) EXPECT_TRUE(protector.peek(key).has_value()) << key;
  EXPECT_TRUE(protector.get("a"));
  EXPECT_EQ(loads.calls.load(), 5);  // warmed: no load
}

TEST(WarmUp, KeysAreLoadedNoFasterThanTheRate) {
  Loads loads;
  ProtectorOptions options;
  options.warm_up = {.keys =
                         [] {
                           std::vector<std::string> keys;
                           for (int i = 0; i < 6; ++i) keys.push_back("k" + std::to_string(i));
                           return keys;
                         },
                     .keys_per_second = 50};
  const auto start = std::chrono::steady_clock::now();
  auto p = Protector::create(options, loads.repository());
  ASSERT_TRUE(p);
  wait_until([&] { return (*p)->metrics().warmed_keys == 6; });
  // Six keys at 50/s: the sixth starts 5 × 20 ms after the first, at the earliest.
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
}

TEST(WarmUp, DestroyingTheProtectorStopsAWarmUpInProgress) {
  Loads loads;
  ProtectorOptions options;
  options.warm_up = {.keys =
                         [] {
                           std::vector<std::string> keys;
                           for (int i = 0; i < 1000; ++i) keys.push_back("k" + std::to_string(i));
                           return keys;
                         },
                     .keys_per_second = 1};
  auto p = Protector::create(options, loads.repository());
  ASSERT_TRUE(p);
  wait_until([&] { return loads.calls.load() == 1; });  // the first key goes at once
  p->reset();  // returns without waiting for the other 999 s
  EXPECT_EQ(loads.calls.load(), 1);
}

TEST(WarmUp, AThrowingKeyListIsOneFailureAndBadRatesAreRefused) {
  Loads loads;
  ProtectorOptions options;
  options.warm_up = {.keys = []() -> std::vector<std::string> { throw std::runtime_error("no"); }};
  auto p = Protector::create(options, loads.repository());
  ASSERT_TRUE(p);
  wait_until([&] { return (*p)->metrics().warm_up_failures == 1; });
  EXPECT_EQ(loads.calls.load(), 0);
  for (double rate : {0.0, 1e-300, -1.0, HUGE_VAL, std::nan("")}) {
    options.warm_up.keys_per_second = rate;
    auto bad = Protector::create(options, loads.repository());
    ASSERT_FALSE(bad) << rate;
    EXPECT_NE(bad.error().message.find("keys_per_second"), std::string::npos);
  }
}

}  // namespace
}  // namespace herdguard

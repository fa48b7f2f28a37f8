// The core promise, in-process: a herd of concurrent requests for one expired
// key reaches the real (SQLite) database exactly once.
#include <gtest/gtest.h>

#include <filesystem>
#include <latch>
#include <thread>
#include <vector>

#include "herdguard/protector.h"
#include "herdguard/sqlite_repository.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "herdguard-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::filesystem::path path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(ProtectorHerd, ThousandConcurrentRequestsForAnExpiredKeyMakeOneQuery) {
  TempDir dir;
  auto repo = SqliteRepository::open({.path = (dir.path() / "herd.db").string(),
                                      .pool_size = 4,
                                      .simulated_latency = milliseconds(50)});
  ASSERT_TRUE(repo.has_value()) << repo.error().to_string();
  ASSERT_TRUE((*repo)->upsert("hot", "hot value"));
  std::shared_ptr<SqliteRepository> db = std::move(*repo);

  auto clock = std::make_shared<ManualClock>();
  auto protector = Protector::create({.ttl = seconds(10), .clock = clock}, db);
  ASSERT_TRUE(protector.has_value());
  Protector& p = **protector;

  ASSERT_EQ(*p.get("hot", Deadline::after(seconds(30))), "hot value");  // warm
  ASSERT_EQ(db->queries(), 1u);
  clock->advance(seconds(13));  // past ttl + maximum jitter: expired

  constexpr int kRequests = 1000;
  std::latch start(kRequests);
  std::vector<Result<std::string>> results(kRequests, make_error(ErrorKind::kInternal, "unset"));
  std::vector<std::thread> threads;
  threads.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();  // release all at once
      results[i] = p.get("hot", Deadline::after(seconds(60)));
    });
  }
  for (auto& t : threads) t.join();

  EXPECT_EQ(db->queries(), 2u);  // the warm-up and exactly one for the herd
  int correct = 0;
  for (const auto& r : results) correct += r.has_value() && *r == "hot value";
  EXPECT_EQ(correct, kRequests);
  auto m = p.metrics();
  EXPECT_EQ(m.db_queries, 2u);
  EXPECT_EQ(m.errors, 0u);
}

}  // namespace
}  // namespace herdguard

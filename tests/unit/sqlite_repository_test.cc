#include "herdguard/sqlite_repository.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace herdguard {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

using Loaded = std::optional<std::string>;

Deadline generous() { return Deadline::after(10s); }

std::string fmt_key(int k) { return "key-" + std::to_string(k); }

// The database file opened with the sqlite3 C API, as another program would.
using RawDb = std::unique_ptr<sqlite3, decltype(&sqlite3_close)>;
RawDb open_raw(const std::string& path) {
  sqlite3* raw = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
  return RawDb(raw, &sqlite3_close);
}

// A fresh directory, removed with everything in it when the test ends.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string name = (fs::path(testing::TempDir()) / "herdguard_sqlite_XXXXXX").string();
    if (mkdtemp(name.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed for " << name;
      return;
    }
    path_ = name;
  }
  ~ScopedTempDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

class SqliteRepositoryTest : public testing::Test {
 protected:
  SqliteRepositoryOptions options_for(const std::string& file = "test.db") const {
    SqliteRepositoryOptions options;
    options.path = (dir_.path() / file).string();
    return options;
  }

  static std::unique_ptr<SqliteRepository> open_ok(SqliteRepositoryOptions options) {
    auto repo = SqliteRepository::open(std::move(options));
    EXPECT_TRUE(repo.has_value()) << repo.error().to_string();
    return repo ? std::move(*repo) : nullptr;
  }

  ScopedTempDir dir_;
};

// --- Options ---

TEST(SqliteRepositoryOptions, DefaultsWithAPathAreValid) {
  SqliteRepositoryOptions options;
  options.path = "x.db";
  EXPECT_TRUE(options.validate().has_value());
}

TEST(SqliteRepositoryOptions, EmptyPathIsInvalid) {
  SqliteRepositoryOptions options;
  auto r = options.validate();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(r.error().message, HasSubstr("path"));
}

TEST(SqliteRepositoryOptions, InMemoryPathIsInvalidBecauseEachConnectionWouldGetItsOwn) {
  SqliteRepositoryOptions options;
  options.path = ":memory:";
  auto r = options.validate();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(r.error().message, HasSubstr("path"));
}

TEST(SqliteRepositoryOptions, IdentifiersMustBeLettersDigitsAndUnderscores) {
  struct Case {
    std::string SqliteRepositoryOptions::*field;
    std::string name;
    std::string value;
  };
  const Case cases[] = {
      {&SqliteRepositoryOptions::table, "table", "kv; DROP TABLE x"},
      {&SqliteRepositoryOptions::table, "table", ""},
      {&SqliteRepositoryOptions::key_column, "key_column", "1key"},
      {&SqliteRepositoryOptions::key_column, "key_column", "my key"},
      {&SqliteRepositoryOptions::value_column, "value_column", "v\"alue"},
      {&SqliteRepositoryOptions::value_column, "value_column", "caf\xc3\xa9"},
  };
  for (const auto& c : cases) {
    SqliteRepositoryOptions options;
    options.path = "x.db";
    options.*c.field = c.value;
    auto r = options.validate();
    ASSERT_FALSE(r.has_value()) << c.name << " = '" << c.value << "'";
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_THAT(r.error().message, HasSubstr(c.name));
  }
}

TEST(SqliteRepositoryOptions, UnderscoresAndDigitsAfterTheFirstCharacterAreValid) {
  SqliteRepositoryOptions options;
  options.path = "x.db";
  options.table = "_products_v2";
  options.key_column = "Sku9";
  options.value_column = "json_";
  EXPECT_TRUE(options.validate().has_value());
}

TEST(SqliteRepositoryOptions, PoolSizeMustBeFrom1To256) {
  for (std::size_t bad : {std::size_t{0}, std::size_t{257}}) {
    SqliteRepositoryOptions options;
    options.path = "x.db";
    options.pool_size = bad;
    auto r = options.validate();
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_THAT(r.error().message, HasSubstr("pool_size"));
  }
  for (std::size_t good : {std::size_t{1}, std::size_t{256}}) {
    SqliteRepositoryOptions options;
    options.path = "x.db";
    options.pool_size = good;
    EXPECT_TRUE(options.validate().has_value()) << good;
  }
}

TEST(SqliteRepositoryOptions, NegativeDurationsAreInvalid) {
  SqliteRepositoryOptions options;
  options.path = "x.db";
  options.busy_timeout = -1ms;
  auto r = options.validate();
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(r.error().message, HasSubstr("busy_timeout"));

  options.busy_timeout = 0ms;
  options.simulated_latency = -1ms;
  r = options.validate();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(r.error().message, HasSubstr("simulated_latency"));
}

// --- Opening ---

TEST_F(SqliteRepositoryTest, OpenRejectsAnInvalidIdentifierWithoutTouchingTheFile) {
  auto options = options_for();
  options.table = "kv; DROP TABLE x";

  auto repo = SqliteRepository::open(options);

  ASSERT_FALSE(repo.has_value());
  EXPECT_EQ(repo.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(repo.error().message, HasSubstr("table"));
  EXPECT_FALSE(fs::exists(options.path));
}

TEST_F(SqliteRepositoryTest, UnopenablePathIsBackendErrorNamingThePath) {
  SqliteRepositoryOptions options;
  options.path = (dir_.path() / "no-such-directory" / "test.db").string();

  auto repo = SqliteRepository::open(options);

  ASSERT_FALSE(repo.has_value());
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(repo.error().message, HasSubstr("cannot open '" + options.path + "'"));
}

TEST_F(SqliteRepositoryTest, DirectoryAsPathIsBackendErrorNamingThePath) {
  SqliteRepositoryOptions options;
  options.path = dir_.path().string();

  auto repo = SqliteRepository::open(options);

  ASSERT_FALSE(repo.has_value());
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(repo.error().message, HasSubstr(options.path));
}

TEST_F(SqliteRepositoryTest, FileThatIsNotADatabaseIsBackendError) {
  auto options = options_for("notes.txt");
  std::ofstream(options.path) << "these are not the pages you are looking for, not even close\n"
                              << std::string(4096, 'x');

  auto repo = SqliteRepository::open(options);

  ASSERT_FALSE(repo.has_value());
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(repo.error().message, HasSubstr(options.path));
}

TEST_F(SqliteRepositoryTest, MissingTableWithoutCreateIfMissingIsBackendErrorNamingTheTable) {
  auto other = options_for();
  other.table = "other";
  ASSERT_NE(open_ok(other), nullptr);  // the file exists, with another table only
  auto options = options_for();
  options.table = "products";
  options.create_if_missing = false;

  auto repo = SqliteRepository::open(options);

  ASSERT_FALSE(repo.has_value());
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(repo.error().message, HasSubstr("'products'"));
}

TEST_F(SqliteRepositoryTest, MissingFileWithoutCreateIfMissingIsBackendErrorAndCreatesNothing) {
  auto options = options_for();
  options.create_if_missing = false;

  auto repo = SqliteRepository::open(options);

  ASSERT_FALSE(repo.has_value());
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(repo.error().message, HasSubstr(options.path));
  EXPECT_FALSE(fs::exists(options.path));
}

TEST_F(SqliteRepositoryTest, MissingValueColumnIsBackendErrorNamingTheColumn) {
  ASSERT_NE(open_ok(options_for()), nullptr);  // creates kv(key, value)
  auto options = options_for();
  options.value_column = "json";
  options.create_if_missing = false;

  auto repo = SqliteRepository::open(options);

  ASSERT_FALSE(repo.has_value());
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_THAT(repo.error().message, HasSubstr("json"));
}

// --- Loading and writing ---

TEST_F(SqliteRepositoryTest, UpsertThenLoadRoundTrips) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("product:42", R"({"name":"lamp"})").has_value());

  auto r = repo->load("product:42", generous());

  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, Loaded(R"({"name":"lamp"})"));
}

TEST_F(SqliteRepositoryTest, UpsertReplacesTheExistingValue) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("k", "old").has_value());
  ASSERT_TRUE(repo->upsert("k", "new").has_value());

  auto r = repo->load("k", generous());

  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, Loaded("new"));
}

TEST_F(SqliteRepositoryTest, MissingKeyIsNulloptNotAnError) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);

  auto r = repo->load("nobody", generous());

  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, std::nullopt);
}

TEST_F(SqliteRepositoryTest, BinaryKeysAndValuesWithNulBytesRoundTrip) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);
  using namespace std::string_literals;
  // Keys that differ only after a NUL, or are not UTF-8, must stay distinct.
  const std::pair<std::string, std::string> rows[] = {
      {"a"s, "plain"s},
      {"a\0b"s, "\0\x01\xff value"s},
      {"a\0c"s, "\0\0\0"s},
      {"\xff\xfe"s, "not utf-8 key"s},
      {"caf\xc3\xa9"s, "utf-8 key"s},
      {""s, "empty key"s},
      {"empty value"s, ""s},
  };
  for (const auto& [key, value] : rows) ASSERT_TRUE(repo->upsert(key, value).has_value());

  for (const auto& [key, value] : rows) {
    auto r = repo->load(key, generous());
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    ASSERT_TRUE(r->has_value()) << "key of " << key.size() << " bytes not found";
    EXPECT_EQ(**r, value);
  }
  auto absent = repo->load("a\0"s, generous());
  ASSERT_TRUE(absent.has_value());
  EXPECT_EQ(*absent, std::nullopt);
}

TEST_F(SqliteRepositoryTest, CustomTableAndColumnNamesAreUsedAndPersist) {
  auto options = options_for();
  options.table = "products";
  options.key_column = "sku";
  options.value_column = "json";
  {
    auto repo = open_ok(options);
    ASSERT_NE(repo, nullptr);
    ASSERT_TRUE(repo->upsert("sku-1", "{}").has_value());
  }
  options.create_if_missing = false;  // the table must now exist

  auto repo = open_ok(options);

  ASSERT_NE(repo, nullptr);
  auto r = repo->load("sku-1", generous());
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, Loaded("{}"));
}

TEST_F(SqliteRepositoryTest, ReadsRowsWrittenBySqlIncludingNullAndIntegerValues) {
  auto options = options_for();
  auto repo = open_ok(options);
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("from-herdguard", "x").has_value());
  {
    RawDb db = open_raw(options.path);
    ASSERT_NE(db, nullptr);
    ASSERT_EQ(sqlite3_exec(db.get(),
                           "INSERT INTO kv (key, value) VALUES ('text', 'hello'), ('null', NULL), "
                           "('int', 42)",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db.get());
    // A text key written by upsert() is an ordinary TEXT key to other tools.
    int matches = 0;
    ASSERT_EQ(sqlite3_exec(
                  db.get(), "SELECT 1 FROM kv WHERE key = 'from-herdguard'",
                  [](void* n, int, char**, char**) {
                    ++*static_cast<int*>(n);
                    return 0;
                  },
                  &matches, nullptr),
              SQLITE_OK);
    EXPECT_EQ(matches, 1);
  }

  auto text = repo->load("text", generous());
  auto null = repo->load("null", generous());
  auto integer = repo->load("int", generous());

  ASSERT_TRUE(text.has_value()) << text.error().to_string();
  EXPECT_EQ(*text, Loaded("hello"));
  ASSERT_TRUE(null.has_value()) << null.error().to_string();
  EXPECT_EQ(*null, Loaded(""));  // the row exists; its NULL value reads as empty
  ASSERT_TRUE(integer.has_value()) << integer.error().to_string();
  EXPECT_EQ(*integer, Loaded("42"));
}

TEST_F(SqliteRepositoryTest, QueriesCountsLoadsButNotUpserts) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("k", "v").has_value());
  EXPECT_EQ(repo->queries(), 0u);

  ASSERT_TRUE(repo->load("k", generous()).has_value());
  ASSERT_TRUE(repo->load("missing", generous()).has_value());
  ASSERT_TRUE(repo->load("k", generous()).has_value());

  EXPECT_EQ(repo->queries(), 3u);
}

TEST_F(SqliteRepositoryTest, ExpiredDeadlineTimesOutWithoutQuerying) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);

  auto r = repo->load("k", Deadline::after(Duration::zero()));

  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(repo->queries(), 0u);
}

// --- Deadlines, latency and the pool ---

TEST_F(SqliteRepositoryTest, SimulatedLatencyShorterThanTheDeadlineReturnsTheValue) {
  auto options = options_for();
  options.simulated_latency = 20ms;
  auto repo = open_ok(options);
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("k", "v").has_value());

  auto r = repo->load("k", generous());

  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(*r, Loaded("v"));
}

TEST_F(SqliteRepositoryTest, DeadlineShorterThanSimulatedLatencyTimesOutAtTheDeadline) {
  auto options = options_for();
  options.simulated_latency = 30s;
  auto repo = open_ok(options);
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("k", "v").has_value());
  const auto start = std::chrono::steady_clock::now();

  auto r = repo->load("k", Deadline::after(50ms));

  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_THAT(r.error().message, HasSubstr("latency"));
  EXPECT_EQ(repo->queries(), 0u);
  // It gave up at the deadline rather than sleeping out the latency.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
}

TEST_F(SqliteRepositoryTest, LoadTimesOutWhenEveryPooledConnectionIsHeld) {
  auto options = options_for();
  options.pool_size = 1;
  options.simulated_latency = 2s;
  auto repo = open_ok(options);
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("k", "v").has_value());

  std::latch holder_started(1);
  Result<Loaded> held = make_error(ErrorKind::kInternal, "not run");
  std::thread holder([&] {
    holder_started.count_down();
    held = repo->load("k", Deadline::after(60s));  // holds the only connection for 2 s
  });
  holder_started.wait();

  // If this thread gets the connection before the holder does, its load times
  // out in the simulated latency instead, and the holder (queued, FIFO) gets
  // the connection next. So within a few attempts the pool itself refuses.
  bool pool_refused = false;
  for (int attempt = 0; attempt < 100 && !pool_refused; ++attempt) {
    auto r = repo->load("k", Deadline::after(50ms));
    ASSERT_FALSE(r.has_value());
    ASSERT_EQ(r.error().kind, ErrorKind::kTimeout) << r.error().to_string();
    pool_refused = r.error().message.find("no free connection") != std::string::npos;
  }
  holder.join();

  EXPECT_TRUE(pool_refused);
  ASSERT_TRUE(held.has_value()) << held.error().to_string();
  EXPECT_EQ(*held, Loaded("v"));
  EXPECT_EQ(repo->queries(), 1u);  // timed-out loads never reach the database
}

TEST_F(SqliteRepositoryTest, LoadWaitsForABusyConnectionWithinItsDeadline) {
  auto options = options_for();
  options.pool_size = 1;
  options.simulated_latency = 20ms;
  auto repo = open_ok(options);
  ASSERT_NE(repo, nullptr);
  ASSERT_TRUE(repo->upsert("k", "v").has_value());

  std::latch start(3);
  std::vector<Result<Loaded>> results(3, make_error(ErrorKind::kInternal, "not run"));
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = repo->load("k", generous());
    });
  }
  for (auto& t : threads) t.join();

  for (const auto& r : results) {
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    EXPECT_EQ(*r, Loaded("v"));
  }
  EXPECT_EQ(repo->queries(), 3u);
}

TEST_F(SqliteRepositoryTest, ManyThreadsLoadingConcurrentlyAllGetTheirValues) {
  auto options = options_for();
  options.pool_size = 4;
  auto repo = open_ok(options);
  ASSERT_NE(repo, nullptr);
  constexpr int kKeys = 100;
  constexpr int kReaders = 8;
  constexpr int kPasses = 3;
  for (int k = 0; k < kKeys; ++k) {
    ASSERT_TRUE(repo->upsert(fmt_key(k), "value-" + std::to_string(k)).has_value());
  }

  std::latch start(kReaders + 1);
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kReaders; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int pass = 0; pass < kPasses; ++pass) {
        for (int i = 0; i < kKeys; ++i) {
          const int k = (i + t * 13) % kKeys;  // threads start at different keys
          auto r = repo->load(fmt_key(k), generous());
          if (!r) {
            failed.fetch_add(1);
          } else if (*r != Loaded("value-" + std::to_string(k))) {
            wrong.fetch_add(1);
          }
        }
      }
    });
  }
  // A writer on other keys at the same time: WAL lets the readers go on.
  threads.emplace_back([&] {
    start.arrive_and_wait();
    for (int i = 0; i < 50; ++i) {
      if (!repo->upsert("writer-" + std::to_string(i), "w")) failed.fetch_add(1);
    }
  });
  for (auto& t : threads) t.join();

  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(repo->queries(), static_cast<std::uint64_t>(kReaders * kPasses * kKeys));
}

}  // namespace
}  // namespace herdguard

// --- load_many (Protector::get_many's batch) ---

namespace herdguard {
namespace {

class SqliteLoadMany : public SqliteRepositoryTest {};

TEST_F(SqliteLoadMany, OneStatementAnswersEveryKeyInOrderIncludingMissingAndBinaryOnes) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);
  using namespace std::string_literals;
  ASSERT_TRUE(repo->upsert("a", "1"));
  ASSERT_TRUE(repo->upsert("a\0b"s, "\0two"s));
  ASSERT_TRUE(repo->upsert("\xff\xfe"s, "three"));
  ASSERT_TRUE(repo->upsert("empty", ""));
  const std::vector<std::string> keys = {"missing", "a\0b"s, "a",   "\xff\xfe"s,
                                         "a",       "empty", "a\0"s};
  const std::uint64_t before = repo->queries();
  const auto got = repo->load_many(keys, generous());
  EXPECT_EQ(repo->queries(), before + 1) << "one statement";
  ASSERT_EQ(got.size(), keys.size());
  const std::optional<std::string> expected[] = {std::nullopt, "\0two"s, "1",         "three",
                                                 "1",          ""s,      std::nullopt};
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(got[i].has_value()) << i << ": " << got[i].error().to_string();
    EXPECT_EQ(*got[i], expected[i]) << i;
  }
}

// Rows match keys as load() matches them, by SQL's `=`: in a NOCASE
// column "ABC" and "abc" both find the row, as each would alone.
TEST_F(SqliteLoadMany, KeysMatchRowsAsLoadDoesUnderTheColumnsCollation) {
  auto options = options_for();
  {
    RawDb db = open_raw(options.path);
    ASSERT_NE(db, nullptr);
    ASSERT_EQ(sqlite3_exec(db.get(),
                           "CREATE TABLE kv (key TEXT PRIMARY KEY COLLATE NOCASE, value BLOB);"
                           "INSERT INTO kv VALUES ('Abc', 'found')",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db.get());
  }
  auto repo = open_ok(options);
  ASSERT_NE(repo, nullptr);
  ASSERT_EQ(repo->load("abc", generous()).value(), std::optional<std::string>("found"));
  const std::vector<std::string> keys = {"ABC", "abc", "other"};
  const auto got = repo->load_many(keys, generous());
  EXPECT_EQ(got[0].value(), std::optional<std::string>("found"));
  EXPECT_EQ(got[1].value(), std::optional<std::string>("found"));
  EXPECT_EQ(got[2].value(), std::nullopt);
}

TEST_F(SqliteLoadMany, ManyKeysGoInChunksOfAStatementEach) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);
  std::vector<std::string> keys;
  for (int i = 0; i < 1200; ++i) {
    keys.push_back("k" + std::to_string(i));
    if (i % 2 == 0) {
      ASSERT_TRUE(repo->upsert(keys.back(), "v" + std::to_string(i)));
    }
  }
  const std::uint64_t before = repo->queries();
  const auto got = repo->load_many(keys, generous());
  EXPECT_EQ(repo->queries(), before + 3);  // 500 + 500 + 200
  for (int i = 0; i < 1200; ++i) {
    ASSERT_TRUE(got[i].has_value());
    EXPECT_EQ(*got[i],
              i % 2 == 0 ? std::optional<std::string>("v" + std::to_string(i)) : std::nullopt);
  }
}

TEST_F(SqliteLoadMany, AnExpiredDeadlineTimesOutEveryKeyWithoutQuerying) {
  auto repo = open_ok(options_for());
  ASSERT_NE(repo, nullptr);
  const std::vector<std::string> keys = {"a", "b"};
  const auto got = repo->load_many(keys, Deadline::after(Duration::zero()));
  for (const auto& r : got) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  }
  EXPECT_EQ(repo->queries(), 0u);
}

}  // namespace
}  // namespace herdguard

// The database a `herdguard simulate` run reads: a SQLite file (the embedded
// default) or PostgreSQL, chosen by the --db value, and seeded by the parent
// before the workers start.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "herdguard/repository.h"
#include "herdguard/result.h"

namespace herdguard::cli {

// True for postgresql:// and postgres:// URLs.
bool is_postgres(const std::string& db);

// Opens `db` for one worker: `connections` pooled connections; each load
// takes `latency_ms` more (standing in for a loaded database).
// Errors: those of the repository's open().
Result<std::shared_ptr<Repository>> open_database(const std::string& db, int latency_ms,
                                                  int connections);

// Writes `keys` rows key:<i> → value-of-key:<i> (and `hot_key`), creating the
// table when missing, in one transaction. `progress` (optional) is told the
// rows written so far, every kSeedChunk rows (SQLite). Errors: kBackend
// naming the database.
inline constexpr int kSeedChunk = 250'000;
Result<void> seed_database(const std::string& db, int keys, const std::string& hot_key,
                           const std::function<void(int done, int total)>& progress = {});

}  // namespace herdguard::cli

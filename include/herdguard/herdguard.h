// herdguard/herdguard.h — everything in one include.
//
// herdguard keeps the expiry of a hot cache key from turning into a database
// outage: however many requests miss at once, the database sees one load per
// key, and callers still get fast answers when the database is slow or down.
// Start with protector.h.
#pragma once

#include "herdguard/adaptive_ttl.h"
#include "herdguard/alert_sink.h"
#include "herdguard/cache.h"
#include "herdguard/cache_entry.h"
#include "herdguard/circuit_breaker.h"
#include "herdguard/clock.h"
#include "herdguard/concurrency_limiter.h"
#include "herdguard/early_refresh.h"
#include "herdguard/envelope.h"
#include "herdguard/hot_keys.h"
#include "herdguard/memcached_cache.h"
#include "herdguard/memory_cache.h"
#include "herdguard/metrics.h"
#include "herdguard/metrics_server.h"
#include "herdguard/postgres_repository.h"
#include "herdguard/prometheus.h"
#include "herdguard/protector.h"
#include "herdguard/rate_limiter.h"
#include "herdguard/redis_cache.h"
#include "herdguard/redis_client.h"
#include "herdguard/redis_fleet.h"
#include "herdguard/redis_lock.h"
#include "herdguard/redis_notifier.h"
#include "herdguard/repository.h"
#include "herdguard/result.h"
#include "herdguard/single_flight.h"
#include "herdguard/sqlite_repository.h"
#include "herdguard/typed_protector.h"
#include "herdguard/warm_up.h"

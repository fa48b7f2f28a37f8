#!/usr/bin/env bash
# The measurements behind docs/scale.md: what one expiry costs Redis as the
# fleet grows, and what a cached key costs in memory.
#
# Starts its own redis-server on a unix socket in a temporary folder and runs
# `herdguard simulate`:
#   1. herd mode (one expired key, P processes x 125 callers, fleet
#      protection) for P = 1, 2, 4, 8: Redis commands by type, messages
#      published and delivered (PUBLISH x subscribers), per expiry;
#   2. a timed run (4 processes, 2,000 keys zipf 1.0, TTL 1 s, 10 s): the
#      same per database load in steady state;
#   3. memory: used_memory per cached key after a timed run over 100,000 keys.
# Usage: bench/scale.sh [path/to/herdguard]   (default: build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${1:-build/release/apps/herdguard/herdguard}
. bench/private_redis.sh
r() { redis-cli -s "$dir/redis.sock" "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# "cmd=calls ..." for the commands that ran since the last reset (Redis 7
# counts the commands scripts call too: set, del, pexpire, incr, pttl, time
# and zrangebyscore here run inside herdguard's Lua scripts).
commandstats() {
  r info commandstats | tr -d '\r' | sed -nE 's/^cmdstat_([a-z|]+):calls=([0-9]+).*/\1=\2/p' |
    tr '\n' ' '
}

echo "== herd: one expired key, P processes x 125 callers =="
for p in 1 2 4 8; do
  r flushall >/dev/null
  r config resetstat >/dev/null
  json=$("$cli" simulate --json --no-progress --redis "unix://$dir/redis.sock" --protect fleet \
    --processes "$p" --concurrency 125 --db-latency-ms 50)
  db=$(field db_queries <<<"$json")
  echo "P=$p db_queries=$db  $(commandstats)"
done

echo "== timed: 4 processes, 2,000 keys, TTL 1 s, 10 s =="
r flushall >/dev/null
r config resetstat >/dev/null
json=$("$cli" simulate --json --no-progress --redis "unix://$dir/redis.sock" --protect fleet \
  --processes 4 --concurrency 8 --keys 2000 --zipf 1.0 --ttl-ms 1000 --duration 10 \
  --db-latency-ms 5)
db=$(field db_queries <<<"$json")
req=$(field requests <<<"$json")
echo "requests=$req db_queries=$db  $(commandstats)"
echo "pubsub: $(r info stats | tr -d '\r' | grep -E '^(pubsub|total_net_output)' | tr '\n' ' ')"

echo "== memory: 100,000 keys =="
r flushall >/dev/null
before=$(r info memory | tr -d '\r' | sed -nE 's/^used_memory:([0-9]+)/\1/p')
"$cli" simulate --json --no-progress --redis "unix://$dir/redis.sock" --protect fleet \
  --processes 2 --concurrency 8 --keys 100000 --zipf 0 --ttl-ms 600000 --duration 20 \
  --db-latency-ms 0 >/dev/null
after=$(r info memory | tr -d '\r' | sed -nE 's/^used_memory:([0-9]+)/\1/p')
keys=$(r dbsize)
values=$(r --scan --pattern "*}:v" | wc -l)
one=$(r --scan --pattern "*}:v" | head -1 || true)
echo "one value key: $one, $(r strlen "$one") bytes (envelope)"
echo "redis keys=$keys value keys=$values used_memory delta=$((after - before)) bytes" \
  "=> $(((after - before) / values)) bytes per cached key"

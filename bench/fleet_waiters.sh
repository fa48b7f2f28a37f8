#!/usr/bin/env bash
# Waiters in other processes: how long past the 50 ms load they get the value,
# with pub/sub notification and with the polling fallback, beside the floor
# of this machine (raw hiredis pub/sub + GET, bench_fanout_anchor).
#
# Starts its own redis-server on a unix socket in a temporary folder, runs
# `herdguard simulate` (8 processes x 1 caller, 30 rounds, fleet protection)
# with notification (one shared channel, then per-key channels) and with
# polling, and the anchor in the same shape, and prints p50/p99 of
# (latency - load time) for each.
# Usage: bench/fleet_waiters.sh [path/to/herdguard] [path/to/bench_fanout_anchor]
#        (defaults: build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${1:-build/release/apps/herdguard/herdguard}
anchor=${2:-build/release/bench/bench_fanout_anchor}
load_ms=50
. bench/private_redis.sh

run() {
  local json p50 p99
  json=$("$cli" simulate --json --redis "unix://$dir/redis.sock" --protect fleet \
    --processes 8 --concurrency 1 --rounds 30 --db-latency-ms "$load_ms" "$@")
  p50=$(sed -E 's/.*"latency_ms":\{[^}]*"p50":([0-9.e+-]+).*/\1/' <<<"$json")
  p99=$(sed -E 's/.*"latency_ms":\{[^}]*"p99":([0-9.e+-]+).*/\1/' <<<"$json")
  awk -v a="$p50" -v b="$p99" -v l="$load_ms" \
    'BEGIN { printf "p50 %.2f ms, p99 %.2f ms beyond the load\n", a - l, b - l }'
}
echo -n "raw pub/sub:  "; "$anchor" "$dir/redis.sock" 8 30 "$load_ms"
echo -n "notification: "; run --notify
echo -n "per-key:      "; run --notify --ready-channels per-key
echo -n "polling:      "; run --no-notify

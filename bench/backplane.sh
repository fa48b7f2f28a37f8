#!/usr/bin/env bash
# The L1 backplane: after invalidate() in one process, how long until every
# other process's L1 has dropped the key (p50/p99 over processes x rounds).
# Starts its own redis-server on a unix socket in a temporary folder.
# Usage: bench/backplane.sh [processes=8] [rounds=200] [path/to/bench_backplane]
set -euo pipefail
cd "$(dirname "$0")/.."
processes=${1:-8}
rounds=${2:-200}
bench=${3:-build/release/bench/bench_backplane}
. bench/private_redis.sh
"$bench" "unix://$dir/redis.sock" "$processes" "$rounds"

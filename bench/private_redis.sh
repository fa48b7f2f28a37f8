# Sourced by the bench scripts: starts a private redis-server on a unix
# socket in a temporary folder, sets $dir (the folder; the socket is
# $dir/redis.sock), and stops it and removes the folder when the script exits.
dir=$(mktemp -d)
# In its own session, as a Redis server runs: with the kernel's autogroup
# scheduling a server started from this shell would share one CPU share with
# the measured processes (and measure ~0.5 ms slower at p50).
setsid redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save '' \
  --appendonly no --dir "$dir" --daemonize no --loglevel warning >"$dir/log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [[ -S "$dir/redis.sock" ]] && break; sleep 0.05; done

// A Redis (or any TCP/unix stream) proxy that plays `redis-down` faults (or,
// in front of memcached, `l3-down`): the workers talk to the server through
// it, and during a fault window it drops every connection and refuses new
// ones, as a server that died would. Runs as its
// own single-threaded process (a poll loop), so the simulator's parent stays
// free of threads when it forks the workers.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "herdguard/redis_client.h"
#include "scenario.h"

namespace herdguard::cli {

struct FaultProxy {
  pid_t pid = -1;
  std::string listen_path;  // unix socket the workers connect to
  std::string url;          // the Redis (or memcached) URL pointing at the proxy
};

// Forks the proxy. Its fault timeline starts when `go_fd` reaches EOF (the
// workers' release). It exits when the parent dies or is told to stop
// (kill). Errors: kBackend when the socket cannot be set up.
// `close_in_child`: descriptors the proxy must not keep open (the write end
// of the go pipe, so that the workers see its EOF). `down_kind`: the faults
// it plays (kRedisDown or kL3Down); with kL3Down, `upstream` holds only the
// memcached address (memcached_upstream) and the url is a memcached one.
Result<FaultProxy> start_fault_proxy(const RedisUrl& upstream, const std::string& listen_path,
                                     std::vector<Fault> faults, int go_fd,
                                     std::vector<int> close_in_child,
                                     Fault::Kind down_kind = Fault::Kind::kRedisDown);
// The address of a memcached URL (memcached_cache.h), for start_fault_proxy.
// Errors: kInvalidArgument.
Result<RedisUrl> memcached_upstream(const std::string& url);

}  // namespace herdguard::cli

#include "scenario.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <charconv>
#include <cmath>

#include "herdguard/memcached_cache.h"

namespace herdguard::cli {
namespace {

std::unexpected<Error> invalid(std::string message) {
  return make_error(ErrorKind::kInvalidArgument, std::move(message));
}

std::optional<double> to_number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::string Fault::to_string() const {
  switch (kind) {
    case Kind::kDbSlow:
      return fmt::format("db-slow:{:g}-{:g}:{}", start_s, end_s, extra_ms);
    case Kind::kDbDown:
      return fmt::format("db-down:{:g}-{:g}", start_s, end_s);
    case Kind::kRedisDown:
      return fmt::format("redis-down:{:g}-{:g}", start_s, end_s);
    case Kind::kL3Down:
      return fmt::format("l3-down:{:g}-{:g}", start_s, end_s);
  }
  return "?";
}

Result<Fault> parse_fault(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return invalid(
        fmt::format("fault '{}': {} (expected db-slow:START-END:MS, "
                    "db-down:START-END, redis-down:START-END or l3-down:START-END)",
                    text, why));
  };
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return bad("no ':'");
  const std::string_view name = text.substr(0, colon);
  std::string_view rest = text.substr(colon + 1);
  Fault f;
  if (name == "db-slow") {
    f.kind = Fault::Kind::kDbSlow;
  } else if (name == "db-down") {
    f.kind = Fault::Kind::kDbDown;
  } else if (name == "redis-down") {
    f.kind = Fault::Kind::kRedisDown;
  } else if (name == "l3-down") {
    f.kind = Fault::Kind::kL3Down;
  } else {
    return bad(fmt::format("unknown fault '{}'", name));
  }
  std::string_view window = rest;
  if (f.kind == Fault::Kind::kDbSlow) {
    const auto ms_colon = rest.find(':');
    if (ms_colon == std::string_view::npos) return bad("db-slow needs the extra latency in ms");
    window = rest.substr(0, ms_colon);
    const auto ms = to_number(rest.substr(ms_colon + 1));
    if (!ms || *ms < 0 || *ms > 600000) return bad("the extra latency is not a number of ms");
    f.extra_ms = static_cast<int>(*ms);
  }
  const auto dash = window.find('-');
  if (dash == std::string_view::npos) return bad("the window needs START-END");
  const auto start = to_number(window.substr(0, dash));
  const auto end = to_number(window.substr(dash + 1));
  if (!start || !end) return bad("START and END must be numbers of seconds");
  if (*start < 0 || *end <= *start) return bad("the window needs 0 <= START < END");
  f.start_s = *start;
  f.end_s = *end;
  return f;
}

Result<ConcurrencyLimitOptions> parse_db_limit(std::string_view text) {
  ConcurrencyLimitOptions options;
  if (text == "adaptive") {
    options.mode = LimitMode::kAdaptive;
    return options;
  }
  if (text == "off") {  // the library default
    options.mode = LimitMode::kOff;
    return options;
  }
  if (text.starts_with("fixed:")) {
    const auto n = to_number(text.substr(6));
    if (n && *n >= 1 && *n <= 100000 && *n == std::floor(*n)) {
      options.mode = LimitMode::kFixed;
      options.limit = static_cast<std::size_t>(*n);
      return options;
    }
  }
  return invalid(fmt::format(
      "--db-limit: expected adaptive, off or fixed:N with N in 1..100000, got '{}'", text));
}

std::optional<Protection> parse_protection(std::string_view text) {
  if (text == "none") return Protection::kNone;
  if (text == "local") return Protection::kLocal;
  if (text == "fleet") return Protection::kFleet;
  if (text == "full") return Protection::kFull;
  return std::nullopt;
}

std::string_view protection_name(Protection protection) {
  switch (protection) {
    case Protection::kNone:
      return "none";
    case Protection::kLocal:
      return "local";
    case Protection::kFleet:
      return "fleet";
    case Protection::kFull:
      return "full";
    case Protection::kUnset:
      break;
  }
  return "";
}

std::optional<RedisFleetOptions::ReadyChannels> parse_ready_channels(std::string_view text) {
  using Ready = RedisFleetOptions::ReadyChannels;
  if (text == "auto") return Ready::kAuto;
  if (text == "shared") return Ready::kShared;
  if (text == "per-key") return Ready::kPerKey;
  return std::nullopt;
}

Result<EarlyRefreshOptions> parse_early_refresh(std::string_view text) {
  EarlyRefreshOptions options;
  auto refuse = [&] {
    return invalid(fmt::format(
        "--early-refresh: expected none, xfetch, xfetch:BETA (BETA > 0) or eager:FRACTION "
        "(FRACTION in (0, 1)), got '{}'",
        text));
  };
  if (text == "none") return options;
  if (text == "xfetch") {
    options.mode = EarlyRefreshMode::kXFetch;
    return options;
  }
  if (text.starts_with("xfetch:")) {
    const auto beta = to_number(text.substr(7));
    if (!beta) return refuse();
    options.mode = EarlyRefreshMode::kXFetch;
    options.beta = *beta;
  } else if (text.starts_with("eager:")) {
    const auto fraction = to_number(text.substr(6));
    if (!fraction) return refuse();
    options.mode = EarlyRefreshMode::kEager;
    options.eager_fraction = *fraction;
  } else {
    return refuse();
  }
  if (!options.validate()) return refuse();
  return options;
}

Result<AdaptiveTtlOptions> parse_adaptive_ttl(std::string_view text) {
  const auto refuse = [&] {
    return invalid(fmt::format(
        "--adaptive-ttl: expected MIN_MS-MAX_MS with 1 <= MIN_MS <= MAX_MS, got '{}'", text));
  };
  const auto dash = text.find('-');
  if (dash == std::string_view::npos) return refuse();
  const auto min = to_number(text.substr(0, dash));
  const auto max = to_number(text.substr(dash + 1));
  if (!min || !max || *min < 1 || *max < *min || *max > 86'400'000) return refuse();
  AdaptiveTtlOptions options{
      .enabled = true,
      .min = std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(*min)),
      .max = std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(*max))};
  if (!options.validate()) return refuse();
  return options;
}

Result<Viral> parse_viral(std::string_view text) {
  const auto refuse = [&](std::string_view why) {
    return invalid(fmt::format("--viral: expected KEY@SECOND, {}, got '{}'", why, text));
  };
  const auto at = text.rfind('@');
  if (at == std::string_view::npos) return refuse("no '@'");
  if (at == 0) return refuse("the key is empty");
  const auto second = to_number(text.substr(at + 1));
  if (!second || *second < 0) return refuse("SECOND must be a number >= 0");
  return Viral{.key = std::string(text.substr(0, at)), .start_s = *second};
}

Result<void> Scenario::validate() const {
  if (processes < 1 || processes > 256) return invalid("processes must be in 1..256");
  if (concurrency < 1 || concurrency > 10000) return invalid("concurrency must be in 1..10000");
  if (rate < 0 || rate > 1e6) return invalid("rate must be in 0..1000000 requests/s");
  if (duration_s < 0 || duration_s > 86400) return invalid("duration must be in 0..86400 s");
  if (keys < 1 || keys > 10'000'000) return invalid("keys must be in 1..10000000");
  if (zipf < 0 || zipf > 10) return invalid("zipf must be in 0..10");
  if (ttl_ms < 1) return invalid("ttl_ms must be >= 1");
  if (jitter < 0 || jitter >= 1) return invalid("jitter must be in [0, 1)");
  if (timeout_ms < 1) return invalid("timeout_ms must be >= 1");
  if (db_capacity < 0 || db_capacity > 100000) return invalid("db_capacity must be in 0..100000");
  if (auto limit = parse_db_limit(db_limit); !limit) return std::unexpected(limit.error());
  if (auto early = parse_early_refresh(early_refresh); !early)
    return std::unexpected(early.error());
  if (!parse_ready_channels(ready_channels)) {
    return invalid("ready_channels must be auto, shared or per-key");
  }
  if (!adaptive_ttl.empty()) {
    if (auto adaptive = parse_adaptive_ttl(adaptive_ttl); !adaptive)
      return std::unexpected(adaptive.error());
  }
  if (!viral.empty()) {
    auto parsed = parse_viral(viral);
    if (!parsed) return std::unexpected(parsed.error());
    if (herd_mode()) return invalid("--viral needs a timed run (--duration)");
    const std::string_view k = parsed->key;
    const auto index = k.starts_with("key:") ? to_number(k.substr(4)) : std::nullopt;
    if (!index || *index < 0 || *index >= keys || *index != static_cast<int>(*index))
      return invalid(fmt::format(
          "--viral: the key must be one of the database's, key:0..key:{}, got '{}'", keys - 1, k));
    if (parsed->start_s >= duration_s)
      return invalid(fmt::format("--viral: second {} is not within the run's {} s", parsed->start_s,
                                 duration_s));
  }
  if (clients < 0 || clients > 100000) return invalid("clients must be in 0..100000");
  if (clients > 0) {
    if (herd_mode()) return invalid("--clients needs a timed run (--duration)");
    if (!(client_rate > 0 && client_rate <= 1e6))
      return invalid("--clients needs --client-rate in (0, 1000000] requests/s");
    if (rate > 0) return invalid("--clients and --rate exclude each other (clients set the rate)");
    if (clients * client_rate > 1e6)
      return invalid("clients x client-rate must be at most 1000000 requests/s");
  } else if (client_rate != 0) {
    return invalid("--client-rate needs --clients");
  }
  if (rate_limit != 0) {
    if (!(rate_limit > 0 && rate_limit <= 1e9)) return invalid("rate_limit must be in (0, 1e9]");
    if (clients == 0) return invalid("--rate-limit needs --clients (the limit is per client)");
    if (protect == Protection::kNone)
      return invalid("--rate-limit needs a protector (--protect other than none)");
  }
  if (!l3.empty()) {
    if (redis.empty())
      return invalid("--l3 needs --redis (Redis confirms which L3 records may be promoted)");
    if (protect == Protection::kNone)
      return invalid("--l3 needs a protection (--protect local, fleet or full)");
    if (redis.starts_with("redis-cluster://"))
      return invalid("--l3 is not supported with a redis-cluster:// URL yet");
    if (auto valid = MemcachedCacheOptions{.url = l3}.validate(); !valid)
      return invalid(fmt::format("--l3: {}", valid.error().message));
  }
  if (get_many < 1 || get_many > 10000) return invalid("--get-many must be in 1..10000 keys");
  if (get_many > 1 && herd_mode()) return invalid("--get-many needs a timed run (--duration)");
  if (!(invalidate_tag_rate >= 0)) return invalid("--invalidate-tag-rate must be >= 0");
  if (invalidate_tag_rate > 0) {
    if (herd_mode()) return invalid("--invalidate-tag-rate needs a timed run (--duration)");
    if (protect == Protection::kNone)
      return invalid("--invalidate-tag-rate needs a protection (--protect local, fleet or full)");
    // get_many's batch loads take no tags from the repository (repository.h).
    if (get_many > 1) return invalid("--invalidate-tag-rate and --get-many do not combine");
  }
  if (get_many > 1 && clients > 0)
    return invalid("--get-many and --clients exclude each other (get_for reads one key)");
  if (!(rate_limit_burst >= 1 && rate_limit_burst <= 1e9))
    return invalid("rate_limit_burst must be in [1, 1e9]");
  if (protect == Protection::kUnset) return invalid("no protection chosen (--protect)");
  if (uses_fleet_lock(protect) && redis.empty()) {
    return invalid(fmt::format("--protect {} needs --redis URL (the fleet lock lives in Redis)",
                               protection_name(protect)));
  }
  if (db_latency_ms < 0 || db_latency_ms > 60000)
    return invalid("db_latency_ms must be in 0..60000");
  if (db_connections < 1 || db_connections > 256)
    return invalid("db_connections must be in 1..256");
  if (lease_ms < 10) return invalid("lease_ms must be >= 10");
  if (rounds < 1 || rounds > 1000) return invalid("rounds must be in 1..1000");
  if (metrics_port < 0 || metrics_port + processes > 65535) {
    return invalid("metrics_port + processes must fit in 1..65535");
  }
  for (const Fault& f : faults) {
    if (f.kind == Fault::Kind::kRedisDown && redis.empty()) {
      return invalid(fmt::format("fault {} needs --redis", f.to_string()));
    }
    if (f.kind == Fault::Kind::kRedisDown && redis.starts_with("redis-cluster://")) {
      // The fault proxy stands in front of one server; a cluster's nodes
      // are found through CLUSTER SLOTS and reached directly.
      return invalid(
          fmt::format("fault {} proxies one Redis server: not with a redis-cluster:// "
                      "URL (stop a cluster node instead)",
                      f.to_string()));
    }
    if (f.kind == Fault::Kind::kL3Down && l3.empty()) {
      return invalid(fmt::format("fault {} needs --l3", f.to_string()));
    }
    if (herd_mode()) return invalid("faults need a --duration (they are on a timeline)");
  }
  if (compare && herd_mode()) return invalid("--compare needs a --duration");
  return ok();
}

Result<void> load_scenario_file(const std::string& path, Scenario& s) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return invalid(fmt::format("{}:{}: {}", path, e.source().begin.line, e.description()));
  }
  std::string problem;
  auto where = [&](const toml::node& node) {
    return fmt::format("{}:{}", path, node.source().begin.line);
  };
  auto read_int = [&](const toml::node& node, std::string_view key, int& out) {
    if (auto v = node.value<int64_t>(); v && *v >= INT32_MIN && *v <= INT32_MAX) {
      out = static_cast<int>(*v);
      return true;
    }
    problem = fmt::format("{}: '{}' must be an integer", where(node), key);
    return false;
  };
  auto read_double = [&](const toml::node& node, std::string_view key, double& out) {
    if (auto v = node.value<double>()) {
      out = *v;
      return true;
    }
    problem = fmt::format("{}: '{}' must be a number", where(node), key);
    return false;
  };
  auto read_string = [&](const toml::node& node, std::string_view key, std::string& out) {
    if (auto v = node.value<std::string>()) {
      out = *v;
      return true;
    }
    problem = fmt::format("{}: '{}' must be a string", where(node), key);
    return false;
  };
  auto read_bool = [&](const toml::node& node, std::string_view key, bool& out) {
    if (auto v = node.value<bool>()) {
      out = *v;
      return true;
    }
    problem = fmt::format("{}: '{}' must be true or false", where(node), key);
    return false;
  };
  for (const auto& [key_node, node] : table) {
    const std::string_view key = key_node.str();
    bool ok_value = true;
    if (key == "processes")
      ok_value = read_int(node, key, s.processes);
    else if (key == "concurrency")
      ok_value = read_int(node, key, s.concurrency);
    else if (key == "rate")
      ok_value = read_double(node, key, s.rate);
    else if (key == "duration")
      ok_value = read_double(node, key, s.duration_s);
    else if (key == "keys")
      ok_value = read_int(node, key, s.keys);
    else if (key == "zipf")
      ok_value = read_double(node, key, s.zipf);
    else if (key == "ttl_ms")
      ok_value = read_int(node, key, s.ttl_ms);
    else if (key == "jitter")
      ok_value = read_double(node, key, s.jitter);
    else if (key == "timeout_ms")
      ok_value = read_int(node, key, s.timeout_ms);
    else if (key == "protect") {
      std::string text;
      ok_value = read_string(node, key, text);
      if (ok_value) {
        if (auto protection = parse_protection(text)) {
          s.protect = *protection;
        } else {
          problem = fmt::format("{}: protect must be none, local, fleet or full, got '{}'",
                                where(node), text);
          ok_value = false;
        }
      }
    } else if (key == "compare")
      ok_value = read_bool(node, key, s.compare);
    else if (key == "redis")
      ok_value = read_string(node, key, s.redis);
    else if (key == "db")
      ok_value = read_string(node, key, s.db);
    else if (key == "db_latency_ms")
      ok_value = read_int(node, key, s.db_latency_ms);
    else if (key == "db_connections")
      ok_value = read_int(node, key, s.db_connections);
    else if (key == "db_capacity")
      ok_value = read_int(node, key, s.db_capacity);
    else if (key == "db_limit")
      ok_value = read_string(node, key, s.db_limit);
    else if (key == "early_refresh")
      ok_value = read_string(node, key, s.early_refresh);
    else if (key == "ready_channels")
      ok_value = read_string(node, key, s.ready_channels);
    else if (key == "viral")
      ok_value = read_string(node, key, s.viral);
    else if (key == "adaptive_ttl")
      ok_value = read_string(node, key, s.adaptive_ttl);
    else if (key == "clients")
      ok_value = read_int(node, key, s.clients);
    else if (key == "client_rate")
      ok_value = read_double(node, key, s.client_rate);
    else if (key == "rate_limit")
      ok_value = read_double(node, key, s.rate_limit);
    else if (key == "rate_limit_burst")
      ok_value = read_double(node, key, s.rate_limit_burst);
    else if (key == "get_many")
      ok_value = read_int(node, key, s.get_many);
    else if (key == "l3")
      ok_value = read_string(node, key, s.l3);
    else if (key == "invalidate_tag_rate")
      ok_value = read_double(node, key, s.invalidate_tag_rate);
    else if (key == "lease_ms")
      ok_value = read_int(node, key, s.lease_ms);
    else if (key == "notify")
      ok_value = read_bool(node, key, s.notify);
    else if (key == "key")
      ok_value = read_string(node, key, s.key);
    else if (key == "rounds")
      ok_value = read_int(node, key, s.rounds);
    else if (key == "metrics_port")
      ok_value = read_int(node, key, s.metrics_port);
    else if (key == "faults") {
      const toml::array* list = node.as_array();
      if (list == nullptr) {
        problem = fmt::format("{}: 'faults' must be a list of strings", where(node));
        ok_value = false;
      } else {
        s.faults.clear();
        for (const auto& item : *list) {
          auto text = item.value<std::string>();
          if (!text) {
            problem = fmt::format("{}: 'faults' must be a list of strings", where(item));
            ok_value = false;
            break;
          }
          auto fault = parse_fault(*text);
          if (!fault) {
            problem = fmt::format("{}: {}", where(item), fault.error().message);
            ok_value = false;
            break;
          }
          s.faults.push_back(*fault);
        }
      }
    } else {
      problem = fmt::format("{}: unknown key '{}'", where(node), key);
      ok_value = false;
    }
    if (!ok_value) return invalid(problem);
  }
  return ok();
}

}  // namespace herdguard::cli

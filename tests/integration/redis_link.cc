#include "redis_link.h"

#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace herdguard::testing::link {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string last_lines(const std::string& text, int count) {
  std::size_t start = text.size();
  for (int i = 0; i <= count && start > 0; ++i) {
    start = text.rfind('\n', start - 1);
    if (start == std::string::npos) return text;
  }
  return text.substr(start + 1);
}

std::string endpoint(int port) { return "127.0.0.1:" + std::to_string(port); }

std::string percent_encode(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      char escaped[4];
      std::snprintf(escaped, sizeof(escaped), "%%%02X", u);
      out += escaped;
    }
  }
  return out;
}

timeval to_timeval(std::chrono::milliseconds d) {
  return timeval{static_cast<time_t>(d.count() / 1000),
                 static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

std::string text_of(const redisReply* r) {
  return r != nullptr && r->str != nullptr ? std::string(r->str, r->len) : std::string();
}

Link::Link(int port, const std::string& password, std::chrono::milliseconds command_timeout)
    : port_(port) {
  context_.reset(redisConnectWithTimeout("127.0.0.1", port, to_timeval(kConnectTimeout)));
  if (context_ == nullptr) {
    error_ = "cannot allocate a hiredis context";
    return;
  }
  if (context_->err != 0) {
    error_ = context_->errstr;
    return;
  }
  redisSetTimeout(context_.get(), to_timeval(command_timeout));
  if (!password.empty()) {
    Answer auth = run({"AUTH", password});
    // (An I/O error already set error_.)
    if (!auth.ok() && error_.empty()) error_ = "AUTH: " + auth.text();
  }
}

Answer Link::run(const std::vector<std::string>& args) {
  Answer answer;
  if (!error_.empty()) {
    answer.error = endpoint(port_) + ": " + error_;
    return answer;
  }
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  answer.reply.reset(static_cast<redisReply*>(redisCommandArgv(
      context_.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
  if (answer.reply == nullptr) {
    // hiredis leaves the connection unusable after an I/O error.
    error_ = context_->errstr;
    answer.error = endpoint(port_) + ": " + error_;
  } else if (answer.reply->type == REDIS_REPLY_ERROR) {
    answer.error = endpoint(port_) + ": " + answer.text();
  }
  return answer;
}

std::string info_field(std::string_view info, std::string_view name) {
  std::size_t at = 0;
  while (at < info.size()) {
    std::size_t end = info.find('\n', at);
    if (end == std::string_view::npos) end = info.size();
    std::string_view line = info.substr(at, end - at);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':') {
      return std::string(line.substr(name.size() + 1));
    }
    at = end + 1;
  }
  return {};
}

void poll_until(const std::function<std::optional<std::string>()>& pending,
                std::chrono::milliseconds within, const std::string& fixture,
                const std::string& what, const std::function<std::string()>& diagnostics) {
  const auto give_up = std::chrono::steady_clock::now() + within;
  while (true) {
    std::optional<std::string> reason = pending();
    if (!reason) return;
    if (std::chrono::steady_clock::now() > give_up) {
      throw std::runtime_error(fixture + ": " + what + " within " + std::to_string(within.count()) +
                               " ms (last: " + *reason + ")\n" + diagnostics());
    }
    std::this_thread::sleep_for(kPoll);
  }
}

}  // namespace herdguard::testing::link

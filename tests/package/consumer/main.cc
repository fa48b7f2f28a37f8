// Protects a callback loader; exits 0 only when two gets made one load.
#include <herdguard/herdguard.h>

#include <cstdio>

int main() {
  int loads = 0;
  auto repo = std::make_shared<herdguard::CallbackRepository>(
      [&](std::string_view key,
          herdguard::Deadline) -> herdguard::Result<std::optional<std::string>> {
        ++loads;
        return std::optional<std::string>("value of " + std::string(key));
      });
  auto protector = herdguard::Protector::create({}, repo);
  if (!protector) {
    std::fprintf(stderr, "%s\n", protector.error().to_string().c_str());
    return 1;
  }
  auto a = (*protector)->get("k");
  auto b = (*protector)->get("k");
  if (!a || !b || *a != "value of k" || loads != 1) return 1;
  std::printf("consumer ok: %s, loads=%d\n", a->c_str(), loads);
  return 0;
}

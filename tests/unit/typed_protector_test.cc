// TypedProtector (typed_protector.h): typed values through a codec, framed
// with the codec and schema version; cached values that do not decode are
// repaired once (per key at a time), values of a newer schema are left alone,
// and a freshly loaded value that does not decode is an error, not a loop.
// One process here (the L1 is the cache); the two-release fleet over a real
// Redis is in integration/typed_fleet_test.cc.
#include "herdguard/typed_protector.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "herdguard/json_codec.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;

struct Product {
  std::string name;
  int price = 0;
  bool operator==(const Product&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Product, name, price)

using Products = TypedProtector<Product, JsonCodec<Product>>;

struct Catalog {
  std::atomic<int> loads{0};
  std::atomic<int> price{10};
  Products::Loader loader() {
    return [this](std::string_view key, Deadline) -> Result<std::optional<Product>> {
      loads.fetch_add(1);
      if (key == "absent") return std::optional<Product>();
      if (key == "broken") return make_error(ErrorKind::kBackend, "database down");
      return std::optional<Product>(Product{std::string(key), price.load()});
    };
  }
};

std::unique_ptr<Products> make_products(Catalog& catalog, std::uint32_t schema = 1) {
  TypedProtectorOptions options{.schema_version = schema};
  options.protector.ttl = 60s;
  options.protector.fail_safe_max_staleness = Duration::zero();
  auto typed = Products::create(std::move(options), catalog.loader());
  EXPECT_TRUE(typed.has_value()) << typed.error().to_string();
  return std::move(*typed);
}

TEST(TypedProtector, ValuesGoInAndComeOutTyped) {
  Catalog catalog;
  auto products = make_products(catalog);
  EXPECT_EQ(*products->get("sku-1"), (Product{"sku-1", 10}));
  EXPECT_EQ(*products->get("sku-1"), (Product{"sku-1", 10}));
  EXPECT_EQ(catalog.loads.load(), 1);
  EXPECT_EQ(products->get("absent").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(products->get("broken").error().kind, ErrorKind::kBackend);
  ASSERT_TRUE(products->set("sku-2", Product{"custom", 99}));
  EXPECT_EQ(*products->get("sku-2"), (Product{"custom", 99}));
  ASSERT_TRUE(products->invalidate("sku-2"));
  EXPECT_EQ(*products->get("sku-2"), (Product{"sku-2", 10}));
  // What is stored is framed: the codec and the schema go with the bytes.
  auto raw = products->untyped().get("sku-1");
  ASSERT_TRUE(raw);
  auto frame = decode_typed_frame(*raw);
  ASSERT_TRUE(frame) << frame.error().to_string();
  EXPECT_EQ(frame->codec, "json");
  EXPECT_EQ(frame->schema_version, 1u);
  EXPECT_EQ(products->stats().decode_failures, 0u);
}

TEST(TypedProtector, BytesCodecKeepsBytesAsTheyAre) {
  auto bytes = TypedProtector<std::string, BytesCodec>::create(
      {}, [](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
        return std::optional<std::string>(std::string("\0raw ", 5) + std::string(key));
      });
  ASSERT_TRUE(bytes) << bytes.error().to_string();
  EXPECT_EQ(*(*bytes)->get("k"), std::string("\0raw k", 6));
}

TEST(TypedProtector, ACachedValueThatDoesNotDecodeIsRepairedOnce) {
  Catalog catalog;
  auto products = make_products(catalog);
  // Bytes that are not a typed value at all, and a value of this schema
  // whose payload is not a Product.
  ASSERT_TRUE(products->untyped().set("junk", "not a frame"));
  ASSERT_TRUE(products->untyped().set("bad", encode_typed_frame("json", 1, "{\"nam")));
  EXPECT_EQ(*products->get("junk"), (Product{"junk", 10}));
  EXPECT_EQ(*products->get("bad"), (Product{"bad", 10}));
  EXPECT_EQ(catalog.loads.load(), 2);
  EXPECT_EQ(products->stats().decode_failures, 2u);
  EXPECT_EQ(products->stats().repairs, 2u);
  // Repaired in the cache: the next reads load nothing.
  EXPECT_EQ(*products->get("junk"), (Product{"junk", 10}));
  EXPECT_EQ(*products->get("bad"), (Product{"bad", 10}));
  EXPECT_EQ(catalog.loads.load(), 2);
}

TEST(TypedProtector, AnOlderSchemaThatStillDecodesIsKeptAndOneThatDoesNotIsRepaired) {
  Catalog catalog;
  auto products = make_products(catalog, /*schema=*/3);
  ASSERT_TRUE(products->untyped().set("old-ok",
                                      encode_typed_frame("json", 2, R"({"name":"x","price":1})")));
  ASSERT_TRUE(products->untyped().set("old-bad", encode_typed_frame("json", 2, R"(["x",1])")));
  EXPECT_EQ(*products->get("old-ok"), (Product{"x", 1}));
  EXPECT_EQ(*products->get("old-bad"), (Product{"old-bad", 10}));
  EXPECT_EQ(catalog.loads.load(), 1);
  auto raw = products->untyped().get("old-bad");
  EXPECT_EQ(decode_typed_frame(*raw)->schema_version, 3u) << "repaired with this schema";
}

TEST(TypedProtector, ANewerSchemasValueIsLeftAloneAndLoadedApart) {
  Catalog catalog;
  auto products = make_products(catalog, /*schema=*/2);
  const std::string newer = encode_typed_frame("json", 3, R"(["a","new","shape"])");
  ASSERT_TRUE(products->untyped().set("k", newer));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*products->get("k"), (Product{"k", 10}));
  EXPECT_EQ(catalog.loads.load(), 3) << "each read loads this process's own copy";
  EXPECT_EQ(products->stats().foreign_loads, 3u);
  EXPECT_EQ(products->stats().decode_failures, 0u);
  EXPECT_EQ(*products->untyped().get("k"), newer) << "the newer release's value stays";
  // Another codec's value is not ours to overwrite either.
  const std::string other = encode_typed_frame("protobuf", 1, "\x08\x01");
  ASSERT_TRUE(products->untyped().set("p", other));
  EXPECT_EQ(*products->get("p"), (Product{"p", 10}));
  EXPECT_EQ(*products->untyped().get("p"), other);
}

// A codec whose decode always fails: every load "succeeds" and never decodes.
struct NeverDecodes {
  static std::string_view name() { return "never"; }
  static Result<std::string> encode(const int& v) { return std::to_string(v); }
  static Result<int> decode(std::string_view) {
    return make_error(ErrorKind::kCorrupt, "this codec decodes nothing");
  }
};

TEST(TypedProtector, AValueTheCodecCannotReadBackIsRefusedNeverCachedNeverRepaired) {
  std::atomic<int> loads{0};
  auto broken = TypedProtector<int, NeverDecodes>::create(
      {}, [&](std::string_view, Deadline) -> Result<std::optional<int>> {
        loads.fetch_add(1);
        return std::optional<int>(7);
      });
  ASSERT_TRUE(broken) << broken.error().to_string();
  for (int i = 1; i <= 3; ++i) {
    auto r = (*broken)->get("k");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt) << r.error().to_string();
    EXPECT_EQ(loads.load(), i) << "one load per get: no repair, no reload loop";
  }
  EXPECT_EQ((*broken)->stats().fresh_decode_failures, 3u);
  EXPECT_EQ((*broken)->stats().decode_failures, 0u);
  EXPECT_EQ((*broken)->stats().repairs, 0u);
  EXPECT_FALSE((*broken)->untyped().peek("k")) << "nothing was cached";
  EXPECT_EQ((*broken)->set("k", 1).error().kind, ErrorKind::kCorrupt);
}

TEST(TypedProtector, ALaterFrameFormatIsLeftAlone) {
  Catalog catalog;
  auto products = make_products(catalog);
  std::string later = encode_typed_frame("json", 1, R"({"name":"x","price":1})");
  later[4] = 2;  // frame format 2: a later release's
  ASSERT_TRUE(products->untyped().set("k", later));
  EXPECT_EQ(*products->get("k"), (Product{"k", 10}));
  EXPECT_EQ(products->stats().foreign_loads, 1u);
  EXPECT_EQ(products->stats().repairs, 0u);
  EXPECT_EQ(*products->untyped().get("k"), later);
}

TEST(TypedProtector, TheDefaultValueIsTheCodecsBytes) {
  Catalog catalog;
  TypedProtectorOptions options;
  options.protector.default_value = [](std::string_view) {
    return std::optional<std::string>(R"({"name":"default","price":0})");
  };
  auto products = Products::create(std::move(options), catalog.loader());
  ASSERT_TRUE(products) << products.error().to_string();
  EXPECT_EQ(*(*products)->get("broken"), (Product{"default", 0}));
  EXPECT_EQ((*products)->stats().decode_failures, 0u);
  EXPECT_EQ(catalog.loads.load(), 1);
}

TEST(TypedProtector, ManyCallersMeetingABadValueRepairItOnce) {
  Catalog catalog;
  auto products = make_products(catalog);
  ASSERT_TRUE(products->untyped().set("hot", "garbage"));
  constexpr int kCallers = 16;
  std::latch start(kCallers);
  std::vector<std::thread> callers;
  std::atomic<int> right{0};
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&] {
      start.arrive_and_wait();
      auto r = products->get("hot", Deadline::after(10s));
      if (r && *r == Product{"hot", 10}) right.fetch_add(1);
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(right.load(), kCallers);
  // Callers that met the bad value share one repair at a time; a caller
  // whose repair starts after one finished finds the value repaired.
  EXPECT_EQ(catalog.loads.load(), 1);
  EXPECT_EQ(products->stats().repairs, 1u);
  EXPECT_GE(products->stats().decode_failures, 1u);
}

TEST(TypedProtector, OptionsAreChecked) {
  Catalog catalog;
  EXPECT_FALSE(Products::create({.schema_version = 0}, catalog.loader()));
  EXPECT_FALSE(Products::create({}, nullptr));
  TypedProtectorOptions bad;
  bad.protector.ttl = Duration::zero();
  EXPECT_FALSE(Products::create(std::move(bad), catalog.loader()));
}

TEST(TypedFrame, FramesRoundTripAndJunkIsCorrupt) {
  const std::string bytes = encode_typed_frame("json", 0xA1B2C3D4u, "payload");
  auto frame = decode_typed_frame(bytes);
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->codec, "json");
  EXPECT_EQ(frame->schema_version, 0xA1B2C3D4u);
  EXPECT_EQ(frame->payload, "payload");
  for (std::size_t cut = 0; cut < bytes.size() - std::string("payload").size(); ++cut) {
    EXPECT_FALSE(decode_typed_frame(std::string_view(bytes).substr(0, cut))) << cut;
  }
  std::string other_format = bytes;
  other_format[4] = 9;
  EXPECT_EQ(decode_typed_frame(other_format).error().kind, ErrorKind::kCorrupt);
  EXPECT_TRUE(decode_typed_frame(encode_typed_frame("", 1, "")));
}

}  // namespace
}  // namespace herdguard

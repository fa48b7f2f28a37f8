// herdguard/json_codec.h — JSON as a TypedProtector codec (typed_protector.h),
// through nlohmann-json: any T with to_json/from_json (or
// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT, which tolerates missing
// fields — the codec then reads older and newer schemas alike, and values
// never need repairing).
//
// A separate header so that only its users need nlohmann-json
// (nlohmann-json3-dev) to compile.
//
// Thread safety: pure functions.
//
// Example:
//   struct Product { std::string name; int price = 0; };
//   NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Product, name, price)
//   using Products = herdguard::TypedProtector<Product, herdguard::JsonCodec<Product>>;
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "herdguard/result.h"

namespace herdguard {

template <class T>
struct JsonCodec {
  static std::string_view name() { return "json"; }
  // Errors: kInvalidArgument (e.g. a string that is not UTF-8).
  static Result<std::string> encode(const T& value) {
    try {
      return nlohmann::json(value).dump();
    } catch (const std::exception& e) {
      return make_error(ErrorKind::kInvalidArgument, std::string("json encode: ") + e.what());
    }
  }
  // Errors: kCorrupt (not JSON, or not a T).
  static Result<T> decode(std::string_view bytes) {
    try {
      return nlohmann::json::parse(bytes).template get<T>();
    } catch (const std::exception& e) {
      return make_error(ErrorKind::kCorrupt, std::string("json decode: ") + e.what());
    }
  }
};

}  // namespace herdguard

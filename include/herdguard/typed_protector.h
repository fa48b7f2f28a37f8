// herdguard/typed_protector.h — a Protector of typed values: T in, T out, the
// bytes in between made by a codec, and every cached value framed with the
// codec's name and the application's schema version.
//
// Why the frame: a cache outlives the release that wrote it. During a rolling
// deploy pods of release N and N+1 read each other's values; a pod that cannot
// decode a value must not simply "repair" it (reload and overwrite), or the
// two releases overwrite each other's values forever, each write a database
// load. The rules (docs/guide.md, "Typed values"):
//   * a cached value that decodes is answered, whatever schema wrote it
//     (codecs that tolerate missing and unknown fields never repair at all);
//   * one that does not decode and was written by this schema or an older
//     one (or is not a typed value at all) is a miss, counted
//     (decode_failures) and repaired: invalidated fleet-wide and loaded again
//     — once per key at a time in this process (single-flight);
//   * one written by a *newer* schema (or another codec) is left alone: this
//     pod loads its own copy from the repository, keeps it out of the cache
//     (foreign_loads; one load per key at a time in this process), and the
//     newer pods keep theirs;
//   * a value this pod loads is decoded before it is cached: one that does
//     not decode (a codec that writes what it cannot read back) fails that
//     load (kCorrupt, fresh_decode_failures) and is never cached, so it
//     cannot start a repair.
// Limits: during a deploy, old pods keep writing old values on their misses
// and refreshes, and new pods repair them again — one repair per such
// write, never a loop between two pods. A repair whose inline run times out
// may run once more on the load executor (SingleFlight), invalidating twice.
// options.protector.default_value returns the codec's bytes (e.g. JSON
// text): the TypedProtector frames them.
//
// Codecs: BytesCodec (std::string as is) here, JsonCodec<T> (nlohmann-json)
// in json_codec.h; any type with the CodecFor members below will do.
//
// Thread safety: every method is safe from any number of threads.
//
// Example:
//   struct Product { std::string name; int price; };   // + to_json/from_json
//   auto products = herdguard::TypedProtector<Product, herdguard::JsonCodec<Product>>::create(
//       {.schema_version = 2, .protector = {.ttl = std::chrono::minutes(5)}},
//       [&](std::string_view key, herdguard::Deadline) -> herdguard::Result<std::optional<Product>>
//       {
//         return db.find_product(key);                    // nullopt: no such product
//       });
//   herdguard::Result<Product> p = (*products)->get("sku-42");
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "herdguard/protector.h"
#include "herdguard/repository.h"
#include "herdguard/result.h"
#include "herdguard/single_flight.h"

namespace herdguard {

// What a codec of T provides: a stable name (recorded in every value, at most
// 255 bytes) and the two directions. decode() gets untrusted bytes: any
// failure is an error (kCorrupt), never a crash.
template <class C, class T>
concept CodecFor = requires(const T& value, std::string_view bytes) {
  { C::name() } -> std::convertible_to<std::string_view>;
  { C::encode(value) } -> std::same_as<Result<std::string>>;
  { C::decode(bytes) } -> std::same_as<Result<T>>;
};

// std::string as is: the raw-bytes codec.
struct BytesCodec {
  static std::string_view name() { return "bytes"; }
  static Result<std::string> encode(const std::string& value) { return value; }
  static Result<std::string> decode(std::string_view bytes) { return std::string(bytes); }
};

// The frame around a typed value's bytes (exposed for tests and fuzzing):
// magic "\0hgT", a format byte (1), the codec name's length (u8) and bytes,
// the schema version (u32 LE), then the codec's bytes.
struct TypedFrame {
  std::string_view codec;
  std::uint32_t schema_version = 0;
  std::string_view payload;
};
// REQUIRES: codec.size() <= 255.
std::string encode_typed_frame(std::string_view codec, std::uint32_t schema_version,
                               std::string_view payload);
// Views into `bytes`. Errors: kCorrupt when they are not a frame.
Result<TypedFrame> decode_typed_frame(std::string_view bytes);
// Whether `bytes` are a frame of a format later than this build's: a newer
// release's value, to be left alone rather than repaired.
bool is_later_typed_frame(std::string_view bytes) noexcept;

struct TypedProtectorOptions {
  // The schema of the values this build writes: raise it when T's encoding
  // changes in a way older builds cannot read. REQUIRES: >= 1.
  std::uint32_t schema_version = 1;
  ProtectorOptions protector{};
};

struct TypedProtectorStats {
  std::uint64_t decode_failures = 0;        // cached values that did not decode (repaired)
  std::uint64_t repairs = 0;                // values invalidated to be loaded again
  std::uint64_t foreign_loads = 0;          // own loads past a newer schema's (or codec's) value
  std::uint64_t fresh_decode_failures = 0;  // values refused: the codec cannot read them back
};

template <class T, CodecFor<T> Codec>
class TypedProtector {
 public:
  // The repository's typed form: the value, nullopt for "no such key", or
  // an error (as Repository::load).
  using Loader = std::function<Result<std::optional<T>>(std::string_view key, Deadline deadline)>;

  // Errors: kInvalidArgument for bad options (the Protector's included) or
  // an empty loader.
  static Result<std::unique_ptr<TypedProtector>> create(TypedProtectorOptions options,
                                                        Loader loader) {
    if (options.schema_version < 1)
      return make_error(ErrorKind::kInvalidArgument,
                        "typed protector: schema_version must be >= 1");
    if (!loader) return make_error(ErrorKind::kInvalidArgument, "typed protector: loader is empty");
    if (std::string_view(Codec::name()).size() > 255)
      return make_error(ErrorKind::kInvalidArgument, "typed protector: codec name over 255 bytes");
    auto typed = std::unique_ptr<TypedProtector>(new TypedProtector(
        options.schema_version, options.protector.request_timeout, std::move(loader)));
    if (auto fallback = std::move(options.protector.default_value)) {
      // The caller's default is the codec's bytes: framed like a load's.
      options.protector.default_value = [fallback = std::move(fallback),
                                         schema = options.schema_version](std::string_view key) {
        std::optional<std::string> bytes = fallback(key);
        if (bytes) bytes = encode_typed_frame(Codec::name(), schema, *bytes);
        return bytes;
      };
    }
    auto flights = SingleFlight::create(options.protector.single_flight);
    if (!flights) return std::unexpected(flights.error());
    typed->flights_ = std::move(*flights);
    const TypedProtector* self = typed.get();
    auto repository =
        std::make_shared<CallbackRepository>([self](std::string_view key, Deadline deadline) {
          return self->load_framed(key, deadline);
        });
    auto protector = Protector::create(std::move(options.protector), std::move(repository));
    if (!protector) return std::unexpected(protector.error());
    typed->protector_ = std::move(*protector);
    return typed;
  }

  // The value for `key` (see the file comment for values that do not
  // decode). Errors: the Protector's (kNotFound, kTimeout, ...), kCorrupt for
  // a freshly loaded value that does not decode, and the codec's errors.
  Result<T> get(std::string_view key, Deadline deadline) {
    auto bytes = protector_->get(key, deadline);
    if (!bytes) return std::unexpected(std::move(bytes.error()));
    Read read = decode(*bytes);
    if (read.value) return std::move(*read.value);
    if (read.foreign) return load_own(key, deadline);
    decode_failures_.fetch_add(1, std::memory_order_relaxed);
    // Repair: one flight per key at a time in this process, whatever the
    // number of callers that met the bad value; a caller that comes after a
    // repair finds the value repaired and loads nothing.
    auto repaired = flights_->call(repair_key(key), deadline,
                                   [this, k = std::string(key)](Deadline load_deadline) {
                                     auto current = protector_->get(k, load_deadline);
                                     if (!current) return current;
                                     if (Read now = decode(*current); now.value || now.foreign)
                                       return current;
                                     if (auto dropped = protector_->invalidate(k); !dropped)
                                       return Result<std::string>(std::unexpected(dropped.error()));
                                     repairs_.fetch_add(1, std::memory_order_relaxed);
                                     return protector_->get(k, load_deadline);
                                   });
    if (!repaired) return std::unexpected(std::move(repaired.error()));
    Read again = decode(*repaired);
    if (again.value) return std::move(*again.value);
    // Another pod's value got there first (an older or newer release's: what
    // this pod loads always decodes): not ours to repair twice.
    return load_own(key, deadline);
  }
  // get() within the Protector's request_timeout.
  Result<T> get(std::string_view key) { return get(key, Deadline::after(request_timeout_)); }

  // Stores `value` (encoded and framed) as Protector::set does. Errors: the
  // codec's, the Protector's.
  Result<void> set(std::string_view key, const T& value) {
    auto framed = frame(value);
    if (!framed) return std::unexpected(std::move(framed.error()));
    return protector_->set(key, *framed);
  }
  // Protector::invalidate.
  Result<void> invalidate(std::string_view key) { return protector_->invalidate(key); }

  // The Protector underneath (its metrics, get_many of the framed bytes...).
  Protector& untyped() noexcept { return *protector_; }
  TypedProtectorStats stats() const {
    return {.decode_failures = decode_failures_.load(std::memory_order_relaxed),
            .repairs = repairs_.load(std::memory_order_relaxed),
            .foreign_loads = foreign_loads_.load(std::memory_order_relaxed),
            .fresh_decode_failures = fresh_decode_failures_.load(std::memory_order_relaxed)};
  }

 private:
  TypedProtector(std::uint32_t schema, Duration request_timeout, Loader loader)
      : schema_(schema), request_timeout_(request_timeout), loader_(std::move(loader)) {}

  // What a cached value reads as: a value; or `foreign` (a newer schema's or
  // another codec's, not decodable here: leave it alone); or neither (ours
  // or older, or not a frame: repair), with `why`.
  struct Read {
    std::optional<T> value;
    bool foreign = false;
    std::string why;
  };

  Read decode(std::string_view bytes) const {
    Read read;
    auto framed = decode_typed_frame(bytes);
    if (!framed) {
      read.why = framed.error().message;
      read.foreign = is_later_typed_frame(bytes);
      return read;
    }
    const bool same_codec = framed->codec == std::string_view(Codec::name());
    if (same_codec) {
      auto decoded = Codec::decode(framed->payload);
      if (decoded) {
        read.value = std::move(*decoded);
        return read;
      }
      read.why = decoded.error().message;
    } else {
      read.why = "written with codec '" + std::string(framed->codec) + "'";
    }
    read.foreign = !same_codec || framed->schema_version > schema_;
    return read;
  }

  // The value's bytes, framed — once they are known to decode: a value the
  // codec cannot read back is refused here (kCorrupt), before any cache
  // holds it.
  Result<std::string> frame(const T& value) const {
    auto bytes = Codec::encode(value);
    if (!bytes) return std::unexpected(std::move(bytes.error()));
    if (auto back = Codec::decode(*bytes); !back) {
      fresh_decode_failures_.fetch_add(1, std::memory_order_relaxed);
      return make_error(
          ErrorKind::kCorrupt,
          "typed value: the codec cannot read back what it wrote: " + back.error().message);
    }
    return encode_typed_frame(Codec::name(), schema_, *bytes);
  }

  // The repository under the Protector: the typed loader, framed.
  Result<std::optional<std::string>> load_framed(std::string_view key, Deadline deadline) const {
    auto loaded = loader_(key, deadline);
    if (!loaded) return std::unexpected(std::move(loaded.error()));
    if (!*loaded) return std::optional<std::string>();
    auto framed = frame(**loaded);
    if (!framed) return std::unexpected(std::move(framed.error()));
    return std::optional<std::string>(std::move(*framed));
  }

  // Past a value this build must not overwrite: this process's own load,
  // not cached (one per key at a time in this process).
  Result<T> load_own(std::string_view key, Deadline deadline) {
    foreign_loads_.fetch_add(1, std::memory_order_relaxed);
    auto bytes = flights_->call(own_key(key), deadline, [this, k = std::string(key)](Deadline d) {
      auto loaded = load_framed(k, d);
      if (!loaded) return Result<std::string>(std::unexpected(std::move(loaded.error())));
      if (!*loaded) return Result<std::string>(make_error(ErrorKind::kNotFound, "no such key"));
      return Result<std::string>(std::move(**loaded));
    });
    if (!bytes) return std::unexpected(std::move(bytes.error()));
    Read read = decode(*bytes);
    if (read.value) return std::move(*read.value);
    fresh_decode_failures_.fetch_add(1, std::memory_order_relaxed);
    return make_error(ErrorKind::kCorrupt,
                      "typed get: a freshly loaded value does not decode: " + read.why);
  }

  static std::string repair_key(std::string_view key) { return "r" + std::string(key); }
  static std::string own_key(std::string_view key) { return "o" + std::string(key); }

  const std::uint32_t schema_;
  const Duration request_timeout_;
  const Loader loader_;
  mutable std::atomic<std::uint64_t> decode_failures_{0}, repairs_{0}, foreign_loads_{0},
      fresh_decode_failures_{0};
  // Destroyed before the members above: its loads call the loader.
  std::unique_ptr<Protector> protector_;
  // Repairs and own loads, keyed apart. Last: destroyed first (waiting for
  // its loads), since they call protector_.
  std::unique_ptr<SingleFlight> flights_;
};

}  // namespace herdguard

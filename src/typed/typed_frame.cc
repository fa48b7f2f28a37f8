// The frame of a typed value (include/herdguard/typed_protector.h).
#include <fmt/format.h>

#include "herdguard/typed_protector.h"

namespace herdguard {
namespace {

constexpr std::string_view kMagic{"\0hgT", 4};
constexpr std::uint8_t kFormat = 1;

}  // namespace

std::string encode_typed_frame(std::string_view codec, std::uint32_t schema_version,
                               std::string_view payload) {
  std::string out;
  out.reserve(kMagic.size() + 2 + codec.size() + 4 + payload.size());
  out.append(kMagic);
  out.push_back(static_cast<char>(kFormat));
  out.push_back(static_cast<char>(codec.size()));
  out.append(codec);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((schema_version >> (8 * i)) & 0xff));
  out.append(payload);
  return out;
}

bool is_later_typed_frame(std::string_view bytes) noexcept {
  return bytes.size() > kMagic.size() && bytes.substr(0, kMagic.size()) == kMagic &&
         static_cast<std::uint8_t>(bytes[kMagic.size()]) > kFormat;
}

Result<TypedFrame> decode_typed_frame(std::string_view bytes) {
  auto corrupt = [](std::string_view why) {
    return make_error(ErrorKind::kCorrupt, fmt::format("typed value: {}", why));
  };
  if (bytes.size() < kMagic.size() + 2 + 4) return corrupt("too short for a frame");
  if (bytes.substr(0, kMagic.size()) != kMagic) return corrupt("not a typed value (bad magic)");
  if (static_cast<std::uint8_t>(bytes[kMagic.size()]) != kFormat)
    return corrupt("unknown frame format");
  const std::size_t codec_size = static_cast<unsigned char>(bytes[kMagic.size() + 1]);
  const std::size_t schema_at = kMagic.size() + 2 + codec_size;
  if (bytes.size() < schema_at + 4) return corrupt("truncated frame");
  TypedFrame frame;
  frame.codec = bytes.substr(kMagic.size() + 2, codec_size);
  for (int i = 0; i < 4; ++i)
    frame.schema_version |= std::uint32_t(static_cast<unsigned char>(bytes[schema_at + i]))
                            << (8 * i);
  frame.payload = bytes.substr(schema_at + 4);
  return frame;
}

}  // namespace herdguard

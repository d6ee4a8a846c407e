#include "molt/host/common/json_text.hpp"

namespace molt::host {
namespace {

/// The length of the valid UTF-8 sequence that starts `text`, or 0 when its
/// first byte does not start one (RFC 3629, table 3-7 of Unicode).
std::size_t sequence_length(std::string_view text) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const auto continuation = [&](std::size_t i, unsigned char low = 0x80, unsigned char high = 0xbf) {
    return i < text.size() && byte(i) >= low && byte(i) <= high;
  };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return continuation(1) ? 2 : 0;
  if (lead >= 0xe0 && lead <= 0xef) {
    // E0: no overlong forms (A0..BF); ED: no surrogates (80..9F).
    const bool second = lead == 0xe0 ? continuation(1, 0xa0) : lead == 0xed ? continuation(1, 0x80, 0x9f) : continuation(1);
    return second && continuation(2) ? 3 : 0;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    // F0: no overlong forms (90..BF); F4: nothing past U+10FFFF (80..8F).
    const bool second = lead == 0xf0 ? continuation(1, 0x90) : lead == 0xf4 ? continuation(1, 0x80, 0x8f) : continuation(1);
    return second && continuation(2) && continuation(3) ? 4 : 0;
  }
  return 0;  // a continuation byte alone, C0, C1 (overlong), F5..FF
}

template <typename Json>
bool all_valid(const Json& value) noexcept {
  switch (value.type()) {
    case nlohmann::json::value_t::string: return is_valid_utf8(value.template get_ref<const typename Json::string_t&>());
    case nlohmann::json::value_t::array:
      for (const auto& element : value)
        if (!all_valid(element)) return false;
      return true;
    case nlohmann::json::value_t::object:
      for (const auto& [key, element] : value.items())
        if (!is_valid_utf8(key) || !all_valid(element)) return false;
      return true;
    default: return true;
  }
}

template <typename Json>
Json sanitized(const Json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::string: return Json(utf8_safe(value.template get_ref<const typename Json::string_t&>()));
    case nlohmann::json::value_t::array: {
      Json out = Json::array();
      for (const auto& element : value) out.push_back(sanitized(element));
      return out;
    }
    case nlohmann::json::value_t::object: {
      // Two keys that differ only in their invalid bytes and the text of
      // their escapes would meet: the first one stays.
      Json out = Json::object();
      for (const auto& [key, element] : value.items()) out.emplace(utf8_safe(key), sanitized(element));
      return out;
    }
    default: return value;
  }
}

template <typename Json>
std::string dump_safely(const Json& value, int indent) {
  // After sanitizing, strict and replace are the same; replace is there so
  // that this can never throw for a string, whatever the check above missed.
  constexpr auto kReplace = Json::error_handler_t::replace;
  if (all_valid(value)) return value.dump(indent, ' ', false, kReplace);
  return sanitized(value).dump(indent, ' ', false, kReplace);
}

}  // namespace

bool is_valid_utf8(std::string_view text) noexcept {
  while (!text.empty()) {
    const std::size_t length = sequence_length(text);
    if (length == 0) return false;
    text.remove_prefix(length);
  }
  return true;
}

std::string utf8_safe(std::string_view text) {
  if (is_valid_utf8(text)) return std::string(text);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 16);
  while (!text.empty()) {
    const std::size_t length = sequence_length(text);
    if (length > 0) {
      out.append(text.substr(0, length));
      text.remove_prefix(length);
      continue;
    }
    const auto byte = static_cast<unsigned char>(text.front());
    out += "\\x";
    out += kHex[byte >> 4];
    out += kHex[byte & 0xf];
    text.remove_prefix(1);
  }
  return out;
}

std::string json_text(const nlohmann::json& value, int indent) { return dump_safely(value, indent); }
std::string json_text(const nlohmann::ordered_json& value, int indent) { return dump_safely(value, indent); }

std::string hex_encode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    out += kHex[byte >> 4];
    out += kHex[byte & 0xf];
  }
  return out;
}

std::optional<std::string> hex_decode(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int high = digit(hex[i]), low = digit(hex[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high << 4 | low);
  }
  return out;
}

}  // namespace molt::host

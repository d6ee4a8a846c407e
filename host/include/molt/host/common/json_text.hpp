// The one way the host turns strings into JSON text.
//
// nlohmann::json refuses to dump a string that is not valid UTF-8 (it throws
// type_error 316), and host strings are not always valid: file names are
// bytes, and so is whatever a module logs or names. An exception there used
// to abort moltd from a control connection's thread. So every string that
// reaches JSON (control replies, the history, the release record, state file
// headers, /-/status, /-/history, JSON logs, moltctl's --json) goes through
// json_text(), which keeps valid UTF-8 as it is and shows each invalid byte
// as the four characters \xff (lowercase hex). A test fails when a `.dump(`
// appears in host/ outside json_text.cpp.
//
// Backslashes are kept as they are, escaped or not, so that valid text never
// changes: the text `\xff` (four characters) and the byte 0xff look the same
// once escaped. The escape is for people and parsers, not a way back to the
// bytes; where the bytes matter (a file name moltctl sends), the protocol
// carries them as hex (hex_encode, "file_hex").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace molt::host {

/// Whether `text` is valid UTF-8 (RFC 3629: no overlong forms, no
/// surrogates, nothing past U+10FFFF, no truncated sequences).
[[nodiscard]] bool is_valid_utf8(std::string_view text) noexcept;

/// `text` where it is valid UTF-8; each byte that is not part of a valid
/// sequence becomes `\xNN` (lowercase hex). Returns `text` unchanged when it
/// is valid, so applying it twice changes nothing more.
[[nodiscard]] std::string utf8_safe(std::string_view text);

/// `value` dumped as JSON text, every string and object key in it through
/// utf8_safe first (a copy is made only when one of them is invalid). Never
/// throws for a string's bytes. `indent` as nlohmann::json::dump: -1 compact.
[[nodiscard]] std::string json_text(const nlohmann::json& value, int indent = -1);
[[nodiscard]] std::string json_text(const nlohmann::ordered_json& value, int indent = -1);

/// Lowercase hex of `bytes`, two digits a byte.
[[nodiscard]] std::string hex_encode(std::string_view bytes);
/// The bytes `hex` spells (two digits a byte, either case), or nothing when it
/// is not that.
[[nodiscard]] std::optional<std::string> hex_decode(std::string_view hex);

}  // namespace molt::host

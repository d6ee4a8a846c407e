// SHA-256 of a byte range, as lowercase hex (the form sha256sum prints).
#pragma once

#include <string>
#include <string_view>

namespace molt::host {

[[nodiscard]] std::string sha256_hex(std::string_view bytes);

}  // namespace molt::host

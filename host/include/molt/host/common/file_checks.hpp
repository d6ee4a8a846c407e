// Who may write a file the host trusts (an image, the run directory).
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>

namespace molt::host {

/// Why `st` (described as `what` in the message) is unsafe to trust, or
/// nothing. Unsafe: owned by someone other than this user or root, or
/// writable by other users. Group write is fine for the owner's private group
/// (Debian's default for users): it grants nobody else anything.
[[nodiscard]] std::optional<std::string> unsafe_permissions(const struct stat& st, std::string_view what);

}  // namespace molt::host

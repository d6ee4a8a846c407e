// A shared secret kept in a file (host.peer_secret_file): the owner's
// alone, of a sensible size; read once, at start.
#pragma once

#include <filesystem>
#include <string>

#include "molt/host/common/error.hpp"

namespace molt::host {

/// The secret in `path`, refused (one line, naming the file) when it is not
/// a regular file, is readable or writable by group or others, is over
/// 4 KiB, or holds fewer than 16 bytes (a trailing newline is not part of it).
[[nodiscard]] Result<std::string> read_secret_file(const std::filesystem::path& path);

}  // namespace molt::host

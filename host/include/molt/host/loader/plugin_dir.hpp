// The plugin directory: where operators drop new module versions, named
// <module>-<version>.so.
#pragma once

#include <filesystem>
#include <optional>
#include <string_view>

#include "molt/types.hpp"

namespace molt::host {

struct PluginFile {
  std::filesystem::path path;
  api::ModuleVersion version;
};

/// The `<module>-<N>.so` in `dir` with the largest N, if any. Other files are
/// ignored; the version in the name is only a hint, the image's own metadata
/// is what the loader checks.
[[nodiscard]] std::optional<PluginFile> newest_plugin(const std::filesystem::path& dir, std::string_view module);

}  // namespace molt::host

#include "molt/host/loader/plugin_dir.hpp"

#include <charconv>

namespace molt::host {

std::optional<PluginFile> newest_plugin(const std::filesystem::path& dir, std::string_view module) {
  std::optional<PluginFile> newest;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(module) || name.size() <= module.size() + 4 || name[module.size()] != '-' ||
        !name.ends_with(".so"))
      continue;
    const std::string_view digits = std::string_view(name).substr(module.size() + 1, name.size() - module.size() - 4);
    std::uint32_t version = 0;
    const auto [end, parse_error] = std::from_chars(digits.data(), digits.data() + digits.size(), version);
    if (parse_error != std::errc() || end != digits.data() + digits.size() || version == 0) continue;
    if (!newest || version > newest->version.value) newest = PluginFile{entry.path(), api::ModuleVersion{version}};
  }
  return newest;
}

}  // namespace molt::host

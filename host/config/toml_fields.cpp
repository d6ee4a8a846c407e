#include "config/toml_fields.hpp"

#include <algorithm>

namespace molt::host {

std::optional<std::string> check_only_keys(const toml::table& table, std::initializer_list<std::string_view> allowed,
                                           std::string_view where) {
  for (const auto& [key, value] : table) {
    (void)value;
    if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end())
      return std::string(where) + std::string(key.str()) + ": unknown key";
  }
  return std::nullopt;
}

std::optional<std::vector<Endpoint>> parse_listen_address(const toml::node& listen) {
  std::vector<const toml::node*> items;
  if (const auto* list = listen.as_array())
    for (const auto& item : *list) items.push_back(&item);
  else
    items.push_back(&listen);
  std::vector<Endpoint> endpoints;
  for (const auto* item : items) {
    const auto* text = item->as_string();
    const auto endpoint = text ? parse_endpoint(text->get()) : std::nullopt;
    if (!endpoint) return std::nullopt;
    endpoints.push_back(*endpoint);
  }
  return endpoints;
}

}  // namespace molt::host

#include "config/toml_fields.hpp"

namespace molt::host {

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

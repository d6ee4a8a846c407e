// Checks shared by the parsers of the TOML files moltd reads (the host's
// configuration, upgrade scripts), so that both say the same thing about the
// same mistake. Private to molt_host: toml++ is not part of its interface.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "molt/host/config/host_config.hpp"

namespace molt::host {

/// "<where><key>: unknown key" for the first key of `table` (in toml++'s
/// order: sorted) that `allowed` does not list, or nothing when it lists them
/// all. An unknown key is usually a typo, so it is refused, not ignored.
/// `where` names the table, e.g. "host." or "modules.kv.".
[[nodiscard]] std::optional<std::string> check_only_keys(const toml::table& table,
                                                         std::initializer_list<std::string_view> allowed,
                                                         std::string_view where = {});

/// What a `listen` value must be, for the error that names the key.
inline constexpr std::string_view kListenAddressForm = "must be \"HOST:PORT\" or a list of them";

/// The endpoints of a `listen` value: "HOST:PORT" or a list of them (an
/// empty list: none). Nothing when any item is not such a string.
[[nodiscard]] std::optional<std::vector<Endpoint>> parse_listen_address(const toml::node& listen);

}  // namespace molt::host

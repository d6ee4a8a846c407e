// The one place where a module's exceptions become the host's errors.
//
// Modules fail by throwing; the host never lets that cross into its own code.
// Every call into module code goes through guard_module_call, which runs it
// and returns why it failed, as one line, or nothing.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include "molt/error.hpp"

namespace molt::host {

/// Runs `fn` (module code). On an exception returns the reason:
/// "refused: <what()>" for api::MigrationRefused (the module said no),
/// "<what> threw: <what()>" for another std::exception,
/// "<what> threw a non-standard exception" for anything else.
template <class F>
[[nodiscard]] std::optional<std::string> guard_module_call(std::string_view what, F&& fn) noexcept {
  try {
    fn();
    return std::nullopt;
  } catch (const api::MigrationRefused& e) {
    return std::string("refused: ") + e.what();
  } catch (const std::exception& e) {
    return std::string(what) + " threw: " + e.what();
  } catch (...) {
    return std::string(what) + " threw a non-standard exception";
  }
}

}  // namespace molt::host
